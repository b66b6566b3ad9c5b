"""How a network is adapted to a target PDE: LoTRA, full fine-tuning, scratch, slim KAN, or a
least-squares solve of the last layer.

- `lotra`: A frozen, a TuckerUpdate per layer (or per-layer `full` / `frozen`);
- `full`: every A trainable from the pretrained values;
- `scratch`: a freshly initialised network, all trainable (no source needed);
- `slim`: A = 0 frozen, Tucker factors trained from a random start with the statistics of the
  layer kind's own init (`TuckerUpdate.initialise_like`; no source needed);
- `lstsq`: every layer frozen at the source's values but the last one's A and bias (the
  parameters the network's output is linear in; a rational layer's denominators stay frozen),
  which one linear least-squares solve sets (`pinnkan.train.lstsq`; linear PDE families only).

A layer's extra parameters (`layer_extra_parameters`: rational denominators, MLP biases) are
trainable under full / scratch and in layers a lotra run fine-tunes in full; otherwise (lotra,
slim, frozen layers) they stay frozen, so the adapter file plus the base rebuild the model.

The PEFT-style API: `apply(model, config, generator, loss_fn)` attaches adapters;
`save_adapter` / `load_adapter` write them to and attach them from an adapter file that names
its base (pinnkan.adapters.files); `merge(model)` folds them into a plain network.
"""

from __future__ import annotations

from typing import Any

import torch

from pinnkan.adapters.config import AdapterConfig
from pinnkan.adapters.files import (
    ADAPTER_FILE,
    AdapterFile,
    adapter_file,
    load_adapter,
    merge,
    read_adapter,
    save_adapter,
)
from pinnkan.adapters.kinds import apply, loss_gradients
from pinnkan.adapters.registry import AdapterKind, adapter_names, get_adapter, register_adapter
from pinnkan.adapters.tucker import FACTORS, tucker_param_count
from pinnkan.layers.base import layer_extra_parameters
from pinnkan.network.kan import KAN


def _trainable_extras(layer: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in layer_extra_parameters(layer) if p.requires_grad]


def param_groups(model: KAN, cfg: AdapterConfig, lr: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one per LoTRA component per layer, one per trainable A, one
    per layer with trainable extra parameters (base lr).

    `theory`: η·c_G, η·c_1/n_in, η·c_2, η·c_3/n_d; `uniform`: η·c for every component.
    """
    groups: list[dict[str, Any]] = []
    for idx, layer in enumerate(model.layers):
        if layer.A.requires_grad:
            groups.append({"params": [layer.A], "lr": lr, "name": f"layer{idx}.A"})
        extras = _trainable_extras(layer)
        if extras:
            groups.append({"params": extras, "lr": lr, "name": f"layer{idx}.extra"})
        upd = layer.adapter
        if upd is None:
            continue
        n_in, _, n_d = upd.shape
        scale = {"G": 1.0, "U1": 1.0 / n_in, "U2": 1.0, "U3": 1.0 / n_d}
        for comp in FACTORS:
            factor = float(cfg.multipliers.get(comp, 1.0))
            if cfg.lr_strategy == "theory":
                factor *= scale[comp]
            groups.append(
                {"params": [getattr(upd, comp)], "lr": lr * factor, "name": f"layer{idx}.{comp}"}
            )
    return groups


def count_parameters(model: KAN) -> tuple[int, int]:
    """(trainable, total) parameter counts; total counts frozen A and adapters alike."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def adapter_summary(model: KAN) -> list[dict[str, Any]]:
    """Per-layer shape, mode, ranks and trainable count (reported honestly in results); the
    count includes the layer's trainable extra parameters."""
    rows = []
    for idx, layer in enumerate(model.layers):
        shape = tuple(layer.A.shape)
        extra = sum(p.numel() for p in _trainable_extras(layer))
        if layer.adapter is not None:
            ranks = layer.adapter.ranks
            rows.append(
                {
                    "layer": idx,
                    "shape": shape,
                    "mode": "lotra",
                    "ranks": ranks,
                    "trainable": tucker_param_count(shape, ranks) + extra,
                }  # type: ignore[arg-type]
            )
        else:
            mode = "full" if layer.A.requires_grad else "frozen"
            rows.append(
                {
                    "layer": idx,
                    "shape": shape,
                    "mode": mode,
                    "ranks": None,
                    "trainable": (layer.A.numel() if layer.A.requires_grad else 0) + extra,
                }
            )
    return rows


__all__ = [
    "FACTORS",
    "AdapterKind",
    "ADAPTER_FILE",
    "AdapterConfig",
    "AdapterFile",
    "TuckerUpdate",
    "adapter_file",
    "adapter_summary",
    "apply",
    "count_parameters",
    "load_adapter",
    "loss_gradients",
    "merge",
    "adapter_names",
    "get_adapter",
    "register_adapter",
    "param_groups",
    "read_adapter",
    "save_adapter",
]
