"""Model, adapter and training-state files, written atomically (a temporary file in the same
directory, then rename) and read without running pickled code.

Model and adapter files are safetensors: the tensors plus a JSON header in the safetensors
metadata ({"format": "pinnkan-model/2", "meta": "<JSON>"}), so no pickle at all. The torch
files of earlier pinnkan versions (formats pinnkan-model/1, pinnkan-adapter/1: {"format",
"meta", "state"}) are still read, with weights_only=True. The training state (checkpoint.pt:
optimizer, scheduler, RNG) stays a torch file read with weights_only=True. Every failure to
read is one clear PinnkanError naming the file and what it is instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import safe_open
from torch import Tensor

from pinnkan.common.atomic import atomic_replace
from pinnkan.errors import PinnkanError
from pinnkan.version import __version__

MODEL_FORMAT = "pinnkan-model/2"
ADAPTER_FORMAT = "pinnkan-adapter/2"
STATE_FORMAT = "pinnkan-train-state/1"
# formats still read: the torch model and adapter files of earlier pinnkan versions
READABLE = {
    MODEL_FORMAT: (MODEL_FORMAT, "pinnkan-model/1"),
    ADAPTER_FORMAT: (ADAPTER_FORMAT, "pinnkan-adapter/1"),
    STATE_FORMAT: (STATE_FORMAT,),
}
MODEL_FILE = "model.safetensors"
LEGACY_MODEL_FILE = "model.pt"  # what runs of earlier pinnkan versions wrote
MODEL_FILES = (MODEL_FILE, LEGACY_MODEL_FILE)
STATE_FILE = "checkpoint.pt"  # resumable training state, written every train.checkpoint_every
_WHAT = {
    MODEL_FORMAT: "model checkpoint",
    ADAPTER_FORMAT: "adapter file",
    STATE_FORMAT: "checkpoint",
}
_WHAT.update({old: _WHAT[fmt] for fmt, formats in READABLE.items() for old in formats})
# safetensors refuses headers over 100 MB: a larger length in the first 8 bytes is not one
_MAX_HEADER = 100_000_000


def file_in(path: Path | str, names: tuple[str, ...]) -> Path:
    """`path` itself when it is not a directory, else the first of `names` that exists in it
    (the first name when none does, so that "not found" names the file expected)."""
    path = Path(path)
    if not path.is_dir():
        return path
    return next((path / n for n in names if (path / n).is_file()), path / names[0])


def model_file(path: Path | str) -> Path:
    """The model file of a run directory: model.safetensors, or an older run's model.pt."""
    return file_in(path, MODEL_FILES)


def atomic_write_bytes(data: bytes | memoryview, path: Path) -> None:
    """Write `data` to a temporary file beside `path`, fsync, then rename it over `path`.
    Serialising in memory first makes a failed write the OS error (e.g. "No space left on
    device") rather than the serialiser's own wrapping of it."""
    with atomic_replace(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_torch_save(obj: dict[str, Any], path: Path) -> None:
    """torch.save, written atomically (`atomic_write_bytes`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(buf.getbuffer(), path)


def tensors_hash(tensors: dict[str, Tensor]) -> str:
    """sha256 over names, shapes, dtypes and bytes: the identity of a set of frozen tensors."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, fmt: str, meta: dict[str, Any], state: dict[str, Tensor]) -> None:
    """Write a pinnkan model or adapter file (safetensors): the tensors of `state` and, in the
    metadata, {"format": fmt, "meta": JSON of `meta` plus the pinnkan version}."""
    if fmt not in (MODEL_FORMAT, ADAPTER_FORMAT):
        raise ValueError(f"save_checkpoint writes {MODEL_FORMAT} or {ADAPTER_FORMAT}, not {fmt}")
    header = {"format": fmt, "meta": json.dumps({**meta, "pinnkan_version": __version__})}
    # own contiguous copies: safetensors refuses tensors that share memory
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    atomic_write_bytes(safetensors.torch.save(tensors, metadata=header), path)


def load_checkpoint(path: Path, fmt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Meta and state of a pinnkan file of format `fmt` (or an older format of the same kind,
    `READABLE`); every failure is one clear PinnkanError."""
    path = Path(path)
    what = _WHAT[fmt]
    if not path.is_file():
        raise PinnkanError(f"{what} not found: {path}")
    container = "safetensors" if _is_safetensors(_head(path)) else "torch"
    try:
        obj = _read_safetensors(path) if container == "safetensors" else _read_torch(path)
    except Exception:  # both readers raise many types for truncated / foreign files
        raise PinnkanError(f"cannot read {what} {path}: {unreadable_reason(path)}") from None
    found = obj.get("format") if isinstance(obj, dict) else None
    readable = next(v for v in READABLE.values() if fmt in v)
    if found not in readable:
        other = _WHAT.get(found) if isinstance(found, str) else None
        kind = f"a pinnkan {other}" if other else f"a {container} file of another program"
        raise PinnkanError(f"{path} is not a pinnkan {what}: it is {kind} (expected format {fmt})")
    try:
        meta = json.loads(obj["meta"])
        state = dict(obj["state"])
        if not isinstance(meta, dict):
            raise ValueError("the header is no JSON object")
    except (KeyError, TypeError, ValueError):
        raise PinnkanError(
            f"{what} {path} is damaged (bad header); re-run the stage that wrote it"
        ) from None
    if fmt != STATE_FORMAT and not all(isinstance(v, Tensor) for v in state.values()):
        raise PinnkanError(f"{what} {path} is damaged (non-tensor entries)")
    return meta, state


def _read_torch(path: Path) -> Any:
    # from the bytes, not the path: torch.load hands a path ending in .safetensors to its own
    # safetensors reader, whatever the file holds
    return torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)


def _read_safetensors(path: Path) -> dict[str, Any]:
    """The torch-file layout {"format", "meta", "state"} of a safetensors file (keys missing
    when its metadata lacks them)."""
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        header = fh.metadata() or {}
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    return {**{k: header[k] for k in ("format", "meta") if k in header}, "state": state}


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(9)
    except OSError:
        return b""


def _is_safetensors(head: bytes) -> bool:
    """Whether the first 9 bytes are a safetensors start: the header length (little-endian
    u64, at most 100 MB), then the JSON header's "{"."""
    length = int.from_bytes(head[:8], "little")
    return len(head) == 9 and head[8:9] == b"{" and 2 <= length <= _MAX_HEADER


# the first bytes of the files a user may pass where a pinnkan file is expected
_SIGNATURES = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a results.h5?), not a pinnkan file"),
    (b"\x80", "a pickled file of another program (pinnkan files are safetensors)"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"{", "a text (JSON?) file"),
)


def unreadable_reason(path: Path) -> str:
    """Why a file that cannot be loaded is no pinnkan file, from its size and first bytes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if size == 0:
        return "the file is empty (0 bytes); re-run the stage that wrote it"
    if _is_safetensors(head):
        return (
            f"truncated or damaged ({size} bytes; its safetensors header or tensors cannot be "
            "read); re-run the stage that wrote it"
        )
    if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
        return (
            "a torch file holding objects other than tensors (not loaded: unpickling them "
            "could run code)"
        )
    if head.startswith(b"PK\x03\x04"):
        return (
            f"truncated or damaged ({size} bytes; its zip archive cannot be read); "
            "re-run the stage that wrote it"
        )
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return f"it is {kind}"
    return f"not a pinnkan file ({size} bytes, neither safetensors nor a torch zip archive)"


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process left behind."""
    stale = [p for p in Path(folder).glob(".*.tmp-*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
