"""Rank growth (`adapter.grow_to`): LoTRA's ranks start at cr's and rise when the fit stalls
above the tolerance, up to the ranks of the ceiling cr `grow_to`.

A stall is `patience` accepted LM steps without the training loss halving, or LM converged
(no step lowers the loss). Each growth doubles the working cr (at most `grow_to`) and gives
every LoTRA layer the ranks of that cr. The update keeps its value: G's new entries are zero,
and the factors' new columns are the leading directions of the loss gradient ∂L/∂A that the old
columns do not span (each factor's columns stay orthonormal to the new ones), so the
Gauss–Newton step through the new block of G moves the network where the loss falls fastest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pinnkan.adapters.kinds import loss_gradients
from pinnkan.adapters.tucker import FACTORS, TuckerUpdate, ranks_from_cr, unfold
from pinnkan.network.kan import KAN

MODE_FACTORS = FACTORS[1:]  # U1, U2, U3: the factors of modes 1, 2, 3


def new_directions(old: Tensor, grad_unfolded: Tensor, k: int) -> Tensor:
    """`k` orthonormal columns (dim, k) outside the span of `old`'s columns (dim, r): first the
    leading left singular vectors of the gradient's unfolding with that span projected out,
    then (where the gradient has fewer such directions) the coordinate axes, in order."""
    dim = old.shape[0]
    q, _ = torch.linalg.qr(old.double())  # (dim, r): the span to stay out of
    picked: list[Tensor] = []

    def take(v: Tensor) -> None:
        basis = torch.cat([q, *[p.unsqueeze(1) for p in picked]], dim=1)
        for _ in range(2):  # twice is enough for Gram–Schmidt in floating point
            v = v - basis @ (basis.T @ v)
        norm = float(v.norm())
        if norm > 1e-8:
            picked.append(v / norm)

    g = grad_unfolded.double()
    g = g - q @ (q.T @ g)
    u, s, _ = torch.linalg.svd(g, full_matrices=False)
    tiny = 1e-10 * float(s.max()) if s.numel() and float(s.max()) > 0 else float("inf")
    for j in range(u.shape[1]):
        if len(picked) == k or float(s[j]) <= tiny:
            break
        take(u[:, j])
    eye = torch.eye(dim, dtype=torch.float64)
    for j in range(dim):
        if len(picked) == k:
            break
        take(eye[:, j])
    assert len(picked) == k, "a mode's rank cannot exceed its size"
    return torch.stack(picked, dim=1).to(old.dtype)


@torch.no_grad()
def grown_update(upd: TuckerUpdate, ranks: tuple[int, int, int], grad: Tensor) -> TuckerUpdate:
    """A TuckerUpdate with `ranks` (each >= the old) whose ΔA equals `upd`'s: G padded with
    zeros, each factor's new columns from `new_directions` of `grad` (∂L/∂A, the layer's shape)."""
    A_dtype, device = upd.G.dtype, upd.G.device
    new = TuckerUpdate(upd.shape, ranks, dtype=A_dtype, device=device)  # type: ignore[arg-type]
    r1, r2, r3 = upd.ranks
    new.G[:r1, :r2, :r3] = upd.G
    for m, name in enumerate(MODE_FACTORS):
        old, target = getattr(upd, name), getattr(new, name)
        r = old.shape[1]
        target[:, :r] = old
        if ranks[m] > r:
            extra = new_directions(old, unfold(grad.to(device), m), ranks[m] - r)
            target[:, r:] = extra.to(device)
    return new


def grow_ranks(model: KAN, cr: float, grads: list[Tensor]) -> bool:
    """Give every LoTRA layer of `model` the ranks of `cr` (never fewer than it has), keeping
    each ΔA; `grads[i]` is ∂L/∂A of layer i. Returns whether any rank grew."""
    grew = False
    for layer, grad in zip(model.layers, grads):
        upd = layer.adapter
        if upd is None:
            continue
        want = ranks_from_cr(upd.shape, cr)
        ranks = tuple(max(a, b) for a, b in zip(upd.ranks, want))
        if ranks != tuple(upd.ranks):
            layer.adapter = grown_update(upd, ranks, grad)  # type: ignore[arg-type]
            grew = True
    return grew


def match_ranks(model: KAN, state: dict[str, Tensor]) -> None:
    """Resize `model`'s LoTRA updates to the ranks of a saved state dict (a resumed run that had
    grown), so that `load_state_dict` then fills them."""
    for i, layer in enumerate(model.layers):
        G = state.get(f"layers.{i}.adapter.G")
        if layer.adapter is None or G is None or tuple(G.shape) == tuple(layer.adapter.ranks):
            continue
        old = layer.adapter
        layer.adapter = TuckerUpdate(
            old.shape,
            tuple(G.shape),  # type: ignore[arg-type]
            dtype=old.G.dtype,
            device=old.G.device,
        )


@dataclass
class RankGrowth:
    """When a LoTRA run grows its ranks, and to what (`adapter.grow_to`, `grow_patience`)."""

    groups: Callable[[KAN], list[dict[str, Any]]]  # the optimizer groups of a model
    cr: float  # the working cr: cr's at the start, doubled at each growth
    ceiling: float  # grow_to
    patience: int  # accepted steps without the loss halving that count as a stall
    anchor: float = float("inf")  # the loss when it last halved (or at the last growth)
    since: int = 0  # accepted steps since then
    events: list[dict[str, float]] = field(default_factory=list)  # {step, cr} per growth

    def due(self, kept: bool, loss: float, converged: bool, met: bool) -> bool:
        """Whether to grow after this step: a stall (or LM converged) above the tolerance,
        with room below the ceiling."""
        if kept:
            if loss <= self.anchor / 2:
                self.anchor, self.since = loss, 0
            else:
                self.since += 1
        stalled = converged or self.since >= self.patience
        return stalled and not met and self.cr < self.ceiling

    def grow(
        self,
        model: KAN,
        loss_fn: Callable[[KAN, dict[str, Tensor]], Tensor],
        batch: dict[str, Tensor],
        step: int,
    ) -> bool:
        """Double the working cr (at most the ceiling) and grow the ranks to it; the new
        directions come from ∂L/∂A of `loss_fn` on `batch`. Returns whether any rank grew."""
        self.cr = min(self.ceiling, 2 * self.cr)
        self.since, self.anchor = 0, float("inf")
        grew = grow_ranks(model, self.cr, loss_gradients(model, lambda m: loss_fn(m, batch)))
        if grew:
            self.events.append({"step": step, "cr": self.cr})
        return grew

    def parameters(self, model: KAN) -> list[nn.Parameter]:
        """The trainable tensors at the current ranks, in the Jacobian's column order."""
        return [p for g in self.groups(model) for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        return {
            "cr": self.cr,
            "anchor": self.anchor,
            "since": self.since,
            "events": [dict(e) for e in self.events],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cr, self.anchor = float(state["cr"]), float(state["anchor"])
        self.since = int(state["since"])
        self.events = [dict(e) for e in state["events"]]
