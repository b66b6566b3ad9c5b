"""Model and adapter files: plain tensors plus a JSON header, loaded with weights_only=True
(no pickled code runs), written atomically (temporary file in the same directory, then rename)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pinnkan import __version__
from pinnkan.errors import PinnkanError

MODEL_FORMAT = "pinnkan-model/1"
ADAPTER_FORMAT = "pinnkan-adapter/1"
MODEL_FILE = "model.pt"
ADAPTER_FILE = "adapter.pt"


def atomic_torch_save(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def load_checkpoint(path: Path, fmt: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read a pinnkan file of format `fmt`; every failure is one clear PinnkanError."""
    path = Path(path)
    what = "model checkpoint" if fmt == MODEL_FORMAT else "adapter file"
    if not path.is_file():
        raise PinnkanError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PinnkanError(
            f"cannot read {what} {path} (corrupted or not a pinnkan file: {first[:120]}); "
            "re-run the stage that wrote it"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise PinnkanError(f"{path} is not a pinnkan {what} (expected format {fmt})")
    try:
        meta = json.loads(obj["meta"])
        state = dict(obj["state"])
    except (KeyError, TypeError, ValueError):
        raise PinnkanError(
            f"{what} {path} is damaged (bad header); re-run the stage that wrote it"
        ) from None
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise PinnkanError(f"{what} {path} is damaged (non-tensor entries)")
    return meta, state
