"""What every optimizer's loop shares (`LoopRun`): the history, timing, progress bar,
checkpoints, the stop on a signal, time budget or tolerance, and the errors a run ends with."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pinnkan.common.progress import Progress
from pinnkan.network.evaluation import Evaluator
from pinnkan.network.kan import KAN
from pinnkan.train.config import TrainConfig
from pinnkan.train.state import (
    Diverged,
    History,
    Interrupted,
    OutOfMemory,
    TrainState,
    is_out_of_memory,
)


class LoopRun:
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
        if self.checkpoint_fn is not None and finite(self.model):
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


def finite(model: KAN) -> bool:
    """Whether every parameter of the network is finite."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
