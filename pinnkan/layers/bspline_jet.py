"""The fused forward-derivative step of a B-spline KAN layer, with a hand-written backward.

One layer maps a jet (x, ∂x/∂z_k, ∂²x/∂z_k²) to the next with a single matmul over
1 + 2D feature blocks (see `BSplineLayer.forward_jet`). Written with plain autograd that is ~40
small ops, each with a large (1 + 2D, B, n_in, n_basis) temporary saved for backward. Here the
forward scatters the 5 non-zero local values per input (4 cubic pieces + SiLU) into one dense
block and the backward gathers the same 5 slots back, so per layer only the dense feature block
and the small (B, n_in, 5) pieces are kept.

Slot layout per input: splines 0..S-1, SiLU at S, a dummy slot S+1 that collects the pieces of
splines beyond the padded grid; the weight has a zero row there, so the dummy never contributes.
The backward is first-order only (`once_differentiable`): nested autograd through this layer
is what `train.derivatives=autograd` replaces, so nothing differentiates it twice.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pinnkan.layers.splines import (
    CUBIC_THIRD,
    ORDER,
    UniformGrid,
    local_cubic,
    silu_derivatives,
)


def _pieces(basis: UniformGrid, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Slot positions (B, 5, n) and the 5 local basis values per derivative order 0..3, each
    (B, 5, n): the 4 cubic pieces (derivatives in x, i.e. scaled by 1/h per order; zero outside
    the knots), then SiLU. The slot axis sits before the input axis so that every broadcast
    runs along contiguous memory."""
    idx, u, inside = basis.locate(x)  # (B, n) each
    mask = inside.to(x.dtype).unsqueeze(-2)  # (B, 1, n)
    n_s = basis.n_splines
    offsets = torch.arange(-ORDER, 1, device=x.device).view(4, 1)
    pos = idx.unsqueeze(-2) + offsets  # (B, 4, n): spline index of each piece
    pos = torch.where((pos >= 0) & (pos < n_s), pos, n_s + 1)
    pos = torch.cat([pos, torch.full_like(pos[:, :1], n_s)], dim=-2)

    d3 = torch.cat([torch.full_like(mask, c) for c in CUBIC_THIRD], dim=-2)  # (B, 4, n)
    cubic = [*local_cubic(u, dim=-2), d3]  # each (B, 4, n)
    silu = silu_derivatives(x, third=True)
    out = []
    for order, (spl, sil) in enumerate(zip(cubic, silu)):
        scale = mask * (1.0 / basis.h) ** order  # d/dx = (1/h) d/du
        out.append(torch.cat([spl * scale, sil.unsqueeze(-2)], dim=-2))
    return pos, out


def n_slots(basis: UniformGrid) -> int:
    """Dense slots per input: splines, SiLU, dummy."""
    return basis.n_splines + 2


def padded_weight(a: Tensor) -> Tensor:
    """A (n_in, n_out, n_basis) -> weight ((n_basis + 1) · n_in, n_out), slot-major to match the
    (B, slot, n_in) feature layout, with zero rows for the dummy slot."""
    n_out = a.shape[1]
    w = torch.nn.functional.pad(a, (0, 1))  # (n_in, n_out, n_basis + 1)
    return w.permute(2, 0, 1).reshape(-1, n_out)


SPARSE_MAX_OUT = 4  # up to this many outputs, contract the 5 local slots directly


class BSplineJetMatmul(torch.autograd.Function):
    """(x, dx, ddx, W) -> (1 + 2D, B, n_out): value, first and diagonal second derivatives of
    the layer output. x (B, n_in); dx, ddx (D, B, n_in), D may be 0; W from `padded_weight`.

    Wide layers scatter the local values into a dense (1 + 2D, B, slots, n_in) block and use
    one matmul; narrow ones (n_out <= SPARSE_MAX_OUT, e.g. the scalar output layer of a PINN)
    gather the 5 weight rows each input touches instead, which never forms the dense block.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, dx: Tensor, ddx: Tensor, w: Tensor, basis: UniformGrid):
        n_blocks, (n_batch, n_in), n_out = 1 + 2 * dx.shape[0], x.shape, w.shape[1]
        pos, (p0, p1, p2, p3) = _pieces(basis, x)
        dxe, ddxe = dx.unsqueeze(-2), ddx.unsqueeze(-2)  # (D, B, 1, n)
        local = torch.cat([p0.unsqueeze(0), p1 * dxe, p2 * dxe * dxe + p1 * ddxe], 0)
        rows = pos * n_in + torch.arange(n_in, device=x.device)  # (B, 5, n): rows of W
        if n_out <= SPARSE_MAX_OUT:
            wsel = w.T[:, rows]  # (n_out, B, 5, n)
            out = (local.unsqueeze(1) * wsel).sum((-2, -1)).transpose(1, 2)  # (1 + 2D, B, n_out)
            saved = local
        else:
            feats = x.new_zeros(n_blocks, n_batch * n_slots(basis) * n_in)
            # duplicates only in the dummy slot, whose weight row is zero
            index = _block_index(rows, n_slots(basis)).expand(n_blocks, -1)
            feats.scatter_(1, index, local.view(n_blocks, -1))
            saved = feats.view(n_blocks * n_batch, -1)
            out = (saved @ w).view(n_blocks, n_batch, n_out)
        ctx.save_for_backward(dx, ddx, w, rows, p1, p2, p3, saved)
        ctx.n_slots = n_slots(basis)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor):
        dx, ddx, w, rows, p1, p2, p3, saved = ctx.saved_tensors
        n_blocks, n_dir, n_out = g.shape[0], dx.shape[0], w.shape[1]
        if n_out <= SPARSE_MAX_OUT:
            gt = g.transpose(1, 2)[..., None, None]  # (1 + 2D, n_out, B, 1, 1)
            gw = None
            if ctx.needs_input_grad[3]:
                contrib = (saved.unsqueeze(1) * gt).sum(0)  # (n_out, B, 5, n)
                gw = w.new_zeros(n_out, w.shape[0])
                gw.index_add_(1, rows.reshape(-1), contrib.reshape(n_out, -1))
                gw = gw.T
            gl = (gt * w.T[:, rows]).sum(1)  # (1 + 2D, B, 5, n)
        else:
            g_flat = g.reshape(-1, n_out)
            gw = saved.T @ g_flat if ctx.needs_input_grad[3] else None
            if not any(ctx.needs_input_grad[:3]):
                return None, None, None, gw, None
            gf = g_flat @ w.T.contiguous()  # (B (1 + 2D), slots · n)
            index = _block_index(rows, ctx.n_slots).expand(n_blocks, -1)
            gl = gf.view(n_blocks, -1).gather(1, index).view(n_blocks, *rows.shape)
        g0, gk, hk = gl[0], gl[1 : 1 + n_dir], gl[1 + n_dir :]
        dxe, ddxe = dx.unsqueeze(-2), ddx.unsqueeze(-2)
        # F0 = φ, F1k = φ' x_k, F2k = φ'' x_k² + φ' x_kk: differentiate each w.r.t. x, x_k, x_kk
        gx = g0 * p1 + (gk * p2 * dxe + hk * (p3 * dxe * dxe + p2 * ddxe)).sum(0)
        gdx = gk * p1 + 2.0 * hk * p2 * dxe
        gddx = hk * p1
        return gx.sum(-2), gdx.sum(-2), gddx.sum(-2), gw, None


def _block_index(rows: Tensor, slots: int) -> Tensor:
    """Flat positions (1, B · 5 · n_in) in one (B, slots · n_in) block of the W rows (B, 5, n_in);
    the same for every derivative block, so it is expanded, not materialised, per block."""
    n_batch = rows.shape[0]
    batch_off = torch.arange(n_batch, device=rows.device).view(-1, 1, 1) * (slots * rows.shape[-1])
    return (rows + batch_off).view(1, -1)


def bspline_jet_matmul(basis: UniformGrid, x: Tensor, dx: Tensor, ddx: Tensor, a: Tensor) -> Tensor:
    """Fused jet step of one layer with coefficients a (n_in, n_out, n_basis)."""
    return BSplineJetMatmul.apply(x, dx, ddx, padded_weight(a), basis)
