"""Wave equation, the second-order hyperbolic family: u_tt = c² u_xx on (0,1)×(0,1], u = 0 at
x = 0, 1, u(x,0) = sin(πx) + ½ sin(3πx), u_t(x,0) = 0;
u* = sin(πx)cos(cπt) + ½ sin(3πx)cos(3cπt)."""

from __future__ import annotations

import torch
from torch import Tensor

from pinnkan.layers.jet import Jet
from pinnkan.pde.base import PI, Condition, PDEFamily, at_start, on_faces, start_points


class Wave(PDEFamily):
    name = "wave"
    coords = ("x", "t")
    domain = ((0.0, 1.0), (0.0, 1.0))
    linear = True
    defaults = {"c": 1.0}
    target_params = {"c": 1.5}
    lower_bounds = {"c": 0.0}

    def exact(self, x: Tensor) -> Tensor:
        c = self.params["c"]
        xs, t = x[:, 0], x[:, 1]
        return torch.sin(PI * xs) * torch.cos(c * PI * t) + 0.5 * torch.sin(
            3.0 * PI * xs
        ) * torch.cos(3.0 * c * PI * t)

    def residual(self, x: Tensor, jet: Jet) -> Tensor:
        c = self.params["c"]
        return jet.dd(1) - c * c * jet.dd(0)

    def conditions(self) -> list[Condition]:
        velocity = Condition(
            "initial_velocity",
            start_points(self),
            lambda x, jet: jet.d(1),
            self.weights["initial"],
            derivatives=True,
        )
        return [on_faces(self, (0,)), at_start(self), velocity]
