"""One training run: its configuration, its resumable state and history, the ways it ends
(diverged, out of memory, interrupted), and `train`, which hands it to the optimizer's loop
(`pinnkan.first_order` for Adam/GD + L-BFGS, `pinnkan.lm_loop` for Levenberg–Marquardt)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pinnkan.config_checks import as_choice, as_float, as_int
from pinnkan.derivatives import ENGINES
from pinnkan.errors import PinnkanError
from pinnkan.evaluation import Evaluator
from pinnkan.homotopy import HomotopyPath
from pinnkan.kan import KAN
from pinnkan.levenberg_marquardt import LMConfig
from pinnkan.loss import PinnLoss
from pinnkan.options import DEFAULT_OPTIMIZER, AdamOptions, TrainOptions, stage_value
from pinnkan.options import OPTIMIZERS as OPTIMIZER_OPTIONS
from pinnkan.progress import Progress

if TYPE_CHECKING:
    from pinnkan.adapters.growth import RankGrowth

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
    tol: float = _TRAIN.tol  # stop at held-out loss <= tol x the loss of u = 0 there (0: off)
    check_memory: bool = _TRAIN.check_memory  # refuse a step that cannot fit in free memory
    causal: float = _TRAIN.causal  # ε of the causal weighting in time (pinnkan.causal; 0: off)
    causal_slices: int = _TRAIN.causal_slices
    time_windows: int = _TRAIN.time_windows  # time marching in one network (optim=lm; 1: off)
    window_tol: float = _TRAIN.window_tol
    window_steps: int = _TRAIN.window_steps

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
        self.tol = as_float(self.tol, "train.tol", 0.0)
        self.causal = as_float(self.causal, "train.causal", 0.0)
        self.causal_slices = as_int(self.causal_slices, "train.causal_slices", 1)
        self.time_windows = as_int(self.time_windows, "train.time_windows", 1, 10_000)
        self.window_tol = as_float(self.window_tol, "train.window_tol", 0.0)
        self.window_steps = as_int(self.window_steps, "train.window_steps", 1)
        if self.time_windows > 1 and self.optimizer != "lm":
            raise PinnkanError(
                f"train.time_windows={self.time_windows} needs optim=lm (it opens the next "
                "window on LM's own signals); use train.causal with optim=" + self.optimizer
            )
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
    # the run ended at this step ({"reason": stop_reason, "relative_loss": ...}): a resume
    # from this state finishes without another step (None: it goes on)
    stopped: dict[str, Any] | None = None


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
    # why training ended: steps (the budget), max_seconds, tolerance (train.tol met), or
    # converged (optim=lm: no step lowers the loss any more, the damping passed
    # optim.damping_max)
    stop_reason: str = "steps"
    # the last tolerance test: held-out loss / loss of u = 0 on the same points (nan: none yet)
    relative_loss: float = math.nan
    # train.causal > 0: the smallest slice weight in use, and the share of slices settled
    causal_weight_min: list[float] = field(default_factory=list)
    causal_front: list[float] = field(default_factory=list)
    # adapter=lstsq: the loss on the solve's points before it (its one entry)
    loss_before: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[Any]]:
        out = {
            "step": self.step,
            "seconds": self.seconds,
            "loss": self.loss,
            "rel_l2": self.rel_l2,
        }
        for key in ("heldout_loss", "causal_weight_min", "causal_front", "loss_before"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


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
        causal: Callable[[], tuple[float, float] | None] = lambda: None,
    ) -> None:
        self.model, self.cfg, self.evaluator, self.gen = model, cfg, evaluator, gen
        self.causal = causal  # the causal weights' summary (PinnLoss.causal_summary)
        self.total, self.checkpoint_fn, self.stop_fn = total, checkpoint, stop
        self.hist, self.elapsed, self.start = History(), 0.0, 0
        self.finished = False  # set by `finish`: the run ends at the current step
        if resume is not None:
            model.load_state_dict(resume.model)
            gen.set_state(resume.rng)
            self.hist = History(**{k: list(v) for k, v in resume.history.items()})
            self.elapsed, self.start = float(resume.elapsed), int(resume.step)
            if resume.stopped is not None:  # killed after its last step, before its files
                self.finish(resume.stopped["reason"])
                self.hist.relative_loss = float(resume.stopped["relative_loss"])
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
            causal = self.causal()
            if causal is not None:
                h.causal_weight_min.append(causal[0])
                h.causal_front.append(causal[1])
        self.progress.update(step, loss, self.last_err)

    def finish(self, reason: str) -> None:
        """The run ends at the current step for `reason` (a stop_reason): set before that
        step's checkpoint, so that a resume from it ends there too."""
        self.hist.stop_reason = reason
        self.finished = True

    def state(
        self,
        step: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        rng: Tensor | None = None,
    ) -> TrainState:
        stopped = None
        if self.finished:
            stopped = {"reason": self.hist.stop_reason, "relative_loss": self.hist.relative_loss}
        return TrainState(
            step=step,
            model=self.model.state_dict(),
            optimizer=optimizer,
            scheduler=scheduler,
            rng=self.gen.get_state() if rng is None else rng,
            history=self.hist.as_dict(),
            elapsed=self.elapsed,
            stopped=stopped,
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

    def tol_bound(self, zero_loss: float) -> float:
        """The loss train.tol allows: tol × `zero_loss`, the loss of u = 0 on the same points
        (tol itself where that is 0)."""
        return self.cfg.tol * (zero_loss if zero_loss > 0 else 1.0)

    def within_tol(self, loss: float, zero_loss: float) -> bool:
        """Whether `loss` (on points not trained on) meets train.tol relative to `zero_loss`
        (`tol_bound`); records the ratio."""
        if not self.cfg.tol:
            return False
        self.hist.relative_loss = loss / (zero_loss if zero_loss > 0 else 1.0)
        return loss <= self.tol_bound(zero_loss)

    def diverged(self, step: int, value: float, lr: float, hint: str | None = None) -> Diverged:
        self.progress.close()
        return Diverged(step, value, lr, self.hist, hint)


# a loop that replaces the optimizer's (`train`'s `loop`): (run, loss_fn) -> its history
Loop = Callable[[_Run, PinnLoss], History]


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
    loop: Loop | None = None,
    path: HomotopyPath | None = None,
    growth: RankGrowth | None = None,
) -> History:
    """Train the parameters of `groups` with cfg.optimizer: Adam for cfg.steps (lr decaying to
    lr·lr_decay) then optional L-BFGS, or Levenberg–Marquardt (`train_lm`; lr is unused).

    `checkpoint(state)` is called every cfg.checkpoint_every steps (only with finite
    parameters), at the end of the Adam phase when L-BFGS follows, and when `stop()` returns a
    signal number; then `Interrupted` is raised. `resume` continues from such a state, giving
    the numbers an uninterrupted run would. A non-finite loss raises `Diverged`. A stop during
    L-BFGS raises `Interrupted` without a new state: resuming replays L-BFGS from the last
    Adam-phase state (same numbers, some repeated work). cfg.max_seconds ends either loop early.
    `loss_fn` must carry cfg's causal weighting (`PinnLoss(pde, engine, cfg.causal,
    cfg.causal_slices)`); the loops refresh its weights. `loop(run, loss_fn)` replaces the
    optimizer's loop (adapter=lstsq: `pinnkan.lstsq.train_lstsq`, one solve in cfg.steps = 1).
    `path` (optim=lm only): a homotopy from the source's member to `loss_fn`'s, leg by leg
    (`pinnkan.homotopy`). `growth` (optim=lm only): LoTRA ranks that rise on a stall
    (`pinnkan.adapters.growth`; a resumed run's model must have the ranks of its state:
    `match_ranks`).
    """
    # the loops import this module (state, history, errors): imported here, not at the top
    from pinnkan.first_order import train_first_order
    from pinnkan.lm_loop import train_lm

    cfg.validate()
    if path is not None and (cfg.optimizer != "lm" or loop is not None):
        raise PinnkanError("transfer.homotopy needs optim=lm (its legs end on LM's signals)")
    if growth is not None and (cfg.optimizer != "lm" or loop is not None):
        raise PinnkanError("adapter.grow_to needs optim=lm (it grows the ranks on LM's signals)")
    own = (loss_fn.causal.eps, loss_fn.causal.slices) if loss_fn.causal else (0.0, None)
    if own != ((cfg.causal, cfg.causal_slices) if cfg.causal else (0.0, None)):
        raise PinnkanError(
            f"train.causal={cfg.causal:g} (slices {cfg.causal_slices}) but the loss has "
            f"causal={own[0]:g} (slices {own[1]}): pass both to PinnLoss"
        )
    total = cfg.steps + (cfg.lbfgs_steps if cfg.optimizer in FIRST_ORDER else 0)
    run = _Run(
        model, cfg, evaluator, gen, desc, total, resume, checkpoint, stop, loss_fn.causal_summary
    )
    if run.finished:  # resumed from the state of its last step: nothing to train
        run.progress.close()
        hist = run.hist
    elif loop is not None:
        hist = loop(run, loss_fn)
    elif cfg.optimizer == "lm":
        params = [p for g in groups for p in g["params"]]
        hist = train_lm(run, loss_fn, params, resume, path, growth)
    else:
        hist = train_first_order(run, loss_fn, groups, resume)
    # the loss is checked before each step, so only the last step can leave the network
    # non-finite: such a run diverged, it must not finish with status ok and rel. L2 nan
    if not bool(torch.isfinite(evaluator.predict(model)).all()):
        raise run.diverged(hist.step[-1] if hist.step else run.start, math.nan, cfg.lr)
    return hist


def _finite(model: KAN) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
