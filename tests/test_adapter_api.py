"""The PEFT-style adapter API on live networks (apply, save_adapter, load_adapter, merge), the
old torch files it still reads, and an old model.pt as a transfer source."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from pinnkan.adapters import (
    ADAPTER_FILE,
    AdapterConfig,
    apply,
    load_adapter,
    merge,
    read_adapter,
    save_adapter,
)
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import (
    LEGACY_MODEL_FILE,
    MODEL_FILE,
    MODEL_FORMAT,
    load_checkpoint,
    model_file,
)
from pinnkan.network.kan import KAN
from pinnkan.run import runner
from pinnkan.run.merge import merge_adapter
from tests.conftest import tiny_config

DOMAIN = [(0.0, 1.0), (-1.0, 3.0)]
META = {"pde": "elliptic", "pde_params": {"mu": 2.0}, "adapter": "lotra", "cr": 0.5}
MODES = ["lotra", "full", "frozen"]  # one layer of each: Tucker factors, whole layer, nothing


def _base(kind: str, dtype: torch.dtype, seed: int = 0, hidden: int = 5) -> KAN:
    gen = torch.Generator().manual_seed(seed)
    return KAN([2, hidden, 4, 1], DOMAIN, kind=kind, dtype=dtype, generator=gen)


def _points(dtype: torch.dtype) -> torch.Tensor:
    u = torch.rand(40, 2, generator=torch.Generator().manual_seed(3), dtype=dtype)
    return torch.stack([u[:, 0], -1.0 + 4.0 * u[:, 1]], dim=1)


def _adapted(base: KAN) -> KAN:
    """A copy of `base` with adapters, moved off its start as training would move it."""
    model = apply(
        copy.deepcopy(base),
        AdapterConfig(name="lotra", cr=0.5, init="random", layers=list(MODES)),
        torch.Generator().manual_seed(1),
    )
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # Tucker factors and the layer trained in full
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


@pytest.mark.parametrize(
    ("kind", "dtype"),
    [("bspline", torch.float32), ("bspline", torch.float64), ("rational", torch.float64)],
)
def test_save_then_load_onto_the_base_reproduces_the_adapted_model(
    tmp_path: Path, kind: str, dtype: torch.dtype
) -> None:
    base = _base(kind, dtype)
    adapted, x = _adapted(base), _points(dtype)
    want = adapted(x).detach()
    assert not torch.equal(want, base(x))
    path = tmp_path / ADAPTER_FILE
    save_adapter(adapted, path, {**META, "base_source": None})
    meta = read_adapter(tmp_path).meta
    assert meta["precision"] == str(dtype).removeprefix("torch.")
    assert meta["spec"] == base.spec() and set(meta["ranks"]) == {"0"}

    loaded = copy.deepcopy(base)
    assert load_adapter(loaded, path)["pde"] == "elliptic"
    torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)
    flags = [[p.requires_grad for p in m.parameters()] for m in (loaded, adapted)]
    assert flags[0] == flags[1]  # trainable as after apply: factors and the full layer
    # saved again from the loaded model (the base hash travels): the same tensors
    save_adapter(loaded, tmp_path / "again.safetensors", {**META, "base_source": None})
    again = read_adapter(tmp_path / "again.safetensors")
    assert again.meta["base_hash"] == meta["base_hash"]
    for key, value in read_adapter(path).tensors.items():
        torch.testing.assert_close(again.tensors[key], value, rtol=0, atol=0)


def test_merge_folds_every_update_into_a_plain_network() -> None:
    base = _base("rational", torch.float64)
    adapted, x = _adapted(base), _points(torch.float64)
    want = adapted(x).detach()
    merged = merge(adapted)
    assert merged is adapted and all(layer.adapter is None for layer in merged.layers)
    assert not any(".adapter." in k for k in merged.state_dict())
    torch.testing.assert_close(merged(x), want, rtol=0, atol=0)
    fresh = copy.deepcopy(base)  # a plain network of the same spec takes the merged state
    fresh.load_state_dict(merged.state_dict())
    torch.testing.assert_close(fresh(x), want, rtol=0, atol=0)


def test_load_adapter_refuses_another_base(tmp_path: Path) -> None:
    base = _base("bspline", torch.float64)
    path = tmp_path / ADAPTER_FILE
    save_adapter(_adapted(base), path, {**META, "base_source": "src/model.safetensors"})
    with pytest.raises(PinnkanError, match="different base model") as info:
        load_adapter(_base("bspline", torch.float64, seed=7), path)
    assert "src/model.safetensors" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(PinnkanError, match="trained on a network"):
        load_adapter(_base("bspline", torch.float64, hidden=6), path)
    with pytest.raises(PinnkanError, match="belongs to pde=elliptic, base b.pt to pde=wave"):
        load_adapter(copy.deepcopy(base), path, base_name="b.pt", pde="wave")
    refused = _base("bspline", torch.float64, seed=7)
    with pytest.raises(PinnkanError):
        load_adapter(refused, path)
    assert all(layer.adapter is None for layer in refused.layers)  # left as it was
    with pytest.raises(ValueError, match="already has adapters"):
        load_adapter(_adapted(base), path)


def test_a_damaged_adapter_leaves_the_model_untouched(tmp_path: Path) -> None:
    base = _base("bspline", torch.float64)
    save_adapter(_adapted(base), tmp_path / ADAPTER_FILE, {**META, "base_source": None})
    for damage in ("layers.0.U2", "layers.1.A"):
        upd = read_adapter(tmp_path)
        upd.tensors[damage] = upd.tensors[damage][:-1]
        model, before = copy.deepcopy(base), copy.deepcopy(base.state_dict())
        with pytest.raises(PinnkanError, match="is damaged"):
            load_adapter(model, upd)
        assert all(layer.adapter is None for layer in model.layers)
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key])


def test_save_adapter_needs_adapters_and_a_base_hash(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no adapters"):
        save_adapter(_base("bspline", torch.float32), tmp_path / "a.safetensors", META)
    from pinnkan.adapters import get_adapter

    model = _base("bspline", torch.float32)
    cfg = AdapterConfig(name="lotra", cr=0.5, init="random")
    get_adapter("lotra").prepare(model, cfg, torch.Generator(), None)  # the base not recorded
    with pytest.raises(ValueError, match="base hash"):
        save_adapter(model, tmp_path / "a.safetensors", META)
    save_adapter(model, tmp_path / "a.safetensors", {**META, "base_hash": "abc"})
    assert read_adapter(tmp_path / "a.safetensors").meta["base_hash"] == "abc"


def _legacy(path: Path, fmt: str, meta: dict, state: dict[str, torch.Tensor]) -> Path:
    """A pinnkan torch file as versions before the safetensors files wrote them."""
    state = {k: v.detach().clone() for k, v in state.items()}
    torch.save({"format": fmt, "meta": json.dumps(meta), "state": state}, path)
    return path


def test_merge_reads_an_old_adapter_pt_and_model_pt(tmp_path: Path) -> None:
    """`pinnkan merge` of an adapter.pt (pinnkan-adapter/1) onto a model.pt (pinnkan-model/1)."""
    base = _base("bspline", torch.float32)
    adapted = _adapted(base)
    spec = {"pde": "elliptic", "spec": base.spec(), "precision": "float32"}
    src = tmp_path / "src"
    src.mkdir()
    _legacy(src / LEGACY_MODEL_FILE, "pinnkan-model/1", spec, base.state_dict())
    save_adapter(adapted, tmp_path / "new.safetensors", {**META, "base_source": str(src)})
    new = read_adapter(tmp_path / "new.safetensors")
    run = tmp_path / "run"
    run.mkdir()
    _legacy(run / "adapter.pt", "pinnkan-adapter/1", new.meta, new.tensors)
    meta, state = merge_adapter(run)  # finds adapter.pt in the run, model.pt in the base dir
    assert meta["adapter"] == str(run / "adapter.pt")
    assert meta["base"] == str(src / LEGACY_MODEL_FILE)
    want = merge(adapted).state_dict()
    assert set(state) == set(want)
    for key, value in want.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_an_old_model_pt_is_found_and_used_as_the_transfer_source(tmp_path: Path) -> None:
    """A pretrain run of an earlier version holds model.pt: transfer finds and loads it."""
    src = tmp_path / "pretrain" / "src"
    runner.pretrain(tiny_config(tmp_path), src)
    meta, state = load_checkpoint(src / MODEL_FILE, MODEL_FORMAT)
    _legacy(src / LEGACY_MODEL_FILE, "pinnkan-model/1", meta, state)
    (src / MODEL_FILE).unlink()
    assert model_file(src) == src / LEGACY_MODEL_FILE
    cfg = tiny_config(tmp_path, {"stage": "transfer", "cr": 0.5})  # no source=: the newest run
    res = runner.transfer(cfg, tmp_path / "transfer")
    assert res.status == "ok" and res.attrs["source"] == str(src / LEGACY_MODEL_FILE)
    a_pt = torch.from_numpy(res.model_tensors[0]["A_pretrained"])
    torch.testing.assert_close(a_pt, state["layers.0.A"], rtol=0, atol=0)
    merged_meta, _ = merge_adapter(tmp_path / "transfer")  # its recorded base: the old model.pt
    assert merged_meta["base"] == str(src / LEGACY_MODEL_FILE)
