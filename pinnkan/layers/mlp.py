"""The tanh MLP baseline (`model=mlp`): one-function bases, identity (first layer) and tanh
(hidden layers), and the layer factory.

With n_d = 1 a `BasisLayer` over these is an ordinary dense layer: y = W φ(x) + bias, so the
network y = W_L tanh(… tanh(W_1 x + b_1) …) + b_L is a tanh MLP whose weight matrices are the
(n_in, n_out, 1) tensors A.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pinnkan.layers.base import BasisLayer, LayerContext, LayerKind, NetworkModel


@dataclass
class MLPModel(NetworkModel):
    """`model=mlp`: tanh MLP baseline; hidden widths only (no layer options)."""

    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [50, 50])  # 2751 parameters


ACTIVATION_BASES = ("identity", "tanh")


class ActivationBasis:
    """φ(x) = x or tanh(x) as a single basis function; stateless."""

    n_basis = 1

    def __init__(self, name: str) -> None:
        if name not in ACTIVATION_BASES:
            raise ValueError(f"activation {name!r}; choose one of {ACTIVATION_BASES}")
        self.name = name

    def values(self, x: Tensor) -> Tensor:
        """x (B, n_in) -> (B, n_in, 1)."""
        return (x if self.name == "identity" else torch.tanh(x)).unsqueeze(-1)

    def derivatives(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, n_in) -> φ, φ', φ'', each (B, n_in, 1)."""
        if self.name == "identity":
            return x.unsqueeze(-1), torch.ones_like(x).unsqueeze(-1), x.new_zeros(*x.shape, 1)
        t = torch.tanh(x)
        d1 = 1.0 - t * t
        return t.unsqueeze(-1), d1.unsqueeze(-1), (-2.0 * t * d1).unsqueeze(-1)


def make_mlp_layer(n_in: int, n_out: int, ctx: LayerContext) -> BasisLayer:
    """Dense layer on identity (first layer) or tanh features; Xavier-normal W, zero bias."""
    basis = ActivationBasis("identity" if ctx.index == 0 else "tanh")
    std = math.sqrt(2.0 / (n_in + n_out))
    a = torch.randn(n_in, n_out, 1, generator=ctx.generator, dtype=ctx.dtype) * std
    bias = torch.zeros(n_out, dtype=ctx.dtype)
    factor = torch.full((1, 1), std, dtype=torch.float64)
    return BasisLayer(basis, a.to(ctx.device), factor, bias.to(ctx.device))


KIND = LayerKind(make_mlp_layer, MLPModel)
