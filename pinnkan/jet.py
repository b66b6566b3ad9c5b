"""A jet: a network quantity together with its derivatives w.r.t. the input coordinates.

PDE residuals are written against a jet, so they do not need to know which derivative engine
(forward propagation or nested autograd) produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pinnkan.errors import PinnkanError


@dataclass
class Jet:
    """value (B, n); d1[k] = ∂value/∂x_k and d2[k] = ∂²value/∂x_k², each (D, B, n).

    d1/d2 are None for a value-only evaluation (boundary data that needs no derivative).
    """

    value: Tensor
    d1: Tensor | None = None
    d2: Tensor | None = None

    def d(self, k: int) -> Tensor:
        """First derivative of the (single) output w.r.t. coordinate k, shape (B,)."""
        assert self.d1 is not None, "this jet carries no derivatives"
        return self.d1[k, :, 0]

    def dd(self, k: int) -> Tensor:
        """Second derivative of the (single) output w.r.t. coordinate k, shape (B,)."""
        assert self.d2 is not None, "this jet carries no second derivatives"
        return self.d2[k, :, 0]

    def dxy(self, k: int, m: int) -> Tensor:
        """∂²u/∂x_k∂x_m: only k == m (the diagonal, `dd`); the engines propagate no mixed
        second derivatives, so asking for one is an error, never a silent zero."""
        if k == m:
            return self.dd(k)
        raise PinnkanError(
            f"the residual asks for the mixed derivative d2u/dx{k}dx{m}; pinnkan's jet engines "
            "carry only first and unmixed second derivatives (write the PDE without u_xy, e.g. "
            "in rotated coordinates, or see docs/adding_a_pde.md)"
        )

    @property
    def u(self) -> Tensor:
        """The (single) output value, shape (B,)."""
        return self.value[:, 0]


def affine_input_jet(x: Tensor, lo: Tensor, hi: Tensor) -> Jet:
    """Map physical points x (B, D) affinely to [-1, 1]^D and seed the derivative directions.

    The jet is w.r.t. the *physical* coordinates, so the map's scale 2/(hi - lo) sits in d1.
    """
    scale = 2.0 / (hi - lo)  # (D,)
    z = (x - lo) * scale - 1.0
    n_batch, dim = x.shape
    d1 = torch.zeros(dim, n_batch, dim, dtype=x.dtype, device=x.device)
    idx = torch.arange(dim, device=x.device)
    d1[idx, :, idx] = scale.unsqueeze(-1).expand(dim, n_batch)
    d2 = torch.zeros_like(d1)
    return Jet(z, d1, d2)
