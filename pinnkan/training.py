"""The training loop: PINN loss (residual + conditions), Adam with an optional L-BFGS
finishing phase, periodic evaluation of the relative L2 error, and a progress display."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from pinnkan.derivatives import ENGINES, compute_jet
from pinnkan.errors import PinnkanError
from pinnkan.jet import Jet
from pinnkan.kan import KAN
from pinnkan.pde import PDEFamily

log = logging.getLogger("pinnkan")


@dataclass
class TrainConfig:
    """Budget and sampling of one training run; validated by `validate`."""

    steps: int = 2000
    lbfgs_steps: int = 0
    lr: float = 1e-2
    lr_decay: float = 0.1  # lr falls exponentially to lr·lr_decay over the Adam steps
    n_interior: int = 1024
    n_boundary: int = 256
    derivatives: str = "forward"
    compile: bool = False  # torch.compile the loss of the forward engine (falls back on failure)
    eval_every: int = 100
    log_every: int = 200
    progress: str = "auto"  # auto (bar on a terminal, log lines otherwise) | bar | log | none

    def validate(self) -> None:
        for name in ("steps", "n_interior", "n_boundary", "eval_every", "log_every"):
            if int(getattr(self, name)) <= 0:
                raise PinnkanError(f"train.{name}={getattr(self, name)} must be a positive integer")
        if int(self.lbfgs_steps) < 0:
            raise PinnkanError(f"train.lbfgs_steps={self.lbfgs_steps} must be >= 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PinnkanError(f"optim.lr={self.lr} must be a positive number")
        if not 0 < self.lr_decay <= 1:
            raise PinnkanError(f"optim.lr_decay={self.lr_decay} must be in (0, 1]")
        if self.derivatives not in ENGINES:
            raise PinnkanError(
                f"train.derivatives={self.derivatives!r}; choose one of: {', '.join(ENGINES)}"
            )
        if not isinstance(self.compile, bool):
            raise PinnkanError(f"train.compile={self.compile!r} must be true or false")
        if self.progress not in ("auto", "bar", "log", "none"):
            raise PinnkanError(f"train.progress={self.progress!r}; choose auto, bar, log or none")


@dataclass
class History:
    """Sampled training curve; `seconds` is training wall time so far (evaluation excluded)."""

    step: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    rel_l2: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[Any]]:
        return {
            "step": self.step,
            "seconds": self.seconds,
            "loss": self.loss,
            "rel_l2": self.rel_l2,
        }


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
    ) -> dict[str, Tensor]:
        """One batch of collocation points, drawn on the CPU generator for reproducibility."""
        batch = {"interior": self.pde.sample_interior(n_interior, gen, dtype)}
        for cond in self.conditions:
            batch[cond.name] = cond.sample(n_boundary, gen, dtype)
        return {k: v.to(device) for k, v in batch.items()}

    def __call__(self, model: KAN, batch: dict[str, Tensor]) -> Tensor:
        x = batch["interior"]
        res = self.pde.residual(x, compute_jet(model, x, self.engine))
        loss = self.pde.weights["residual"] * res.square().mean()
        for cond in self.conditions:
            xc = batch[cond.name]
            jet = compute_jet(model, xc, self.engine) if cond.derivatives else Jet(model(xc))
            loss = loss + cond.weight * cond.residual(xc, jet).square().mean()
        return loss


class Evaluator:
    """Relative L2 error ||u_pred − u_ref||₂ / ||u_ref||₂ on a fixed evaluation grid."""

    def __init__(self, points: Tensor, u_ref: Tensor) -> None:
        self.points, self.u_ref = points, u_ref
        self.ref_norm = torch.linalg.vector_norm(u_ref)

    @torch.no_grad()
    def predict(self, model: KAN) -> Tensor:
        return model(self.points)[:, 0]

    def rel_l2(self, model: KAN) -> float:
        err = torch.linalg.vector_norm(self.predict(model) - self.u_ref) / self.ref_norm
        return float(err)


class Progress:
    """A tqdm bar on a terminal, else a log line every `log_every` steps."""

    def __init__(self, total: int, mode: str, log_every: int, desc: str) -> None:
        use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar = tqdm(total=total, desc=desc, leave=True) if use_bar else None
        self.log_lines = mode in ("log", "auto") and not use_bar
        self.total, self.log_every, self.desc = total, log_every, desc

    def update(self, step: int, loss: float, rel_l2: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.3e}", rel_l2=f"{rel_l2:.3e}", refresh=False)
        elif self.log_lines and (step % self.log_every == 0 or step == self.total):
            log.info(
                "%s step %d/%d  loss %.3e  rel_l2 %.3e", self.desc, step, self.total, loss, rel_l2
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class CompiledStep:
    """Loss and backward through `torch.compile(loss_fn)`, falling back to eager with one
    warning line where compiling fails (its first call, forward and backward, is the trial).

    Only the forward engine compiles: nested autograd (create_graph) is what torch.compile
    refuses, so `train.derivatives=autograd` warns and runs eagerly from the start.
    """

    def __init__(self, loss_fn: PinnLoss, model: KAN) -> None:
        self.loss_fn, self.model = loss_fn, model
        self.compiled: Any = None
        if loss_fn.engine != "forward":
            log.warning(
                "train.compile=true needs train.derivatives=forward (torch.compile cannot take "
                "second derivatives); running uncompiled"
            )
        else:
            self.compiled = torch.compile(loss_fn)
        self.tried = False

    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        if self.compiled is None:
            loss = self.loss_fn(self.model, batch)
            loss.backward()
            return loss
        if self.tried:
            loss = self.compiled(self.model, batch)
            loss.backward()
            return loss
        self.tried = True
        try:
            loss = self.compiled(self.model, batch)
            loss.backward()
            return loss
        except Exception as exc:  # any compiler failure: the eager step is always correct
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("train.compile: torch.compile failed (%s); running uncompiled", first)
            self.compiled = None
            for p in self.model.parameters():  # adapters are submodules: included
                p.grad = None
            return self(batch)


def train(
    model: KAN,
    loss_fn: PinnLoss,
    groups: list[dict[str, Any]],
    cfg: TrainConfig,
    evaluator: Evaluator,
    gen: torch.Generator,
    desc: str = "train",
) -> History:
    """Adam over `groups` for cfg.steps (lr decaying to lr·lr_decay), then optional L-BFGS."""
    cfg.validate()
    device, dtype = model.lo.device, model.lo.dtype
    hist = History()
    opt = torch.optim.Adam(groups)
    gamma = cfg.lr_decay ** (1.0 / cfg.steps)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    total = cfg.steps + cfg.lbfgs_steps
    progress = Progress(total, cfg.progress, cfg.log_every, desc)
    elapsed = 0.0
    last_err = evaluator.rel_l2(model)

    def record(step: int, loss: float) -> None:
        nonlocal last_err
        if not math.isfinite(loss):
            progress.close()
            raise PinnkanError(
                f"training diverged at step {step} (loss={loss}); lower optim.lr or use "
                "precision=float64"
            )
        if step % cfg.eval_every == 0 or step == total:
            last_err = evaluator.rel_l2(model)
            hist.step.append(step)
            hist.seconds.append(elapsed)
            hist.loss.append(loss)
            hist.rel_l2.append(last_err)
        progress.update(step, loss, last_err)

    step_fn = CompiledStep(loss_fn, model) if cfg.compile else None
    for step in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        batch = loss_fn.sample(cfg.n_interior, cfg.n_boundary, gen, dtype, device)
        opt.zero_grad(set_to_none=True)
        if step_fn is not None:
            loss = step_fn(batch)
        else:
            loss = loss_fn(model, batch)
            loss.backward()
        opt.step()
        sched.step()
        elapsed += time.perf_counter() - t0
        record(step, float(loss.detach()))

    if cfg.lbfgs_steps:
        params = [p for g in groups for p in g["params"]]
        lbfgs = torch.optim.LBFGS(
            params, lr=1.0, max_iter=1, history_size=50, line_search_fn="strong_wolfe"
        )
        batch = loss_fn.sample(4 * cfg.n_interior, 4 * cfg.n_boundary, gen, dtype, device)

        def closure() -> Tensor:
            lbfgs.zero_grad(set_to_none=True)
            value = loss_fn(model, batch)
            value.backward()
            return value

        for step in range(cfg.steps + 1, total + 1):
            t0 = time.perf_counter()
            loss = lbfgs.step(closure)
            elapsed += time.perf_counter() - t0
            record(step, float(loss.detach()))
    progress.close()
    return hist
