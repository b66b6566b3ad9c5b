"""Parabolic family (heat): u_t = ν u_xx on (0,1)×(0,1], zero Dirichlet in x,
u(x,0) = sin(πx) + ½ sin(3πx); u* = e^{−νπ²t} sin(πx) + ½ e^{−9νπ²t} sin(3πx)."""

from __future__ import annotations

import torch
from torch import Tensor

from pinnkan.layers.jet import Jet
from pinnkan.pde.base import PI, Condition, PDEFamily, at_start, on_faces


class Parabolic(PDEFamily):
    name = "parabolic"
    coords = ("x", "t")
    domain = ((0.0, 1.0), (0.0, 1.0))
    linear = True
    defaults = {"nu": 0.1}
    target_params = {"nu": 0.2}
    lower_bounds = {"nu": 0.0}

    def exact(self, x: Tensor) -> Tensor:
        nu = self.params["nu"]
        xs, t = x[:, 0], x[:, 1]
        return torch.exp(-nu * PI**2 * t) * torch.sin(PI * xs) + 0.5 * torch.exp(
            -9.0 * nu * PI**2 * t
        ) * torch.sin(3.0 * PI * xs)

    def residual(self, x: Tensor, jet: Jet) -> Tensor:
        return jet.d(1) - self.params["nu"] * jet.dd(0)

    def conditions(self) -> list[Condition]:
        return [on_faces(self, (0,)), at_start(self)]
