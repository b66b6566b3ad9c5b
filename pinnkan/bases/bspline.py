"""Uniform cubic B-splines on [lo, hi] plus SiLU, in closed form with exact derivatives.

The grid has `grid_size` intervals on [lo, hi], extended by `order` knots on each side
(pykan / efficient-kan), giving grid_size + order splines; the SiLU "base" branch is one more
basis function, so n_basis = grid_size + order + 1 and a whole layer is one tensor A.

Only the 4 splines that are non-zero at x are evaluated (closed-form cubic pieces of the local
cell coordinate) and scattered into the dense feature layout, so the cost per input does not
grow with the grid size.
"""

from __future__ import annotations

import torch
from torch import Tensor

ORDER = 3  # cubic: the only order the closed-form pieces below cover


def local_cubic(u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The 4 uniform cubic B-spline pieces at local cell coordinate u in [0, 1), and their
    first and second derivatives in u; each (..., 4), piece m belongs to spline c - 3 + m."""
    v = 1.0 - u
    u2 = u * u
    val = torch.stack(
        [
            v * v * v / 6.0,
            (3.0 * u2 * u - 6.0 * u2 + 4.0) / 6.0,
            (-3.0 * u2 * u + 3.0 * u2 + 3.0 * u + 1.0) / 6.0,
            u2 * u / 6.0,
        ],
        dim=-1,
    )
    d1 = torch.stack([-0.5 * v * v, 1.5 * u2 - 2.0 * u, -1.5 * u2 + u + 0.5, 0.5 * u2], dim=-1)
    d2 = torch.stack([v, 3.0 * u - 2.0, 1.0 - 3.0 * u, u], dim=-1)
    return val, d1, d2


def silu_derivatives(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """silu(x) = x·σ(x) with its first and second derivatives."""
    sig = torch.sigmoid(x)
    d1 = sig * (1.0 + x * (1.0 - sig))
    d2 = sig * (1.0 - sig) * (2.0 + x * (1.0 - 2.0 * sig))
    return x * sig, d1, d2


class BSplineBasis:
    """Cubic B-spline + SiLU basis on a uniform grid; stateless apart from the knots."""

    def __init__(self, grid_size: int = 5, grid_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        if grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        lo, hi = float(grid_range[0]), float(grid_range[1])
        if not hi > lo:
            raise ValueError(f"grid_range must be increasing, got {grid_range}")
        self.grid_size = int(grid_size)
        self.grid_range = (lo, hi)
        self.h = (hi - lo) / grid_size
        self.n_splines = grid_size + ORDER
        self.n_basis = self.n_splines + 1
        self.first_knot = lo - ORDER * self.h  # left end of spline 0's support

    def _locate(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cell index c (clamped, as scatter index), local coordinate u, and an in-range mask."""
        s = (x - self.first_knot) / self.h
        cell = torch.floor(s)
        inside = (s >= 0) & (s < self.n_splines + ORDER)
        u = s - cell.detach()  # floor has no gradient: du/dx = 1/h
        # a non-finite x (a diverging run) must give NaN features, not an out-of-range index
        idx = torch.nan_to_num(cell, nan=0.0).clamp(0, self.n_splines + ORDER - 1).long()
        return idx, u, inside

    def _scatter(self, local: Tensor, idx: Tensor) -> Tensor:
        """local (..., n_in, 4) values of splines c-3..c -> dense (..., n_in, n_splines)."""
        shape = (*local.shape[:-1], self.n_splines + 2 * ORDER)
        pos = (idx.unsqueeze(-1) + torch.arange(4, device=idx.device)).expand(local.shape)
        # padded slot p holds spline p - 3; slots of splines outside 0..n_splines-1 are dropped
        dense = local.new_zeros(shape).scatter(-1, pos, local)
        return dense[..., ORDER : ORDER + self.n_splines]

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., n_in) -> phi, dphi/dx, d2phi/dx2, each (..., n_in, n_basis)."""
        idx, u, inside = self._locate(x)
        mask = inside.unsqueeze(-1).to(x.dtype)
        val, d1, d2 = (t * mask for t in local_cubic(u))
        sv, s1, s2 = silu_derivatives(x)
        inv_h = 1.0 / self.h
        return (
            torch.cat([self._scatter(val, idx), sv.unsqueeze(-1)], dim=-1),
            torch.cat([self._scatter(d1 * inv_h, idx), s1.unsqueeze(-1)], dim=-1),
            torch.cat([self._scatter(d2 * (inv_h * inv_h), idx), s2.unsqueeze(-1)], dim=-1),
        )

    def values(self, x: Tensor) -> Tensor:
        """Basis values only (no derivatives), x (..., n_in) -> (..., n_in, n_basis)."""
        idx, u, inside = self._locate(x)
        val = local_cubic(u)[0] * inside.unsqueeze(-1).to(x.dtype)
        silu = torch.nn.functional.silu(x).unsqueeze(-1)
        return torch.cat([self._scatter(val, idx), silu], dim=-1)

    def jet_features(self, x: Tensor, dx: Tensor, ddx: Tensor) -> Tensor:
        """Features of a jet in one dense block: (1 + 2D, B, n_in, n_basis) holding
        φ(x), φ'(x)·x_k and φ''(x)·x_k² + φ'(x)·x_kk for k = 1..D.

        x (B, n_in); dx, ddx (D, B, n_in). The chain rule runs on the 4 local pieces before the
        scatter, so no dense (D, B, n_in, n_basis) products are formed.
        """
        idx, u, inside = self._locate(x)
        mask = inside.unsqueeze(-1).to(x.dtype)
        inv_h = 1.0 / self.h
        val, d1, d2 = local_cubic(u)
        val, d1, d2 = val * mask, d1 * (mask * inv_h), d2 * (mask * inv_h * inv_h)
        sv, s1, s2 = silu_derivatives(x)
        # stack [value | first | second] along a new leading axis for one scatter
        dxe, ddxe = dx.unsqueeze(-1), ddx.unsqueeze(-1)  # (D, B, n_in, 1)
        spl = torch.cat([val.unsqueeze(0), d1 * dxe, d2 * dxe * dxe + d1 * ddxe], dim=0)
        silu = torch.cat([sv.unsqueeze(0), s1 * dx, s2 * dx * dx + s1 * ddx], dim=0)
        dense = self._scatter(spl, idx.expand(spl.shape[:-1]))
        return torch.cat([dense, silu.unsqueeze(-1)], dim=-1)
