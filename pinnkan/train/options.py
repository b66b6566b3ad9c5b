"""The `train:` and `transfer:` settings with their defaults: shared by the library's
`TrainConfig` and the run config (`pinnkan.run.config`), so both start from the same values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pinnkan.errors import PinnkanError

TOL_DEFAULT = 1e-8  # how it was chosen, and what it gives on the default members: docs/tolerance.md


@dataclass
class TrainOptions:
    """`train:` a stage's budget, sampling, progress and checkpoints."""

    steps: int | None = None  # null: the optimizer's default for the stage (optim.steps)
    max_seconds: float = 0.0  # stop training after this many seconds (0: no limit)
    # stop once the loss on points not trained on is below tol × the loss u ≡ 0 has there (a
    # relative residual the user can set without a reference; 0: off). optim=lm: a held-out
    # set; adam / gd: each step's fresh points, before the step
    tol: float = TOL_DEFAULT
    n_interior: int = 1024  # interior collocation points per step (resampled every step)
    n_boundary: int = 256  # points per boundary / initial condition per step
    derivatives: str = "forward"  # forward (jet propagation) | autograd (nested autograd)
    compile: bool = False  # torch.compile the forward engine's loss: ~1.5x per step, ~40 s once
    eval_every: int = 100  # relative L2 on the evaluation grid every N steps (history/)
    log_every: int = 250  # log line every N steps when stderr is not a terminal
    progress: str = "auto"  # auto | bar | log | none
    checkpoint_every: int = 250  # resumable training state (checkpoint.pt) every N steps; 0: never
    check_memory: bool = True  # refuse a config whose training step cannot fit in free memory
    causal: float = 0.0  # ε of the causal weighting of the PDE residual in time (0: off)
    causal_slices: int = 32  # time slices M of the causal weighting
    # time marching in one network (optim=lm): the interior points cover t in the first k/K of
    # the interval, k = 1..K; the next window opens once the loss on the points is below
    # window_tol, after window_steps accepted steps in the window, or when LM has converged
    time_windows: int = 1  # K (1: the whole interval from the start)
    window_tol: float = 1e-8
    window_steps: int = 100


@dataclass
class TransferOptions:
    """`transfer:` where a transfer starts (pinnkan.run.continuation)."""

    start: str = "source"  # source | nearest (the nearest solved member beside it) | a run dir
    predictor: str = "none"  # none | secant (start=nearest) | the secant's second run
    wait_seconds: float = 3600.0  # start=nearest in a sweep: the longest wait for earlier jobs
    # homotopy in one run (optim=lm): the member moves from the source's parameters to the
    # target's in legs, the first 1/homotopy long; a leg not done (tol / converged) after
    # leg_steps accepted steps is shortened (pinnkan.pinn.homotopy). 1: off, straight to the target
    homotopy: int = 1
    leg_steps: int = 50


def stage_value(value: Any, stage: str, name: str) -> Any:
    """A per-stage value ({pretrain: .., transfer: ..}) for `stage`, or a plain value."""
    if isinstance(value, dict):
        if stage not in value:
            raise PinnkanError(f"{name} has no entry for stage {stage!r}: {value}")
        return value[stage]
    return value
