"""The KAN network: layers y_j = Σ_i Σ_k A[i, j, k] · b_k(x_i), A of shape (n_in, n_out, n_d).

Evaluation is "features, then one contraction" (efficient-kan's layout). Each layer can also
push a jet (value, ∂/∂x_k, ∂²/∂x_k²) forward with the basis' closed-form derivatives, which is
the forward derivative engine (see `pinnkan.derivatives`).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pinnkan.bases import BSplineBasis
from pinnkan.bases.bspline_jet import bspline_jet_matmul
from pinnkan.jet import Jet, affine_input_jet


class CoefficientUpdate(Protocol):
    """What an adapter offers a layer: an additive update ΔA of shape (n_in, n_out, n_d)."""

    def delta(self) -> Tensor: ...


class KANLayer(nn.Module):
    """One KAN layer with coefficient tensor A (n_in, n_out, n_d) and an optional adapter."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        basis: BSplineBasis,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        spline_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_in, self.n_out, self.basis = n_in, n_out, basis
        self.n_d = basis.n_basis
        # SiLU slot N(0, 1/n_in), spline slots `spline_scale` times smaller (efficient-kan's
        # habit): the network starts close to a smooth SiLU MLP, whose second derivatives are
        # moderate, instead of a rough spline sum whose u_xx makes the first PDE losses huge.
        a = torch.randn(n_in, n_out, self.n_d, generator=generator, dtype=dtype) / n_in**0.5
        a[..., : basis.n_splines] *= spline_scale
        self.A = nn.Parameter(a.to(device))
        self.adapter: nn.Module | None = None

    def coefficients(self) -> Tensor:
        """The effective tensor A (+ ΔA), formed once per call, never per sample."""
        if self.adapter is None:
            return self.A
        return self.A + self.adapter.delta()

    def _weight(self) -> Tensor:
        # (n_in, n_out, n_d) -> (n_in * n_d, n_out) matching the (B, n_in, n_d) feature layout
        return self.coefficients().permute(0, 2, 1).reshape(self.n_in * self.n_d, self.n_out)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, n_in) -> (B, n_out)."""
        feats = self.basis.values(x)  # (B, n_in, n_d)
        return feats.reshape(x.shape[0], -1) @ self._weight()

    def forward_jet(self, jet: Jet, fused: bool = True) -> Jet:
        """Push (value, first and diagonal second derivatives) through the layer exactly.

        y    = Σ A φ(x)
        y_k  = Σ A φ'(x) x_k
        y_kk = Σ A (φ''(x) x_k² + φ'(x) x_kk)
        All 1 + 2D feature blocks go through a single matmul. `fused` uses the hand-written
        backward of `bspline_jet` (fast, first-order only); otherwise plain autograd ops
        (differentiable twice, and what torch.compile traces).
        """
        x, dx, ddx = jet.value, jet.d1, jet.d2  # (B, n_in), (D, B, n_in), (D, B, n_in)
        assert dx is not None and ddx is not None
        n_dir, n_batch = dx.shape[0], x.shape[0]
        if fused:
            out = bspline_jet_matmul(self.basis, x, dx, ddx, self.coefficients())
        else:
            feats = self.basis.jet_features(x, dx, ddx)  # (1 + 2D, B, n_in, n_d)
            out = feats.reshape(-1, self.n_in * self.n_d) @ self._weight()
            out = out.reshape(1 + 2 * n_dir, n_batch, self.n_out)
        return Jet(out[0], out[1 : 1 + n_dir], out[1 + n_dir :])


class KAN(nn.Module):
    """A KAN on a box domain: inputs are mapped affinely from the domain to [-1, 1]."""

    def __init__(
        self,
        widths: list[int],
        domain: list[tuple[float, float]],
        *,
        grid_size: int = 5,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        spline_scale: float = 0.1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if len(widths) < 2 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be >= 2 positive integers, got {widths}")
        if len(domain) != widths[0]:
            raise ValueError(f"domain has {len(domain)} coordinates but widths[0] = {widths[0]}")
        self.widths = [int(w) for w in widths]
        self.grid_size = int(grid_size)
        self.grid_range = (float(grid_range[0]), float(grid_range[1]))
        basis = BSplineBasis(grid_size, self.grid_range)
        lo = torch.tensor([d[0] for d in domain], dtype=dtype, device=device)
        hi = torch.tensor([d[1] for d in domain], dtype=dtype, device=device)
        self.register_buffer("lo", lo)
        self.register_buffer("hi", hi)
        self.layers = nn.ModuleList(
            KANLayer(
                a,
                b,
                basis,
                dtype=dtype,
                device=device,
                generator=generator,
                spline_scale=spline_scale,
            )
            for a, b in zip(self.widths[:-1], self.widths[1:])
        )

    def spec(self) -> dict[str, Any]:
        """Architecture identity: what a checkpoint must match to be loaded into this network."""
        return {
            "basis": "bspline",
            "widths": self.widths,
            "grid_size": self.grid_size,
            "grid_range": list(self.grid_range),
            "domain": [[float(a), float(b)] for a, b in zip(self.lo.tolist(), self.hi.tolist())],
        }

    def normalise(self, x: Tensor) -> Tensor:
        """Physical points (B, D) -> [-1, 1]^D."""
        return (x - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0

    def forward(self, x: Tensor) -> Tensor:
        """Physical points x (B, D) -> u (B, n_out)."""
        h = self.normalise(x)
        for layer in self.layers:
            h = layer(h)
        return h

    def forward_jet(self, x: Tensor, fused: bool = True) -> Jet:
        """u and its first and diagonal second derivatives w.r.t. the physical coordinates."""
        jet = affine_input_jet(x, self.lo, self.hi)
        for layer in self.layers:
            jet = layer.forward_jet(jet, fused)
        return jet
