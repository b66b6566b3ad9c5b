"""The training loop: PINN loss (residual + conditions), Adam with an optional L-BFGS
finishing phase, periodic evaluation of the relative L2 error, and a progress display."""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from pinnkan.config_checks import as_choice, as_float, as_int
from pinnkan.derivatives import ENGINES, compute_jet
from pinnkan.errors import PinnkanError
from pinnkan.jet import Jet
from pinnkan.kan import KAN
from pinnkan.pde import PDEFamily

log = logging.getLogger("pinnkan")


MAX_LR = 10.0  # no PINN trains with a larger Adam step; far below float32 overflow


@dataclass
class TrainConfig:
    """Budget and sampling of one training run; validated (and normalised) by `validate`."""

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
    checkpoint_every: int = 0  # write a resumable training state every N Adam steps (0: never)

    def validate(self) -> None:
        """Type and range of every field; one PinnkanError line naming the field."""
        for name, key, lo in (
            ("steps", "train.steps", 1),
            ("lbfgs_steps", "optim.lbfgs_steps", 0),
            ("n_interior", "train.n_interior", 1),
            ("n_boundary", "train.n_boundary", 1),
            ("eval_every", "train.eval_every", 1),
            ("log_every", "train.log_every", 1),
            ("checkpoint_every", "train.checkpoint_every", 0),
        ):
            setattr(self, name, as_int(getattr(self, name), key, lo))
        # above MAX_LR, Adam steps overflow float32 (1e38 crashed inside torch)
        self.lr = as_float(self.lr, "optim.lr", 0.0, MAX_LR, lo_open=True)
        self.lr_decay = as_float(self.lr_decay, "optim.lr_decay", 0.0, 1.0, lo_open=True)
        as_choice(self.derivatives, "train.derivatives", ENGINES)
        if not isinstance(self.compile, bool):
            raise PinnkanError(f"train.compile={self.compile!r} must be true or false")
        as_choice(self.progress, "train.progress", ("auto", "bar", "log", "none"))


@dataclass
class TrainState:
    """Everything a resumed run needs to continue exactly where this one stopped."""

    step: int  # Adam steps done
    model: dict[str, Tensor]  # state_dict, adapters included
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: Tensor  # state of the collocation-point generator
    history: dict[str, list[Any]]
    elapsed: float  # training seconds so far


class Diverged(PinnkanError):
    """A non-finite loss; raised before the optimizer step, so the model is still finite."""

    def __init__(self, step: int, loss: float, lr: float, history: History) -> None:
        super().__init__(
            f"training diverged at step {step} (loss={loss}); lower optim.lr (now {lr:g}) "
            "or use precision=float64"
        )
        self.step, self.history = step, history


class Interrupted(Exception):
    """SIGINT / SIGTERM arrived; the step in flight was finished (and checkpointed)."""

    def __init__(self, signum: int, step: int, history: History) -> None:
        super().__init__(f"interrupted by signal {signum} after step {step}")
        self.signum, self.step, self.history = signum, step, history


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

    def __init__(self, total: int, mode: str, log_every: int, desc: str, initial: int = 0) -> None:
        use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar = tqdm(total=total, desc=desc, leave=True, initial=initial) if use_bar else None
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


def loss_and_backward(
    fn: Callable[[KAN, dict[str, Tensor]], Tensor], model: KAN, batch: dict[str, Tensor]
) -> Tensor:
    """One step's loss with its gradients accumulated into the parameters."""
    loss = fn(model, batch)
    loss.backward()
    return loss


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
            return loss_and_backward(self.loss_fn, self.model, batch)
        if self.tried:
            return loss_and_backward(self.compiled, self.model, batch)
        self.tried = True
        try:
            return loss_and_backward(self.compiled, self.model, batch)
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
    *,
    resume: TrainState | None = None,
    checkpoint: Callable[[TrainState], None] | None = None,
    stop: Callable[[], int | None] | None = None,
) -> History:
    """Adam over `groups` for cfg.steps (lr decaying to lr·lr_decay), then optional L-BFGS.

    `checkpoint(state)` is called every cfg.checkpoint_every Adam steps (only with finite
    parameters), at the end of the Adam phase when L-BFGS follows, and when `stop()` returns a
    signal number; then `Interrupted` is raised. `resume` continues from such a state, giving
    the numbers an uninterrupted run would. A non-finite loss raises `Diverged`. A stop during
    L-BFGS raises `Interrupted` without a new state: resuming replays L-BFGS from the last
    Adam-phase state (same numbers, some repeated work).
    """
    cfg.validate()
    device, dtype = model.lo.device, model.lo.dtype
    hist = History()
    opt = torch.optim.Adam(groups)
    gamma = cfg.lr_decay ** (1.0 / cfg.steps)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    total = cfg.steps + cfg.lbfgs_steps
    elapsed, start = 0.0, 0
    if resume is not None:
        model.load_state_dict(resume.model)
        opt.load_state_dict(resume.optimizer)
        sched.load_state_dict(resume.scheduler)
        gen.set_state(resume.rng)
        hist = History(**{k: list(v) for k, v in resume.history.items()})
        elapsed, start = float(resume.elapsed), int(resume.step)
    progress = Progress(total, cfg.progress, cfg.log_every, desc, initial=start)
    last_err = hist.rel_l2[-1] if hist.rel_l2 else evaluator.rel_l2(model)

    def record(step: int, loss: float) -> None:
        nonlocal last_err
        if step % cfg.eval_every == 0 or step == total:
            last_err = evaluator.rel_l2(model)
            hist.step.append(step)
            hist.seconds.append(elapsed)
            hist.loss.append(loss)
            hist.rel_l2.append(last_err)
        progress.update(step, loss, last_err)

    def state(step: int) -> TrainState:
        return TrainState(
            step=step,
            model=model.state_dict(),
            optimizer=opt.state_dict(),
            scheduler=sched.state_dict(),
            rng=gen.get_state(),
            history=hist.as_dict(),
            elapsed=elapsed,
        )

    def check_stop(step: int, save: bool) -> None:
        signum = stop() if stop is not None else None
        if signum:
            if save and checkpoint is not None:
                checkpoint(state(step))
            progress.close()
            raise Interrupted(signum, step, hist)

    if cfg.compile:
        step_fn: Callable[[dict[str, Tensor]], Tensor] = CompiledStep(loss_fn, model)
    else:
        step_fn = functools.partial(loss_and_backward, loss_fn, model)
    for step in range(start + 1, cfg.steps + 1):
        t0 = time.perf_counter()
        batch = loss_fn.sample(cfg.n_interior, cfg.n_boundary, gen, dtype, device)
        opt.zero_grad(set_to_none=True)
        value = float(step_fn(batch).detach())
        if not math.isfinite(value):  # before the step: the model stays finite
            progress.close()
            raise Diverged(step, value, opt.param_groups[0]["lr"], hist)
        opt.step()
        sched.step()
        elapsed += time.perf_counter() - t0
        record(step, value)
        every = cfg.checkpoint_every
        due = (every and step % every == 0) or (step == cfg.steps and cfg.lbfgs_steps)
        if checkpoint is not None and due and _finite(model):
            checkpoint(state(step))
        check_stop(step, save=True)

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
            value = float(lbfgs.step(closure).detach())
            elapsed += time.perf_counter() - t0
            if not math.isfinite(value):
                progress.close()
                raise Diverged(step, value, 1.0, hist)
            record(step, value)
            check_stop(step, save=False)
    progress.close()
    return hist


def _finite(model: KAN) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
