"""Elliptic family: −Δu + λu = f on (0,1)², u = u* on the boundary, u* = sin(μπx)·sin(μπy)."""

from __future__ import annotations

import torch
from torch import Tensor

from pinnkan.layers.jet import Jet
from pinnkan.pde.base import PI, Condition, PDEFamily, on_faces


class Elliptic(PDEFamily):
    name = "elliptic"
    coords = ("x", "y")
    domain = ((0.0, 1.0), (0.0, 1.0))
    linear = True
    defaults = {"lam": 0.0, "mu": 1.0}
    target_params = {"lam": 0.0, "mu": 1.5}
    lower_bounds = {"mu": 0.0}

    def exact(self, x: Tensor) -> Tensor:
        mu = self.params["mu"]
        return torch.sin(mu * PI * x[:, 0]) * torch.sin(mu * PI * x[:, 1])

    def forcing(self, x: Tensor) -> Tensor:
        """f = (2μ²π² + λ)·u*."""
        lam, mu = self.params["lam"], self.params["mu"]
        return (2.0 * mu * mu * PI * PI + lam) * self.exact(x)

    def residual(self, x: Tensor, jet: Jet) -> Tensor:
        return -(jet.dd(0) + jet.dd(1)) + self.params["lam"] * jet.u - self.forcing(x)

    def conditions(self) -> list[Condition]:
        return [on_faces(self, (0, 1), self.exact)]
