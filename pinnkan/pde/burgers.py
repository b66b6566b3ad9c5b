"""Viscous Burgers family: u_t + u u_x = ν u_xx on (−1,1)×(0,1], u(±1,t) = 0,
u(x,0) = −sin(πx). Reference: the Cole–Hopf solution by Gauss–Hermite quadrature. Members can
also be posed from a PDEBench 1-D Burgers file's samples (periodic; ν = Nu/π from its
attribute `Nu`); `cole_hopf_periodic` solves those from a periodic initial value."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from pinnkan.layers.jet import Jet
from pinnkan.pde.base import PI, Condition, FileProblem, PDEFamily, at_start, on_faces

# Gauss–Hermite nodes: enough for ν ≥ ~0.01/π to rounding (tests check against a fine FD solve)
QUAD_NODES = 200
CHUNK = 4096


@lru_cache(maxsize=4)
def _hermgauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    z, w = np.polynomial.hermite.hermgauss(n)
    with np.errstate(divide="ignore"):  # the outermost weights underflow to 0: log → −inf
        return z, np.log(w)


def cole_hopf(xs: np.ndarray, t: np.ndarray, nu: float, nodes: int = QUAD_NODES) -> np.ndarray:
    """u(x, t) of Burgers with u(x,0) = −sin(πx), float64, vectorised over the points.

    u = −∫ sin(π(x−η)) f(x−η) e^{−η²/(4νt)} dη / ∫ f(x−η) e^{−η²/(4νt)} dη with
    f(y) = exp(−cos(πy)/(2πν)); η = √(4νt) z turns e^{−η²/(4νt)} into the Hermite weight.
    Both integrands share exp(log w_j − cos(π y_j)/(2πν)), so the largest exponent of each
    point is subtracted before exponentiating (no overflow for small ν). At t = 0 every node
    collapses onto x and the ratio is −sin(πx) exactly.
    """
    z, logw = _hermgauss(nodes)
    xs, t = np.asarray(xs, np.float64).ravel(), np.asarray(t, np.float64).ravel()
    out = np.empty_like(xs)
    for s in range(0, xs.size, CHUNK):
        x, tt = xs[s : s + CHUNK, None], np.maximum(t[s : s + CHUNK, None], 0.0)
        y = x - np.sqrt(4.0 * nu * tt) * z[None, :]  # (b, n)
        expo = logw[None, :] - np.cos(PI * y) / (2.0 * PI * nu)
        out[s : s + CHUNK] = -_weighted_mean(np.sin(PI * y), expo)
    return out


def _weighted_mean(values: np.ndarray, expo: np.ndarray) -> np.ndarray:
    """Σ v e^expo / Σ e^expo over the last axis, the largest exponent of each row subtracted
    before exponentiating (Cole–Hopf's weights span hundreds of decades at small ν)."""
    wts = np.exp(expo - expo.max(axis=1, keepdims=True))
    return (wts * values).sum(axis=1) / wts.sum(axis=1)


Profile = Callable[[np.ndarray], np.ndarray]


def cole_hopf_periodic(
    xs: np.ndarray,
    t: np.ndarray,
    nu: float,
    wave: Profile,
    primitive: Profile,
    mean: float = 0.0,
    period: float = 1.0,
    dz: float = 0.05,
) -> np.ndarray:
    """u(x, t) of Burgers for u(x,0) = mean + wave(x), `wave` periodic with zero mean and
    `primitive` an antiderivative of it; float64, vectorised over the points.

    The mean only carries the solution along (u = mean + ũ(x − mean·t, t)); ũ is Cole–Hopf's
    ratio with f = exp(−primitive/(2ν)) on the whole line, which for a periodic wave is the
    periodic solution. Gauss–Hermite nodes do not resolve the narrow peaks of f for waves of
    several periods per unit at small ν, so the integral over z (η = √(4νt) z) is the
    trapezoid rule with step `dz` on |z| ≤ √(span of primitive/(2ν) + 40), where the Gaussian
    has fallen e^40 below the largest weight: exponentially accurate, to rounding at dz = 0.05
    on PDEBench's initial values at ν = 0.01/π (tests check it against `cole_hopf`).
    """
    span = np.ptp(primitive(np.linspace(0.0, period, 4097)))
    z_max = np.sqrt(span / (2.0 * nu) + 40.0)
    z = np.arange(-z_max, z_max + 0.5 * dz, dz)
    xs, t = np.asarray(xs, np.float64).ravel(), np.asarray(t, np.float64).ravel()
    out = np.empty_like(xs)
    for s in range(0, xs.size, CHUNK):
        tt = np.maximum(t[s : s + CHUNK, None], 0.0)
        y = xs[s : s + CHUNK, None] - mean * tt - np.sqrt(4.0 * nu * tt) * z[None, :]
        expo = -(z**2)[None, :] - primitive(y) / (2.0 * nu)
        out[s : s + CHUNK] = mean + _weighted_mean(wave(y), expo)
    return out


class Burgers(PDEFamily):
    name = "burgers"
    coords = ("x", "t")
    domain = ((-1.0, 1.0), (0.0, 1.0))
    defaults = {"nu": 0.1 / PI}
    target_params = {"nu": 0.2 / 3 / PI}
    lower_bounds = {"nu": 0.0}
    # PDEBench's Burgers equation is u_t + (u²/2)_x = (Nu/π) u_xx
    file_problem = FileProblem({"nu": ("Nu", 1.0 / PI)}, slope=True)

    def exact(self, x: Tensor) -> Tensor:
        pts = x.detach().cpu().to(torch.float64).numpy()
        u = cole_hopf(pts[:, 0], pts[:, 1], self.params["nu"])
        return torch.as_tensor(u, dtype=x.dtype, device=x.device)

    def residual(self, x: Tensor, jet: Jet) -> Tensor:
        return jet.d(1) + jet.u * jet.d(0) - self.params["nu"] * jet.dd(0)

    def conditions(self) -> list[Condition]:
        return [on_faces(self, (0,)), at_start(self, lambda x: -torch.sin(PI * x[:, 0]))]
