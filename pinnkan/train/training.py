"""`train`: one training run handed to its optimizer's loop (`pinnkan.train.optimizers`:
Adam / GD + L-BFGS in `pinnkan.train.first_order`, Levenberg–Marquardt in
`pinnkan.train.lm_loop`), with the checks every loop relies on."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from pinnkan.errors import PinnkanError
from pinnkan.network.evaluation import Evaluator
from pinnkan.network.kan import KAN
from pinnkan.pinn.homotopy import HomotopyPath
from pinnkan.pinn.loss import PinnLoss
from pinnkan.train.config import TrainConfig
from pinnkan.train.loop_run import LoopRun
from pinnkan.train.optimizers import get_optimizer
from pinnkan.train.state import History, TrainState

if TYPE_CHECKING:
    from pinnkan.adapters.growth import RankGrowth


# a loop that replaces the optimizer's (`train`'s `loop`): (run, loss_fn) -> its history
Loop = Callable[[LoopRun, PinnLoss], History]


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
    optimizer's loop (adapter=lstsq: `pinnkan.train.lstsq.train_lstsq`, one solve in cfg.steps = 1).
    `path` (optim=lm only): a homotopy from the source's member to `loss_fn`'s, leg by leg
    (`pinnkan.pinn.homotopy`). `growth` (optim=lm only): LoTRA ranks that rise on a stall
    (`pinnkan.adapters.growth`; a resumed run's model must have the ranks of its state:
    `match_ranks`).
    """
    if not cfg.validated:  # a stage's TrainConfig comes validated (pinnkan.run.setup)
        cfg.validate()
    optimizer = get_optimizer(cfg.optimizer)
    for name, given in (("path", path), ("growth", growth)):
        if given is not None and (not optimizer.legs or loop is not None):
            raise PinnkanError(
                f"train(..., {name}=...) runs on the optimizer's own signals: it needs an "
                f"optimizer with legs (lm), not {cfg.optimizer!r}, and no `loop`"
            )
    own = (loss_fn.causal.eps, loss_fn.causal.slices) if loss_fn.causal else (0.0, None)
    if own != ((cfg.causal, cfg.causal_slices) if cfg.causal else (0.0, None)):
        raise PinnkanError(
            f"TrainConfig(causal={cfg.causal:g}, causal_slices={cfg.causal_slices}) but the "
            f"loss has causal={own[0]:g} (slices {own[1]}): pass both to PinnLoss"
        )
    total = cfg.steps + (cfg.lbfgs_steps if optimizer.lbfgs else 0)
    run = LoopRun(
        model, cfg, evaluator, gen, desc, total, resume, checkpoint, stop, loss_fn.causal_summary
    )
    if run.finished:  # resumed from the state of its last step: nothing to train
        run.progress.close()
        hist = run.hist
    elif loop is not None:
        hist = loop(run, loss_fn)
    else:
        hist = optimizer.loop(run, loss_fn, groups, resume, path, growth)
    # the loss is checked before each step, so only the last step can leave the network
    # non-finite: such a run diverged, it must not finish with status ok and rel. L2 nan
    if not bool(torch.isfinite(evaluator.predict(model)).all()):
        raise run.diverged(hist.step[-1] if hist.step else run.start, math.nan, cfg.lr)
    return hist
