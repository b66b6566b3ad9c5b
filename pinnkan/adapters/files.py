"""Adapters as files, PEFT-style: `save_adapter` writes a model's adapters, `load_adapter`
attaches a saved one to a live base model, `merge` folds every ΔA into A.

An adapter file holds the Tucker factors of every adapted layer ("layers.{i}.G", ".U1", ".U2",
".U3"), the parameters trained in full beside a frozen base ("layers.{i}.A" and the layer's
extra parameters that train: layers a lotra run fine-tunes in full, or the last layer's A and
bias that adapter=lstsq solves), and the identity of the base it was trained on: PDE family
and parameters, network spec, precision, adapter name, cr, ranks, `base_hash` (sha256 of the
frozen base's layer tensors) and `base_source` (its model file). An update means nothing on
another base, so `load_adapter` refuses one in a single line. This module is the only reader
and writer of adapter files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pinnkan.adapters.tucker import FACTORS, TuckerUpdate
from pinnkan.common.dtypes import dtype_of
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import (
    ADAPTER_FORMAT,
    file_in,
    load_checkpoint,
    save_checkpoint,
    tensors_hash,
)
from pinnkan.layers.base import layer_extra_parameters
from pinnkan.network.kan import KAN, spec_differences
from pinnkan.pde import current_name

ADAPTER_FILE = "adapter.safetensors"
LEGACY_ADAPTER_FILE = "adapter.pt"  # what transfer runs of earlier pinnkan versions wrote
# set on a model by `apply` / `load_adapter`: the hash of its base, which `save_adapter` records
_BASE_HASH = "adapter_base_hash"


@dataclass(frozen=True)
class AdapterFile:
    """An adapter file as read: its path, header and tensors."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, Tensor]


def adapter_file(path: Path | str) -> Path:
    """The adapter file of a transfer run directory (adapter.safetensors, or an older run's
    adapter.pt), or `path` itself when it is a file."""
    return file_in(path, (ADAPTER_FILE, LEGACY_ADAPTER_FILE))


def set_trainable(layer: nn.Module, flag: bool) -> None:
    """A and the layer's extra parameters trainable (or frozen) together."""
    layer.A.requires_grad_(flag)
    for p in layer_extra_parameters(layer):
        p.requires_grad_(flag)


def base_hash(model: KAN, dtype: torch.dtype | None = None) -> str:
    """sha256 of the model's own layer tensors (A and extra parameters; no adapters, no lo /
    hi, which the spec covers), cast to `dtype` when given: the identity of a base."""
    frozen = {
        k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
        for k, v in model.base_state().items()
        if k.startswith("layers.")
    }
    return tensors_hash(frozen)


def adapter_dtype(meta: dict[str, Any]) -> torch.dtype:
    """The dtype an adapter was trained in: its header's precision (float32 when absent)."""
    return dtype_of(meta.get("precision"), torch.float32)


def record_base(model: KAN) -> None:
    """Remember the hash of `model`'s current layer tensors as the base its adapters adapt."""
    setattr(model, _BASE_HASH, base_hash(model))


def save_adapter(model: KAN, path: Path, meta: dict[str, Any]) -> None:
    """Write `model`'s adapters to `path` (adapter.safetensors).

    `meta` gives what the model does not know: pde, pde_params, adapter (name), cr,
    base_source, and base_hash unless `apply` or `load_adapter` recorded it on the model.
    spec, precision and ranks are taken from the model.
    """
    adapted = {i: ly.adapter for i, ly in enumerate(model.layers) if ly.adapter is not None}
    trainable = [p.requires_grad for n, p in model.named_parameters() if ".adapter." not in n]
    if not adapted and (all(trainable) or not any(trainable)):
        # without Tucker factors a file is an adapter only beside a frozen part of the base
        # (adapter=lstsq: every layer but the last); all trainable, it is the whole model
        raise ValueError("the model has no adapters to save (attach them with apply)")
    tensors = {f"layers.{i}.{c}": getattr(u, c) for i, u in adapted.items() for c in FACTORS}
    # layers fine-tuned in full travel whole (A and extra parameters): the file rebuilds them
    tensors.update(
        {n: p for n, p in model.named_parameters() if p.requires_grad and ".adapter." not in n}
    )
    recorded = meta.get("base_hash") or getattr(model, _BASE_HASH, None)
    if recorded is None:
        raise ValueError("no base hash: attach adapters with apply, or pass meta['base_hash']")
    header = {
        **meta,
        "spec": model.spec(),
        "precision": str(model.layers[0].A.dtype).removeprefix("torch."),
        "ranks": {str(i): list(u.ranks) for i, u in adapted.items()},
        "base_hash": recorded,
    }
    save_checkpoint(Path(path), ADAPTER_FORMAT, header, tensors)


def read_adapter(path: Path | str) -> AdapterFile:
    """Read an adapter file (or a transfer run directory's); failures are one PinnkanError."""
    path = adapter_file(path)
    meta, tensors = load_checkpoint(path, ADAPTER_FORMAT)
    return AdapterFile(path, meta, tensors)


def check_base(
    adapter: AdapterFile, model: KAN, base_name: str = "the model", pde: str | None = None
) -> None:
    """Refuse, in one line, a base the adapter was not trained on: another PDE family (when
    `pde` is given), another network spec, or other frozen tensors (hash)."""
    meta, path = adapter.meta, adapter.path
    if pde is not None and current_name(pde) != current_name(str(meta.get("pde"))):
        raise PinnkanError(
            f"adapter {path} belongs to pde={meta.get('pde')}, base {base_name} to pde={pde}; "
            "pass --base the model it was trained from"
        )
    want, have = meta.get("spec"), model.spec()
    if not isinstance(want, dict) or spec_differences(have, want):
        raise PinnkanError(
            f"adapter {path} was trained on a network {want}, base {base_name} is {have}"
        )
    if base_hash(model, adapter_dtype(meta)) != meta.get("base_hash"):
        raise PinnkanError(
            f"adapter {path} was trained on a different base model than {base_name} "
            f"(hash of its frozen tensors differs); its base was {meta.get('base_source')}"
        )


def load_adapter(
    model: KAN,
    adapter: Path | str | AdapterFile,
    *,
    base_name: str = "the model",
    pde: str | None = None,
) -> dict[str, Any]:
    """Attach a saved adapter to the live base `model` (in place) and return its header.

    The model must be the adapter's base (`check_base`; `base_name` and `pde` describe it for
    the refusal). Afterwards the model computes what the adapted model computed, with the
    trainable parameters `apply` leaves: Tucker factors and layers fine-tuned in full.
    """
    if not isinstance(adapter, AdapterFile):
        adapter = read_adapter(adapter)
    if any(layer.adapter is not None for layer in model.layers):
        raise ValueError("the model already has adapters; load onto the base model")
    check_base(adapter, model, base_name, pde)
    tensors, params = adapter.tensors, dict(model.named_parameters())
    plan = []  # per layer: its own tensors (trained in full) and its TuckerUpdate, all checked
    for i, layer in enumerate(model.layers):  # before the model is touched
        mine = {k: v for k, v in tensors.items() if k.startswith(f"layers.{i}.")}
        own = {k: v for k, v in mine.items() if k in params}
        if any(v.shape != params[k].shape for k, v in own.items()):
            raise PinnkanError(f"adapter {adapter.path} is damaged (layer {i} has wrong shapes)")
        factors = {k.rsplit(".", 1)[-1]: v for k, v in mine.items() if k not in own}
        plan.append((own, _tucker(adapter.path, layer.A, factors) if factors else None))
    if len(tensors) != sum(len(own) + 4 * (upd is not None) for own, upd in plan):
        raise PinnkanError(f"adapter {adapter.path} holds tensors this network lacks")
    with torch.no_grad():
        for layer, (own, upd) in zip(model.layers, plan):
            set_trainable(layer, bool(own))
            for name, value in own.items():
                params[name].copy_(value)
            layer.adapter = upd
    setattr(model, _BASE_HASH, adapter.meta.get("base_hash"))
    return adapter.meta


@torch.no_grad()
def _tucker(path: Path, A: Tensor, factors: dict[str, Tensor]) -> TuckerUpdate:
    """The TuckerUpdate of one layer from its saved factors, on A's dtype and device."""
    G = factors.get("G")
    if sorted(factors) != sorted(FACTORS) or G is None or G.ndim != 3:
        raise PinnkanError(f"adapter {path} is damaged (incomplete Tucker factors)")
    ranks = (G.shape[0], G.shape[1], G.shape[2])
    upd = TuckerUpdate((A.shape[0], A.shape[1], A.shape[2]), ranks, dtype=A.dtype, device=A.device)
    for name in FACTORS:
        target = getattr(upd, name)
        if target.shape != factors[name].shape:
            raise PinnkanError(f"adapter {path} is damaged ({name} has the wrong shape)")
        target.copy_(factors[name])
    return upd


@torch.no_grad()
def merge(model: KAN) -> KAN:
    """Fold every layer's ΔA into its A and remove the adapters: a plain network that
    computes what the adapted one did (in place; returns `model`). Trainability is kept."""
    for layer in model.layers:
        if layer.adapter is not None:
            layer.A.copy_(layer.coefficients())
            layer.adapter = None
    if hasattr(model, _BASE_HASH):
        delattr(model, _BASE_HASH)
    return model
