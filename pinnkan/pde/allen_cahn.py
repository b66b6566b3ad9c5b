"""Allen–Cahn family: u_t = ε u_xx + 5(u − u³) on (−1,1)×(0,1], periodic in x,
u(x,0) = x² cos(πx). Reference: a Fourier pseudo-spectral / ETDRK4 solve (numpy only)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from pinnkan.layers.jet import Jet
from pinnkan.pde.base import PI, Condition, PDEFamily, at_start, periodic

REACTION = 5.0
MODES = 512  # grid points in x (rfft: MODES // 2 + 1 complex coefficients)
# below this ε the interfaces (width ~ √(ε/5)) need 4 × MODES: at ε = 1e-4, 512 modes are off
# by 2.2e-4 (max abs against 1024), 1024 by 7.0e-6 against 2048 (scripts/hard_benchmarks.py
# --references)
THIN_EPS = 1e-3
STEP = 2.5e-4  # ETDRK4 time step
SAVE = 1.0e-3  # spacing of the stored snapshots in t (a multiple of STEP)
T_END = 1.0
CHUNK = 2048


def initial(x: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """u(x, 0) = x² cos(πx) (numpy or torch)."""
    cos = torch.cos if isinstance(x, Tensor) else np.cos
    return x * x * cos(PI * x)


def solve(
    eps: float, modes: int = MODES, step: float = STEP, save: float = SAVE
) -> tuple[np.ndarray, float]:
    """rfft coefficients of u on the periodic grid x_j = −1 + 2j/modes at t = k·save,
    k = 0..T_END/save: (K+1, modes//2 + 1) complex, and the snapshot spacing.

    ETDRK4 of Cox–Matthews with the contour-integral coefficients of Kassam & Trefethen (2005)
    for the stiff diagonal part L = −ε(πm)², the reaction 5(u − u³) evaluated pointwise.
    """
    sub = round(save / step)
    if abs(sub * step - save) > 1e-12 * save or round(T_END / save) * save != T_END:
        raise ValueError("save must be a multiple of step and divide T_END")
    m = np.arange(modes // 2 + 1)
    lin = -eps * (PI * m) ** 2
    e, e2 = np.exp(step * lin), np.exp(step * lin / 2.0)
    r = np.exp(1j * PI * (np.arange(1, 33) - 0.5) / 32)
    lr = step * lin[:, None] + r[None, :]
    q = step * np.real(np.mean((np.exp(lr / 2) - 1.0) / lr, axis=1))
    f1 = step * np.real(np.mean((-4.0 - lr + np.exp(lr) * (4.0 - 3.0 * lr + lr**2)) / lr**3, 1))
    f2 = step * np.real(np.mean((2.0 + lr + np.exp(lr) * (-2.0 + lr)) / lr**3, axis=1))
    f3 = step * np.real(np.mean((-4.0 - 3.0 * lr - lr**2 + np.exp(lr) * (4.0 - lr)) / lr**3, 1))

    def react(v: np.ndarray) -> np.ndarray:
        u = np.fft.irfft(v, n=modes)
        return np.fft.rfft(REACTION * (u - u**3))

    # the initial data's own Fourier coefficients (its kink at x = ±1 would alias into the low
    # modes if sampled on the grid itself): from a 64x finer grid, truncated
    fine = 64 * modes
    v = np.fft.rfft(initial(-1.0 + 2.0 * np.arange(fine) / fine))[: m.size] * (modes / fine)
    snaps = [v]
    for _ in range(round(T_END / save)):
        for _ in range(sub):
            nv = react(v)
            a = e2 * v + q * nv
            na = react(a)
            b = e2 * v + q * na
            nb = react(b)
            c = e2 * a + q * (2.0 * nb - nv)
            nc = react(c)
            v = e * v + nv * f1 + 2.0 * (na + nb) * f2 + nc * f3
        snaps.append(v)
    return np.stack(snaps), save


@lru_cache(maxsize=8)
def _cached(eps: float, modes: int, step: float, save: float) -> tuple[np.ndarray, float]:
    return solve(eps, modes, step, save)


def evaluate(
    coef: np.ndarray, save: float, xs: np.ndarray, t: np.ndarray, modes: int
) -> np.ndarray:
    """u at points (xs, t): the Fourier series in x (exact for the spectral solution) at the
    four nearest snapshots, combined by cubic Lagrange interpolation in t."""
    n_snap = coef.shape[0]
    m = np.arange(coef.shape[1])
    # real trigonometric interpolant: the mean, twice every inner mode, the Nyquist mode as a cosine
    scale = np.full(m.size, 2.0 / modes)
    scale[0] = 1.0 / modes
    if modes % 2 == 0:
        scale[-1] = 1.0 / modes
    out = np.empty(xs.size)
    for s in range(0, xs.size, CHUNK):
        x, tt = xs[s : s + CHUNK], np.clip(t[s : s + CHUNK], 0.0, T_END)
        k0 = np.clip(np.floor(tt / save).astype(int) - 1, 0, n_snap - 4)
        pos = tt / save - k0  # in [0, 3]: position among the nodes k0..k0+3
        lag = np.ones((x.size, 4))
        for j in range(4):
            for i in range(4):
                if i != j:
                    lag[:, j] *= (pos - i) / (j - i)
        c = np.einsum("bj,bjm->bm", lag, coef[k0[:, None] + np.arange(4)])
        phase = np.exp(1j * PI * np.outer(x + 1.0, m))
        out[s : s + CHUNK] = np.real(c * phase) @ scale
    return out


def reference(
    xs: np.ndarray, t: np.ndarray, eps: float, modes: int | None = None, step: float = STEP
) -> np.ndarray:
    """The numerical solution at points (xs, t), float64; exactly the initial data at t = 0.
    `modes` None: MODES, or 4 × MODES for thin interfaces (ε < THIN_EPS)."""
    if modes is None:
        modes = MODES if eps >= THIN_EPS else 4 * MODES
    coef, save = _cached(float(eps), modes, step, SAVE)
    xs, t = np.asarray(xs, np.float64).ravel(), np.asarray(t, np.float64).ravel()
    return np.where(t <= 0.0, initial(xs), evaluate(coef, save, xs, t, modes))


class AllenCahn(PDEFamily):
    name = "allen_cahn"
    coords = ("x", "t")
    domain = ((-1.0, 1.0), (0.0, 1.0))
    periodic_axes = (0,)  # x
    defaults = {"eps": 2.0e-2}
    target_params = {"eps": 1.5e-2}
    lower_bounds = {"eps": 0.0}

    def exact(self, x: Tensor) -> Tensor:
        pts = x.detach().cpu().to(torch.float64).numpy()
        u = reference(pts[:, 0], pts[:, 1], self.params["eps"])
        return torch.as_tensor(u, dtype=x.dtype, device=x.device)

    def residual(self, x: Tensor, jet: Jet) -> Tensor:
        u = jet.u
        return jet.d(1) - self.params["eps"] * jet.dd(0) - REACTION * (u - u**3)

    def conditions(self) -> list[Condition]:
        # x = −1 and x = 1 at the same times: u and u_x agree
        return [
            periodic(self),
            periodic(self, slope=True),
            at_start(self, lambda x: initial(x[:, 0])),
        ]
