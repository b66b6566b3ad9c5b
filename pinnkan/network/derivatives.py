"""The derivative engines: u, ∂u/∂x_k and ∂²u/∂x_k² of a network at points x, as a Jet.

`forward` pushes the jet through the layers with closed-form basis derivatives (one pass, then
one ordinary backward for the parameter gradients); `autograd` uses nested autograd
(`create_graph=True`). Both are exact; tests check they agree.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pinnkan.layers.jet import Jet
from pinnkan.network.kan import KAN

ENGINES = ("forward", "autograd")


def autograd_jet(model: KAN, x: Tensor) -> Jet:
    """Jet by nested autograd: one grad for ∂u/∂x, one more per coordinate for ∂²u/∂x_k²
    (the coordinates only: a parametric network's parameter inputs are not differentiated)."""
    x = x.detach().requires_grad_(True)
    u = model(x)  # (B, 1)
    (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)  # (B, D)
    grad = grad[:, : model.n_coords]
    d2 = []
    for k in range(model.n_coords):
        (g2,) = torch.autograd.grad(grad[:, k].sum(), x, create_graph=True)
        d2.append(g2[:, k])
    d1 = grad.T.unsqueeze(-1)  # (D, B, 1)
    return Jet(u, d1, torch.stack(d2).unsqueeze(-1))


def compute_jet(model: KAN, x: Tensor, engine: str = "forward") -> Jet:
    """u with first and diagonal second derivatives at x (B, D) by the chosen engine."""
    if engine == "forward":
        return model.forward_jet(x)
    if engine == "autograd":
        return autograd_jet(model, x)
    raise ValueError(f"unknown derivative engine {engine!r}; choose one of {ENGINES}")
