"""The PINN loss: collocation points, the weighted residuals of the PDE and its conditions,
their mean-square sum (Adam, L-BFGS) and the scaled residual vector r with loss = r·r (LM);
optionally the PDE residual weighted causally in time (`pinnkan.pinn.causal`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from pinnkan.layers.jet import Jet, zero_jet
from pinnkan.network.derivatives import compute_jet
from pinnkan.network.kan import KAN
from pinnkan.pde import PDEFamily
from pinnkan.pinn.causal import CausalWeighting, summary


def scaled(weight: float, res: Tensor, count: int | None = None) -> Tensor:
    """One group's part of the residual vector: res · √(weight / count), so that its squared
    norm is weight · mean(res²), the group's term of the loss. `count` is the group's size
    when `res` is one chunk of it (default: res.numel(), the whole group)."""
    return res * math.sqrt(weight / (res.numel() if count is None else count))


class PinnLoss:
    """Mean squared PDE residual plus weighted mean squared condition residuals.

    `causal` = ε > 0 weights the PDE residual causally in time over `causal_slices` slices
    (`pinnkan.pinn.causal`; a family without a time coordinate is refused). The weights are held
    here, constant between calls of `refresh_causal`, which the training loops make: LM with
    every new Jacobian, Adam/GD every step, L-BFGS every step. Until the first refresh (and
    always with ε = 0) every weight is 1.
    """

    def __init__(
        self, pde: PDEFamily, engine: str = "forward", causal: float = 0.0, causal_slices: int = 32
    ) -> None:
        self.pde, self.engine = pde, engine
        self.conditions = pde.conditions()
        self.causal = CausalWeighting.for_family(pde, causal, causal_slices)
        self.causal_weights: Tensor | None = None  # (M,) slice weights; None: all 1

    def refresh_causal(self, model: KAN, batch: dict[str, Tensor]) -> None:
        """Recompute the slice weights from the network's PDE residual at batch["interior"]
        (a function of the model and the batch only, so a resumed run gets the same ones)."""
        if self.causal is None:
            return
        x = batch["interior"]
        # the forward engine needs no graph; the autograd engine differentiates w.r.t. x
        no_graph = torch.no_grad() if self.engine == "forward" else contextlib.nullcontext()
        with no_graph:
            res = self.pde.residual(x, compute_jet(model, x, self.engine))
        self.causal_weights = self.causal.weights(x, res)

    def causal_summary(self) -> tuple[float, float] | None:
        """(smallest weight, fraction of slices settled) of the weights in use; None when off."""
        if self.causal is None:
            return None
        if self.causal_weights is None:
            return 1.0, 1.0
        return summary(self.causal_weights)

    def sample(
        self,
        n_interior: int,
        n_boundary: int,
        gen: torch.Generator,
        dtype: torch.dtype,
        device: torch.device,
        quasi: bool = False,
        t_fraction: float = 1.0,
    ) -> dict[str, Tensor]:
        """One batch of collocation points, drawn on the CPU generator for reproducibility;
        `quasi`: the interior points are a scrambled Sobol set (seeded from `gen`);
        `t_fraction` < 1: the interior only in the first fraction of the time interval (the
        last coordinate; time marching, `train.time_windows`)."""
        if quasi:
            seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
            engine = torch.quasirandom.SobolEngine(self.pde.dim, scramble=True, seed=seed)
            interior = self.pde.box_points(engine.draw(n_interior, dtype=dtype))
        else:
            interior = self.pde.sample_interior(n_interior, gen, dtype)
        if t_fraction < 1.0:
            t0 = self.pde.domain[-1][0]
            interior[:, -1] = t0 + (interior[:, -1] - t0) * t_fraction
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
        """(weight, residuals (m,)) of the PDE and of every condition in the batch, in order;
        the PDE's residuals times √(causal weight) of their time slice when causal weighting is on.

        `jet_of(x, derivatives)` evaluates the network at x (the Jacobian's own jet pass);
        by default the configured engine, or a plain forward pass where no derivative is read.
        A condition absent from `batch` is left out (a chunk of interior points only,
        `pinnkan.pinn.jacobian.chunks`).
        """
        if jet_of is None:

            def jet_of(x: Tensor, derivatives: bool) -> Jet:
                return compute_jet(model, x, self.engine) if derivatives else Jet(model(x))

        x = batch["interior"]
        res = self.pde.residual(x, jet_of(x, True))
        if self.causal is not None and self.causal_weights is not None:
            res = res * self.causal.point_factors(self.causal_weights, x)  # constants
        out = [(self.pde.weights["residual"], res)]
        for cond in self.conditions:
            if cond.name not in batch:
                continue
            xc = batch[cond.name]
            out.append((cond.weight, cond.residual(xc, jet_of(xc, cond.derivatives))))
        return out

    def n_rows(self, batch: dict[str, Tensor]) -> int:
        """Length of the residual vector of `batch` (a periodic pair is one row of two points),
        from the residuals of a zero jet: no network pass."""
        return sum(res.numel() for _, res in self._zero_residuals(batch))

    def zero_loss(self, batch: dict[str, Tensor]) -> float:
        """The loss u ≡ 0 has on `batch` (no causal weights): the scale of the problem's data,
        which `train.tol` is relative to."""
        return sum(w * float(res.square().mean()) for w, res in self._zero_residuals(batch))

    def _zero_residuals(self, batch: dict[str, Tensor]) -> list[tuple[float, Tensor]]:
        """(weight, residuals) of the PDE and the batch's conditions at u ≡ 0: no network pass."""

        x = batch["interior"]
        out = [(self.pde.weights["residual"], self.pde.residual(x, zero_jet(x)))]
        for cond in self.conditions:
            if cond.name in batch:
                xc = batch[cond.name]
                out.append((cond.weight, cond.residual(xc, zero_jet(xc))))
        return out

    @contextlib.contextmanager
    def uniform(self) -> Iterator[None]:
        """Inside: every causal weight 1 (the plain loss, e.g. for the tolerance test)."""
        kept, self.causal_weights = self.causal_weights, None
        try:
            yield
        finally:
            self.causal_weights = kept

    def __call__(self, model: KAN, batch: dict[str, Tensor]) -> Tensor:
        parts = self.weighted_residuals(model, batch)
        loss = parts[0][0] * parts[0][1].square().mean()
        for weight, res in parts[1:]:
            loss = loss + weight * res.square().mean()
        return loss

    def losses(self, model: KAN, batch: dict[str, Tensor]) -> dict[str, float]:
        """Mean squared residual of the PDE (`residual`, causally weighted when that is on) and
        of each condition (by name), and their weighted sum `loss`: what a run without a
        reference reports instead of errors."""
        names = ["residual", *(c.name for c in self.conditions)]
        parts = self.weighted_residuals(model, batch)
        out = {name: float(res.detach().square().mean()) for name, (_, res) in zip(names, parts)}
        out["loss"] = sum(w * out[name] for name, (w, _) in zip(names, parts))
        return out

    def residual_vector(
        self,
        model: KAN,
        batch: dict[str, Tensor],
        interior_count: int | None = None,
        jet_of: Callable[[Tensor, bool], Jet] | None = None,
    ) -> Tensor:
        """r (N,) with loss = r·r: each group's residuals scaled by √(weight / count);
        `interior_count`: the whole batch's interior size when `batch` is a chunk of it;
        `jet_of` as for `weighted_residuals`."""
        parts = self.weighted_residuals(model, batch, jet_of)
        counts = [interior_count] + [None] * (len(parts) - 1)
        return torch.cat([scaled(w, res, n) for (w, res), n in zip(parts, counts)])
