"""A transfer with `train.steps=0`: the source network as the adapter starts it, evaluated on
the target member with no training (e.g. a parametric source at the target's values,
`pinnkan.pde.parametric`): one history entry, stop_reason `evaluated`."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pinnkan.pinn.jacobian import chunked_loss
from pinnkan.pinn.loss import PinnLoss

if TYPE_CHECKING:
    from pinnkan.train.loop_run import LoopRun
    from pinnkan.train.state import History

log = logging.getLogger("pinnkan")
EVALUATED = "evaluated"
ROWS = 4096  # interior points per pass


def evaluate_only(run: LoopRun, loss_fn: PinnLoss) -> History:
    """The whole "training" of train.steps=0: the loss on one batch of the run's points and
    the errors, recorded as step 0."""
    model, cfg = run.model, run.cfg
    t0 = time.perf_counter()
    batch = loss_fn.sample(cfg.n_interior, cfg.n_boundary, run.gen, model.lo.dtype, model.lo.device)
    loss = chunked_loss(loss_fn, model, batch, ROWS)
    run.elapsed += time.perf_counter() - t0
    run.record(0, loss, force=True)
    run.hist.stop_reason = EVALUATED
    log.info(
        "%s: train.steps=0, evaluated: loss %.3e, rel. L2 %.3e",
        run.progress.desc,
        loss,
        run.last_err,
    )
    run.check_stop(0, None)
    run.progress.close()
    return run.hist
