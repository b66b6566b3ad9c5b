"""The Levenberg–Marquardt loop (`optim=lm`): LM steps (`pinnkan.train.levenberg_marquardt`) on
the residual vector and its Jacobian (`pinnkan.pinn.jacobian`), with a held-out loss recorded
beside the error."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from torch import Tensor

from pinnkan.pinn.jacobian import (
    chunked_loss,
    normal_equations,
    residuals_and_jacobian,
)
from pinnkan.pinn.loss import PinnLoss
from pinnkan.pinn.sampling import draw_by_residual, pde_residual
from pinnkan.train.gauss_newton import CG_ROWS, GaussNewtonProducts
from pinnkan.train.levenberg_marquardt import LevenbergMarquardt, LMConfig, assign_flat, flat_view
from pinnkan.train.loop_run import LoopRun
from pinnkan.train.optimizers import Optimizer, register_optimizer
from pinnkan.train.options import stage_value
from pinnkan.train.state import History, TrainState, is_out_of_memory

if TYPE_CHECKING:
    from pinnkan.adapters.growth import RankGrowth
    from pinnkan.pinn.homotopy import HomotopyPath

log = logging.getLogger("pinnkan")

PRETRAIN_DAMPING = LMConfig.damping  # a pretrain starts far from its solution
TRANSFER_DAMPING = 1e-7  # chosen on held-out seeds: docs/family_benchmark.md


@dataclass
class LMOptions(LMConfig):
    """`optim=lm`: Levenberg–Marquardt on the residual vector (float64 under precision=auto)."""

    name: str = "lm"
    steps: Any = field(default_factory=lambda: {"pretrain": 500, "transfer": 300})
    # the initial λ, per stage or one number: a transfer starts near its solution, where the
    # pretrain's λ would spend its first steps damping it down (docs/family_benchmark.md)
    damping: Any = field(
        default_factory=lambda: {"pretrain": PRETRAIN_DAMPING, "transfer": TRANSFER_DAMPING}
    )


def train_lm(
    run: LoopRun,
    loss_fn: PinnLoss,
    groups: list[dict[str, Any]],
    resume: TrainState | None,
    path: HomotopyPath | None = None,
    growth: RankGrowth | None = None,
) -> History:
    """Levenberg–Marquardt on the residual vector (`pinnkan.pinn.jacobian`) for up to cfg.steps
    trial steps, on a fixed Sobol collocation set (new points every cfg.lm.resample_every
    accepted steps; with cfg.lm.sampling = rad, drawn where the residual is large). In the
    primal form (P ≤ N) JᵀJ is accumulated over chunks of points, never all of J. A rejected
    trial is undone and retried with more damping from the same system;
    the run ends early, cleanly, when the damping exceeds cfg.lm.damping_max (no step lowers the
    loss: converged or stalled). The loss on a second, held-out point set is recorded with
    every evaluation (history `heldout_loss`), showing whether the residual is overfitted.
    With a homotopy `path` the loss is that of the path's current member, which moves towards
    `loss_fn`'s (the target) leg by leg (`pinnkan.pinn.homotopy`); the points stay. With rank
    `growth` the LoTRA ranks rise on a stall (`pinnkan.adapters.growth`) and the trained
    parameters become the grown factors.
    """
    model, cfg, gen = run.model, run.cfg, run.gen
    params = [p for g in groups for p in g["params"]]
    device, dtype = model.lo.device, model.lo.dtype
    lm = LevenbergMarquardt(cfg.lm)

    if growth is not None:
        if resume is not None:
            growth.load_state_dict(resume.optimizer["growth"])
        params = growth.parameters(model)  # at the ranks the run (resumed) has
    # time marching (train.time_windows = K): the interior covers the first window/K of t
    windows, window, in_window = cfg.time_windows, 1, 0
    if resume is not None:
        window = int(resume.optimizer.get("window", 1))
        in_window = int(resume.optimizer.get("in_window", 0))
    if path is not None:  # homotopy: the loss of the path's current member
        if resume is not None:
            path.load_state_dict(resume.optimizer["homotopy"])
        else:
            path.start()
        loss_fn = path.loss()

    def new_batch(adaptive: bool = False, whole: bool = False) -> dict[str, Tensor]:
        """Sobol points; `adaptive` (optim.sampling=rad): the interior drawn from a pool by
        the current network's residual (the first batch and the held-out set stay uniform);
        in the current time window unless `whole` (the held-out set)."""
        frac = 1.0 if whole else window / windows
        rad = adaptive and cfg.lm.sampling == "rad"
        n = cfg.n_interior * (cfg.lm.rad_pool if rad else 1)  # rad: a pool to draw from
        batch = loss_fn.sample(n, cfg.n_boundary, gen, dtype, device, quasi=True, t_fraction=frac)
        if rad:
            res = pde_residual(loss_fn.pde, model, batch["interior"], rows)
            k, c = cfg.lm.rad_k, cfg.lm.rad_c
            batch["interior"] = draw_by_residual(batch["interior"], res, cfg.n_interior, k, c, gen)
        return batch

    if resume is not None:
        lm.load_state_dict(resume.optimizer["lm"])
        batch, heldout = resume.optimizer["batch"], resume.optimizer["heldout"]
        accepted = int(resume.optimizer["accepted"])
    else:
        heldout, batch, accepted = new_batch(whole=True), new_batch(), 0

    def layout() -> tuple[int, int, str, int]:
        """How the system of `params` on the batch is built: (P, interior points per chunk of
        J, form, pieces the loss is summed over). Primal: JᵀJ accumulated over chunks of
        `rows` interior points; kernel: one whole J; cg: J v and Jᵀu products chunk by chunk
        (`pinnkan.train.gauss_newton`). The trial loss is summed over the same pieces as the
        current one (bit for bit comparable)."""
        n = sum(p.numel() for p in params)
        form = lm.form(loss_fn.n_rows(batch), n)
        chunk = (cfg.lm.chunk or CG_ROWS) if form == "cg" else cfg.lm.chunk_rows(n)
        return n, chunk, form, max(cfg.n_interior, 1) if form == "kernel" else chunk

    n_params, rows, form, pieces = layout()

    def loss_at(points: dict[str, Tensor]) -> float:
        return chunked_loss(loss_fn, model, points, pieces)

    def uniform_loss(points: dict[str, Tensor]) -> float:
        with loss_fn.uniform():  # the tolerance reads the plain loss, not the causal one
            return loss_at(points)

    def zero_heldout_loss() -> float:
        """The loss u = 0 has on the held-out points, which train.tol is relative to."""
        return loss_fn.zero_loss(heldout) if cfg.tol else 0.0

    zero_heldout = zero_heldout_loss()

    def state(step: int) -> Callable[[], TrainState]:
        extra = {"lm": lm.state_dict(), "batch": batch, "heldout": heldout, "accepted": accepted}
        extra |= {"window": window, "in_window": in_window}
        if path is not None:
            extra["homotopy"] = path.state_dict()
        if growth is not None:
            extra["growth"] = growth.state_dict()
        return lambda: run.state(step, extra, {})

    loss = math.nan
    for step in range(run.start + 1, cfg.steps + 1):
        t0 = time.perf_counter()
        before, theta = state(step - 1), flat_view(params)
        try:
            if not lm.has_system:
                loss_fn.refresh_causal(model, batch)  # weights constant until the next system
                if form == "primal":
                    loss, gram, grad = normal_equations(loss_fn, model, batch, rows)
                    lm.set_normal(gram, grad)
                    del gram, grad
                elif form == "cg":
                    gn = GaussNewtonProducts(loss_fn, model, params, batch, rows)
                    loss = loss_at(batch)  # as the trial's: comparable bit for bit
                    lm.set_products(gn.gram_times, gn.grad, gn.column_norms2())
                    del gn
                else:
                    r, J = residuals_and_jacobian(loss_fn, model, batch)
                    loss = float(r @ r)
                    lm.set_jacobian(r, J)
                    del r, J
            if not math.isfinite(loss):
                raise run.diverged(step, loss, 0.0, "use precision=float64 or fewer points")
            proposal = lm.propose()
            predicted, trial = None, math.nan
            if proposal is not None:
                step_vector, predicted = proposal
                assign_flat(params, theta + step_vector)
                trial = loss_at(batch)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            lm.forget_jacobian()  # free what the failed step held
            step_vector = None
            assign_flat(params, theta)  # undo a trial step
            raise run.out_of_memory(step, exc, before) from None
        kept = lm.judge(predicted, loss - trial)  # a non-finite trial is rejected
        if kept:
            loss, accepted, in_window = trial, accepted + 1, in_window + 1
            lm.forget_jacobian()
        else:
            assign_flat(params, theta)
        if window < windows and (
            lm.exhausted or (kept and (loss < cfg.window_tol or in_window >= cfg.window_steps))
        ):  # the next time window: new points there, the damping back to its start
            window, in_window = window + 1, 0
            log.info("%s: step %d, time window %d/%d", run.progress.desc, step, window, windows)
            batch = new_batch(adaptive=True)
            lm.restart()
        elif kept and cfg.lm.resample_every and accepted % cfg.lm.resample_every == 0:
            batch = new_batch(adaptive=True)
        # train.tol: tested on the held-out set once every window is open, when the loss on
        # the training points (never above the held-out loss for long) is itself below it
        met = (
            kept
            and window == windows
            and loss <= run.tol_bound(zero_heldout)
            and run.within_tol(uniform_loss(heldout), zero_heldout)
        )
        if path is not None and not path.at_target:
            path.in_leg += int(kept)
            if path.leg_over(met, lm.exhausted):  # the next leg: same points, new member
                path.advance(met, lm.exhausted)
                loss_fn = path.loss()
                zero_heldout = zero_heldout_loss()
                lm.restart()
                log.info("%s: step %d, homotopy at s = %.4g", run.progress.desc, step, path.s)
            met = False  # the tolerance ends the run only at the target
        if growth is not None and growth.due(kept, loss, lm.exhausted, met):
            if growth.grow(model, loss_fn, batch, step):
                params = growth.parameters(model)  # ΔA kept: the loss is the same
                n_params, rows, form, pieces = layout()
                lm.restart(rescale=True)
                log.info(
                    "%s: step %d, ranks grown to cr %.4g (%d trainable)",
                    run.progress.desc,
                    step,
                    growth.cr,
                    n_params,
                )
        run.elapsed += time.perf_counter() - t0
        done = lm.exhausted or run.out_of_time() or met
        if done:  # before the checkpoint: a resume from it ends here too
            run.finish("tolerance" if met else "converged" if lm.exhausted else "max_seconds")
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


def _lm_settings(options: LMOptions, stage: str) -> dict[str, Any]:
    values = {f.name: getattr(options, f.name) for f in fields(LMConfig)}
    values["damping"] = stage_value(options.damping, stage, "optim.damping")
    return {"lm": LMConfig(**values)}


register_optimizer(
    Optimizer("lm", LMOptions, train_lm, _lm_settings, float64=True, gauss_newton=True, legs=True)
)
