"""Model and adapter files: plain tensors plus a JSON header, loaded with weights_only=True
(no pickled code runs), written atomically (temporary file in the same directory, then rename)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pinnkan import __version__
from pinnkan.atomic import atomic_replace
from pinnkan.errors import PinnkanError
from pinnkan.training import TrainState

MODEL_FORMAT = "pinnkan-model/1"
ADAPTER_FORMAT = "pinnkan-adapter/1"
STATE_FORMAT = "pinnkan-train-state/1"
MODEL_FILE = "model.pt"
ADAPTER_FILE = "adapter.pt"
STATE_FILE = "checkpoint.pt"  # resumable training state, written every train.checkpoint_every
_WHAT = {
    MODEL_FORMAT: "model checkpoint",
    ADAPTER_FORMAT: "adapter file",
    STATE_FORMAT: "checkpoint",
}


def atomic_torch_save(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename over it. Serialised in
    memory first, so a failed write is the OS error (e.g. "No space left on device") rather
    than torch's "iostream error"."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_replace(path) as tmp, open(tmp, "wb") as fh:
        fh.write(buf.getbuffer())


def tensors_hash(tensors: dict[str, Tensor]) -> str:
    """sha256 over names, shapes, dtypes and bytes: the identity of a set of frozen tensors."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, fmt: str, meta: dict[str, Any], state: dict[str, Tensor]) -> None:
    """Write a pinnkan file: {"format", "meta" (JSON text), "state" (name -> tensor)}."""
    header = {**meta, "pinnkan_version": __version__}
    state = {k: v.detach().cpu() for k, v in state.items()}
    atomic_torch_save({"format": fmt, "meta": json.dumps(header), "state": state}, path)


def load_checkpoint(path: Path, fmt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a pinnkan file of format `fmt`; every failure is one clear PinnkanError."""
    path = Path(path)
    what = _WHAT[fmt]
    if not path.is_file():
        raise PinnkanError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for truncated / foreign files
        raise PinnkanError(f"cannot read {what} {path}: {unreadable_reason(path)}") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        other = _WHAT.get(obj.get("format")) if isinstance(obj, dict) else None
        kind = f"a pinnkan {other}" if other else "a torch file of another program"
        raise PinnkanError(f"{path} is not a pinnkan {what}: it is {kind} (expected format {fmt})")
    try:
        meta = json.loads(obj["meta"])
        state = dict(obj["state"])
    except (KeyError, TypeError, ValueError):
        raise PinnkanError(
            f"{what} {path} is damaged (bad header); re-run the stage that wrote it"
        ) from None
    if fmt != STATE_FORMAT and not all(isinstance(v, Tensor) for v in state.values()):
        raise PinnkanError(f"{what} {path} is damaged (non-tensor entries)")
    return meta, state


# the first bytes of the files a user may pass where a pinnkan file is expected
_SIGNATURES = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a results.h5?), not a torch file"),
    (b"\x80", "a pickled torch file of another program (pinnkan files are zip archives)"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"{", "a text (JSON?) file"),
)


def unreadable_reason(path: Path) -> str:
    """Why a file torch cannot load is no pinnkan file, from its size and first bytes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if size == 0:
        return "the file is empty (0 bytes); re-run the stage that wrote it"
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
    return f"not a pinnkan file ({size} bytes, not a torch zip archive)"


def save_train_state(path: Path, state: TrainState, meta: dict[str, Any]) -> None:
    """Write a resumable training state (model, optimizer, scheduler, RNG, history) atomically."""
    header = {**meta, "step": state.step, "pinnkan_version": __version__}
    body = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}  # no deep copy
    atomic_torch_save({"format": STATE_FORMAT, "meta": json.dumps(header), "state": body}, path)


def load_train_state(path: Path) -> tuple[dict[str, Any], TrainState]:
    """Read a state written by `save_train_state`; a damaged file is one PinnkanError."""
    meta, body = load_checkpoint(path, STATE_FORMAT)
    try:
        return meta, TrainState(**body)
    except TypeError:
        raise PinnkanError(f"checkpoint {path} is damaged (missing fields)") from None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process left behind."""
    stale = [p for p in Path(folder).glob(".*.tmp-*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
