"""The training loop: PINN loss (residual + conditions), Adam with an optional L-BFGS
finishing phase, periodic evaluation of the relative L2 error, and a progress display."""

from __future__ import annotations

import functools
import logging
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from pinnkan.config import (
    DEFAULT_OPTIMIZER,
    AdamOptions,
    TrainOptions,
    stage_value,
)
from pinnkan.config import (
    OPTIMIZERS as OPTIMIZER_OPTIONS,
)
from pinnkan.config_checks import as_choice, as_float, as_int
from pinnkan.derivatives import ENGINES, compute_jet
from pinnkan.errors import PinnkanError
from pinnkan.jet import Jet
from pinnkan.kan import KAN
from pinnkan.levenberg_marquardt import LMConfig
from pinnkan.pde import PDEFamily

log = logging.getLogger("pinnkan")


MAX_LR = 10.0  # no PINN trains with a larger Adam step; far below float32 overflow
OPTIMIZERS = tuple(OPTIMIZER_OPTIONS)
FIRST_ORDER = ("adam", "gd")  # per-group learning rates, exponential decay, optional L-BFGS


_TRAIN = TrainOptions()  # the library's defaults are the CLI's (pinnkan.config)


@dataclass
class TrainConfig:
    """Budget and sampling of one training run; validated (and normalised) by `validate`.
    Every default is the CLI's: `train:` (TrainOptions) and the default `optim=`."""

    steps: int | None = None  # None: the optimizer's default for a pretrain (optim.steps)
    lbfgs_steps: int = 0
    lr: float | None = None  # None: the optimizer's pretrain lr (adam / gd; lm takes none)
    lr_decay: float = 0.1  # lr falls exponentially to lr·lr_decay over the Adam steps
    n_interior: int = _TRAIN.n_interior
    n_boundary: int = _TRAIN.n_boundary
    derivatives: str = _TRAIN.derivatives
    compile: bool = _TRAIN.compile  # torch.compile the forward engine's loss
    eval_every: int = _TRAIN.eval_every
    log_every: int = _TRAIN.log_every
    progress: str = _TRAIN.progress  # auto (bar on a terminal, log lines otherwise) | bar | ...
    checkpoint_every: int = _TRAIN.checkpoint_every  # resumable state every N steps (0: never)
    optimizer: str = DEFAULT_OPTIMIZER  # adam | gd (then optional L-BFGS) | lm
    lm: LMConfig = field(default_factory=LMConfig)
    max_seconds: float = _TRAIN.max_seconds  # stop once training has taken this long (0: none)
    check_memory: bool = _TRAIN.check_memory  # refuse a step that cannot fit in free memory

    def __post_init__(self) -> None:
        """Unset steps / lr / lr_decay / lbfgs_steps take the optimizer's pretrain defaults."""
        options = OPTIMIZER_OPTIONS.get(self.optimizer)
        if options is None:
            return  # `validate` names the bad choice
        default = options()
        if self.steps is None:
            self.steps = stage_value(default.steps, "pretrain", "optim.steps")
        if self.lr is None:
            self.lr = stage_value(getattr(default, "lr", AdamOptions().lr), "pretrain", "optim.lr")

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
        for name in ("compile", "check_memory"):
            if not isinstance(getattr(self, name), bool):
                raise PinnkanError(f"train.{name}={getattr(self, name)!r} must be true or false")
        as_choice(self.progress, "train.progress", ("auto", "bar", "log", "none"))
        as_choice(self.optimizer, "optim.name", OPTIMIZERS)
        self.max_seconds = as_float(self.max_seconds, "train.max_seconds", 0.0)
        self.lm.validate()


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
    """A non-finite loss, raised before the optimizer step (the model is still finite), or a
    network whose output is not finite after the last step."""

    def __init__(
        self, step: int, loss: float, lr: float, history: History, hint: str | None = None
    ) -> None:
        hint = hint or f"lower optim.lr (now {lr:g}) or use precision=float64"
        super().__init__(f"training diverged at step {step} (loss={loss}); {hint}")
        self.step, self.history = step, history


class OutOfMemory(PinnkanError):
    """A step ran out of memory; the state before it was checkpointed (when checkpoints are
    written at all): `saved_step`, else None."""

    def __init__(self, step: int, detail: str, saved_step: int | None) -> None:
        super().__init__(f"out of memory at step {step} ({detail})")
        self.step, self.saved_step = step, saved_step


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


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
    heldout_loss: list[float] = field(default_factory=list)  # optim=lm: loss on held-out points

    def as_dict(self) -> dict[str, list[Any]]:
        out = {
            "step": self.step,
            "seconds": self.seconds,
            "loss": self.loss,
            "rel_l2": self.rel_l2,
        }
        if self.heldout_loss:
            out["heldout_loss"] = self.heldout_loss
        return out


def scaled(weight: float, res: Tensor) -> Tensor:
    """One group's part of the residual vector: res · √(weight / count), so that its squared
    norm is weight · mean(res²), the group's term of the loss."""
    return res * math.sqrt(weight / res.numel())


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
        """(weight, residuals (m,)) of the PDE and of every condition, in batch order.

        `jet_of(x, derivatives)` evaluates the network at x (the Jacobian's own jet pass);
        by default the configured engine, or a plain forward pass where no derivative is read.
        """
        if jet_of is None:

            def jet_of(x: Tensor, derivatives: bool) -> Jet:
                return compute_jet(model, x, self.engine) if derivatives else Jet(model(x))

        x = batch["interior"]
        out = [(self.pde.weights["residual"], self.pde.residual(x, jet_of(x, True)))]
        for cond in self.conditions:
            xc = batch[cond.name]
            out.append((cond.weight, cond.residual(xc, jet_of(xc, cond.derivatives))))
        return out

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

    def residual_vector(self, model: KAN, batch: dict[str, Tensor]) -> Tensor:
        """r (N,) with loss = r·r: each group's residuals scaled by √(weight / count)."""
        return torch.cat([scaled(w, res) for w, res in self.weighted_residuals(model, batch)])


EVAL_CHUNK = 1 << 16  # points per forward pass when evaluating (bounded memory on big grids)


@torch.no_grad()
def predict(model: KAN, points: Tensor) -> Tensor:
    """u at `points` (B, D) -> (B,), EVAL_CHUNK points at a time."""
    return torch.cat([model(chunk)[:, 0] for chunk in points.split(EVAL_CHUNK)])


class Evaluator:
    """Relative L2 error ||u_pred − u_ref||₂ / ||u_ref||₂ on a fixed evaluation grid."""

    def __init__(self, points: Tensor, u_ref: Tensor | None) -> None:
        """`u_ref` None: a PDE without a reference; `rel_l2` is then NaN."""
        self.points, self.u_ref = points, u_ref
        self.ref_norm = None if u_ref is None else torch.linalg.vector_norm(u_ref)

    def predict(self, model: KAN) -> Tensor:
        return predict(model, self.points)

    def rel_l2(self, model: KAN) -> float:
        if self.u_ref is None:
            return math.nan
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


class _Run:
    """What both optimizer loops share: history, timing, progress, checkpoints and stops."""

    def __init__(
        self,
        model: KAN,
        cfg: TrainConfig,
        evaluator: Evaluator,
        gen: torch.Generator,
        desc: str,
        total: int,
        resume: TrainState | None,
        checkpoint: Callable[[TrainState], None] | None,
        stop: Callable[[], int | None] | None,
    ) -> None:
        self.model, self.cfg, self.evaluator, self.gen = model, cfg, evaluator, gen
        self.total, self.checkpoint_fn, self.stop_fn = total, checkpoint, stop
        self.hist, self.elapsed, self.start = History(), 0.0, 0
        if resume is not None:
            model.load_state_dict(resume.model)
            gen.set_state(resume.rng)
            self.hist = History(**{k: list(v) for k, v in resume.history.items()})
            self.elapsed, self.start = float(resume.elapsed), int(resume.step)
        self.progress = Progress(total, cfg.progress, cfg.log_every, desc, initial=self.start)
        self.last_err = self.hist.rel_l2[-1] if self.hist.rel_l2 else evaluator.rel_l2(model)

    def record(
        self,
        step: int,
        loss: float,
        force: bool = False,
        heldout: Callable[[], float] | None = None,
    ) -> None:
        """Evaluate and append to the history every eval_every steps, at the end and when
        `force`d; `heldout()` (the held-out loss) is evaluated only then."""
        if force or step % self.cfg.eval_every == 0 or step == self.total:
            self.last_err = self.evaluator.rel_l2(self.model)
            h = self.hist
            h.step.append(step)
            h.seconds.append(self.elapsed)
            h.loss.append(loss)
            h.rel_l2.append(self.last_err)
            if heldout is not None:
                h.heldout_loss.append(heldout())
        self.progress.update(step, loss, self.last_err)

    def state(
        self,
        step: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        rng: Tensor | None = None,
    ) -> TrainState:
        return TrainState(
            step=step,
            model=self.model.state_dict(),
            optimizer=optimizer,
            scheduler=scheduler,
            rng=self.gen.get_state() if rng is None else rng,
            history=self.hist.as_dict(),
            elapsed=self.elapsed,
        )

    def save(self, state: Callable[[], TrainState]) -> None:
        if self.checkpoint_fn is not None and _finite(self.model):
            self.checkpoint_fn(state())

    def checkpoint_due(self, step: int) -> bool:
        every = self.cfg.checkpoint_every
        return bool(every and step % every == 0)

    def check_stop(self, step: int, state: Callable[[], TrainState] | None) -> None:
        """Checkpoint (when `state` is given) and raise Interrupted if a signal arrived."""
        signum = self.stop_fn() if self.stop_fn is not None else None
        if signum:
            if state is not None and self.checkpoint_fn is not None:
                self.checkpoint_fn(state())
            self.progress.close()
            raise Interrupted(signum, step, self.hist)

    def out_of_memory(
        self, step: int, exc: BaseException, before: Callable[[], TrainState] | None
    ) -> OutOfMemory:
        """The error for a step that ran out of memory, after checkpointing `before()` (the
        state the step started from, so a resume repeats it; None: no such state, L-BFGS)."""
        self.progress.close()
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        detail = re.sub(r"^\[enforce fail at [^\]]*\]\s*(err == 0\.|\.)?\s*", "", detail)[:200]
        saved = None
        if before is not None and self.checkpoint_fn is not None and step > 1:
            try:
                self.checkpoint_fn(before())
                saved = step - 1
            except Exception as again:  # no memory even for that: say so, keep the old one
                if not is_out_of_memory(again):
                    raise
        return OutOfMemory(step, detail, saved)

    def out_of_time(self) -> bool:
        return bool(self.cfg.max_seconds) and self.elapsed >= self.cfg.max_seconds

    def diverged(self, step: int, value: float, lr: float, hint: str | None = None) -> Diverged:
        self.progress.close()
        return Diverged(step, value, lr, self.hist, hint)


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
    """Train the parameters of `groups` with cfg.optimizer: Adam for cfg.steps (lr decaying to
    lr·lr_decay) then optional L-BFGS, or Levenberg–Marquardt (`_train_lm`; lr is unused).

    `checkpoint(state)` is called every cfg.checkpoint_every steps (only with finite
    parameters), at the end of the Adam phase when L-BFGS follows, and when `stop()` returns a
    signal number; then `Interrupted` is raised. `resume` continues from such a state, giving
    the numbers an uninterrupted run would. A non-finite loss raises `Diverged`. A stop during
    L-BFGS raises `Interrupted` without a new state: resuming replays L-BFGS from the last
    Adam-phase state (same numbers, some repeated work). cfg.max_seconds ends either loop early.
    """
    cfg.validate()
    total = cfg.steps + (cfg.lbfgs_steps if cfg.optimizer in FIRST_ORDER else 0)
    run = _Run(model, cfg, evaluator, gen, desc, total, resume, checkpoint, stop)
    if cfg.optimizer == "lm":
        hist = _train_lm(run, loss_fn, [p for g in groups for p in g["params"]], resume)
    else:
        hist = _train_adam(run, loss_fn, groups, resume)
    # the loss is checked before each step, so only the last step can leave the network
    # non-finite: such a run diverged, it must not finish with status ok and rel. L2 nan
    if not bool(torch.isfinite(evaluator.predict(model)).all()):
        raise run.diverged(hist.step[-1] if hist.step else run.start, math.nan, cfg.lr)
    return hist


def _train_adam(
    run: _Run, loss_fn: PinnLoss, groups: list[dict[str, Any]], resume: TrainState | None
) -> History:
    """Adam (or plain gradient descent, `optim=gd`: the setting of LoTRA's learning-rate
    theory) with exponential lr decay, then optional L-BFGS (see `train`)."""
    model, cfg, gen = run.model, run.cfg, run.gen
    device, dtype = model.lo.device, model.lo.dtype
    opt: torch.optim.Optimizer
    opt = torch.optim.Adam(groups) if cfg.optimizer == "adam" else torch.optim.SGD(groups)
    gamma = cfg.lr_decay ** (1.0 / cfg.steps)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    if resume is not None:
        opt.load_state_dict(resume.optimizer)
        sched.load_state_dict(resume.scheduler)

    def state(step: int, rng: Tensor | None = None) -> Callable[[], TrainState]:
        return lambda: run.state(step, opt.state_dict(), sched.state_dict(), rng)

    if cfg.compile:
        step_fn: Callable[[dict[str, Tensor]], Tensor] = CompiledStep(loss_fn, model)
    else:
        step_fn = functools.partial(loss_and_backward, loss_fn, model)
    for step in range(run.start + 1, cfg.steps + 1):
        t0 = time.perf_counter()
        rng = gen.get_state()  # a step that runs out of memory is checkpointed as not begun
        try:
            batch = loss_fn.sample(cfg.n_interior, cfg.n_boundary, gen, dtype, device)
            opt.zero_grad(set_to_none=True)
            value = float(step_fn(batch).detach())
        except Exception as exc:  # the parameters are untouched until opt.step
            if not is_out_of_memory(exc):
                raise
            raise run.out_of_memory(step, exc, state(step - 1, rng)) from None
        if not math.isfinite(value):  # before the step: the model stays finite
            raise run.diverged(step, value, opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        run.elapsed += time.perf_counter() - t0
        timed_out = run.out_of_time()
        run.record(step, value, force=timed_out)
        if run.checkpoint_due(step) or (step == cfg.steps and cfg.lbfgs_steps):
            run.save(state(step))
        run.check_stop(step, state(step))
        if timed_out:
            run.progress.close()
            return run.hist

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

        for step in range(cfg.steps + 1, run.total + 1):
            t0 = time.perf_counter()
            try:
                value = float(lbfgs.step(closure).detach())
            except Exception as exc:  # L-BFGS works on 4x the points
                if not is_out_of_memory(exc):
                    raise
                raise run.out_of_memory(step, exc, None) from None
            run.elapsed += time.perf_counter() - t0
            if not math.isfinite(value):
                raise run.diverged(step, value, 1.0)
            timed_out = run.out_of_time()
            run.record(step, value, force=timed_out)
            run.check_stop(step, None)
            if timed_out:
                break
    run.progress.close()
    return run.hist


def _train_lm(
    run: _Run, loss_fn: PinnLoss, params: list[torch.nn.Parameter], resume: TrainState | None
) -> History:
    """Levenberg–Marquardt on the residual vector (`pinnkan.jacobian`) for up to cfg.steps
    trial steps, on a fixed Sobol collocation set (new points every cfg.lm.resample_every
    accepted steps). A rejected trial is undone and retried with more damping from the same J;
    the run ends early, cleanly, when the damping exceeds cfg.lm.damping_max (no step lowers the
    loss: converged or stalled). The loss on a second, held-out point set is recorded with
    every evaluation (history `heldout_loss`), showing whether the residual is overfitted.
    """
    from pinnkan.jacobian import residuals, residuals_and_jacobian  # imports this module
    from pinnkan.levenberg_marquardt import LevenbergMarquardt, assign_flat, flat_view

    model, cfg, gen = run.model, run.cfg, run.gen
    device, dtype = model.lo.device, model.lo.dtype
    lm = LevenbergMarquardt(cfg.lm)

    def new_batch() -> dict[str, Tensor]:
        return loss_fn.sample(cfg.n_interior, cfg.n_boundary, gen, dtype, device, quasi=True)

    if resume is not None:
        lm.load_state_dict(resume.optimizer["lm"])
        batch, heldout = resume.optimizer["batch"], resume.optimizer["heldout"]
        accepted = int(resume.optimizer["accepted"])
    else:
        heldout, batch, accepted = new_batch(), new_batch(), 0

    def loss_at(points: dict[str, Tensor]) -> float:
        r = residuals(loss_fn, model, points)
        return float(r @ r)

    def state(step: int) -> Callable[[], TrainState]:
        extra = {"lm": lm.state_dict(), "batch": batch, "heldout": heldout, "accepted": accepted}
        return lambda: run.state(step, extra, {})

    r = J = None
    loss = math.nan
    for step in range(run.start + 1, cfg.steps + 1):
        t0 = time.perf_counter()
        before, theta = state(step - 1), flat_view(params)
        try:
            if J is None:
                r, J = residuals_and_jacobian(loss_fn, model, batch)
                loss = float(r @ r)
                lm.forget_jacobian()
            if not math.isfinite(loss):
                raise run.diverged(step, loss, 0.0, "use precision=float64 or fewer points")
            proposal = lm.propose(r, J)
            predicted, trial = None, math.nan
            if proposal is not None:
                step_vector, predicted = proposal
                assign_flat(params, theta + step_vector)
                trial = loss_at(batch)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            r = J = step_vector = None  # free what the failed step held
            assign_flat(params, theta)  # undo a trial step
            raise run.out_of_memory(step, exc, before) from None
        if lm.judge(predicted, loss - trial):  # a non-finite trial is rejected
            loss, J, accepted = trial, None, accepted + 1
            if cfg.lm.resample_every and accepted % cfg.lm.resample_every == 0:
                batch = new_batch()
        else:
            assign_flat(params, theta)
        run.elapsed += time.perf_counter() - t0
        done = lm.exhausted or run.out_of_time()
        run.record(step, loss, force=done, heldout=lambda: loss_at(heldout))
        if run.checkpoint_due(step):
            run.save(state(step))
        run.check_stop(step, state(step))
        if lm.exhausted:
            log.info(
                "%s: stopped at step %d, damping %.1e > optim.damping_max (converged or "
                "stalled), loss %.3e",
                run.progress.desc,
                step,
                lm.damping,
                loss,
            )
        if done:
            break
    run.progress.close()
    return run.hist


def _finite(model: KAN) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
