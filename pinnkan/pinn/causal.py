"""Causal weighting of a time-dependent PDE residual (Wang, Sankaran & Perdikaris 2022,
"Respecting causality is all you need for training physics-informed neural networks").

The time axis (the family's last coordinate, which must be named `t`) is cut into M equal
slices. With L_i the mean squared PDE residual of the interior points in slice i, slice i's
weight is w_i = exp(−ε · Σ_{k<i} L_k) (w_0 = 1): a later slice counts only once the earlier ones
are solved. The weights are constants (no gradient flows through them); `PinnLoss` multiplies
each interior residual by √w of its slice, so the PDE term of the loss becomes
Σ_i w_i · Σ_{b in slice i} r_b² / N and, for Levenberg–Marquardt, loss = r·r still holds with
J's rows scaled by the same factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pinnkan.common.config_checks import as_float, as_int
from pinnkan.errors import FieldError
from pinnkan.pde import PDEFamily

SETTLED = 0.99  # a slice whose weight reaches this counts as behind the causality front


@dataclass(frozen=True)
class CausalWeighting:
    """ε (`train.causal`) and M (`train.causal_slices`) on the time interval [t_lo, t_hi]."""

    eps: float
    slices: int
    t_lo: float
    t_hi: float

    @classmethod
    def for_family(cls, pde: PDEFamily, eps: float, slices: int) -> CausalWeighting | None:
        """The weighting of `pde`'s time axis; None when ε = 0 (off). One PinnkanError line
        for a negative ε, fewer than one slice, or a family whose last coordinate is not t."""
        eps = as_float(eps, "causal", 0.0)
        slices = as_int(slices, "causal_slices", 1)
        if eps == 0.0:
            return None
        if pde.coords[-1] != "t":
            raise FieldError(
                "causal",
                f"={eps:g} needs a time-dependent PDE (last coordinate t); "
                f"pde={pde.name} has coordinates ({', '.join(pde.coords)}): set it to 0",
            )
        lo, hi = pde.domain[-1]
        return cls(eps, slices, float(lo), float(hi))

    def slice_of(self, x: Tensor) -> Tensor:
        """Index (B,) of each point's time slice, for points x (B, D); t = t_hi is in the last."""
        unit = (x[:, -1] - self.t_lo) / (self.t_hi - self.t_lo)
        return (unit * self.slices).floor().long().clamp(0, self.slices - 1)

    def weights(self, x: Tensor, res: Tensor) -> Tensor:
        """Slice weights (M,) from interior points x (B, D) and their PDE residuals res (B,),
        detached. An empty slice has L = 0 (it does not hold the later ones back)."""
        idx = self.slice_of(x)
        sq = res.detach().square()
        total = sq.new_zeros(self.slices).index_add_(0, idx, sq)
        count = sq.new_zeros(self.slices).index_add_(0, idx, torch.ones_like(sq))
        per_slice = total / count.clamp(min=1.0)
        before = torch.cat([per_slice.new_zeros(1), per_slice.cumsum(0)[:-1]])
        return torch.exp(-self.eps * before)

    def point_factors(self, weights: Tensor, x: Tensor) -> Tensor:
        """√w of each point's slice, (B,): the factor of its residual."""
        return weights.sqrt()[self.slice_of(x)]


def summary(weights: Tensor) -> tuple[float, float]:
    """(smallest weight, fraction of the slices whose weight is ≥ SETTLED): how far along the
    time axis the network is trained; the weights never increase with t, so the fraction is the
    position of the front as a share of the time interval."""
    return float(weights.min()), float((weights >= SETTLED).double().mean())
