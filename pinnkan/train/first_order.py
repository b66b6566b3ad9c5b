"""The first-order loop: Adam or plain gradient descent with exponential lr decay, then
optional L-BFGS; the step's loss and backward, optionally through torch.compile."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pinnkan.common.config_checks import as_float
from pinnkan.network.kan import KAN
from pinnkan.pinn.loss import PinnLoss
from pinnkan.train.loop_run import LoopRun
from pinnkan.train.optimizers import Optimizer, register_optimizer
from pinnkan.train.options import stage_value
from pinnkan.train.state import History, TrainState, is_out_of_memory

log = logging.getLogger("pinnkan")


def warn_undecayed(step: int, steps: int, lr_decay: float) -> None:
    """A run stopped by train.max_seconds before its lr decayed: the decay spans train.steps,
    not the time budget (a time-based rate would make seeded runs depend on the machine's
    speed), so a cap with a large train.steps keeps the rate near its start, where Adam can
    diverge. Warned when less than half the decay was done."""
    if lr_decay < 1.0 and step < steps / 2:
        log.warning(
            "stopped by train.max_seconds at step %d of train.steps=%d: the lr had decayed "
            "only to %.3g of its start (lr_decay %g spans train.steps); set train.steps to "
            "about the steps the time allows for the full decay",
            step,
            steps,
            lr_decay ** (step / steps),
            lr_decay,
        )


@dataclass
class AdamOptions:
    """`optim=adam`: Adam with exponential decay to lr·lr_decay, then optional L-BFGS."""

    name: str = "adam"
    lr: Any = field(default_factory=lambda: {"pretrain": 0.01, "transfer": 0.03})  # or a number
    lr_decay: float = 0.1
    lbfgs_steps: int = 0
    steps: Any = field(default_factory=lambda: {"pretrain": 3000, "transfer": 2500})


@dataclass
class GDOptions(AdamOptions):
    """`optim=gd`: plain gradient descent, the setting of LoTRA's learning-rate theory."""

    name: str = "gd"
    lr: Any = field(default_factory=lambda: {"pretrain": 1.0e-3, "transfer": 1.0e-3})
    steps: Any = field(default_factory=lambda: {"pretrain": 5000, "transfer": 2500})


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


def train_first_order(
    run: LoopRun,
    loss_fn: PinnLoss,
    groups: list[dict[str, Any]],
    resume: TrainState | None,
    path: None = None,
    growth: None = None,
) -> History:
    """Adam (or plain gradient descent, `optim=gd`: the setting of LoTRA's learning-rate
    theory) with exponential lr decay, then optional L-BFGS (see `pinnkan.train.training.train`)."""
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

    def plain_loss(batch: dict[str, Tensor], value: float) -> float:
        """The step's loss without causal weights (the tolerance reads the plain loss)."""
        if loss_fn.causal is None:
            return value
        with loss_fn.uniform():
            return float(loss_fn(model, batch).detach())

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
            loss_fn.refresh_causal(model, batch)
            value = float(step_fn(batch).detach())
        except Exception as exc:  # the parameters are untouched until opt.step
            if not is_out_of_memory(exc):
                raise
            raise run.out_of_memory(step, exc, state(step - 1, rng)) from None
        if not math.isfinite(value):  # before the step: the model stays finite
            raise run.diverged(step, value, opt.param_groups[0]["lr"])
        # train.tol: this step's points are fresh (drawn before the step): a held-out test
        met = bool(cfg.tol) and run.within_tol(plain_loss(batch, value), loss_fn.zero_loss(batch))
        if not met:
            opt.step()
            sched.step()
        run.elapsed += time.perf_counter() - t0
        timed_out = run.out_of_time()
        if timed_out or met:  # before the checkpoint: a resume from it ends here too
            run.finish("tolerance" if met else "max_seconds")
        run.record(step, value, force=timed_out or met)
        if run.checkpoint_due(step) or (step == cfg.steps and cfg.lbfgs_steps and not met):
            run.save(state(step))
        run.check_stop(step, state(step))
        if timed_out or met:
            if timed_out:
                warn_undecayed(step, cfg.steps, cfg.lr_decay)
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
                loss_fn.refresh_causal(model, batch)  # constant within a line search
                value = float(lbfgs.step(closure).detach())
            except Exception as exc:  # L-BFGS works on 4x the points
                if not is_out_of_memory(exc):
                    raise
                raise run.out_of_memory(step, exc, None) from None
            run.elapsed += time.perf_counter() - t0
            if not math.isfinite(value):
                raise run.diverged(step, value, 1.0)
            timed_out = run.out_of_time()
            if timed_out:
                run.finish("max_seconds")
            run.record(step, value, force=timed_out)
            run.check_stop(step, None)
            if timed_out:
                break
    run.progress.close()
    return run.hist


def _first_order_settings(options: AdamOptions, stage: str) -> dict[str, Any]:
    # null is no learning rate here (TrainConfig would read it as "the default")
    lr = stage_value(options.lr, stage, "optim.lr")
    if lr is None:
        as_float(lr, "optim.lr", 0.0, lo_open=True)  # raises: "... must be a finite number > 0"
    return {"lr": lr, "lr_decay": options.lr_decay, "lbfgs_steps": options.lbfgs_steps}


for _name, _options, _state in (("adam", AdamOptions, 4), ("gd", GDOptions, 2)):
    register_optimizer(
        Optimizer(
            _name,
            _options,
            train_first_order,
            _first_order_settings,
            state_per_param=_state,
            lbfgs=True,
        )
    )
