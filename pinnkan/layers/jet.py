"""A jet: a network quantity together with its derivatives w.r.t. the input coordinates.

PDE residuals are written against a jet, so they do not need to know which derivative engine
(forward propagation or nested autograd) produced it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pinnkan.errors import PinnkanError


@dataclass
class Jet:
    """value (B, n); d1[k] = ∂value/∂x_k and d2[k] = ∂²value/∂x_k², each (D, B, n).

    d1/d2 are None for a value-only evaluation (boundary data that needs no derivative).
    """

    value: Tensor
    d1: Tensor | None = None
    d2: Tensor | None = None

    def d(self, k: int) -> Tensor:
        """First derivative of the (single) output w.r.t. coordinate k, shape (B,)."""
        assert self.d1 is not None, "this jet carries no derivatives"
        return self.d1[k, :, 0]

    def dd(self, k: int) -> Tensor:
        """Second derivative of the (single) output w.r.t. coordinate k, shape (B,)."""
        assert self.d2 is not None, "this jet carries no second derivatives"
        return self.d2[k, :, 0]

    def dxy(self, k: int, m: int) -> Tensor:
        """∂²u/∂x_k∂x_m: only k == m (the diagonal, `dd`); the engines propagate no mixed
        second derivatives, so asking for one is an error, never a silent zero."""
        if k == m:
            return self.dd(k)
        raise PinnkanError(
            f"the residual asks for the mixed derivative d2u/dx{k}dx{m}; pinnkan's jet engines "
            "carry only first and unmixed second derivatives (write the PDE without u_xy, e.g. "
            "in rotated coordinates, or see docs/adding_a_pde.md)"
        )

    @property
    def u(self) -> Tensor:
        """The (single) output value, shape (B,)."""
        return self.value[:, 0]


def zero_jet(x: Tensor, directions: int | None = None) -> Jet:
    """u ≡ 0 at points x (B, D) as a jet with `directions` derivative directions (default D)."""
    n = x.shape[1] if directions is None else directions
    z, dz = x.new_zeros(x.shape[0], 1), x.new_zeros(n, x.shape[0], 1)
    return Jet(z, dz, dz)


def affine_input_jet(x: Tensor, lo: Tensor, hi: Tensor) -> Jet:
    """Map physical points x (B, D) affinely to [-1, 1]^D and seed the derivative directions.

    The jet is w.r.t. the *physical* coordinates, so the map's scale 2/(hi - lo) sits in d1.
    """
    scale = 2.0 / (hi - lo)  # (D,)
    z = (x - lo) * scale - 1.0
    n_batch, dim = x.shape
    d1 = torch.zeros(dim, n_batch, dim, dtype=x.dtype, device=x.device)
    idx = torch.arange(dim, device=x.device)
    d1[idx, :, idx] = scale.unsqueeze(-1).expand(dim, n_batch)
    d2 = torch.zeros_like(d1)
    return Jet(z, d1, d2)


def periodic_input_jet(
    x: Tensor, lo: Tensor, hi: Tensor, periodic: tuple[int, ...], derivatives: bool = True
) -> Jet:
    """`affine_input_jet` with each axis k in `periodic` embedded as the two features cos θ_k,
    sin θ_k, θ_k = 2π (x_k - lo_k) / (hi_k - lo_k): width D + len(periodic), in axis order
    (axis k's cos and sin take its place). Without `derivatives`, the value only (d1 and d2
    with no directions).

    Every feature of axis k has period hi_k - lo_k in x_k, so whatever the layers compute from
    them is exactly periodic in x_k, with all its derivatives. The jet carries the embedding's
    exact derivatives w.r.t. the physical x_k, ω = 2π / (hi_k - lo_k):
    (cos θ)' = -ω sin θ, (cos θ)'' = -ω² cos θ, (sin θ)' = ω cos θ, (sin θ)'' = -ω² sin θ.
    """
    n_batch, dim = x.shape
    scale = 2.0 / (hi - lo)  # (D,)
    values, d1s, d2s = [], [], []
    for k in range(dim):
        # direction k is the only one that sees axis k's features: (D, 1, 1)
        seed = torch.zeros(dim, 1, 1, dtype=x.dtype, device=x.device)
        seed[k] = 1.0
        if k not in periodic:
            values.append((x[:, k : k + 1] - lo[k]) * scale[k] - 1.0)
            if derivatives:
                d1s.append((seed * scale[k]).expand(dim, n_batch, 1))
                d2s.append(x.new_zeros(dim, n_batch, 1))
            continue
        period = hi[k] - lo[k]
        omega = 2.0 * math.pi / period
        # the remainder maps x_k = hi_k onto lo_k exactly (its derivative is 1): both faces get
        # bit-identical features, not ones equal up to the rounding of cos(2π)
        theta = torch.remainder(x[:, k] - lo[k], period) * omega  # (B,)
        c, s = torch.cos(theta), torch.sin(theta)
        values.append(torch.stack([c, s], dim=-1))
        if derivatives:
            d1s.append(seed * torch.stack([-omega * s, omega * c], dim=-1))
            d2s.append(seed * torch.stack([-omega * omega * c, -omega * omega * s], dim=-1))
    value = torch.cat(values, dim=-1)  # (B, D + len(periodic))
    if not derivatives:
        empty = value.new_zeros(0, *value.shape)
        return Jet(value, empty, empty)
    return Jet(value, torch.cat(d1s, dim=-1), torch.cat(d2s, dim=-1))
