"""Uniform cubic B-spline pieces shared by the B-spline layer, its fused jet kernel and lmKAN:
the knot grid with its cell location, the closed-form cubic pieces, SiLU and its derivatives.

The grid has `grid_size` intervals on [lo, hi], extended by `ORDER` knots on each side
(pykan / efficient-kan), giving grid_size + ORDER splines. At a point x only the 4 splines of
its cell are non-zero; they are cubic polynomials of the local cell coordinate u in [0, 1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pinnkan.common.config_checks import as_int

ORDER = 3  # cubic: the only order the closed-form pieces below cover
GRID_RANGE = (-1.0, 1.0)  # default grid_range of the spline kinds

# third u-derivatives of the 4 cubic pieces (constant in u)
CUBIC_THIRD = (-1.0, 3.0, -3.0, 1.0)


def check_grid_size(value: Any, name: str) -> int:
    """A grid size option: an integer in [1, 1000]."""
    return as_int(value, name, 1, 1000)


def local_cubic(u: Tensor, dim: int = -1) -> tuple[Tensor, Tensor, Tensor]:
    """The 4 uniform cubic B-spline pieces at local cell coordinate u in [0, 1), and their
    first and second derivatives in u, stacked along a new axis `dim` of size 4 (e.g.
    (..., 4)); piece m belongs to spline c - 3 + m."""
    v = 1.0 - u
    u2 = u * u
    val = torch.stack(
        [
            v * v * v / 6.0,
            (3.0 * u2 * u - 6.0 * u2 + 4.0) / 6.0,
            (-3.0 * u2 * u + 3.0 * u2 + 3.0 * u + 1.0) / 6.0,
            u2 * u / 6.0,
        ],
        dim=dim,
    )
    d1 = torch.stack([-0.5 * v * v, 1.5 * u2 - 2.0 * u, -1.5 * u2 + u + 0.5, 0.5 * u2], dim=dim)
    d2 = torch.stack([v, 3.0 * u - 2.0, 1.0 - 3.0 * u, u], dim=dim)
    return val, d1, d2


def silu_derivatives(x: Tensor, third: bool = False) -> tuple[Tensor, ...]:
    """silu(x) = x·σ(x) with its first and second derivatives (and the third when `third`)."""
    sig = torch.sigmoid(x)
    q = sig * (1.0 - sig)  # σ'
    w = 1.0 - 2.0 * sig
    out = (x * sig, sig * (1.0 + x * (1.0 - sig)), q * (2.0 + x * w))
    if third:
        return (*out, q * (w * (3.0 + x * w) - 2.0 * x * q))
    return out


class UniformGrid:
    """The knots of the cubic splines: `grid_size` cells of width h on `grid_range`, extended
    by ORDER cells on each side (n_cells = n_splines + ORDER cells in all)."""

    def __init__(self, grid_size: int, grid_range: tuple[float, float] = GRID_RANGE) -> None:
        if grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        lo, hi = float(grid_range[0]), float(grid_range[1])
        if not hi > lo:
            raise ValueError(f"grid_range must be increasing, got {grid_range}")
        self.grid_size = int(grid_size)
        self.grid_range = (lo, hi)
        self.h = (hi - lo) / grid_size
        self.n_splines = self.grid_size + ORDER
        self.n_cells = self.n_splines + ORDER
        self.first_knot = lo - ORDER * self.h  # left end of spline 0's support

    def cell_coordinate(self, x: Tensor) -> Tensor:
        """s = (x - first_knot) / h: x in cells of the extended knot range (cell c is [c, c+1))."""
        return (x - self.first_knot) / self.h

    def locate(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cell index c (long, clamped to 0..n_cells - 1), local coordinate u = s - c in [0, 1)
        and the mask of x inside the knots (bool); each shaped like x. Pieces of a cell belong
        to splines c - 3 .. c, and all splines vanish where the mask is False."""
        s = self.cell_coordinate(x)
        cell = torch.floor(s).detach()  # floor has no gradient: du/dx = 1/h
        inside = (s >= 0) & (s < self.n_cells)
        # a non-finite x (a diverging run) must give NaN features, not an out-of-range index
        idx = torch.nan_to_num(cell, nan=0.0).clamp(0, self.n_cells - 1).long()
        return idx, s - cell, inside

    def local_pieces(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Cell index (..., n) and the 4 pieces of its splines at x with their first and second
        derivatives in x, each (..., n, 4), zero outside the knots."""
        idx, u, inside = self.locate(x)
        mask = inside.unsqueeze(-1).to(x.dtype)
        inv_h = 1.0 / self.h  # d/dx = (1/h) d/du
        val, d1, d2 = local_cubic(u)
        return idx, val * mask, d1 * (mask * inv_h), d2 * (mask * inv_h * inv_h)

    def locate_extrapolated(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Cell index clamped to the cells of grid_range (ORDER .. ORDER + grid_size - 1) and
        the coordinate u = s - c, which leaves [0, 1) beyond grid_range so that the boundary
        cell's cubic is continued; a non-finite x gives a NaN u, not a crash."""
        s = self.cell_coordinate(x)
        cell = torch.nan_to_num(torch.floor(s), nan=ORDER)
        cell = cell.clamp(ORDER, ORDER + self.grid_size - 1).detach()
        return cell.long(), s - cell
