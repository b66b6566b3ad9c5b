"""Reaction-diffusion u_t = D u_xx - kappa u on (0,1)x(0,1], u = 0 at x = 0 and x = 1,
u(x,0) = sin(pi x); exact solution u* = exp(-(D pi^2 + kappa) t) sin(pi x)."""

import torch

from pinnkan.pde.base import PI, PDEFamily, at_start, on_faces


class ReactionDiffusion(PDEFamily):
    name = "reaction"
    coords = ("x", "t")
    domain = ((0.0, 1.0), (0.0, 1.0))
    defaults = {"D": 0.1, "kappa": 1.0}
    lower_bounds = {"D": 0.0}  # D > 0

    def exact(self, x):
        D, k = self.params["D"], self.params["kappa"]
        return torch.exp(-(D * PI**2 + k) * x[:, 1]) * torch.sin(PI * x[:, 0])

    def residual(self, x, jet):
        return jet.d(1) - self.params["D"] * jet.dd(0) + self.params["kappa"] * jet.u

    def conditions(self):
        return [on_faces(self, (0,)), at_start(self)]  # u = 0 at x = 0, 1; u = u* at t = 0
