"""A finished (or stopped) run's outcome: evaluation on the grid, metrics, and results.h5 with its
plots written last."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pinnkan.adapters import (
    count_parameters,
)
from pinnkan.common.atomic import make_dir
from pinnkan.io.checkpoint import STATE_FILE
from pinnkan.io.plots import plot_run
from pinnkan.io.results import RESULTS_FILE, RunResult, max_abs_error, relative_l2, write_results
from pinnkan.network.evaluation import predict
from pinnkan.network.kan import KAN
from pinnkan.pde import PDEFamily
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run.config import RunConfig
from pinnkan.run.pdebench_metrics import boundary_rmse, nrmse
from pinnkan.run.setup import Setup, eval_points
from pinnkan.train.state import History

log = logging.getLogger("pinnkan")


def evaluate(
    model: KAN, pde: PDEFamily, n: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """Grid axes, prediction and reference (None without one) on the evaluation grid (shape
    n per axis)."""
    axes, pts = pde.grid(n, model.lo.dtype)
    pred = predict(model, pts.to(model.lo.device)).cpu()
    shape = tuple(len(a) for a in axes.values())
    ref = pde.exact(pts).reshape(shape).numpy() if pde.has_reference else None
    return {k: v.numpy() for k, v in axes.items()}, pred.reshape(shape).numpy(), ref


def heldout_losses(model: KAN, pde: PDEFamily, setup: Setup) -> dict[str, float]:
    """The PDE's and each condition's mean squared residual (`loss_<name>`) and their
    weighted sum (`loss`) on points drawn apart from training (a fixed seed of their own)."""
    loss_fn = PinnLoss(pde, setup.train.derivatives)
    gen = torch.Generator().manual_seed(setup.seed + 7919)
    t = setup.train
    batch = loss_fn.sample(t.n_interior, t.n_boundary, gen, setup.dtype, setup.device)
    losses = loss_fn.losses(model, batch)
    return {"loss": losses.pop("loss"), **{f"loss_{k}": v for k, v in losses.items()}}


def build_result(
    cfg: RunConfig,
    stage: str,
    model: KAN,
    pde: PDEFamily,
    setup: Setup,
    hist: History,
    config_yaml: str,
    extra_metrics: dict[str, Any],
    attrs: dict[str, Any],
    status: str = "ok",
) -> RunResult:
    n = eval_points(cfg, pde)
    grid, pred, ref = evaluate(model, pde, n)
    n_trainable, n_total = count_parameters(model)
    metrics: dict[str, Any] = {
        "n_trainable": n_trainable,
        "n_total": n_total,
        "train_seconds": float(hist.seconds[-1]) if hist.seconds else 0.0,
        "steps": setup.train.steps + setup.train.lbfgs_steps,
        "steps_done": int(hist.step[-1]) if hist.step else 0,
        **extra_metrics,
    }
    if status != "diverged":  # a diverged model's fields are not results
        metrics.update(heldout_losses(model, pde, setup))
    if status != "diverged" and ref is not None:
        metrics["rel_l2"] = relative_l2(pred, ref)
        metrics["max_abs_error"] = max_abs_error(pred, ref)
        if pde.coords[-1] == "t":  # PDEBench's, per time slice (pinnkan.run.pdebench_metrics)
            metrics["nrmse"], metrics["brmse"] = nrmse(pred, ref), boundary_rmse(pred, ref)
    reference = pde.reference_file or ("family" if pde.has_reference else "none")
    record = pde.reference_record()
    if record is not None:  # the data file: which one exactly, and which of its samples
        attrs = {
            "reference_sha256": record["sha256"],
            "reference_sample": int(record["sample"]),
            "reference_initial": bool(record["initial"]),
            **attrs,
        }
    return RunResult(
        stage=stage,
        pde=pde.name,
        pde_params=dict(pde.params),
        seed=setup.seed,
        config_yaml=config_yaml,
        coords=list(pde.coords),
        grid=grid,
        u_pred=None if status == "diverged" else pred,
        u_ref=None if status == "diverged" else ref,  # None too without a reference
        metrics=metrics,
        history={k: np.asarray(v) for k, v in hist.as_dict().items()},
        status=status,
        attrs={
            "optimizer": setup.train.optimizer,
            "precision": setup.precision,
            "stop_reason": hist.stop_reason,
            "tol": setup.train.tol,  # train.tol (0: off)
            "relative_loss": hist.relative_loss,  # its last test (nan: none)
            "reference": reference,
            **{k: v for k, v in attrs.items() if v is not None},
        },
    )


def finish(run_dir: Path, result: RunResult) -> RunResult:
    make_dir(run_dir)
    if result.status != "diverged":
        plot_run(run_dir, result)
    write_results(run_dir / RESULTS_FILE, result)  # last: its status marks a finished run
    if result.status != "ok":
        log.warning(
            "%s run %s: results.h5 written with status=%s", result.stage, run_dir, result.status
        )
        return result
    (run_dir / STATE_FILE).unlink(missing_ok=True)  # finished: nothing left to resume
    m = result.metrics
    error = (
        f"rel_l2 {m['rel_l2']:.3e}, max |err| {m['max_abs_error']:.3e}"
        if "rel_l2" in m
        else f"no reference; held-out loss {m['loss']:.3e}"
    )
    log.info(
        "%s %s%s: %s, %d trainable / %d parameters, %.1f s -> %s",
        result.stage,
        result.pde,
        json.dumps(result.pde_params)
        + (
            f", parametric over {result.attrs['parametric']}"
            if "parametric" in result.attrs
            else ""
        ),
        error,
        m["n_trainable"],
        m["n_total"],
        m["train_seconds"],
        run_dir,
    )
    return result
