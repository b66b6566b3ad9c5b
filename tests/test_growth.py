"""Rank growth (`adapter.grow_to`, pinnkan.adapters.growth): a grown update keeps ΔA, its new
columns are orthonormal to the old and follow the gradient, the stall rule, and a transfer
that grows, records it, merges and resumes at the grown ranks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from pinnkan.adapters import AdapterConfig, apply, load_adapter, param_groups
from pinnkan.adapters.growth import RankGrowth, grown_update, match_ranks, new_directions
from pinnkan.adapters.tucker import TuckerUpdate, unfold
from pinnkan.errors import PinnkanError
from pinnkan.io.results import read_results
from pinnkan.network.evaluation import Evaluator
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run import runner
from pinnkan.run.merge import model_from_file
from pinnkan.train.config import TrainConfig
from pinnkan.train.levenberg_marquardt import LMConfig
from pinnkan.train.state import Interrupted, TrainState
from pinnkan.train.training import train
from tests.conftest import lm_transfer_config, tiny_config

F64 = torch.float64


def _update(seed: int = 0) -> TuckerUpdate:
    gen = torch.Generator().manual_seed(seed)
    upd = TuckerUpdate((4, 5, 6), (1, 2, 2), dtype=F64)
    for p in upd.parameters():
        p.data = torch.randn(p.shape, generator=gen, dtype=F64)
    return upd


def test_a_grown_update_keeps_delta_and_takes_the_gradient_directions() -> None:
    upd = _update().requires_grad_(False)
    grad = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    new = grown_update(upd, (3, 4, 6), grad).requires_grad_(False)
    assert new.ranks == (3, 4, 6)
    torch.testing.assert_close(new.delta(), upd.delta(), rtol=0, atol=1e-12)
    for name in ("U1", "U2", "U3"):
        old, grown = getattr(upd, name), getattr(new, name)
        r = old.shape[1]
        assert torch.equal(grown[:, :r], old)
        extra = grown[:, r:]
        # orthonormal, and orthogonal to the old span
        torch.testing.assert_close(extra.T @ extra, torch.eye(extra.shape[1], dtype=F64))
        q, _ = torch.linalg.qr(old)
        assert float((q.T @ extra).abs().max()) < 1e-10
    # the first new column of U1 is the gradient's leading direction outside the old span
    q, _ = torch.linalg.qr(upd.U1)
    g = unfold(grad, 0)
    g = g - q @ (q.T @ g)
    lead = torch.linalg.svd(g).U[:, 0]
    assert abs(float(lead @ new.U1[:, 1])) == pytest.approx(1.0, abs=1e-10)


def test_new_directions_fill_up_from_the_axes_when_the_gradient_runs_out() -> None:
    old = torch.eye(4, dtype=F64)[:, :1]
    cols = new_directions(old, torch.zeros(4, 3, dtype=F64), 3)  # no gradient at all
    torch.testing.assert_close(cols, torch.eye(4, dtype=F64)[:, 1:])


def test_stall_rule_and_ceiling() -> None:
    g = RankGrowth(lambda m: [], cr=0.25, ceiling=0.5, patience=3)
    assert not g.due(True, 1.0, False, False)  # the first loss sets the anchor
    assert not g.due(True, 0.4, False, False)  # halved: a new anchor
    assert not g.due(True, 0.3, False, False)
    assert not g.due(False, 0.3, False, False)  # a rejected step does not count
    assert not g.due(True, 0.3, False, False)
    assert g.due(True, 0.3, False, False)  # 3 accepted steps without halving
    assert not g.due(True, 0.3, False, True)  # the tolerance is met: no growth
    assert g.due(False, 0.3, True, False)  # LM converged above the tolerance
    g.cr = 0.5
    assert not g.due(True, 0.3, True, False)  # at the ceiling


def test_grow_to_is_checked_at_the_edge() -> None:
    with pytest.raises(PinnkanError, match=r"grow_to=0.25"):
        AdapterConfig(cr=0.5, grow_to=0.25).validate(2)  # below cr
    with pytest.raises(PinnkanError, match="needs adapter=lotra"):
        AdapterConfig(name="full", grow_to=1.0).validate(2)
    with pytest.raises(PinnkanError, match="and no ranks"):
        AdapterConfig(ranks=[1, 1, 1], grow_to=1.0).validate(2)
    with pytest.raises(PinnkanError, match="grow_patience"):
        AdapterConfig(grow_to=1.0, grow_patience=0).validate(2)


def _lotra_run(**kwargs):
    """A LoTRA transfer of a tiny KAN (elliptic μ 1 → 1.6) that grows from cr 0.2 to 1."""
    pde = build_pde("elliptic", {"mu": 1.6})
    gen = torch.Generator().manual_seed(0)
    model = KAN([2, 5, 1], list(pde.domain), dtype=F64, generator=gen, kind="bspline")
    loss_fn = PinnLoss(pde)
    acfg = AdapterConfig(cr=0.2, grow_to=1.0, grow_patience=2)
    batch = loss_fn.sample(64, 16, gen, F64, "cpu")
    apply(model, acfg, gen, lambda m: loss_fn(m, batch))
    growth = RankGrowth(lambda m: param_groups(m, acfg, 1.0), 0.2, 1.0, 2)
    resume: TrainState | None = kwargs.get("resume")
    if resume is not None:
        match_ranks(model, resume.model)
    _, pts = pde.grid(11, F64)
    cfg = TrainConfig(
        steps=30,
        n_interior=64,
        n_boundary=16,
        eval_every=2,
        progress="none",
        optimizer="lm",
        tol=0.0,
        lm=LMConfig(resample_every=4),
    )
    groups = param_groups(model, acfg, 1.0)
    hist = train(model, loss_fn, groups, cfg, Evaluator(pts, pde.exact(pts)), gen, **kwargs,
                 growth=growth)  # fmt: skip
    return hist, growth, model


def test_a_run_grows_reproducibly_and_resumes_at_the_grown_ranks() -> None:
    full, growth, model = _lotra_run()
    assert growth.events and growth.events[0]["cr"] == pytest.approx(0.4)
    assert model.layers[0].adapter.ranks != (1, 1, 1)
    again, _, _ = _lotra_run()
    assert again.loss == full.loss
    saved: list[TrainState] = []
    calls = iter(range(10_000))
    step_after = int(growth.events[0]["step"]) + 1
    with pytest.raises(Interrupted):
        _lotra_run(
            checkpoint=lambda s: saved.append(copy.deepcopy(s)),
            stop=lambda: 2 if next(calls) == step_after else None,
        )
    state = saved[-1]
    assert state.optimizer["growth"]["events"]  # stopped after a growth
    resumed, _, model3 = _lotra_run(resume=state)
    assert resumed.loss == full.loss
    x = torch.rand(20, 2, dtype=F64)
    assert torch.equal(model(x), model3(x))


def test_transfer_stage_grows_records_and_merges(tmp_path: Path) -> None:
    cfg = lm_transfer_config(tmp_path)
    cfg["train"] |= {"steps": 12, "tol": 0.0}
    cfg["cr"] = 0.25
    cfg["adapter"] = {"name": "lotra", "grow_to": 1.0, "grow_patience": 1}
    cfg["pde"]["target"] = {"mu": 1.5}
    res = runner.transfer(cfg, tmp_path / "t")
    attrs = read_results(tmp_path / "t" / "results.h5")["attrs"]
    assert attrs["grow_to"] == 1.0 and attrs["grown"]
    layers = json.loads(attrs["layers"])
    _, grown = model_from_file(tmp_path / "source" / "model.safetensors", F64)
    load_adapter(grown, tmp_path / "t" / "adapter.safetensors")
    assert [list(layer.adapter.ranks) for layer in grown.layers] == [r["ranks"] for r in layers]
    assert layers[0]["ranks"] != [1, 1, 1]
    _, merged = model_from_file(tmp_path / "t" / "model.safetensors", F64)
    x = torch.rand(10, 2, dtype=F64)
    torch.testing.assert_close(grown(x), merged(x))
    assert res.status == "ok"


def test_grow_to_with_adam_is_one_line(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, {"train.steps": 2})
    runner.pretrain(cfg, tmp_path / "source")
    cfg["source"] = str(tmp_path / "source")
    cfg["adapter"] = {"name": "lotra", "grow_to": 1.0}
    with pytest.raises(PinnkanError, match="needs optim=lm"):
        runner.transfer(cfg, tmp_path / "t")
