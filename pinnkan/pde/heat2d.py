"""Heat equation in two space dimensions: u_t = ν(u_xx + u_yy) on (0,1)²×(0,1], u = 0 on the four
faces x = 0, 1 and y = 0, 1, u(x,y,0) = sin(πx)sin(πy) + ½ sin(2πx)sin(πy);

    u* = e^{−2νπ²t} sin(πx)sin(πy) + ½ e^{−5νπ²t} sin(2πx)sin(πy),

each Fourier mode sin(mπx)sin(nπy) decaying at its own rate νπ²(m² + n²). Coordinates (x, y, t):
the evaluation grid is n³ points, hence the smaller `eval_points`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pinnkan.layers.jet import Jet
from pinnkan.pde.base import PI, Condition, PDEFamily, at_start, on_faces

# (m, n, c_mn): initial condition Σ c_mn sin(mπx) sin(nπy)
MODES = ((1, 1, 1.0), (2, 1, 0.5))


class Heat2D(PDEFamily):
    name = "heat2d"
    coords = ("x", "y", "t")
    domain = ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0))
    linear = True
    defaults = {"nu": 0.05}
    target_params = {"nu": 0.1}
    lower_bounds = {"nu": 0.0}
    eval_points = 33  # 33³ = 35 937 grid points (101³ would be a million)

    def exact(self, x: Tensor) -> Tensor:
        nu = self.params["nu"]
        xs, ys, t = x[:, 0], x[:, 1], x[:, 2]
        u = torch.zeros_like(xs)
        for m, n, c in MODES:
            rate = nu * PI * PI * (m * m + n * n)
            u = u + c * torch.exp(-rate * t) * torch.sin(m * PI * xs) * torch.sin(n * PI * ys)
        return u

    def residual(self, x: Tensor, jet: Jet) -> Tensor:
        return jet.d(2) - self.params["nu"] * (jet.dd(0) + jet.dd(1))

    def conditions(self) -> list[Condition]:
        return [on_faces(self, (0, 1), self.exact), at_start(self)]  # u* = 0 on the faces
