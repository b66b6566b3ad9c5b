"""First-order hyperbolic family (advection; also `pde=hyperbolic`): u_t + β u_x = 0 on
(0, 2π)×(0,1], periodic in x, u(x,0) = sin(x); u* = sin(x − βt). Members can also be posed
from a PDEBench 1-D advection file's samples (β from its attribute `beta`)."""

from __future__ import annotations

import torch
from torch import Tensor

from pinnkan.layers.jet import Jet
from pinnkan.pde.base import PI, Condition, FileProblem, PDEFamily, at_start, periodic


class Advection(PDEFamily):
    name = "advection"
    coords = ("x", "t")
    domain = ((0.0, 2.0 * PI), (0.0, 1.0))
    periodic_axes = (0,)  # x
    linear = True
    defaults = {"beta": 1.0}
    target_params = {"beta": 2.0}
    file_problem = FileProblem({"beta": ("beta", 1.0)})

    def exact(self, x: Tensor) -> Tensor:
        return torch.sin(x[:, 0] - self.params["beta"] * x[:, 1])

    def residual(self, x: Tensor, jet: Jet) -> Tensor:
        return jet.d(1) + self.params["beta"] * jet.d(0)

    def conditions(self) -> list[Condition]:
        return [periodic(self), at_start(self)]
