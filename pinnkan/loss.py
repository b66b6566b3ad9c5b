"""The PINN loss: collocation points, the weighted residuals of the PDE and its conditions,
their mean-square sum (Adam, L-BFGS) and the scaled residual vector r with loss = r·r (LM)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pinnkan.derivatives import compute_jet
from pinnkan.jet import Jet
from pinnkan.kan import KAN
from pinnkan.pde import PDEFamily


def scaled(weight: float, res: Tensor, count: int | None = None) -> Tensor:
    """One group's part of the residual vector: res · √(weight / count), so that its squared
    norm is weight · mean(res²), the group's term of the loss. `count` is the group's size
    when `res` is one chunk of it (default: res.numel(), the whole group)."""
    return res * math.sqrt(weight / (res.numel() if count is None else count))


class PinnLoss:
    """Mean squared PDE residual plus weighted mean squared condition residuals."""

    def __init__(self, pde: PDEFamily, engine: str = "forward") -> None:
        self.pde, self.engine = pde, engine
        self.conditions = pde.conditions()

    def sample(
        self,
        n_interior: int,
        n_boundary: int,
        gen: torch.Generator,
        dtype: torch.dtype,
        device: torch.device,
        quasi: bool = False,
    ) -> dict[str, Tensor]:
        """One batch of collocation points, drawn on the CPU generator for reproducibility;
        `quasi`: the interior points are a scrambled Sobol set (seeded from `gen`)."""
        if quasi:
            seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
            engine = torch.quasirandom.SobolEngine(self.pde.dim, scramble=True, seed=seed)
            interior = self.pde.box_points(engine.draw(n_interior, dtype=dtype))
        else:
            interior = self.pde.sample_interior(n_interior, gen, dtype)
        batch = {"interior": interior}
        for cond in self.conditions:
            batch[cond.name] = cond.sample(n_boundary, gen, dtype)
        return {k: v.to(device) for k, v in batch.items()}

    def weighted_residuals(
        self,
        model: KAN,
        batch: dict[str, Tensor],
        jet_of: Callable[[Tensor, bool], Jet] | None = None,
    ) -> list[tuple[float, Tensor]]:
        """(weight, residuals (m,)) of the PDE and of every condition in the batch, in order.

        `jet_of(x, derivatives)` evaluates the network at x (the Jacobian's own jet pass);
        by default the configured engine, or a plain forward pass where no derivative is read.
        A condition absent from `batch` is left out (a chunk of interior points only,
        `pinnkan.jacobian.chunks`).
        """
        if jet_of is None:

            def jet_of(x: Tensor, derivatives: bool) -> Jet:
                return compute_jet(model, x, self.engine) if derivatives else Jet(model(x))

        x = batch["interior"]
        out = [(self.pde.weights["residual"], self.pde.residual(x, jet_of(x, True)))]
        for cond in self.conditions:
            if cond.name not in batch:
                continue
            xc = batch[cond.name]
            out.append((cond.weight, cond.residual(xc, jet_of(xc, cond.derivatives))))
        return out

    def n_rows(self, batch: dict[str, Tensor]) -> int:
        """Length of the residual vector of `batch` (a periodic pair is one row of two points),
        from the residuals of a zero jet: no network pass."""

        def rows(residual: Callable[[Tensor, Jet], Tensor], x: Tensor) -> int:
            z, dz = x.new_zeros(x.shape[0], 1), x.new_zeros(x.shape[1], x.shape[0], 1)
            return residual(x, Jet(z, dz, dz)).numel()

        total = rows(self.pde.residual, batch["interior"])
        return total + sum(rows(c.residual, batch[c.name]) for c in self.conditions)

    def __call__(self, model: KAN, batch: dict[str, Tensor]) -> Tensor:
        parts = self.weighted_residuals(model, batch)
        loss = parts[0][0] * parts[0][1].square().mean()
        for weight, res in parts[1:]:
            loss = loss + weight * res.square().mean()
        return loss

    def losses(self, model: KAN, batch: dict[str, Tensor]) -> dict[str, float]:
        """Mean squared residual of the PDE (`residual`) and of each condition (by name), and
        their weighted sum `loss`: what a run without a reference reports instead of errors."""
        names = ["residual", *(c.name for c in self.conditions)]
        parts = self.weighted_residuals(model, batch)
        out = {name: float(res.detach().square().mean()) for name, (_, res) in zip(names, parts)}
        out["loss"] = sum(w * out[name] for name, (w, _) in zip(names, parts))
        return out

    def residual_vector(
        self, model: KAN, batch: dict[str, Tensor], interior_count: int | None = None
    ) -> Tensor:
        """r (N,) with loss = r·r: each group's residuals scaled by √(weight / count);
        `interior_count`: the whole batch's interior size when `batch` is a chunk of it."""
        parts = self.weighted_residuals(model, batch)
        counts = [interior_count] + [None] * (len(parts) - 1)
        return torch.cat([scaled(w, res, n) for (w, res), n in zip(parts, counts)])
