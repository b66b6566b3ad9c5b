"""Optimizers and adapter kinds are registries: a toy one registered from outside the package
trains through the ordinary stages; a bad optimizer, adapter, PDE name or cr raises from its
one checking function, whatever the entry point."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from pinnkan.adapters import AdapterConfig, AdapterKind, adapter_names, register_adapter
from pinnkan.adapters import registry as adapter_registry
from pinnkan.adapters.files import set_trainable
from pinnkan.adapters.tucker import check_cr
from pinnkan.errors import PinnkanError
from pinnkan.io.results import read_results
from pinnkan.pde import build_pde, family_of
from pinnkan.run import runner
from pinnkan.train import optimizers
from pinnkan.train.config import TrainConfig
from pinnkan.train.optimizers import Optimizer, get_optimizer, register_optimizer
from tests.conftest import lm_transfer_config, tiny_config

# --- a toy optimizer: plain gradient steps at a fixed rate, written outside pinnkan ----------


@dataclass
class ToyOptions:
    """`optim=toy`: the options dataclass of the toy optimizer."""

    name: str = "toy"
    lr: float = 1e-4
    steps: Any = field(default_factory=lambda: {"pretrain": 4, "transfer": 4})


CALLS: list[int] = []


def toy_loop(run: Any, loss_fn: Any, groups: list[dict[str, Any]], resume: Any, *_: Any) -> Any:
    """A loop needs only the LoopRun's model, config, generator, clock and record."""
    model, cfg = run.model, run.cfg
    CALLS.append(cfg.steps)
    before = [p.detach().clone() for g in groups for p in g["params"]]
    params = [p for g in groups for p in g["params"]]
    for step in range(run.start + 1, cfg.steps + 1):
        t0 = time.perf_counter()
        batch = loss_fn.sample(cfg.n_interior, cfg.n_boundary, run.gen, model.lo.dtype, "cpu")
        loss = loss_fn(model, batch)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= cfg.lr * g
        run.elapsed += time.perf_counter() - t0
        run.record(step, float(loss.detach()))
    after = [p for g in groups for p in g["params"]]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))  # the steps moved it
    run.progress.close()
    return run.hist


@pytest.fixture
def toy_optimizer() -> Any:
    before = dict(optimizers._OPTIMIZERS)
    yield register_optimizer(
        Optimizer("toy", ToyOptions, toy_loop, lambda options, stage: {"lr": options.lr})
    )
    optimizers._OPTIMIZERS.clear()
    optimizers._OPTIMIZERS.update(before)


def test_an_optimizer_registered_from_outside_trains_a_stage(
    tmp_path: Path, toy_optimizer: Optimizer
) -> None:
    cfg = tiny_config(tmp_path, {"optim": {"name": "toy"}})
    result = runner.pretrain(cfg, tmp_path / "run")
    assert result.status == "ok"
    res = read_results(tmp_path / "run" / "results.h5")
    assert res["attrs"]["optimizer"] == "toy"
    assert list(res["history"]["step"]) == [1, 2, 3]  # tiny_config's train.steps
    assert CALLS[-1] == 3 and all(abs(v) < 1e6 for v in res["history"]["loss"])
    assert TrainConfig(optimizer="toy").steps == 4  # its options' pretrain default


# --- a toy adapter kind: only the last layer trains, in full --------------------------------


def last_layer_only(model: Any, cfg: AdapterConfig, generator: Any, loss_fn: Any) -> None:
    for layer in model.layers:
        set_trainable(layer, False)
    set_trainable(model.layers[-1], True)


@pytest.fixture
def toy_adapter() -> Any:
    before = dict(adapter_registry._KINDS)
    yield register_adapter(AdapterKind("last_layer", last_layer_only))
    adapter_registry._KINDS.clear()
    adapter_registry._KINDS.update(before)


def test_an_adapter_kind_registered_from_outside_runs_a_transfer(
    tmp_path: Path, toy_adapter: AdapterKind
) -> None:
    cfg = lm_transfer_config(tmp_path)
    cfg["adapter"] = {"name": "last_layer"}
    result = runner.transfer(cfg, tmp_path / "run")
    assert result.status == "ok"
    res = read_results(tmp_path / "run" / "results.h5")
    assert res["attrs"]["adapter"] == "last_layer"
    last = res["model"][max(res["model"])]  # the last layer moved, the others did not
    first = res["model"][0]
    assert abs(last["delta"]).max() > 0 and abs(first["delta"]).max() == 0
    assert "last_layer" in adapter_names()


# --- each name and cr checked in one function ----------------------------------------------


def raised_in(call: Callable[[], Any]) -> str:
    """The name of the function that raised the PinnkanError `call` ends with."""
    with pytest.raises(PinnkanError) as info:
        call()
    return traceback.extract_tb(info.value.__traceback__)[-1].name


@pytest.mark.parametrize(
    "call",
    [
        lambda p: get_optimizer("sgdx"),
        lambda p: TrainConfig(optimizer="sgdx").validate(),
        lambda p: runner.pretrain(tiny_config(p, {"optim": {"name": "sgdx"}}), p / "r"),
    ],
    ids=["registry", "TrainConfig", "runner"],
)
def test_an_unknown_optimizer_is_refused_by_get_optimizer(call: Any, tmp_path: Path) -> None:
    assert raised_in(lambda: call(tmp_path)) == "get_optimizer"


@pytest.mark.parametrize(
    "call",
    [
        lambda p: AdapterConfig(name="lora").validate(2),
        lambda p: runner.transfer({**tiny_config(p), "adapter": {"name": "lora"}}, p / "r"),
    ],
    ids=["AdapterConfig", "runner"],
)
def test_an_unknown_adapter_is_refused_by_get_adapter(call: Any, tmp_path: Path) -> None:
    assert raised_in(lambda: call(tmp_path)) == "get_adapter"


@pytest.mark.parametrize(
    "call",
    [
        lambda p: build_pde("ellipticc"),
        lambda p: family_of("ellipticc"),
        lambda p: runner.pretrain(tiny_config(p, {"pde.name": "ellipticc"}), p / "r"),
    ],
    ids=["build_pde", "family_of", "runner"],
)
def test_an_unknown_pde_is_refused_by_family_of(call: Any, tmp_path: Path) -> None:
    assert raised_in(lambda: call(tmp_path)) == "family_of"


@pytest.mark.parametrize(
    "call",
    [
        lambda p: check_cr(1.5),
        lambda p: AdapterConfig(cr=1.5).validate(2),
        lambda p: runner.transfer({**tiny_config(p), "cr": 1.5}, p / "r"),
    ],
    ids=["check_cr", "AdapterConfig", "runner"],
)
def test_a_bad_cr_is_refused_by_check_cr(call: Any, tmp_path: Path) -> None:
    assert raised_in(lambda: call(tmp_path)) == "check_cr"
