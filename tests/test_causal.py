"""Causal weighting of the PDE residual in time (`pinnkan.pinn.causal`): the weights, the weighted
loss and its Jacobian, resume with LM, the config's one-line errors and a tiny CLI run."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import h5py
import pytest
import torch

from pinnkan.errors import PinnkanError
from pinnkan.network.evaluation import Evaluator
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.causal import CausalWeighting, summary
from pinnkan.pinn.jacobian import residuals_and_jacobian
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run.config import RunConfig
from pinnkan.run.setup import validate_config
from pinnkan.train.config import TrainConfig
from pinnkan.train.levenberg_marquardt import LMConfig
from pinnkan.train.state import Interrupted, TrainState
from pinnkan.train.training import train
from tests.conftest import describe, run_pinnkan, tiny, tiny_config
from tests.test_lm import _jacrev

F64 = torch.float64
CPU = torch.device("cpu")
WEIGHTS = {"boundary": 10.0, "initial": 10.0}


def _burgers(seed: int = 0, causal: float = 10.0, slices: int = 8, hidden: int = 5):
    """A tiny float64 KAN on Burgers, its loss with causal weighting and a Sobol batch."""
    pde = build_pde("burgers", {}, WEIGHTS)
    gen = torch.Generator().manual_seed(seed)
    model = KAN([2, hidden, 1], list(pde.domain), dtype=F64, generator=gen, kind="bspline")
    loss = PinnLoss(pde, causal=causal, causal_slices=slices)
    batch = loss.sample(40, 8, gen, F64, CPU, quasi=True)
    return pde, gen, model, loss, batch


def test_off_means_unit_weights_and_the_unweighted_loss() -> None:
    pde, _, model, loss, batch = _burgers(causal=0.0)
    assert loss.causal is None and loss.causal_summary() is None
    loss.refresh_causal(model, batch)
    assert loss.causal_weights is None
    plain = PinnLoss(pde)
    assert torch.equal(loss.residual_vector(model, batch), plain.residual_vector(model, batch))
    # ε = 0 as a weighting: every weight exactly 1, and the loss unchanged bit for bit
    zero = CausalWeighting(0.0, 8, 0.0, 1.0)
    x = batch["interior"]
    assert torch.equal(
        zero.weights(x, torch.randn(x.shape[0], dtype=F64)), torch.ones(8, dtype=F64)
    )
    _, _, _, on, _ = _burgers(causal=5.0)
    on.causal_weights = torch.ones(8, dtype=F64)
    assert torch.equal(on.residual_vector(model, batch), plain.residual_vector(model, batch))


def test_weights_are_exp_of_the_planted_cumulative_slice_loss() -> None:
    """Slice i's points carry residuals of mean square L_i: w_i = exp(−ε Σ_{k<i} L_k)."""
    cw = CausalWeighting(eps=2.0, slices=4, t_lo=0.0, t_hi=2.0)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9, 1.2, 1.3, 1.7, 2.0], dtype=F64)  # 2 per slice
    x = torch.stack([torch.zeros_like(t), t], dim=1)
    res = torch.tensor([1.0, -1.0, 0.0, 2.0, 3.0, 1.0, 0.5, 0.5], dtype=F64)
    # mean of res² per slice: 1, 2, 5, 0.25; exclusive cumulative sums 0, 1, 3, 8
    assert cw.slice_of(x).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    expected = torch.exp(-2.0 * torch.tensor([0.0, 1.0, 3.0, 8.0], dtype=F64))
    torch.testing.assert_close(cw.weights(x, res), expected, rtol=1e-15, atol=0)
    assert summary(expected) == (pytest.approx(math.exp(-16.0)), 0.25)


def test_weights_never_increase_in_time_and_start_at_one() -> None:
    _, _, model, loss, batch = _burgers(causal=3.0, slices=16)
    loss.refresh_causal(model, batch)
    w = loss.causal_weights
    assert w is not None and w.shape == (16,) and float(w[0]) == 1.0
    assert bool((w[1:] <= w[:-1]).all()) and float(w[-1]) < 1.0


def test_weighted_loss_is_the_weighted_mean_over_slices() -> None:
    """PDE term Σ_i w_i · Σ_{slice i} r² / N, conditions unweighted; loss = r·r."""
    pde, _, model, loss, batch = _burgers(causal=3.0)
    loss.refresh_causal(model, batch)
    assert loss.causal is not None and loss.causal_weights is not None
    x = batch["interior"]
    res = pde.residual(x, model.forward_jet(x)).detach()
    w = loss.causal_weights[loss.causal.slice_of(x)]
    expected = float((w * res.square()).sum() / x.shape[0])
    for cond in loss.conditions:
        xc = batch[cond.name]
        expected += cond.weight * float(
            cond.residual(xc, model.forward_jet(xc)).detach().square().mean()
        )
    assert float(loss(model, batch).detach()) == pytest.approx(expected, rel=1e-12)
    r = loss.residual_vector(model, batch).detach()
    assert float(r @ r) == pytest.approx(expected, rel=1e-12)


def test_jacobian_of_the_weighted_residual_holds_the_weights_fixed() -> None:
    """J against torch.func.jacrev with the weights constant, and = the unweighted J's rows
    times √w of their slice (conditions' rows unchanged)."""
    _, _, model, loss, batch = _burgers(causal=3.0)
    loss.causal_weights = torch.linspace(1.0, 0.02, 8, dtype=F64)  # planted, far from 1
    r, J = residuals_and_jacobian(loss, model, batch)
    torch.testing.assert_close(r, loss.residual_vector(model, batch).detach(), rtol=1e-12, atol=0)
    ref = _jacrev(model, loss, batch)
    assert float((J - ref).norm() / ref.norm()) <= 1e-10
    assert loss.causal is not None
    factor = torch.ones(r.numel(), dtype=F64)
    n = batch["interior"].shape[0]
    factor[:n] = loss.causal.point_factors(loss.causal_weights, batch["interior"])
    loss.causal_weights = None
    r0, J0 = residuals_and_jacobian(loss, model, batch)
    torch.testing.assert_close(r, r0 * factor, rtol=1e-12, atol=0)
    torch.testing.assert_close(J, J0 * factor[:, None], rtol=1e-12, atol=1e-15)


def _lm_run(stop=None, saved=None, resume=None, seed=0):
    pde, gen, model, loss, _ = _burgers(seed=seed, causal=10.0, slices=8, hidden=6)
    _, pts = pde.grid(9, F64)
    cfg = TrainConfig(
        steps=30,
        n_interior=64,
        n_boundary=16,
        eval_every=3,
        progress="none",
        optimizer="lm",
        lm=LMConfig(resample_every=4),
        causal=10.0,
        causal_slices=8,
    )
    return train(
        model,
        loss,
        [{"params": list(model.parameters())}],
        cfg,
        Evaluator(pts, pde.exact(pts)),
        gen,
        resume=resume,
        checkpoint=None if saved is None else lambda s: saved.append(copy.deepcopy(s)),
        stop=stop,
    )


def test_lm_resume_with_causal_weights_gives_the_uninterrupted_numbers() -> None:
    full = _lm_run()
    assert len(full.causal_front) == len(full.step)
    assert len(set(full.causal_weight_min)) > 1  # the weights do change during the run
    saved: list[TrainState] = []
    calls = iter(range(1000))
    with pytest.raises(Interrupted):
        _lm_run(stop=lambda: 2 if next(calls) == 12 else None, saved=saved)
    assert saved and saved[-1].step == 13
    resumed = _lm_run(resume=saved[-1], seed=5)  # another init: the state restores it all
    assert resumed.as_dict() == {**full.as_dict(), "seconds": resumed.seconds}  # bit for bit


def test_adam_records_the_causal_front() -> None:
    pde, gen, model, loss, _ = _burgers(causal=10.0)
    _, pts = pde.grid(9, F64)
    cfg = TrainConfig(
        steps=4,
        n_interior=32,
        n_boundary=8,
        eval_every=2,
        progress="none",
        optimizer="adam",
        lr=1e-2,
        causal=10.0,
        causal_slices=8,
    )
    params = [{"params": list(model.parameters())}]
    hist = train(model, loss, params, cfg, Evaluator(pts, pde.exact(pts)), gen)
    assert len(hist.causal_front) == len(hist.causal_weight_min) == len(hist.step) == 2
    assert all(0.0 <= f <= 1.0 for f in hist.causal_front)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"train.causal": -1.0}, "train.causal=-1.0 must be a finite number >= 0"),
        ({"train.causal": 1.0, "train.causal_slices": 0}, "train.causal_slices=0"),
        ({"train.causal": 1.0}, "pde=elliptic has coordinates (x, y)"),
        ({"train.causal": 1.0, "pde": {"name": "helmholtz"}}, "pde=helmholtz"),
    ],
)
def test_config_errors_are_one_line(changes: dict, key: str, tmp_path: Path) -> None:
    cfg = RunConfig.from_dict(tiny_config(tmp_path, changes))
    with pytest.raises(PinnkanError) as err:
        validate_config(cfg)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_library_refuses_a_family_without_time() -> None:
    """The library names its own argument (`causal`); the CLI says train.causal (below)."""
    with pytest.raises(PinnkanError, match=r"^causal=2 needs a time-dependent PDE"):
        PinnLoss(build_pde("elliptic", {}, WEIGHTS), causal=2.0)


def test_cli_run_with_causal_weighting(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["pretrain", "pde=burgers", *tiny(tmp_path / "out", "train.causal=10")]
    proc = run_pinnkan([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    with h5py.File(run_dir / "results.h5") as f:
        front = f["history/causal_front"][()]
        assert len(front) == len(f["history/step"][()]) and ((0 <= front) & (front <= 1)).all()
    bad = run_pinnkan(["pretrain", *tiny(tmp_path / "out", "train.causal=10")], tmp_path)
    assert bad.returncode != 0
    assert "train.causal=10 needs a time-dependent PDE" in bad.stderr, describe(bad)


def test_train_refuses_a_loss_without_the_configured_weighting() -> None:
    pde, gen, model, _, _ = _burgers(causal=0.0)
    _, pts = pde.grid(5, F64)
    cfg = TrainConfig(steps=1, progress="none", optimizer="lm", causal=10.0)
    with pytest.raises(PinnkanError, match="pass both to PinnLoss") as err:
        train(
            model,
            PinnLoss(pde),
            [{"params": list(model.parameters())}],
            cfg,
            Evaluator(pts, pde.exact(pts)),
            gen,
        )
    assert "\n" not in str(err.value)
