"""In-process tests of pinnkan.checkpoint: round trip, refusal of bad files, hash, atomic write."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest
import torch

from pinnkan import __version__
from pinnkan.checkpoint import (
    ADAPTER_FORMAT,
    MODEL_FORMAT,
    atomic_torch_save,
    load_checkpoint,
    save_checkpoint,
    tensors_hash,
)
from pinnkan.errors import PinnkanError

# Set by code that only runs if an unpickler executes something from this module.
CODE_RAN: list[str] = []


def _mark(tag: str) -> None:
    """Called on unpickling a `Booby` or `BoobyDict`: records that pickled code ran."""
    CODE_RAN.append(tag)


class Booby:
    """An arbitrary object whose unpickling calls `_mark`."""

    def __reduce__(self) -> tuple:
        return (_mark, ("reduce",))


class BoobyDict(collections.OrderedDict):
    """An OrderedDict subclass whose unpickling calls `_mark` through __setstate__."""

    def __setstate__(self, state: object) -> None:
        _mark("setstate")

    def __reduce__(self) -> tuple:
        return (BoobyDict, (), {"x": 1}, None, iter(self.items()))


def _state() -> dict[str, torch.Tensor]:
    """A small state dict with two dtypes and shapes."""
    g = torch.Generator().manual_seed(0)
    return {
        "layers.0.A": torch.randn(2, 4, 9, generator=g),
        "layers.1.A": torch.randn(4, 1, 9, generator=g, dtype=torch.float64),
        "lo": torch.zeros(2),
    }


@pytest.fixture(autouse=True)
def _reset_flag() -> None:
    CODE_RAN.clear()


def test_round_trip(tmp_path: Path) -> None:
    """Tensors and meta come back equal; the header records the pinnkan version."""
    state = _state()
    meta = {"pde": "elliptic", "spec": {"widths": [2, 4, 1]}, "cr": 0.25}
    path = tmp_path / "model.pt"
    save_checkpoint(path, MODEL_FORMAT, meta, state)
    got_meta, got_state = load_checkpoint(path, MODEL_FORMAT)
    assert {k: v for k, v in got_meta.items() if k != "pinnkan_version"} == meta
    assert got_meta["pinnkan_version"] == __version__
    assert set(got_state) == set(state)
    for key, tensor in state.items():
        assert got_state[key].dtype == tensor.dtype
        torch.testing.assert_close(got_state[key], tensor, rtol=0, atol=0)


def test_save_detaches_requires_grad(tmp_path: Path) -> None:
    """A trainable parameter is stored as a plain tensor and loads under weights_only."""
    param = torch.nn.Parameter(torch.ones(3))
    save_checkpoint(tmp_path / "m.pt", MODEL_FORMAT, {}, {"p": param})
    _, state = load_checkpoint(tmp_path / "m.pt", MODEL_FORMAT)
    assert not state["p"].requires_grad
    torch.testing.assert_close(state["p"], torch.ones(3))


def test_missing_file(tmp_path: Path) -> None:
    """A path that does not exist is one PinnkanError naming it."""
    path = tmp_path / "nope" / "model.pt"
    with pytest.raises(PinnkanError, match="not found") as info:
        load_checkpoint(path, MODEL_FORMAT)
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory is not a checkpoint."""
    with pytest.raises(PinnkanError):
        load_checkpoint(tmp_path, MODEL_FORMAT)


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.0])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    """A checkpoint cut short is a PinnkanError that names the file, not a torch exception."""
    path = tmp_path / "model.pt"
    save_checkpoint(path, MODEL_FORMAT, {"pde": "elliptic"}, _state())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(PinnkanError) as info:
        load_checkpoint(path, MODEL_FORMAT)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_random_bytes(tmp_path: Path) -> None:
    """Noise is a PinnkanError naming the file."""
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(PinnkanError) as info:
        load_checkpoint(path, MODEL_FORMAT)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [
        lambda: Booby(),
        lambda: {"format": MODEL_FORMAT, "meta": "{}", "state": {"a": Booby()}},
        lambda: BoobyDict(format=MODEL_FORMAT, meta="{}", state={}),
    ],
    ids=["object", "object-inside-state", "ordereddict-subclass"],
)
def test_pickled_code_is_refused(tmp_path: Path, payload: object) -> None:
    """A file holding arbitrary Python objects is refused and none of their code runs."""
    path = tmp_path / "evil.pt"
    torch.save(payload(), path)  # type: ignore[operator]
    assert CODE_RAN == []  # saving does not call _mark
    with pytest.raises(PinnkanError) as info:
        load_checkpoint(path, MODEL_FORMAT)
    assert CODE_RAN == [], "load_checkpoint executed pickled code"
    assert str(path) in str(info.value)
    # control: the unsafe loader does run it, so the flag can detect execution
    torch.load(path, weights_only=False)
    assert CODE_RAN


def test_wrong_format(tmp_path: Path) -> None:
    """A model file is not an adapter file (and vice versa); a foreign dict is no checkpoint."""
    path = tmp_path / "model.pt"
    save_checkpoint(path, MODEL_FORMAT, {}, _state())
    with pytest.raises(PinnkanError, match="expected format"):
        load_checkpoint(path, ADAPTER_FORMAT)
    save_checkpoint(path, ADAPTER_FORMAT, {}, _state())
    with pytest.raises(PinnkanError, match="expected format"):
        load_checkpoint(path, MODEL_FORMAT)
    torch.save({"layers.0.A": torch.zeros(2)}, path)  # a plain state dict
    with pytest.raises(PinnkanError):
        load_checkpoint(path, MODEL_FORMAT)
    torch.save([1, 2, 3], path)
    with pytest.raises(PinnkanError):
        load_checkpoint(path, MODEL_FORMAT)


@pytest.mark.parametrize(
    "obj",
    [
        {"format": MODEL_FORMAT, "meta": "{not json", "state": {}},
        {"format": MODEL_FORMAT, "state": {}},
        {"format": MODEL_FORMAT, "meta": "{}"},
        {"format": MODEL_FORMAT, "meta": "{}", "state": {"a": 3}},
    ],
    ids=["bad-json", "no-meta", "no-state", "non-tensor"],
)
def test_damaged_header(tmp_path: Path, obj: dict) -> None:
    """Right format string but a broken body: PinnkanError, not KeyError/JSONDecodeError."""
    path = tmp_path / "model.pt"
    torch.save(obj, path)
    with pytest.raises(PinnkanError):
        load_checkpoint(path, MODEL_FORMAT)


def test_tensors_hash() -> None:
    """Stable for equal tensors in any dict order; changes with one value, a name or a dtype."""
    state = _state()
    h = tensors_hash(state)
    assert h == tensors_hash({k: v.clone() for k, v in reversed(list(state.items()))})
    changed = {k: v.clone() for k, v in state.items()}
    changed["layers.0.A"][1, 2, 3] += 1e-6
    assert tensors_hash(changed) != h
    renamed = dict(state)
    renamed["layers.9.A"] = renamed.pop("layers.0.A")
    assert tensors_hash(renamed) != h
    retyped = {**state, "lo": state["lo"].double()}
    assert tensors_hash(retyped) != h
    reshaped = {**state, "layers.1.A": state["layers.1.A"].reshape(1, 4, 9)}
    assert tensors_hash(reshaped) != h
    assert tensors_hash(state) == h  # hashing did not alter the tensors


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    """After saves (including an overwrite) the directory holds only the checkpoint files."""
    save_checkpoint(tmp_path / "model.pt", MODEL_FORMAT, {"n": 1}, _state())
    save_checkpoint(tmp_path / "model.pt", MODEL_FORMAT, {"n": 2}, _state())
    save_checkpoint(tmp_path / "adapter.pt", ADAPTER_FORMAT, {}, {"G": torch.ones(1, 1, 1)})
    assert sorted(os.listdir(tmp_path)) == ["adapter.pt", "model.pt"]
    meta, _ = load_checkpoint(tmp_path / "model.pt", MODEL_FORMAT)
    assert meta["n"] == 2


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    """A save that fails midway removes its temporary file and leaves the old checkpoint intact."""
    path = tmp_path / "model.pt"
    save_checkpoint(path, MODEL_FORMAT, {"n": 1}, _state())
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        atomic_torch_save({"bad": lambda: None}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    meta, _ = load_checkpoint(path, MODEL_FORMAT)
    assert meta["n"] == 1
