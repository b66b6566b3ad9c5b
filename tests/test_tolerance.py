"""The tolerance stop (`train.tol`): a run ends once the loss on points it was not trained on
is below tol times the loss u = 0 has there, and records why and where it stopped."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
import torch

from pinnkan.network.evaluation import Evaluator
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.jacobian import chunked_loss
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run import runner
from pinnkan.train.config import TrainConfig
from pinnkan.train.levenberg_marquardt import LMConfig
from pinnkan.train.training import train
from tests.conftest import tiny_config

F64 = torch.float64


def _train(cfg: TrainConfig, pde_name: str = "elliptic", **kw):
    """A [dim, 5, 1] B-spline KAN trained on the family's default member (`kw`: train's
    resume= and checkpoint=)."""
    pde = build_pde(pde_name)
    gen = torch.Generator().manual_seed(0)
    model = KAN([pde.dim, 5, 1], list(pde.domain), dtype=F64, generator=gen, kind="bspline")
    _, pts = pde.grid(11, F64)
    loss = PinnLoss(pde, causal=cfg.causal, causal_slices=cfg.causal_slices)
    groups = [{"params": list(model.parameters())}]
    hist = train(model, loss, groups, cfg, Evaluator(pts, pde.exact(pts)), gen, **kw)
    return hist, model, loss


def _lm(steps: int, tol: float, **kw) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        n_interior=96,
        n_boundary=16,
        eval_every=1000,
        progress="none",
        optimizer="lm",
        tol=tol,
        lm=LMConfig(resample_every=0),
        **kw,
    )


def test_zero_loss_is_the_loss_of_the_zero_function() -> None:
    pde = build_pde("elliptic", {"mu": 1.5})
    loss = PinnLoss(pde)
    batch = loss.sample(50, 10, torch.Generator().manual_seed(1), F64, torch.device("cpu"))
    x = batch["interior"]
    expected = pde.weights["residual"] * float(pde.forcing(x).square().mean())
    for cond in loss.conditions:
        expected += cond.weight * float(pde.exact(batch[cond.name]).square().mean())
    assert loss.zero_loss(batch) == pytest.approx(expected, rel=1e-12)
    # a network that is zero everywhere has exactly this loss
    gen = torch.Generator().manual_seed(0)
    model = KAN([2, 3, 1], list(pde.domain), dtype=F64, generator=gen, kind="bspline")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert float(loss(model, batch).detach()) == pytest.approx(expected, rel=1e-12)


def test_lm_stops_at_the_tolerance_on_the_held_out_set() -> None:
    budget = 60
    free, _, _ = _train(_lm(budget, tol=0.0))
    hist, model, _ = _train(_lm(budget, tol=1e-2))
    assert free.stop_reason != "tolerance"
    assert hist.stop_reason == "tolerance"
    assert hist.step[-1] < free.step[-1]
    assert hist.relative_loss <= 1e-2
    # the step before did not meet it: the run stopped at the first accepted step that did
    assert free.rel_l2[-1] < hist.rel_l2[-1]


def test_tol_zero_changes_nothing() -> None:
    a, _, _ = _train(_lm(8, tol=0.0))
    b, _, _ = _train(_lm(8, tol=1e-30))  # never met: same run step for step
    assert a.loss == b.loss and a.step == b.step


def test_adam_stops_on_fresh_points_before_stepping() -> None:
    cfg = TrainConfig(
        steps=150,
        lr=0.05,
        n_interior=64,
        n_boundary=16,
        eval_every=1000,
        progress="none",
        optimizer="adam",
        tol=0.7,
    )
    hist, _, _ = _train(cfg)
    assert hist.stop_reason == "tolerance"
    assert hist.step[-1] < 150
    assert hist.relative_loss <= 0.7


@pytest.mark.parametrize("capped", [True, False])
def test_a_time_cap_that_leaves_adams_lr_undecayed_warns(
    capped: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The decay spans train.steps: a time cap that stops the run before half of it says so
    (the trap of `train.max_seconds=X train.steps=<large>`, where the rate never decays); a
    run that ends on its steps does not."""
    cfg = TrainConfig(
        steps=100_000 if capped else 20,
        lr=0.01,
        n_interior=32,
        n_boundary=8,
        eval_every=1000,
        progress="none",
        optimizer="adam",
        tol=0.0,
        max_seconds=0.05 if capped else 0.0,
    )
    with caplog.at_level("WARNING", logger="pinnkan"):
        hist, _, _ = _train(cfg)
    assert hist.stop_reason == ("max_seconds" if capped else "steps")
    warned = [r.getMessage() for r in caplog.records if "lr had decayed" in r.getMessage()]
    assert len(warned) == (1 if capped else 0)
    if capped:
        assert "train.steps=100000" in warned[0]


def test_uniform_reads_the_plain_loss_and_restores_the_weights() -> None:
    """The tolerance reads the plain loss under causal weighting (`PinnLoss.uniform`)."""
    pde = build_pde("parabolic")
    gen = torch.Generator().manual_seed(0)
    model = KAN([2, 4, 1], list(pde.domain), dtype=F64, generator=gen, kind="bspline")
    causal = PinnLoss(pde, causal=50.0, causal_slices=8)
    batch = causal.sample(96, 16, gen, F64, torch.device("cpu"))
    causal.refresh_causal(model, batch)
    weights = causal.causal_weights
    assert weights is not None and float(weights.min()) < 0.5  # the weighting bites here
    plain = chunked_loss(PinnLoss(pde), model, batch, 10_000)
    assert chunked_loss(causal, model, batch, 10_000) < 0.9 * plain
    with causal.uniform():
        assert chunked_loss(causal, model, batch, 10_000) == pytest.approx(plain, rel=1e-12)
    assert causal.causal_weights is weights


def test_results_record_the_tolerance_stop(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, {"optim": {"name": "lm"}, "train.steps": 50, "train.tol": 0.05})
    cfg["precision"] = "float64"
    res = runner.pretrain(cfg, tmp_path / "run")
    assert res.attrs["stop_reason"] == "tolerance"
    with h5py.File(tmp_path / "run" / "results.h5") as f:
        assert f.attrs["stop_reason"] == "tolerance"
        assert f.attrs["tol"] == 0.05
        assert f.attrs["relative_loss"] <= 0.05
        assert int(f["history/step"][-1]) < 50


def _resumed_from_last_state(cfg: TrainConfig):
    """The run of `cfg` with a checkpoint every step, and the same run resumed from its last
    checkpoint (the state a run killed after its last step, before its files, leaves)."""
    states: list = []
    whole, _, _ = _train(cfg, checkpoint=states.append)
    resumed, _, _ = _train(cfg, resume=states[-1], checkpoint=states.append)
    return whole, resumed


@pytest.mark.parametrize(
    "cfg",
    [
        _lm(60, tol=1e-2, checkpoint_every=1),  # stops on the tolerance
        TrainConfig(  # stops when LM has converged (a low damping ceiling ends it soon)
            steps=400,
            n_interior=96,
            n_boundary=16,
            progress="none",
            optimizer="lm",
            tol=0.0,
            lm=LMConfig(resample_every=0, damping_max=1e-2),
            checkpoint_every=1,
        ),
        TrainConfig(
            steps=150,
            lr=0.05,
            n_interior=64,
            n_boundary=16,
            progress="none",
            optimizer="adam",
            tol=0.7,
            checkpoint_every=1,
        ),
    ],
    ids=["lm-tolerance", "lm-converged", "adam-tolerance"],
)
def test_a_resume_from_the_last_step_ends_there(cfg: TrainConfig) -> None:
    """A run killed after the checkpoint of the step it stopped at resumes to the same end:
    no further step, the same stop reason and last tolerance test."""
    whole, resumed = _resumed_from_last_state(cfg)
    assert whole.stop_reason in ("tolerance", "converged") and whole.step[-1] < cfg.steps
    assert resumed.step == whole.step and resumed.loss == whole.loss
    assert resumed.stop_reason == whole.stop_reason
    assert resumed.relative_loss == whole.relative_loss or cfg.tol == 0.0
