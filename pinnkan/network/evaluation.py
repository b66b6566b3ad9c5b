"""Evaluation on a fixed grid: the network's prediction in bounded-memory chunks and the
relative L2 error against the reference solution."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pinnkan.network.kan import KAN

EVAL_CHUNK = 1 << 16  # points per forward pass when evaluating (bounded memory on big grids)


@torch.no_grad()
def predict(model: KAN, points: Tensor) -> Tensor:
    """u at `points` (B, D) -> (B,), EVAL_CHUNK points at a time."""
    return torch.cat([model(chunk)[:, 0] for chunk in points.split(EVAL_CHUNK)])


class Evaluator:
    """Relative L2 error ||u_pred − u_ref||₂ / ||u_ref||₂ on a fixed evaluation grid."""

    def __init__(self, points: Tensor, u_ref: Tensor | None) -> None:
        """`u_ref` None: a PDE without a reference; `rel_l2` is then NaN."""
        self.points, self.u_ref = points, u_ref
        self.ref_norm = None if u_ref is None else torch.linalg.vector_norm(u_ref)

    def predict(self, model: KAN) -> Tensor:
        return predict(model, self.points)

    def rel_l2(self, model: KAN) -> float:
        if self.u_ref is None:
            return math.nan
        err = torch.linalg.vector_norm(self.predict(model) - self.u_ref) / self.ref_norm
        return float(err)
