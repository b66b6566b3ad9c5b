"""The Chebyshev KAN layer (`model=chebyshev`, cPIKAN-style): basis b_k(x) = T_k(tanh x),
k = 0..degree, and the layer factory.

T_k, T_k' and T_k'' come from the three-term recurrences (never acos, whose derivative is
singular at ±1):
    T_{k+1} = 2t T_k − T_{k−1},  T'_{k+1} = 2T_k + 2t T'_k − T'_{k−1},
    T''_{k+1} = 4T'_k + 2t T''_k − T''_{k−1},
then the chain rule through t = tanh x: t' = 1 − t², t'' = −2t(1 − t²),
    b_k' = T_k'(t) t',  b_k'' = T_k''(t) t'² + T_k'(t) t''.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pinnkan.common.config_checks import as_float, as_int
from pinnkan.layers.base import BasisLayer, LayerContext, LayerKind, NetworkModel


@dataclass
class ChebyshevModel(NetworkModel):
    """`model=chebyshev`: Chebyshev KAN on tanh-bounded inputs; hidden widths and options."""

    name: str = "chebyshev"
    hidden: list[int] = field(default_factory=lambda: [20, 20])  # 2760 coefficients at degree 5
    degree: int = 5
    decay: float = 1.0  # init: std of A[..., k] ∝ (1 + k)^-decay, total variance 1/n_in


def chebyshev_recurrence(t: Tensor, degree: int) -> tuple[Tensor, Tensor, Tensor]:
    """T_k(t), T_k'(t), T_k''(t) for k = 0..degree; t (...,) -> each (..., degree + 1)."""
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    val, d1, d2 = [one, t], [zero, one], [zero, zero]
    for _ in range(degree - 1):
        val.append(2.0 * t * val[-1] - val[-2])
        d1.append(2.0 * val[-2] + 2.0 * t * d1[-1] - d1[-2])
        d2.append(4.0 * d1[-2] + 2.0 * t * d2[-1] - d2[-2])
    n = degree + 1
    return torch.stack(val[:n], -1), torch.stack(d1[:n], -1), torch.stack(d2[:n], -1)


class ChebyshevBasis:
    """T_k(tanh x), k = 0..degree; stateless."""

    def __init__(self, degree: int = ChebyshevModel.degree) -> None:
        if degree < 1:
            raise ValueError(f"degree must be >= 1, got {degree}")
        self.degree = int(degree)
        self.n_basis = self.degree + 1

    def values(self, x: Tensor) -> Tensor:
        """x (B, n_in) -> (B, n_in, degree + 1)."""
        t = torch.tanh(x)
        val = [torch.ones_like(t), t]
        for _ in range(self.degree - 1):
            val.append(2.0 * t * val[-1] - val[-2])
        return torch.stack(val[: self.n_basis], -1)

    def derivatives(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, n_in) -> φ, φ', φ'', each (B, n_in, degree + 1)."""
        t = torch.tanh(x)
        val, d1, d2 = chebyshev_recurrence(t, self.degree)
        dt = (1.0 - t * t).unsqueeze(-1)  # (B, n_in, 1)
        ddt = -2.0 * t.unsqueeze(-1) * dt
        return val, d1 * dt, d2 * dt * dt + d1 * ddt


def make_chebyshev_layer(
    n_in: int, n_out: int, ctx: LayerContext, degree: int, decay: float
) -> BasisLayer:
    """A[i, j, k] ~ N(0, σ_k²), σ_k ∝ (1 + k)^(-decay), Σ_k σ_k² = 1/n_in: higher modes start
    small, so the network starts smooth (T_k'' grows like k⁴)."""
    k = torch.arange(degree + 1, dtype=torch.float64)
    std = (1.0 + k) ** (-decay)
    std = std / std.square().sum().sqrt() / math.sqrt(n_in)
    a = torch.randn(n_in, n_out, degree + 1, generator=ctx.generator, dtype=ctx.dtype)
    a = a * std.to(ctx.dtype)
    return BasisLayer(ChebyshevBasis(degree), a.to(ctx.device), torch.diag(std))


KIND = LayerKind(
    make_chebyshev_layer,
    ChebyshevModel,
    {
        "degree": lambda v, n: as_int(v, n, 1, 64),
        "decay": lambda v, n: as_float(v, n, 0.0),
    },
    init_only=("decay",),
)
