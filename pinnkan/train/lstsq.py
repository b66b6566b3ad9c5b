"""`adapter=lstsq`: the last layer's coefficients from one linear least-squares solve.

Every layer but the last is frozen at the source's values (`pinnkan.adapters.prepare`); the
network's output is then linear in the last layer's A and bias (the parameters its output is
linear in; a rational layer's denominators stay frozen). For a linear PDE family
(`PDEFamily.linear`: residual and conditions affine in u and its derivatives) the stacked,
weighted residual vector is affine in them, r(θ₀ + δ) = r₀ + J δ, with r and J exactly the
rows Levenberg–Marquardt uses (`pinnkan.pinn.jacobian`). So one undamped Gauss–Newton step,
δ = argmin ‖r₀ + J δ‖, reaches the minimum of the loss r·r on the points: the whole training.

The solve: J is reduced chunk by chunk to a triangular R (P × P) by QR (r₀ to z alongside), so
memory stays at one chunk of J as in LM's P × P form; then the minimum-norm solution of
min ‖z + R δ‖ from the SVD of R, singular values below eps · max(N, P) · σ_max dropped (the
cutoff of LAPACK's gelsd, `torch.linalg.lstsq`'s default `rcond`). Minimum norm in δ: among
all minimisers, the one closest to the source's coefficients, so coefficients the points cannot
see (B-spline bases no hidden activation reaches) keep their source values. No ridge: a
full-rank J gives the exact least-squares solution. The same arithmetic on CPU and GPU
(`torch.linalg.lstsq` has no rank-revealing driver on CUDA).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pinnkan.errors import FieldError, PinnkanError
from pinnkan.network.kan import KAN
from pinnkan.pde import FAMILIES, PDEFamily
from pinnkan.pinn.jacobian import chunked_loss, chunks, residuals_and_jacobian, trainable_parameters
from pinnkan.pinn.loss import PinnLoss
from pinnkan.train.levenberg_marquardt import assign_flat, flat_view
from pinnkan.train.state import is_out_of_memory

if TYPE_CHECKING:
    from pinnkan.train.config import TrainConfig
    from pinnkan.train.loop_run import LoopRun
    from pinnkan.train.state import History

log = logging.getLogger("pinnkan")

# why a lstsq run's training ended (results.h5 attrs stop_reason)
SOLVED = "solved"


@dataclass(frozen=True)
class LstsqSolve:
    """What one solve did: the loss r·r on its points before and after, and J's shape and
    numerical rank."""

    loss_before: float
    loss_after: float
    rows: int
    columns: int
    rank: int


def refuse_unsupported(pde: PDEFamily, train: TrainConfig) -> None:
    """One line for what adapter=lstsq cannot solve exactly: a nonlinear family, time windows."""
    if not pde.linear:
        linear = ", ".join(name for name, family in FAMILIES.items() if family.linear)
        raise PinnkanError(
            f"adapter=lstsq needs a linear PDE family, pde={pde.name} is not; use it with "
            f"{linear} (or a family declaring linear = True), or another adapter"
        )
    if train.time_windows > 1:
        raise FieldError(
            "time_windows",
            f"={train.time_windows} has no meaning for adapter=lstsq (one solve on the whole "
            "domain); set it to 1",
        )


def chunk_rows(n_params: int) -> int:
    """Interior points per chunk of J: at least P, so each QR sees a tall block."""
    return max(1024, n_params)


def reduce_rows(
    loss_fn: PinnLoss, model: KAN, batch: dict[str, Tensor], rows: int
) -> tuple[float, Tensor, Tensor, int]:
    """(r·r, R, z, N): J (N × P) and r reduced by QR over `chunks(batch, rows)` to R (k × P,
    k ≤ P) and z with ‖r + J δ‖² = ‖z + R δ‖² + const for every δ; J is never held whole."""
    n = batch["interior"].shape[0]
    total, n_rows = 0.0, 0
    R: Tensor | None = None
    z: Tensor | None = None
    for piece in chunks(batch, rows):
        r, J = residuals_and_jacobian(loss_fn, model, piece, interior_count=n)
        total, n_rows = total + float(r @ r), n_rows + r.numel()
        if R is not None and z is not None:
            J, r = torch.cat([R, J]), torch.cat([z, r])
        Q, R = torch.linalg.qr(J, mode="reduced")
        z = Q.T @ r
        del J, Q
    assert R is not None and z is not None
    return total, R, z, n_rows


def min_norm_step(R: Tensor, z: Tensor, n_rows: int) -> tuple[Tensor, int]:
    """(δ, rank): the minimum-norm minimiser of ‖z + R δ‖ (module docstring's cutoff)."""
    U, S, Vh = torch.linalg.svd(R, full_matrices=False)
    cutoff = torch.finfo(R.dtype).eps * max(n_rows, R.shape[1]) * S.max()
    keep = S > cutoff
    delta = -(Vh[keep].T @ ((U[:, keep].T @ z) / S[keep]))
    return delta, int(keep.sum())


def solve_last_layer(loss_fn: PinnLoss, model: KAN, batch: dict[str, Tensor]) -> LstsqSolve:
    """Set the model's trainable parameters (after `apply` for lstsq: the last layer's A and
    bias) to the least-squares minimiser of the residual vector on `batch`, in place."""
    params = trainable_parameters(model)
    theta = flat_view(params)
    rows = chunk_rows(theta.numel())
    before, R, z, n_rows = reduce_rows(loss_fn, model, batch, rows)
    delta, rank = min_norm_step(R, z, n_rows)
    assign_flat(params, theta + delta)
    after = chunked_loss(loss_fn, model, batch, rows)
    return LstsqSolve(before, after, n_rows, theta.numel(), rank)


def train_lstsq(run: LoopRun, loss_fn: PinnLoss) -> History:
    """The whole training of adapter=lstsq: one Sobol set of train.n_interior /
    train.n_boundary points from the run's generator, one solve, one history entry (the
    solve's seconds, the loss before (`loss_before`) and after, rel. L2); stop_reason solved.
    With train.causal the weights come from the source network and are held during the solve."""
    model, cfg, gen = run.model, run.cfg, run.gen
    device, dtype = model.lo.device, model.lo.dtype
    t0 = time.perf_counter()
    try:
        batch = loss_fn.sample(cfg.n_interior, cfg.n_boundary, gen, dtype, device, quasi=True)
        loss_fn.refresh_causal(model, batch)
        solve = solve_last_layer(loss_fn, model, batch)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise run.out_of_memory(1, exc, None) from None
    run.elapsed += time.perf_counter() - t0
    if not (math.isfinite(solve.loss_before) and math.isfinite(solve.loss_after)):
        raise run.diverged(
            1, solve.loss_after, 0.0, "the source network is not finite on the target's points"
        )
    run.record(1, solve.loss_after, force=True)
    run.hist.loss_before.append(solve.loss_before)
    run.hist.stop_reason = SOLVED
    log.info(
        "%s: J %d x %d, rank %d; loss %.3e -> %.3e in %.2f s",
        run.progress.desc,
        solve.rows,
        solve.columns,
        solve.rank,
        solve.loss_before,
        solve.loss_after,
        run.elapsed,
    )
    run.check_stop(1, None)
    run.progress.close()
    return run.hist
