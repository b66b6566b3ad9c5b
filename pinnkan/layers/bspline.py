"""The B-spline KAN layer (`model=bspline`): cubic B-splines on a uniform grid plus SiLU, in
closed form with exact derivatives, folded into one tensor A (n_in, n_out, grid_size + 4).

The grid's grid_size + 3 splines plus the SiLU "base" branch give n_basis = grid_size + 4.
Only the 4 splines that are non-zero at x are evaluated (closed-form cubic pieces of the local
cell coordinate, `pinnkan.layers.splines`) and scattered into the dense feature layout, so the
cost per input does not grow with the grid size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pinnkan.common.config_checks import as_float
from pinnkan.layers.base import BasisLayer, LayerContext, LayerKind, NetworkModel, check_range
from pinnkan.layers.bspline_jet import bspline_jet_matmul
from pinnkan.layers.jet import Jet
from pinnkan.layers.splines import (
    GRID_RANGE,
    ORDER,
    UniformGrid,
    check_grid_size,
    local_cubic,
    silu_derivatives,
)


@dataclass
class BSplineModel(NetworkModel):
    """`model=bspline`: cubic B-spline + SiLU KAN; hidden widths and the layer options."""

    name: str = "bspline"
    hidden: list[int] = field(default_factory=lambda: [16, 16])  # Adam did best at [32, 32]
    grid_size: int = 5  # intervals on grid_range
    grid_range: list[float] = field(default_factory=lambda: list(GRID_RANGE))
    spline_scale: float = 0.1  # init: spline coefficients this much smaller than SiLU weights


class BSplineBasis(UniformGrid):
    """Cubic B-spline + SiLU basis on a uniform grid; stateless apart from the knots."""

    def __init__(
        self,
        grid_size: int = BSplineModel.grid_size,
        grid_range: tuple[float, float] = GRID_RANGE,
    ) -> None:
        super().__init__(grid_size, grid_range)
        self.n_basis = self.n_splines + 1

    def _scatter(self, local: Tensor, idx: Tensor) -> Tensor:
        """local (..., n_in, 4) values of splines c-3..c -> dense (..., n_in, n_splines)."""
        shape = (*local.shape[:-1], self.n_splines + 2 * ORDER)
        pos = (idx.unsqueeze(-1) + torch.arange(4, device=idx.device)).expand(local.shape)
        # padded slot p holds spline p - 3; slots of splines outside 0..n_splines-1 are dropped
        dense = local.new_zeros(shape).scatter(-1, pos, local)
        return dense[..., ORDER : ORDER + self.n_splines]

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., n_in) -> phi, dphi/dx, d2phi/dx2, each (..., n_in, n_basis)."""
        idx, *pieces = self.local_pieces(x)
        silu = silu_derivatives(x)
        val, d1, d2 = (
            torch.cat([self._scatter(p, idx), s.unsqueeze(-1)], dim=-1)
            for p, s in zip(pieces, silu)
        )
        return val, d1, d2

    def values(self, x: Tensor) -> Tensor:
        """Basis values only (no derivatives), x (..., n_in) -> (..., n_in, n_basis)."""
        idx, u, inside = self.locate(x)
        val = local_cubic(u)[0] * inside.unsqueeze(-1).to(x.dtype)
        silu = torch.nn.functional.silu(x).unsqueeze(-1)
        return torch.cat([self._scatter(val, idx), silu], dim=-1)

    def derivatives(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., n_in) -> φ, φ', φ'', each (..., n_in, n_basis)."""
        return self(x)

    def jet_features(self, x: Tensor, dx: Tensor, ddx: Tensor) -> Tensor:
        """Features of a jet in one dense block: (1 + 2D, B, n_in, n_basis) holding
        φ(x), φ'(x)·x_k and φ''(x)·x_k² + φ'(x)·x_kk for k = 1..D.

        x (B, n_in); dx, ddx (D, B, n_in). The chain rule runs on the 4 local pieces before the
        scatter, so no dense (D, B, n_in, n_basis) products are formed.
        """
        idx, val, d1, d2 = self.local_pieces(x)
        sv, s1, s2 = silu_derivatives(x)
        # stack [value | first | second] along a new leading axis for one scatter
        dxe, ddxe = dx.unsqueeze(-1), ddx.unsqueeze(-1)  # (D, B, n_in, 1)
        spl = torch.cat([val.unsqueeze(0), d1 * dxe, d2 * dxe * dxe + d1 * ddxe], dim=0)
        silu = torch.cat([sv.unsqueeze(0), s1 * dx, s2 * dx * dx + s1 * ddx], dim=0)
        dense = self._scatter(spl, idx.expand(spl.shape[:-1]))
        return torch.cat([dense, silu.unsqueeze(-1)], dim=-1)


class BSplineLayer(BasisLayer):
    """B-spline + SiLU KAN layer, A (n_in, n_out, grid_size + 4), with the fused jet step."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        basis: BSplineBasis,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        spline_scale: float = BSplineModel.spline_scale,
    ) -> None:
        # SiLU slot N(0, 1/n_in), spline slots `spline_scale` times smaller (efficient-kan's
        # habit): the network starts close to a smooth SiLU MLP, whose second derivatives are
        # moderate, instead of a rough spline sum whose u_xx makes the first PDE losses huge.
        a = torch.randn(n_in, n_out, basis.n_basis, generator=generator, dtype=dtype) / n_in**0.5
        a[..., : basis.n_splines] *= spline_scale
        std = torch.ones(basis.n_basis, dtype=torch.float64) / n_in**0.5
        std[: basis.n_splines] *= spline_scale
        super().__init__(basis, a.to(device), torch.diag(std))

    def jet_features(self, jet: Jet) -> Tensor:
        """(1 + 2D, B, n_in, n_d) jet features (see `BasisLayer.jet_features`), by plain ops."""
        assert jet.d1 is not None and jet.d2 is not None
        return self.basis.jet_features(jet.value, jet.d1, jet.d2)

    def forward_jet(self, jet: Jet, fused: bool = True) -> Jet:
        """Push (value, first and diagonal second derivatives) through the layer exactly.

        `fused` uses the hand-written backward of `bspline_jet` (fast, first-order only);
        otherwise plain autograd ops (differentiable twice, and what torch.compile traces).
        """
        x, dx, ddx = jet.value, jet.d1, jet.d2  # (B, n_in), (D, B, n_in), (D, B, n_in)
        assert dx is not None and ddx is not None
        if not fused:
            return self.contract_jet(self.basis.jet_features(x, dx, ddx))
        n_dir = dx.shape[0]
        out = bspline_jet_matmul(self.basis, x, dx, ddx, self.coefficients())
        return Jet(out[0], out[1 : 1 + n_dir], out[1 + n_dir :])


def make_bspline_layer(
    n_in: int,
    n_out: int,
    ctx: LayerContext,
    grid_size: int,
    grid_range: list[float],
    spline_scale: float,
) -> BSplineLayer:
    """One B-spline layer of the network (`LayerKind.make`)."""
    basis = BSplineBasis(grid_size, (grid_range[0], grid_range[1]))
    return BSplineLayer(n_in, n_out, basis, spline_scale=spline_scale, **ctx.tensor_kw)


KIND = LayerKind(
    make_bspline_layer,
    BSplineModel,
    {
        "grid_size": check_grid_size,
        "grid_range": check_range,
        "spline_scale": lambda v, n: as_float(v, n, 0.0, lo_open=True),
    },
    init_only=("spline_scale",),
)
