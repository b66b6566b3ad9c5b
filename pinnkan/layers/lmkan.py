"""The lookup multivariate KAN layer (`model=lmkan`, lmKAN, seed 002) with a C² bicubic cell
basis, and its layer factory.

    y_j = Σ_p f_jp(x_{a(p)}, x_{b(p)}),   f_jp(u, v) = Σ_{cx,cy} A[p, j, cx·n + cy] N_cx(u) N_cy(v)

N_c are pinnkan's uniform cubic B-splines on `grid_size` intervals of `grid_range`, extended by
3 knots each side (n = grid_size + 3 splines per axis, n_d = n² cells). Pairs are
a(p) = 2p, b(p) = (2p + 1) mod n_in, so an odd width wraps around: n_in = 1 gives the single
pair (x0, x0) (f(x, x), a 1-D spline of the diagonal), n_in = 3 gives (x0, x1), (x2, x0).

Each point and pair needs only the 4×4 splines that are non-zero in its cell, found by one
floor per axis: their 16 coefficient rows are gathered and contracted with the 16 weights of
each jet component, so the cost per point does not depend on the grid size (no dense
(B, n_pairs, n_d) features, no matmul over the cells).

Beyond grid_range (`outside`): "extrapolate" (default) continues the bicubic polynomial of the
boundary cell, as the seed's kernel continues its bilinear cell; f stays C^∞ across the
boundary, and a polynomial of degree ≤ 3 per axis (such as the init) is continued exactly.
"zero" is the 1-D basis' rule: every spline is zero outside its support, so f tapers to zero
on [lo - 3h, lo] and [hi, hi + 3h] and vanishes beyond (C² throughout, but the taper puts
O(1/h²) curvature wherever a hidden value leaves the grid).
There is no base (SiLU) branch, as in the seed: the init writes a random near-linear
quadratic into A instead (see `_init_tensor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pinnkan.common.config_checks import as_choice, as_float
from pinnkan.layers.base import CoefficientLayer, LayerContext, LayerKind, NetworkModel, check_range
from pinnkan.layers.jet import Jet
from pinnkan.layers.splines import GRID_RANGE, ORDER, UniformGrid, check_grid_size, local_cubic

GAIN = 0.5  # linear-part gain of the init, keeps hidden values mostly inside grid_range
OUTSIDE = ("extrapolate", "zero")  # what f does beyond grid_range (see the module docstring)


@dataclass
class LookupKANModel(NetworkModel):
    """`model=lmkan`: lookup multivariate KAN; hidden widths and the layer options."""

    name: str = "lmkan"
    hidden: list[int] = field(default_factory=lambda: [8, 8])
    grid_size: int = 5  # intervals per axis on grid_range
    grid_range: list[float] = field(default_factory=lambda: list(GRID_RANGE))
    outside: str = "extrapolate"  # one of OUTSIDE
    scale: float = 0.3  # init: quadratic terms of the random start, relative to the linear ones


def greville(grid_size: int, grid_range: tuple[float, float]) -> Tensor:
    """Greville abscissae of the grid_size + 3 cubic splines, float64 (grid_size + 3,).

    Σ_c ξ_c N_c(x) = x on grid_range, which is how the init writes a linear map into A.
    """
    lo, hi = grid_range
    h = (hi - lo) / grid_size
    return lo + (torch.arange(grid_size + ORDER, dtype=torch.float64) - 1.0) * h


class LookupKANLayer(CoefficientLayer):
    """lmKAN layer: sums of bicubic 2-D splines of input pairs; A (n_pairs, n_out, n_d)."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        grid_size: int = LookupKANModel.grid_size,
        grid_range: tuple[float, float] = GRID_RANGE,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        scale: float = LookupKANModel.scale,
        outside: str = LookupKANModel.outside,
    ) -> None:
        super().__init__()
        if n_in < 1 or n_out < 1:
            raise ValueError(f"widths must be positive, got n_in={n_in}, n_out={n_out}")
        grid = self.grid = UniformGrid(grid_size, grid_range)  # the same knots on both axes
        if outside not in OUTSIDE:
            raise ValueError(f"outside={outside!r}: choose one of {', '.join(OUTSIDE)}")
        self.outside = outside
        self.n_in, self.n_out = n_in, n_out
        self.grid_size, self.grid_range, self.h = grid.grid_size, grid.grid_range, grid.h
        self.n_pairs = (n_in + 1) // 2
        self.n_splines = grid.n_splines  # per axis
        self.n_d = self.n_splines**2
        self.n_pad = self.n_splines + 2 * ORDER  # padded table side: slot q holds spline q - 3

        pairs = torch.arange(self.n_pairs)
        self.register_buffer("idx_a", 2 * pairs, persistent=False)
        self.register_buffer("idx_b", (2 * pairs + 1) % n_in, persistent=False)
        # flat offsets of the 4×4 slots of a cell in the padded (n_pad, n_pad) table
        m = torch.arange(4)
        self.register_buffer(
            "slot_offsets", (m[:, None] * self.n_pad + m[None, :]).reshape(16), persistent=False
        )
        self.register_buffer("pair_offsets", pairs * self.n_pad**2, persistent=False)
        self.to(device)

        self._scale = float(scale)  # curvature share of the init (`init_factor`)
        self.A = nn.Parameter(self._init_tensor(generator, dtype).to(device))
        self.adapter = None

    def _init_tensor(self, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
        """A random quadratic f_jp(u, v) written exactly into the splines (grid independent).

        f_jp = α u + β v + γ1 u² + γ2 u v + γ3 v², α, β ~ N(0, GAIN²/(2 n_pairs)) and the γ's
        `scale` times that: the layer starts as a near-linear map with a little curvature,
        the same function for every grid size. A[p, j, :] = L (α, β, γ1, γ2, γ3) / std with
        L = `init_factor()`.
        """
        w = torch.randn(5, self.n_pairs, self.n_out, generator=generator, dtype=torch.float64)
        t = torch.einsum("mpj,dm->pjd", w, self.init_factor())
        return t.to(dtype)

    def init_factor(self) -> Tensor:
        """L (n_d, 5), float64: the five monomials u, v, u² - h²/3, u v, v² - h²/3 as spline
        coefficients (Marsden's identity: x = Σ ξ_c N_c(x), x² = Σ (ξ_c² - h²/3) N_c(x) on
        grid_range), each scaled by its init std; A[p, j, :] = L z, z ~ N(0, I_5)."""
        std = GAIN / math.sqrt(2 * self.n_pairs)
        xi = greville(self.grid_size, self.grid_range)
        x, y = xi[:, None], xi[None, :]  # (n, 1), (1, n): axis of u, axis of v
        sq, one = self.h**2 / 3.0, torch.ones_like(x * y)
        monomials = [x * one, y * one, (x * x - sq) * one, x * y, (y * y - sq) * one]
        scales = [std, std, std * self._scale, std * self._scale, std * self._scale]
        return torch.stack([m.reshape(-1) * s for m, s in zip(monomials, scales)], 1)

    def table(self) -> Tensor:
        """The 4-way view of the effective coefficients, (gx, gy, n_out, n_pairs) (seed layout)."""
        n = self.n_splines
        return self.coefficients().reshape(self.n_pairs, self.n_out, n, n).permute(2, 3, 1, 0)

    def _rows(self) -> Tensor:
        """Coefficients as a zero-padded lookup table, (n_pairs · n_pad², n_out).

        The 3 zero slots on each side stand for splines outside 0..n-1, so every cell of the
        extended range reads a full 4×4 block without clamping the spline indices.
        """
        n, q = self.n_splines, ORDER
        t = self.coefficients().reshape(self.n_pairs, self.n_out, n, n)
        t = F.pad(t, (q, q, q, q))  # (n_pairs, n_out, n_pad, n_pad)
        return t.permute(0, 2, 3, 1).reshape(-1, self.n_out)

    def _axis(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One axis: cell index and the 4 local spline values, d/dx, d²/dx², each (..., 4)."""
        inv_h = 1.0 / self.h
        if self.outside == "extrapolate":
            # beyond grid_range the boundary cell's cubic is continued (u leaves [0, 1)), as
            # the seed continues its bilinear cell
            idx, u = self.grid.locate_extrapolated(x)
            val, d1, d2 = local_cubic(u)  # piece m is spline idx - 3 + m
            return idx, val, d1 * inv_h, d2 * (inv_h * inv_h)
        return self.grid.local_pieces(x)

    def _lookup(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Gathered rows (B, n_pairs, 16, n_out) and the 1-D pieces of both axes (B, n_pairs, 4)."""
        ia, *pa = self._axis(x[:, self.idx_a])  # (B, n_pairs), 3 × (B, n_pairs, 4)
        ib, *pb = self._axis(x[:, self.idx_b])
        base = self.pair_offsets + ia * self.n_pad + ib  # (B, n_pairs) top-left slot of the cell
        flat = (base.unsqueeze(-1) + self.slot_offsets).reshape(-1)  # (B · n_pairs · 16,)
        rows = self._rows().index_select(0, flat)
        return rows.reshape(x.shape[0], self.n_pairs, 16, self.n_out), tuple(pa), tuple(pb)

    @staticmethod
    def _outer(wa: Tensor, wb: Tensor) -> Tensor:
        """(..., 4) ⊗ (..., 4) -> (..., 16), slot order (ma, mb) row-major like slot_offsets."""
        return (wa.unsqueeze(-1) * wb.unsqueeze(-2)).flatten(-2)

    def _contract(self, w: Tensor, rows: Tensor) -> Tensor:
        """w (C, B, n_pairs, 16) · rows (B, n_pairs, 16, n_out) -> (C, B, n_out)."""
        n_comp, n_batch = w.shape[0], w.shape[1]
        w = w.permute(1, 0, 2, 3).reshape(n_batch, n_comp, -1)  # (B, C, n_pairs · 16)
        out = torch.bmm(w, rows.reshape(n_batch, -1, self.n_out))  # (B, C, n_out)
        return out.transpose(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, n_in) -> (B, n_out)."""
        if x.dim() != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"expected input of shape (B, {self.n_in}), got {tuple(x.shape)}")
        rows, (va, _, _), (vb, _, _) = self._lookup(x)
        return self._contract(self._outer(va, vb).unsqueeze(0), rows)[0]

    def _jet_weights(self, jet: Jet) -> tuple[Tensor, Tensor]:
        """The 1 + 2D jet components as weights on each cell's 16 rows, (1 + 2D, B, n_pairs, 16),
        and the flat padded-table position of every slot (B, n_pairs, 16), per pair."""
        x, dx, ddx = jet.value, jet.d1, jet.d2  # (B, n_in), (D, B, n_in), (D, B, n_in)
        assert dx is not None and ddx is not None
        ia, va, da, sa = self._axis(x[:, self.idx_a])  # (B, n_pairs), 3 × (B, n_pairs, 4)
        ib, vb, db, sb = self._axis(x[:, self.idx_b])
        ua, ub = dx[..., self.idx_a].unsqueeze(-1), dx[..., self.idx_b].unsqueeze(-1)
        uua, uub = ddx[..., self.idx_a].unsqueeze(-1), ddx[..., self.idx_b].unsqueeze(-1)
        # 2-D basis and its partials, each (B, n_pairs, 16); directions broadcast in front
        f, fu, fv = self._outer(va, vb), self._outer(da, vb), self._outer(va, db)
        fuu, fuv, fvv = self._outer(sa, vb), self._outer(da, db), self._outer(va, sb)
        first = fu * ua + fv * ub  # (D, B, n_pairs, 16)
        second = fuu * ua * ua + 2.0 * fuv * ua * ub + fvv * ub * ub + fu * uua + fv * uub
        slots = (ia * self.n_pad + ib).unsqueeze(-1) + self.slot_offsets  # (B, n_pairs, 16)
        return torch.cat([f.unsqueeze(0), first, second], dim=0), slots

    def jet_features(self, jet: Jet) -> Tensor:
        """(1 + 2D, B, n_pairs, n_d): the jet output is these contracted with A over
        (n_pairs, n_d), as for the other layer kinds (used by `pinnkan.pinn.jacobian`)."""
        w, slots = self._jet_weights(jet)
        n = self.n_splines
        dense = w.new_zeros(*w.shape[:-1], self.n_pad * self.n_pad)
        dense = dense.scatter(-1, slots.expand_as(w), w)  # a cell's 16 slots are distinct
        dense = dense.unflatten(-1, (self.n_pad, self.n_pad))[
            ..., ORDER : ORDER + n, ORDER : ORDER + n
        ]
        return dense.flatten(-2)

    def forward_jet(self, jet: Jet, fused: bool = True) -> Jet:
        """Push (value, first and diagonal second derivatives) through the layer exactly.

        With u = x_a, v = x_b and f = f_jp:
        y_k  = Σ_p f_u u_k + f_v v_k
        y_kk = Σ_p f_uu u_k² + 2 f_uv u_k v_k + f_vv v_k² + f_u u_kk + f_v v_kk
        All 1 + 2D components are weights on the same 16 gathered rows, contracted in one bmm.
        `fused` is accepted for BSplineLayer's interface; there is one path, made of plain autograd
        ops (differentiable twice, traceable by torch.compile).
        """
        del fused
        assert jet.d1 is not None
        n_dir, n_batch = jet.d1.shape[0], jet.value.shape[0]
        w, slots = self._jet_weights(jet)  # (1 + 2D, B, n_pairs, 16), (B, n_pairs, 16)
        flat = (slots + self.pair_offsets.unsqueeze(-1)).reshape(-1)
        rows = self._rows().index_select(0, flat).reshape(n_batch, self.n_pairs, 16, self.n_out)
        out = self._contract(w, rows)
        return Jet(out[0], out[1 : 1 + n_dir], out[1 + n_dir :])


def make_lmkan_layer(
    n_in: int,
    n_out: int,
    ctx: LayerContext,
    grid_size: int,
    grid_range: list[float],
    outside: str,
    scale: float,
) -> LookupKANLayer:
    """lmKAN: sums of bicubic 2-D functions of input pairs (docs/lmkan.md)."""
    lo_hi = (grid_range[0], grid_range[1])
    return LookupKANLayer(
        n_in,
        n_out,
        grid_size=grid_size,
        grid_range=lo_hi,
        outside=outside,
        scale=scale,
        **ctx.tensor_kw,
    )


KIND = LayerKind(
    make_lmkan_layer,
    LookupKANModel,
    {
        "grid_size": check_grid_size,
        "grid_range": check_range,
        "outside": lambda v, n: as_choice(v, n, OUTSIDE),
        "scale": lambda v, n: as_float(v, n, 0.0),
    },
    init_only=("scale",),
)
