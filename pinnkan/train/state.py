"""A training run's resumable state and sampled history, the file that holds the state, and
the ways a run ends early (diverged, out of memory, interrupted)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import STATE_FORMAT, atomic_torch_save, load_checkpoint
from pinnkan.version import __version__


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


def save_train_state(path: Path, state: TrainState, meta: dict[str, Any]) -> None:
    """Write a resumable training state (model, optimizer, scheduler, RNG, history) atomically."""
    header = {**meta, "step": state.step, "pinnkan_version": __version__}
    body = dict(vars(state))  # no deep copy
    atomic_torch_save({"format": STATE_FORMAT, "meta": json.dumps(header), "state": body}, path)


def load_train_state(path: Path) -> tuple[dict[str, Any], TrainState]:
    """Read a state written by `save_train_state`; a damaged file is one PinnkanError."""
    meta, body = load_checkpoint(path, STATE_FORMAT)
    try:
        return meta, TrainState(**body)
    except TypeError:
        raise PinnkanError(f"checkpoint {path} is damaged (missing fields)") from None
