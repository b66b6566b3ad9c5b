"""The Levenberg–Marquardt loop: LM steps (`pinnkan.levenberg_marquardt`) on the residual
vector and its Jacobian (`pinnkan.jacobian`), with a held-out loss recorded beside the error."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pinnkan.jacobian import residuals, residuals_and_jacobian
from pinnkan.levenberg_marquardt import LevenbergMarquardt, assign_flat, flat_view
from pinnkan.loss import PinnLoss
from pinnkan.training import is_out_of_memory

if TYPE_CHECKING:
    from pinnkan.training import History, TrainState, _Run

log = logging.getLogger("pinnkan")


def train_lm(
    run: _Run, loss_fn: PinnLoss, params: list[torch.nn.Parameter], resume: TrainState | None
) -> History:
    """Levenberg–Marquardt on the residual vector (`pinnkan.jacobian`) for up to cfg.steps
    trial steps, on a fixed Sobol collocation set (new points every cfg.lm.resample_every
    accepted steps). A rejected trial is undone and retried with more damping from the same J;
    the run ends early, cleanly, when the damping exceeds cfg.lm.damping_max (no step lowers the
    loss: converged or stalled). The loss on a second, held-out point set is recorded with
    every evaluation (history `heldout_loss`), showing whether the residual is overfitted.
    """
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
                loss_fn.refresh_causal(model, batch)  # weights constant until the next J
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
