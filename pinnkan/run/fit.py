"""Training inside a stage: checkpoints, resume and clean stops (interrupt, divergence, out of
memory), each stop leaving partial results and a one-line message."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pinnkan.adapters.growth import RankGrowth, match_ranks
from pinnkan.common.atomic import make_dir
from pinnkan.common.interrupts import StopRequest
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import STATE_FILE
from pinnkan.io.results import RunResult
from pinnkan.network.evaluation import Evaluator
from pinnkan.network.kan import KAN
from pinnkan.pde import PDEFamily
from pinnkan.pinn.homotopy import HomotopyPath
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run.config import RunConfig
from pinnkan.run.outcome import build_result, finish
from pinnkan.run.resume import config_fingerprint
from pinnkan.run.setup import Setup, eval_points
from pinnkan.train.state import (
    Diverged,
    History,
    Interrupted,
    OutOfMemory,
    TrainState,
    save_train_state,
)
from pinnkan.train.training import Loop, train


@dataclass
class StageRun:
    """One stage's pieces, as `fit` trains them and writes the partial results of a stop."""

    cfg: RunConfig
    model: KAN
    pde: PDEFamily
    setup: Setup
    loss_fn: PinnLoss
    gen: torch.Generator
    run_dir: Path
    config_yaml: str = ""
    path: HomotopyPath | None = None  # transfer.homotopy: the member moves leg by leg
    growth: RankGrowth | None = None  # adapter.grow_to: LoTRA ranks that rise on a stall


def fit(
    run: StageRun,
    groups: list[dict[str, Any]],
    desc: str,
    resume: tuple[dict, TrainState] | None,
    state_meta: dict[str, Any],
    report: tuple[str, dict[str, Any], dict[str, Any]],
    loop: Loop | None = None,
) -> History:
    """Train with checkpoints, resume and clean stops; on a stop write the partial results.

    `report` = (stage, extra metrics, attrs): what `build_result` needs for them; `loop`
    replaces the optimizer's loop (`pinnkan.train.training.train`)."""
    stage, extra, attrs = report
    cfg, model, pde, setup, run_dir = run.cfg, run.model, run.pde, run.setup, run.run_dir
    config_yaml, gen, loss_fn = run.config_yaml, run.gen, run.loss_fn

    def write_partial(hist: History, status: str, more: dict[str, Any]) -> RunResult:
        metrics = {**extra, **more}
        res = build_result(cfg, stage, model, pde, setup, hist, config_yaml, metrics, attrs, status)
        return finish(run_dir, res)

    n = eval_points(cfg, pde)
    _, pts = pde.grid(n, setup.dtype)
    # a reference file's grid can hold far more than n^D points (PDEBench's: 1024 × 201): the
    # history's error is taken on every k-th of them, the run's final errors on all
    pts = pts[:: max(1, math.ceil(len(pts) / n**pde.dim))]
    ref = pde.exact(pts).to(setup.device) if pde.has_reference else None
    evaluator = Evaluator(pts.to(setup.device), ref)
    meta = {**state_meta, "fingerprint": config_fingerprint(cfg.as_dict())}
    saved_step = resume[1].step if resume else None
    if run.growth is not None and resume is not None:
        match_ranks(model, resume[1].model)  # the ranks the run had grown to

    def checkpoint(state: TrainState) -> None:
        nonlocal saved_step
        make_dir(run_dir)
        save_train_state(run_dir / STATE_FILE, state, meta)
        saved_step = state.step

    with StopRequest() as stop:
        try:
            return train(
                model,
                loss_fn,
                groups,
                setup.train,
                evaluator,
                gen,
                desc=desc,
                resume=resume[1] if resume else None,
                checkpoint=checkpoint,
                stop=stop,
                loop=loop,
                path=run.path,
                growth=run.growth,
            )
        except Interrupted as exc:
            write_partial(exc.history, "interrupted", {"steps_done": exc.step})
            raise StageInterrupted(exc.signum, exc.step, run_dir, saved_step) from None
        except OutOfMemory as exc:
            smaller = "lower train.n_interior / train.n_boundary or model.hidden and start again"
            step = exc.saved_step or saved_step
            if step:
                raise PinnkanError(
                    f"{exc}; checkpoint at step {step} in {run_dir / STATE_FILE}: {smaller}, "
                    f"or free memory and `pinnkan {stage} resume={run_dir}`"
                ) from None
            raise PinnkanError(f"{exc}; no checkpoint: {smaller}") from None
        except Diverged as exc:
            write_partial(exc.history, "diverged", {"diverged_at_step": exc.step})
            kept = (
                f"; last good checkpoint: step {saved_step} in {run_dir / STATE_FILE}"
                if saved_step
                else ""
            )
            raise PinnkanError(f"{exc}{kept}") from None


class StageInterrupted(Exception):
    """A stage stopped by SIGINT/SIGTERM after writing its checkpoint and partial results."""

    def __init__(self, signum: int, step: int, run_dir: Path, saved_step: int | None) -> None:
        super().__init__(f"interrupted after step {step}")
        self.signum, self.step, self.run_dir, self.saved_step = signum, step, run_dir, saved_step
