"""Residual-based adaptive sampling of interior collocation points (RAD, Wu et al. 2023):
points go where the PDE residual is large, so that a near-shock or a thin interface is
resolved by the points instead of falling between them.

A pool of candidates (a Sobol set, `rad_pool` × the points wanted) is scored by |r|^k, and the
points are drawn from it without replacement with probability ∝ |r|^k / mean |r|^k + c: k
sharpens the preference, c keeps a uniform share (c = 0: residual only; large c: uniform).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pinnkan.network.kan import KAN
from pinnkan.pde import PDEFamily


@torch.no_grad()
def pde_residual(pde: PDEFamily, model: KAN, x: Tensor, rows: int) -> Tensor:
    """The PDE residual (B,) of `model` at interior points x (B, D), `rows` points at a time."""
    out = [
        pde.residual(x[s : s + rows], model.forward_jet(x[s : s + rows]))
        for s in range(0, x.shape[0], max(rows, 1))
    ]
    return torch.cat(out) if out else x.new_zeros(0)


def draw_by_residual(
    candidates: Tensor, residual: Tensor, n: int, k: float, c: float, gen: torch.Generator
) -> Tensor:
    """n of the candidate points (M, D), M ≥ n, drawn without replacement with probability
    ∝ |residual|^k / mean |residual|^k + c, on the CPU generator `gen` (reproducible)."""
    if n > candidates.shape[0]:
        raise ValueError(f"{n} points wanted from a pool of {candidates.shape[0]}")
    score = residual.detach().abs().to("cpu", torch.float64).pow(k)
    mean = float(score.mean()) if score.numel() else 0.0
    if not (mean > 0 and torch.isfinite(score).all()):
        prob = torch.ones_like(score)  # nothing to prefer (or nothing finite): uniform
    else:
        prob = score / mean + max(c, 1e-9)  # every candidate stays possible (zero residuals)
    idx = torch.multinomial(prob, n, replacement=False, generator=gen)
    return candidates[idx.to(candidates.device)]
