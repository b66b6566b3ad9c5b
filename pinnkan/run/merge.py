"""`pinnkan merge`: an adapter file applied to the base model file it was trained on, written as
a plain model file (A = A_base + G ×1 U1 ×2 U2 ×3 U3; layers trained in full from the adapter).

The base is rebuilt as a live network from its model file, the adapter is attached with
`pinnkan.adapters.load_adapter` (which refuses any base but its own: PDE family, network spec,
hash of the frozen tensors) and folded in with `pinnkan.adapters.merge`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pinnkan.adapters import load_adapter, merge, read_adapter
from pinnkan.adapters.files import AdapterFile, adapter_dtype
from pinnkan.common.dtypes import dtype_of
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import MODEL_FORMAT, load_checkpoint, model_file, save_checkpoint
from pinnkan.network.kan import KAN
from pinnkan.pde import current_name

MERGED_FILE = "merged.safetensors"


def model_from_file(path: Path, dtype: torch.dtype | None = None) -> tuple[dict[str, Any], KAN]:
    """Meta and the live network (on the CPU, in `dtype`; None: the precision the file records,
    float64 where it records none) of a pinnkan model file."""
    meta, state = load_checkpoint(path, MODEL_FORMAT)
    if dtype is None:
        dtype = dtype_of(meta.get("precision"), torch.float64)
    spec = meta.get("spec")
    try:
        # the initial values are overwritten by the file's tensors
        model = KAN.from_spec(spec, dtype=dtype, generator=torch.Generator().manual_seed(0))
        model.load_state_dict(state)
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError, PinnkanError):
        raise PinnkanError(
            f"model checkpoint {path} is damaged (its network spec {spec} does not build the "
            "network its tensors describe); re-run the stage that wrote it"
        ) from None
    return meta, model


def recorded_base(upd: AdapterFile) -> Path:
    """The base model file an adapter file records (`base_source`). A path recorded relative
    to the transfer's working directory is also found from elsewhere: relative to the current
    directory, else to the first folder above the adapter file that holds it."""
    source = upd.meta.get("base_source")
    if not source:
        raise PinnkanError(
            f"adapter {upd.path} records no base model (adapter={upd.meta.get('adapter')} "
            "starts from scratch); its run's model file already is the whole model"
        )
    base = Path(source)
    if base.is_absolute() or base.exists():
        return base
    for folder in Path(upd.path).resolve().parents:
        if (folder / base).exists():
            return folder / base
    return base  # not found: model_file names it in its one-line error


def base_with_adapter(adapter: Path, base: Path | None = None) -> tuple[AdapterFile, Path, KAN]:
    """The adapter file, the base model file (`base`, default the recorded one) and the live
    base network with the adapter attached (refused in one line unless it is the adapter's own
    base: PDE family, network spec, hash of the frozen tensors)."""
    upd = read_adapter(adapter)
    base_path = model_file(base if base is not None else recorded_base(upd))
    base_meta, model = model_from_file(base_path, adapter_dtype(upd.meta))
    fixed = (upd.meta.get("spec") or {}).get("fixed")
    if model.params and fixed is not None:  # a parametric base, adapted at one member
        model.fix(fixed)
    load_adapter(model, upd, base_name=str(base_path), pde=str(base_meta.get("pde")))
    return upd, base_path, model


def merge_adapter(
    adapter: Path, base: Path | None = None
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Meta and state of the merged model; `base` defaults to the adapter's recorded source."""
    upd, base_path, model = base_with_adapter(adapter, base)
    meta = upd.meta
    merged = merge(model).base_state()
    kept = ("pde", "pde_params", "spec", "precision", "reference")
    out_meta = {k: meta[k] for k in kept if k in meta}
    if "pde" in out_meta:  # written under an alias: the merged file names the family
        out_meta["pde"] = current_name(str(out_meta["pde"]))
    out_meta.update(stage="merge", adapter=str(upd.path), base=str(base_path))
    return out_meta, merged


def merge_to_file(adapter: Path, base: Path | None = None, out: Path | None = None) -> Path:
    """Write the merged model (a pinnkan model file, loadable as a transfer source)."""
    meta, state = merge_adapter(adapter, base)
    out = Path(out) if out is not None else Path(meta["adapter"]).parent / MERGED_FILE
    save_checkpoint(out, MODEL_FORMAT, meta, state)
    return out
