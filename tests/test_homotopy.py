"""Homotopy inside one run (`transfer.homotopy`, pinnkan.pinn.homotopy): the legs' rule, a run
that walks the path and ends on the target, reproducible and resumable mid-path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from pinnkan.errors import PinnkanError
from pinnkan.io.results import read_results
from pinnkan.network.evaluation import Evaluator
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.homotopy import MIN_STEP, HomotopyPath, point
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run import runner
from pinnkan.run.config import RunConfig
from pinnkan.run.setup import validate_config
from pinnkan.train.config import TrainConfig
from pinnkan.train.levenberg_marquardt import LMConfig
from pinnkan.train.state import Interrupted, TrainState
from pinnkan.train.training import train
from tests.conftest import lm_transfer_config, tiny_config

F64 = torch.float64


def test_point_moves_on_a_straight_line() -> None:
    assert point({"mu": 1.0, "lam": 0.0}, {"mu": 2.0, "lam": 0.0}, 0.25) == {"mu": 1.25, "lam": 0.0}
    assert point({}, {"mu": 2.0}, 0.5) == {"mu": 2.0}  # a parameter the source lacks: fixed


def test_legs_grow_when_done_and_shrink_when_stalled() -> None:
    path = HomotopyPath(lambda s: None, legs=4, leg_steps=10)  # type: ignore[arg-type]
    path.start()
    assert (path.s, path.done, path.step) == (0.25, 0.0, 0.25)
    path.advance(met=True, converged=False)  # done: the next leg 1.5x longer
    assert (path.done, path.s) == (0.25, pytest.approx(0.625))
    path.advance(met=False, converged=False)  # stalled: halfway instead
    assert (path.done, path.s) == (0.25, pytest.approx(0.4375))
    while path.step / 2 >= MIN_STEP:
        path.advance(met=False, converged=False)
    path.advance(met=False, converged=False)  # too short to shorten: accepted as it is
    assert path.done == pytest.approx(0.25 + path.step)
    path.advance(met=False, converged=True)
    while not path.at_target:
        path.advance(met=True, converged=False)
    assert path.s == 1.0 and path.done < 1.0
    assert not path.leg_over(met=True, converged=True)  # the last leg ends like any run


def _setup():
    source, target = {"mu": 1.0}, {"lam": 0.0, "mu": 1.6}
    pde = build_pde("elliptic", target)
    gen = torch.Generator().manual_seed(0)
    model = KAN([2, 5, 1], list(pde.domain), dtype=F64, generator=gen, kind="bspline")
    _, pts = pde.grid(11, F64)
    members: list[float] = []

    def make_loss(s: float) -> PinnLoss:
        members.append(s)
        return PinnLoss(build_pde("elliptic", point(source, target, s)))

    path = HomotopyPath(make_loss, legs=3, leg_steps=4)
    return pde, gen, model, Evaluator(pts, pde.exact(pts)), path, members


def _cfg() -> TrainConfig:
    return TrainConfig(
        steps=24,
        n_interior=64,
        n_boundary=16,
        eval_every=2,
        progress="none",
        optimizer="lm",
        tol=0.05,
        lm=LMConfig(resample_every=3),
    )


def _run(**kwargs):
    pde, gen, model, ev, path, members = _setup()
    groups = [{"params": list(model.parameters())}]
    hist = train(model, PinnLoss(pde), groups, _cfg(), ev, gen, path=path, **kwargs)
    return hist, path, members, model


def test_a_run_walks_the_path_to_the_target() -> None:
    hist, path, members, _ = _run()
    assert members[0] == pytest.approx(1 / 3)  # the first leg's member
    assert path.at_target and members[-1] == 1.0 and len(members) >= 2
    assert all(0 < s <= 1 for s in members)


def test_homotopy_is_reproducible_and_resumes_mid_path() -> None:
    full, path, _, model = _run()
    again, _, _, model2 = _run()
    assert full.loss == again.loss
    saved: list[TrainState] = []
    calls = iter(range(10_000))
    with pytest.raises(Interrupted):
        _run(
            checkpoint=lambda s: saved.append(copy.deepcopy(s)),
            stop=lambda: 2 if next(calls) == 5 else None,
        )
    state = saved[-1]
    assert 0 < state.optimizer["homotopy"]["s"] < 1  # stopped mid-path
    resumed, _, _, model3 = _run(resume=state)
    assert resumed.loss == full.loss
    x = torch.rand(20, 2, dtype=F64)
    assert torch.equal(model(x), model3(x))


def test_transfer_stage_records_the_homotopy(tmp_path: Path) -> None:
    cfg = lm_transfer_config(tmp_path)
    cfg["transfer"] = {"homotopy": 2, "leg_steps": 2}
    cfg["pde"]["target"] = {"mu": 1.4}
    res = runner.transfer(cfg, tmp_path / "t")
    attrs = read_results(tmp_path / "t" / "results.h5")["attrs"]
    assert (attrs["homotopy"], attrs["leg_steps"]) == (2, 2)
    assert attrs["pde_params"]["mu"] == 1.4
    assert 0.0 <= attrs["homotopy_s"] <= 1.0
    assert res.status == "ok"


def test_a_budget_that_ends_on_the_path_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of steps before the target: results.h5 records how far it got, the log warns."""
    cfg = lm_transfer_config(tmp_path)
    cfg["train"] |= {"steps": 3, "tol": 0.0}
    cfg["transfer"] = {"homotopy": 8, "leg_steps": 50}  # the first leg never ends in 3 steps
    cfg["pde"]["target"] = {"mu": 1.4}
    with caplog.at_level("WARNING", logger="pinnkan"):
        runner.transfer(cfg, tmp_path / "t")
    attrs = read_results(tmp_path / "t" / "results.h5")["attrs"]
    assert attrs["homotopy_s"] == 0.0
    assert "short of the target" in caplog.text and "transfer.homotopy=8" in caplog.text


def test_homotopy_with_adam_is_one_line(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, {"train.steps": 2})
    runner.pretrain(cfg, tmp_path / "source")
    cfg["source"] = str(tmp_path / "source")
    cfg["transfer"] = {"homotopy": 2}
    with pytest.raises(PinnkanError, match=r"^transfer.homotopy=2: .* needs optim=lm"):
        runner.transfer(cfg, tmp_path / "t")
    assert not list((tmp_path / "t").glob("*.h5")), "refused before any file is written"
    # the same check, in the one pass that the CLI's pre-check runs too
    with pytest.raises(PinnkanError, match="needs optim=lm"):
        validate_config(RunConfig.from_dict({"stage": "transfer", **cfg}))


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"train": {"steps": 0}}, "does not train"),
        ({"train": {"time_windows": 2}}, "one of train.time_windows"),
        ({"adapter": {"name": "lotra", "grow_to": 1.0}}, "one of adapter.grow_to"),
    ],
)
def test_homotopy_conflicts_are_found_before_the_run(
    changes: dict, why: str, tmp_path: Path
) -> None:
    cfg = tiny_config(tmp_path, {"optim": {"name": "lm"}, "pde": {"name": "parabolic"}})
    cfg["transfer"] = {"homotopy": 2}  # parabolic has t: time windows are allowed
    for key, value in changes.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    with pytest.raises(PinnkanError, match=f"^transfer.homotopy=2: .*{why}"):
        validate_config(RunConfig.from_dict({"stage": "transfer", **cfg}))


def test_library_train_names_its_own_arguments() -> None:
    """`train(path=...)` with Adam speaks of train's arguments, not of CLI keys."""
    pde, gen, model, ev, path, _ = _setup()
    groups = [{"params": list(model.parameters())}]
    adam = TrainConfig(steps=1, optimizer="adam", progress="none")
    with pytest.raises(PinnkanError, match=r"path=\.\.\.\) .* not 'adam'") as err:
        train(model, PinnLoss(pde), groups, adam, ev, gen, path=path)
    assert "transfer.homotopy" not in str(err.value)
