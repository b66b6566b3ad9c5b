"""Apply an adapter file to the base model it was trained on: A = A_base + G ×1 U1 ×2 U2 ×3 U3.

An adapter file (adapter.pt of a LoTRA transfer run) records the identity of its base: PDE
family, network spec, and a sha256 of the frozen layer tensors (A and any extra parameters of the
layer kind, e.g. rational denominators or MLP biases). Merging onto any other base is
refused, because the update means nothing there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pinnkan.adapters.tucker import tucker_product
from pinnkan.checkpoint import (
    ADAPTER_FILE,
    ADAPTER_FORMAT,
    MODEL_FILE,
    MODEL_FORMAT,
    load_checkpoint,
    save_checkpoint,
    tensors_hash,
)
from pinnkan.errors import PinnkanError
from pinnkan.kan import spec_differences

MERGED_FILE = "merged.pt"
# a base's frozen tensors: every layer tensor (A and extra parameters such as rational
# denominators or MLP biases); lo / hi are checked through the spec
_LAYER_TENSOR = re.compile(r"^layers\.(\d+)\.")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _file(path: Path, name: str) -> Path:
    path = Path(path)
    return path / name if path.is_dir() else path


def merge_adapter(
    adapter: Path, base: Path | None = None
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Meta and state of the merged model; `base` defaults to the adapter's recorded source."""
    adapter_path = _file(adapter, ADAPTER_FILE)
    meta, upd = load_checkpoint(adapter_path, ADAPTER_FORMAT)
    if base is None:
        if not meta.get("base_source"):
            raise PinnkanError(
                f"adapter {adapter_path} records no base model (adapter={meta.get('adapter')} "
                "starts from scratch); its run's model.pt already is the whole model"
            )
        base = Path(meta["base_source"])
    base_path = _file(base, MODEL_FILE)
    base_meta, state = load_checkpoint(base_path, MODEL_FORMAT)
    if base_meta.get("pde") != meta.get("pde"):
        raise PinnkanError(
            f"adapter {adapter_path} belongs to pde={meta.get('pde')}, base {base_path} to "
            f"pde={base_meta.get('pde')}; pass --base the model it was trained from"
        )
    have, want = base_meta.get("spec"), meta.get("spec")
    if not isinstance(have, dict) or not isinstance(want, dict) or spec_differences(have, want):
        raise PinnkanError(
            f"adapter {adapter_path} was trained on a network {meta.get('spec')}, base "
            f"{base_path} is {base_meta.get('spec')}"
        )
    dtype = _DTYPES.get(str(meta.get("precision")), torch.float32)
    frozen = {
        k: v.to(dtype) if v.is_floating_point() else v
        for k, v in state.items()
        if _LAYER_TENSOR.match(k)
    }
    if tensors_hash(frozen) != meta.get("base_hash"):
        raise PinnkanError(
            f"adapter {adapter_path} was trained on a different base model than {base_path} "
            f"(hash of its frozen tensors differs); its base was {meta.get('base_source')}"
        )
    merged = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    for key in frozen:
        layer = key.split(".")[1]
        if key in upd:  # a layer fine-tuned in full travels whole
            merged[key] = upd[key].to(dtype)
        elif key == f"layers.{layer}.A" and f"layers.{layer}.G" in upd:
            g, u1, u2, u3 = (upd[f"layers.{layer}.{c}"].to(dtype) for c in ("G", "U1", "U2", "U3"))
            merged[key] = frozen[key] + tucker_product(g, u1, u2, u3)
    out_meta = {k: meta[k] for k in ("pde", "pde_params", "spec", "precision") if k in meta}
    out_meta.update(stage="merge", adapter=str(adapter_path), base=str(base_path))
    return out_meta, merged


def merge_to_file(adapter: Path, base: Path | None = None, out: Path | None = None) -> Path:
    """Write the merged model (a pinnkan model file, loadable as a transfer source)."""
    meta, state = merge_adapter(adapter, base)
    adapter_path = _file(adapter, ADAPTER_FILE)
    out = Path(out) if out is not None else adapter_path.parent / MERGED_FILE
    save_checkpoint(out, MODEL_FORMAT, meta, state)
    return out
