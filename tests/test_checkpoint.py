"""In-process tests of pinnkan.io.checkpoint: round trip, refusal of bad files, hash, atomic write,
safetensors files and the older torch files that are still read."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from pinnkan import __version__
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import (
    ADAPTER_FORMAT,
    MODEL_FORMAT,
    STATE_FORMAT,
    atomic_torch_save,
    load_checkpoint,
    save_checkpoint,
    tensors_hash,
)

LEGACY_MODEL, LEGACY_ADAPTER = "pinnkan-model/1", "pinnkan-adapter/1"

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
    path = tmp_path / "model.safetensors"
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
    save_checkpoint(tmp_path / "m.safetensors", MODEL_FORMAT, {}, {"p": param})
    _, state = load_checkpoint(tmp_path / "m.safetensors", MODEL_FORMAT)
    assert not state["p"].requires_grad
    torch.testing.assert_close(state["p"], torch.ones(3))


def test_missing_file(tmp_path: Path) -> None:
    """A path that does not exist is one PinnkanError naming it."""
    path = tmp_path / "nope" / "model.safetensors"
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
    path = tmp_path / "model.safetensors"
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
    path = tmp_path / "model.safetensors"
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
    save_checkpoint(tmp_path / "model.safetensors", MODEL_FORMAT, {"n": 1}, _state())
    save_checkpoint(tmp_path / "model.safetensors", MODEL_FORMAT, {"n": 2}, _state())
    g = {"G": torch.ones(1, 1, 1)}
    save_checkpoint(tmp_path / "adapter.safetensors", ADAPTER_FORMAT, {}, g)
    assert sorted(os.listdir(tmp_path)) == ["adapter.safetensors", "model.safetensors"]
    meta, _ = load_checkpoint(tmp_path / "model.safetensors", MODEL_FORMAT)
    assert meta["n"] == 2


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    """A save that fails midway removes its temporary file and leaves the old checkpoint intact."""
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, MODEL_FORMAT, {"n": 1}, _state())
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        atomic_torch_save({"bad": lambda: None}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    meta, _ = load_checkpoint(path, MODEL_FORMAT)
    assert meta["n"] == 1


# --- safetensors files and the torch files of earlier versions -----------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_safetensors_round_trip_keeps_the_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    """The file is safetensors (no pickle): the tensors in their dtype, the header as metadata."""
    state = {k: v.to(dtype) for k, v in _state().items()}
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, MODEL_FORMAT, {"precision": str(dtype)}, state)
    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata()
        raw = {k: fh.get_tensor(k) for k in fh.keys()}
    assert header["format"] == MODEL_FORMAT == "pinnkan-model/2"
    assert json.loads(header["meta"])["precision"] == str(dtype)
    _, got = load_checkpoint(path, MODEL_FORMAT)
    for key, tensor in state.items():
        assert raw[key].dtype == got[key].dtype == dtype
        torch.testing.assert_close(got[key], tensor, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("old", "fmt"), [(LEGACY_MODEL, MODEL_FORMAT), (LEGACY_ADAPTER, ADAPTER_FORMAT)]
)
def test_old_torch_files_are_still_read(tmp_path: Path, old: str, fmt: str) -> None:
    """A model.pt / adapter.pt of pinnkan-model/1 or pinnkan-adapter/1 loads as before."""
    state = _state()
    path = tmp_path / "old.pt"
    torch.save({"format": old, "meta": json.dumps({"pde": "elliptic"}), "state": state}, path)
    meta, got = load_checkpoint(path, fmt)
    assert meta == {"pde": "elliptic"} and set(got) == set(state)
    for key, tensor in state.items():
        assert got[key].dtype == tensor.dtype
        torch.testing.assert_close(got[key], tensor, rtol=0, atol=0)
    other = ADAPTER_FORMAT if fmt == MODEL_FORMAT else MODEL_FORMAT
    with pytest.raises(PinnkanError, match="it is a pinnkan"):
        load_checkpoint(path, other)


def _damage(kind: str, path: Path) -> None:
    """Rewrite the pinnkan safetensors file `path` into a damaged or foreign one."""
    data = bytearray(path.read_bytes())
    if kind == "header-cut":
        path.write_bytes(bytes(data[:20]))
    elif kind == "tensors-cut":
        path.write_bytes(bytes(data[:-5]))
    elif kind == "header-garbled":
        data[12:16] = b"\xff\xfe\x00\x01"
        path.write_bytes(bytes(data))
    elif kind == "foreign":
        safetensors.torch.save_file({"weight": torch.zeros(3)}, str(path))
    elif kind == "bad-meta":
        safetensors.torch.save_file({"a": torch.zeros(1)}, str(path), {"format": MODEL_FORMAT})
    else:  # the meta is no JSON
        meta = {"format": MODEL_FORMAT, "meta": "{not json"}
        safetensors.torch.save_file({"a": torch.zeros(1)}, str(path), meta)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("header-cut", "truncated or damaged"),
        ("tensors-cut", "truncated or damaged"),
        ("header-garbled", "truncated or damaged"),
        ("foreign", "it is a safetensors file of another program"),
        ("bad-meta", "is damaged (bad header)"),
        ("bad-json", "is damaged (bad header)"),
    ],
)
def test_damaged_safetensors_is_one_line(tmp_path: Path, kind: str, reason: str) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, MODEL_FORMAT, {"pde": "elliptic"}, _state())
    _damage(kind, path)
    with pytest.raises(PinnkanError) as info:
        load_checkpoint(path, MODEL_FORMAT)
    msg = str(info.value)
    assert str(path) in msg and reason in msg and "\n" not in msg, msg


def test_training_state_stays_a_torch_file(tmp_path: Path) -> None:
    """checkpoint.pt (optimizer state) is a torch file; a model file there is refused."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, MODEL_FORMAT, {}, _state())
    with pytest.raises(PinnkanError, match="it is a pinnkan model checkpoint"):
        load_checkpoint(path, STATE_FORMAT)
