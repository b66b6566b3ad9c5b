"""The PINN loss as a residual vector r(θ), loss = r·r, and its Jacobian J = ∂r/∂θ (N × P).

A layer's jet output is linear in its coefficients given its input jet:
out[c, b, j] = Σ_{i,k} F[c, b, i, k] · C[i, j, k], with F the layer's jet features
(`jet_features`: value, first and second-derivative components c) and C = A (+ ΔA). So the row
of J for residual b and the entries of C is Σ_c F[c, b, i, k] · S[c, b, j], where
S = ∂r_b/∂out[c, b, j] is the sensitivity of residual b to the layer's output jet. Points do not
interact in the forward pass, so one backward of Σ_b r_b gives every S at once: one jet pass
with zero "probes" added to each layer output, and one `autograd.grad` w.r.t. the probes.

LoTRA factors chain through ΔA = G ×1 U1 ×2 U2 ×3 U3 by contractions (no dense ∂ΔA/∂θ);
biases take S's value component. Other trainable parameters (rational denominators) enter the
features nonlinearly and get their columns by forward-mode AD (`torch.func.jacfwd`, one batched
pass per parameter tensor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from pinnkan.layers.jet import Jet
from pinnkan.network.kan import KAN
from pinnkan.pinn.loss import PinnLoss, scaled


def trainable_parameters(model: KAN) -> list[nn.Parameter]:
    """The parameters J has columns for, in `model.parameters()` order."""
    return [p for p in model.parameters() if p.requires_grad]


def _probed_pass(
    model: KAN, x: Tensor, derivatives: bool, probes: bool = True
) -> tuple[Jet, list[tuple]]:
    """Jet at x through every layer, each output plus a zero probe that requires grad.

    Returns the final jet and, per layer, (layer, features (C, B, n_in, n_d), probe
    (C, B, n_out)); the gradient of a sum of residuals w.r.t. a probe is S above. Without
    `probes` it is the same arithmetic (adding zero is exact) with nothing recorded.
    """
    jet = model.input_jet(x, derivatives)
    records = []
    for layer in model.layers:
        assert jet.d1 is not None
        n_dir = jet.d1.shape[0]
        feats = layer.jet_features(jet)  # (1 + 2D, B, n_in, n_d)
        out = torch.einsum("cbik,ijk->cbj", feats, layer.coefficients().detach())
        bias = getattr(layer, "bias", None)
        if bias is not None:
            out = torch.cat([(out[0] + bias.detach()).unsqueeze(0), out[1:]])
        if probes:
            probe = torch.zeros_like(out, requires_grad=True)
            out = out + probe
            records.append((layer, feats.detach(), probe))
        jet = Jet(out[0], out[1 : 1 + n_dir], out[1 + n_dir :])
    return jet, records


def _tucker_blocks(upd: nn.Module, f: Tensor, s: Tensor) -> dict[int, Tensor]:
    """Columns of G, U1, U2, U3 from features f (C, B, n_in, n_d) and sensitivities s (C, B, n_out),
    each (B, *factor.shape)."""
    G, U1, U2, U3 = upd.G, upd.U1, upd.U2, upd.U3
    blocks = {}
    with torch.no_grad():
        if G.requires_grad:
            fu = torch.einsum("cbik,ia,kg->cbag", f, U1, U3)  # (C, B, r1, r3)
            su = s @ U2  # (C, B, r2)
            blocks[id(G)] = torch.einsum("cbag,cbh->bahg", fu, su)
        if U1.requires_grad:
            m1 = torch.einsum("abc,jb,kc->ajk", G, U2, U3)  # (r1, n_out, n_d)
            t = torch.einsum("cbj,ajk->cbak", s, m1)
            blocks[id(U1)] = torch.einsum("cbik,cbak->bia", f, t)
        if U2.requires_grad:
            m2 = torch.einsum("abc,ia,kc->ibk", G, U1, U3)  # (n_in, r2, n_d)
            t = torch.einsum("cbik,ihk->cbh", f, m2)
            blocks[id(U2)] = torch.einsum("cbj,cbh->bjh", s, t)
        if U3.requires_grad:
            m3 = torch.einsum("abc,ia,jb->ijc", G, U1, U2)  # (n_in, n_out, r3)
            t = torch.einsum("cbj,ijg->cbig", s, m3)
            blocks[id(U3)] = torch.einsum("cbik,cbig->bkg", f, t)
    return blocks


def _structured_blocks(records: list[tuple], sens: list[Tensor]) -> dict[int, Tensor]:
    """J's column blocks (B, *param.shape) for every A, LoTRA factor and bias that trains."""
    blocks: dict[int, Tensor] = {}
    for (layer, f, _), s in zip(records, sens):
        if layer.A.requires_grad:
            blocks[id(layer.A)] = torch.einsum("cbik,cbj->bijk", f, s)
        bias = getattr(layer, "bias", None)
        if bias is not None and bias.requires_grad:
            blocks[id(bias)] = s[0]
        if layer.adapter is not None:
            blocks.update(_tucker_blocks(layer.adapter, f, s))
    return blocks


class _Residuals(nn.Module):
    """`fn()` as a module around `model`, so `torch.func.functional_call` can swap its tensors."""

    def __init__(self, model: KAN, fn: Callable[[], Tensor]) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self) -> Tensor:
        return self.fn()


def _forward_mode_blocks(
    model: KAN, residuals: Callable[[], Tensor], params: list[nn.Parameter]
) -> dict[int, Tensor]:
    """Columns (N, *p.shape) of parameters outside the structured form, by forward-mode AD."""
    names = {id(p): n for n, p in model.named_parameters()}
    wrapper = _Residuals(model, residuals)
    blocks = {}
    for p in params:
        key = f"model.{names[id(p)]}"

        def r_of(value: Tensor, key: str = key) -> Tensor:
            return torch.func.functional_call(wrapper, {key: value}, ())

        blocks[id(p)] = torch.func.jacfwd(r_of)(p.detach()).detach()
    return blocks


def _rows_from_points(
    r: Tensor, probe: Tensor, sens: Tensor, blocks: dict[int, Tensor]
) -> dict[int, Tensor]:
    """Sum per-point blocks (B, ...) into residual rows (m, ...) when a row reads several points.

    Each point must feed at most one row (pointwise residuals, pairs of periodic points): a
    second backward of Σ_m (m + 1) r_m scales each point's sensitivity by its row's m + 1.
    A point whose sensitivity is zero contributes nothing and may go to any row.
    """
    labels = torch.arange(1, r.numel() + 1, dtype=r.dtype, device=r.device)
    (scaled,) = torch.autograd.grad((r * labels).sum(), [probe])
    s = sens.transpose(0, 1).reshape(sens.shape[1], -1)  # (B, C · n_out)
    pick = s.abs().argmax(dim=1, keepdim=True)
    num = scaled.transpose(0, 1).reshape(s.shape).gather(1, pick)[:, 0]
    den = s.gather(1, pick)[:, 0]
    row = torch.where(den != 0, num / torch.where(den != 0, den, 1.0), 1.0).round().long() - 1
    out = {}
    for key, b in blocks.items():
        out[key] = b.new_zeros(r.numel(), *b.shape[1:]).index_add_(0, row, b)
    return out


class _ProbedJets:
    """`jet_of` for `PinnLoss.weighted_residuals`: the jet of `_probed_pass`, keeping each
    group's per-layer records (in group order) for the Jacobian."""

    def __init__(self, model: KAN, probes: bool) -> None:
        self.model, self.probes, self.records = model, probes, []

    def __call__(self, x: Tensor, derivatives: bool) -> Jet:
        jet, records = _probed_pass(self.model, x, derivatives, self.probes)
        self.records.append(records)
        return jet


def chunks(batch: dict[str, Tensor], rows: int) -> Iterator[dict[str, Tensor]]:
    """The batch in pieces of at most `rows` interior points, the conditions with the first.

    Only the interior is split: its residual reads one point per row, whereas a condition's
    row may read several points (periodic pairs)."""
    interior = batch["interior"]
    for start in range(0, max(interior.shape[0], 1), max(rows, 1)):
        piece = {"interior": interior[start : start + rows]}
        if start == 0:
            piece |= {k: v for k, v in batch.items() if k != "interior"}
        yield piece


def _counts(n_groups: int, interior_count: int | None) -> list[int | None]:
    return [interior_count] + [None] * (n_groups - 1)


@torch.no_grad()
def residuals(
    loss_fn: PinnLoss, model: KAN, batch: dict[str, Tensor], interior_count: int | None = None
) -> Tensor:
    """r as `residuals_and_jacobian` computes it (same arithmetic, bit for bit), without J:
    the loss of a trial step is then comparable with the loss at the current point."""
    return loss_fn.residual_vector(model, batch, interior_count, _ProbedJets(model, False))


def chunked_loss(loss_fn: PinnLoss, model: KAN, batch: dict[str, Tensor], rows: int) -> float:
    """r·r summed over `chunks(batch, rows)` in the order `normal_equations` sums it."""
    n = batch["interior"].shape[0]
    total = 0.0
    for piece in chunks(batch, rows):
        r = residuals(loss_fn, model, piece, interior_count=n)
        total += float(r @ r)
    return total


def normal_equations(
    loss_fn: PinnLoss, model: KAN, batch: dict[str, Tensor], rows: int
) -> tuple[float, Tensor, Tensor]:
    """(r·r, JᵀJ (P, P), Jᵀr (P,)) accumulated over `chunks(batch, rows)`: J is never held
    whole, only one chunk of it (rows × P) beside the Gram matrix."""
    n = batch["interior"].shape[0]
    total, gram, grad = 0.0, None, None
    for piece in chunks(batch, rows):
        r, J = residuals_and_jacobian(loss_fn, model, piece, interior_count=n)
        total += float(r @ r)
        if gram is None:
            gram, grad = J.T @ J, J.T @ r
        else:
            gram.addmm_(J.T, J)
            grad.addmv_(J.T, r)
        del J
    assert gram is not None and grad is not None
    return total, gram, grad


def residuals_and_jacobian(
    loss_fn: PinnLoss, model: KAN, batch: dict[str, Tensor], interior_count: int | None = None
) -> tuple[Tensor, Tensor]:
    """r (N,) with loss = r·r (`PinnLoss.residual_vector`) and J = ∂r/∂θ (N, P), columns in
    `trainable_parameters(model)` order, each parameter flattened row-major.
    `interior_count`: the whole batch's interior size when `batch` is one of its `chunks`."""
    params = trainable_parameters(model)
    jets = _ProbedJets(model, probes=True)
    parts = loss_fn.weighted_residuals(model, batch, jets)
    r_parts, blocks_per_group = [], []
    for (weight, res), records, count in zip(
        parts, jets.records, _counts(len(parts), interior_count)
    ):
        r = scaled(weight, res, count)
        probes = [probe for _, _, probe in records]
        n_points = probes[-1].shape[1]
        sens = torch.autograd.grad(r.sum(), probes, retain_graph=r.numel() != n_points)
        blocks = _structured_blocks(records, list(sens))
        if r.numel() != n_points:  # rows that read several points (e.g. periodic pairs)
            blocks = _rows_from_points(r, probes[-1], sens[-1], blocks)
        r_parts.append(r.detach())
        blocks_per_group.append(blocks)
    r = torch.cat(r_parts)
    missing = [p for p in params if id(p) not in blocks_per_group[0]]
    extra = {}
    if missing:
        extra = _forward_mode_blocks(
            model, lambda: loss_fn.residual_vector(model, batch, interior_count), missing
        )
    cols = []
    for p in params:
        if id(p) in extra:
            cols.append(extra[id(p)].reshape(r.numel(), -1))
        else:
            cols.append(
                torch.cat([b[id(p)].reshape(b[id(p)].shape[0], -1) for b in blocks_per_group])
            )
    return r, torch.cat(cols, dim=1)
