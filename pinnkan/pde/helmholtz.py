"""Helmholtz family: −Δu − k²u = f on (0,1)², u = 0 on the boundary, with data fixed across the
family and the wavenumber k varying.

The forcing is f = −Δu₀ for the fixed shape u₀ = sin(πx)sin(πy) + ½ sin(2πx)sin(2πy), a sum of
Dirichlet eigenfunctions φ_mn = sin(mπx)sin(nπy) of −Δ with eigenvalues λ_mn = π²(m² + n²).
Expanding in those modes gives the exact solution

    u* = Σ c_mn · λ_mn / (λ_mn − k²) · φ_mn,   (c_11, c_22) = (1, ½),

so u*(k = 0) = u₀ and each mode is amplified by λ_mn/(λ_mn − k²): the closer k² gets to the first
eigenvalue 2π² ≈ 19.74, the more the (1,1) mode dominates. Source and target members therefore
share f and the boundary data but have different solutions (k = 2 → 3 scales the (1,1) mode from
1.25 to 1.84 while the (2,2) mode barely moves: 1.03 → 1.06).

k² equal to a Dirichlet eigenvalue π²(m² + n²) (m, n ≥ 1) is refused: there −Δ − k² is
singular, the problem has no unique solution (and u* above divides by zero for the (1,1)/(2,2)
modes). For k² < 2π² (k < π√2 ≈ 4.44) the operator is positive definite and the problem is as
well-conditioned as a Poisson problem; above it, it is indefinite and gets harder for a PINN.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pinnkan.errors import PinnkanError
from pinnkan.layers.jet import Jet
from pinnkan.pde.base import PI, Condition, PDEFamily, on_faces

# (m, n, c_mn): the modes of the fixed shape u₀ = Σ c_mn sin(mπx) sin(nπy)
MODES = ((1, 1, 1.0), (2, 2, 0.5))


def resonance(k: float, box: tuple[tuple[float, float], ...], rtol: float = 1e-9) -> str | None:
    """Why k cannot be used on `box` (None: it can): k² is a Dirichlet eigenvalue
    π²(m²/Lx² + n²/Ly²) of −Δ on the box (m, n ≥ 1), or one of the λ_mn in u*'s denominators."""
    k2 = k * k
    (x0, x1), (y0, y1) = box
    lx, ly = x1 - x0, y1 - y0

    def hit(lam: float) -> bool:
        return abs(k2 - lam) <= rtol * max(1.0, lam)

    for m, n, _ in MODES:
        if hit(PI * PI * (m * m + n * n)):
            return f"k² = {m * m + n * n}π² is the pole of the exact solution's ({m},{n}) mode"
    m = 1
    while PI * PI * m * m / (lx * lx) <= k2 * (1.0 + rtol):
        n2 = (k2 / (PI * PI) - m * m / (lx * lx)) * ly * ly
        n = max(1, round(math.sqrt(max(n2, 0.0))))
        if hit(PI * PI * (m * m / (lx * lx) + n * n / (ly * ly))):
            return f"k² is the Dirichlet eigenvalue of −Δ on the box with (m, n) = ({m}, {n})"
        m += 1
    return None


class Helmholtz(PDEFamily):
    name = "helmholtz"
    coords = ("x", "y")
    domain = ((0.0, 1.0), (0.0, 1.0))
    linear = True
    defaults = {"k": 2.0}
    target_params = {"k": 3.0}

    def __init__(self, weights: dict[str, float] | None = None, **params: Any) -> None:
        super().__init__(weights, **params)
        why = resonance(self.params["k"], self.domain)
        if why is not None:
            raise PinnkanError(
                f"pde=helmholtz: k={self.params['k']:g} is a resonance ({why}); "
                "−Δ − k² is singular there and the problem has no unique solution"
            )

    def amplitudes(self) -> list[tuple[int, int, float]]:
        """(m, n, c_mn·λ_mn/(λ_mn − k²)) for each mode of u*."""
        k2 = self.params["k"] ** 2
        out = []
        for m, n, c in MODES:
            lam = PI * PI * (m * m + n * n)
            out.append((m, n, c * lam / (lam - k2)))
        return out

    def exact(self, x: Tensor) -> Tensor:
        xs, ys = x[:, 0], x[:, 1]
        u = torch.zeros_like(xs)
        for m, n, a in self.amplitudes():
            u = u + a * torch.sin(m * PI * xs) * torch.sin(n * PI * ys)
        return u

    def forcing(self, x: Tensor) -> Tensor:
        """f = −Δu₀ = Σ c_mn λ_mn φ_mn, the same for every k."""
        xs, ys = x[:, 0], x[:, 1]
        f = torch.zeros_like(xs)
        for m, n, c in MODES:
            lam = PI * PI * (m * m + n * n)
            f = f + c * lam * torch.sin(m * PI * xs) * torch.sin(n * PI * ys)
        return f

    def residual(self, x: Tensor, jet: Jet) -> Tensor:
        k2 = self.params["k"] ** 2
        return -(jet.dd(0) + jet.dd(1)) - k2 * jet.u - self.forcing(x)

    def conditions(self) -> list[Condition]:
        return [on_faces(self, (0, 1), self.exact)]  # u* = 0 on the unit square
