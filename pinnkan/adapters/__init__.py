"""How a network is adapted to a target PDE: LoTRA, full fine-tuning, scratch, slim KAN, or a
least-squares solve of the last layer.

- `lotra`: A frozen, a TuckerUpdate per layer (or per-layer `full` / `frozen`);
- `full`: every A trainable from the pretrained values;
- `scratch`: a freshly initialised network, all trainable (no source needed);
- `slim`: A = 0 frozen, Tucker factors trained from a random start with the statistics of the
  layer kind's own init (`TuckerUpdate.initialise_like`; no source needed);
- `lstsq`: every layer frozen at the source's values but the last one's A and bias (the
  parameters the network's output is linear in; a rational layer's denominators stay frozen),
  which one linear least-squares solve sets (`pinnkan.lstsq`; linear PDE families only).

A layer's extra parameters (`layer_extra_parameters`: rational denominators, MLP biases) are
trainable under full / scratch and in layers a lotra run fine-tunes in full; otherwise (lotra,
slim, frozen layers) they stay frozen, so the adapter file plus the base rebuild the model.

The PEFT-style API: `apply(model, config, generator, loss_fn)` attaches adapters;
`save_adapter` / `load_adapter` write them to and attach them from an adapter file that names
its base (pinnkan.adapters.files); `merge(model)` folds them into a plain network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pinnkan.adapters.files import (
    ADAPTER_FILE,
    AdapterFile,
    adapter_file,
    load_adapter,
    merge,
    read_adapter,
    record_base,
    save_adapter,
    set_trainable,
)
from pinnkan.adapters.tucker import (
    INITS,
    TuckerUpdate,
    check_cr,
    ranks_from_cr,
    tucker_param_count,
)
from pinnkan.config_checks import as_float, as_int
from pinnkan.errors import PinnkanError
from pinnkan.kan import KAN
from pinnkan.layers.base import layer_extra_parameters

ADAPTERS = ("lotra", "full", "scratch", "slim", "lstsq")
LAYER_MODES = ("lotra", "full", "frozen")
MAX_MULTIPLIER = 1e4  # with optim.lr <= 10 keeps every group's lr far from float32 overflow
LR_STRATEGIES = ("theory", "uniform")
# what results.h5 records as `init` for slim: the layer kind's own init statistics
SLIM_INIT = "layer_kind"
COMPONENTS = ("G", "U1", "U2", "U3")
DEFAULT_MULTIPLIERS = {"G": 1.0, "U1": 16.0, "U2": 1.0, "U3": 9.0}


@dataclass
class AdapterConfig:
    """Adapter choice and LoTRA options (METHOD.md §2); `validate` checks them at the edge."""

    name: str = "lotra"
    cr: float = 0.5
    ranks: list[Any] | None = None  # [r1, r2, r3] for every layer, or one triple per layer
    init: str = "grad"
    lr_strategy: str = "theory"
    # lr_strategy=theory keeps the theory's 1/n_in and 1/n_d scaling; c = 1 trains U1 and U3
    # too slowly with Adam (docs/method.md has the measurement behind c_U1 = 16, c_U3 = 9)
    multipliers: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MULTIPLIERS))
    layers: list[str] | None = None  # per-layer mode: lotra | full | frozen (default all lotra)
    # rank growth (optim=lm; pinnkan.adapters.growth): the ranks start at cr's and double
    # their cr on a stall (grow_patience accepted steps without the loss halving) up to grow_to
    grow_to: float | None = None
    grow_patience: int = 20

    def validate(self, n_layers: int) -> None:
        if self.name not in ADAPTERS:
            raise PinnkanError(
                f"unknown adapter {self.name!r}; choose one of: {', '.join(ADAPTERS)}"
            )
        self.cr = check_cr(self.cr)
        if self.name == "lstsq" and self.layers is not None:
            raise PinnkanError(
                "adapter.layers has no meaning for adapter=lstsq (it solves the last layer); "
                "leave it null"
            )
        if self.name == "slim":
            self.init = SLIM_INIT  # no pretrained network, so no gradient direction to use
        elif self.init not in INITS:
            raise PinnkanError(
                f"unknown LoTRA init {self.init!r}; choose one of: {', '.join(INITS)}"
            )
        if self.lr_strategy not in LR_STRATEGIES:
            raise PinnkanError(
                f"unknown LoTRA lr strategy {self.lr_strategy!r}; choose one of: "
                f"{', '.join(LR_STRATEGIES)} (explicit multipliers: adapter.multipliers.G=...)"
            )
        bad = sorted(set(self.multipliers) - set(COMPONENTS))
        if bad:
            raise PinnkanError(f"unknown LoTRA multiplier(s) {bad}; use {list(COMPONENTS)}")
        self.multipliers = {
            k: as_float(v, f"adapter.multipliers.{k}", 0.0, MAX_MULTIPLIER, lo_open=True)
            for k, v in self.multipliers.items()
        }
        if self.ranks is not None:
            per_layer = isinstance(self.ranks, list | tuple) and all(
                isinstance(r, list | tuple) for r in self.ranks
            )
            triples = list(self.ranks) if per_layer else [self.ranks]
            if per_layer and len(triples) != n_layers:
                raise PinnkanError(
                    f"adapter.ranks lists {len(triples)} triples for {n_layers} layers"
                )
            for r in triples:
                if not isinstance(r, list | tuple) or len(r) != 3:
                    raise PinnkanError(
                        f"adapter.ranks={self.ranks!r} must be [r1, r2, r3] (or one per layer)"
                    )
                for v in r:
                    as_int(v, "adapter.ranks[]", 1)
        self.grow_patience = as_int(self.grow_patience, "adapter.grow_patience", 1)
        if self.grow_to is not None:
            self.grow_to = as_float(self.grow_to, "adapter.grow_to", self.cr, 1.0, lo_open=True)
            if self.name not in ("lotra", "slim") or self.ranks is not None:
                raise PinnkanError(
                    "adapter.grow_to grows the Tucker ranks from cr's: it needs adapter=lotra "
                    "or slim and no adapter.ranks"
                )
        if self.layers is not None:
            if len(self.layers) != n_layers or any(m not in LAYER_MODES for m in self.layers):
                raise PinnkanError(
                    f"adapter.layers={list(self.layers)} must list {n_layers} modes out of "
                    f"{', '.join(LAYER_MODES)}"
                )

    def layer_ranks(self, layer: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Explicit ranks when given, else from cr."""
        if self.ranks is None:
            return ranks_from_cr(shape, float(self.cr))
        r = self.ranks[layer] if isinstance(self.ranks[0], list | tuple) else self.ranks
        return tuple(int(v) for v in r)  # shape and values checked by `validate`  # type: ignore[return-value]


def needs_source(name: str) -> bool:
    """Whether the adapter starts from a pretrained network."""
    return name in ("lotra", "full", "lstsq")


def layer_shape(model: KAN, layer: int) -> tuple[int, int, int]:
    return tuple(model.layers[layer].A.shape)  # type: ignore[return-value]


def loss_gradients(model: KAN, loss_fn: Callable[[KAN], Tensor]) -> list[Tensor]:
    """∂L/∂A for every layer at the current A (the first batch of the target problem)."""
    tensors = [layer.A for layer in model.layers]
    saved = [t.requires_grad for t in tensors]
    for t in tensors:
        t.requires_grad_(True)
    grads = torch.autograd.grad(loss_fn(model), tensors)
    for t, s in zip(tensors, saved):
        t.requires_grad_(s)
    return [g.detach() for g in grads]


def prepare(
    model: KAN,
    cfg: AdapterConfig,
    generator: torch.Generator,
    loss_fn: Callable[[KAN], Tensor] | None = None,
) -> None:
    """Freeze / attach adapters on `model` in place according to `cfg`."""
    n_layers = len(model.layers)
    cfg.validate(n_layers)
    if cfg.name in ("full", "scratch"):
        for layer in model.layers:
            set_trainable(layer, True)
        return
    if cfg.name == "lstsq":
        for layer in model.layers:
            set_trainable(layer, False)
        last = model.layers[-1]
        last.A.requires_grad_(True)
        bias = getattr(last, "bias", None)  # enters the output linearly, as A does
        if bias is not None:
            bias.requires_grad_(True)
        return
    modes = cfg.layers or ["lotra"] * n_layers
    init = cfg.init
    grads: list[Tensor | None] = [None] * n_layers
    if init in ("grad", "hosvd"):
        if loss_fn is None:
            raise ValueError("LoTRA init from the gradient needs loss_fn")
        grads = list(loss_gradients(model, loss_fn))
    for idx, (layer, mode) in enumerate(zip(model.layers, modes)):
        if cfg.name == "slim" and mode == "lotra":
            with torch.no_grad():
                layer.A.zero_()  # the Tucker form alone is the layer
        set_trainable(layer, mode == "full")
        if mode != "lotra":
            continue
        shape = layer_shape(model, idx)
        upd = TuckerUpdate(
            shape, cfg.layer_ranks(idx, shape), dtype=layer.A.dtype, device=layer.A.device
        )
        if cfg.name == "slim":
            upd.initialise_like(layer.init_factor(), generator)
        else:
            upd.initialise(init, generator, grads[idx])
        layer.adapter = upd


def apply(
    model: KAN,
    config: AdapterConfig,
    generator: torch.Generator,
    loss_fn: Callable[[KAN], Tensor] | None = None,
) -> KAN:
    """Attach adapters to `model` in place as `config` says (`prepare`) and record the hash of
    the base they adapt, which `save_adapter` writes; returns `model`. `loss_fn` (the target
    loss) is needed by the gradient inits (grad, hosvd)."""
    prepare(model, config, generator, loss_fn)
    record_base(model)
    return model


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
        for comp in COMPONENTS:
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
    "ADAPTERS",
    "ADAPTER_FILE",
    "AdapterConfig",
    "AdapterFile",
    "TuckerUpdate",
    "adapter_file",
    "adapter_summary",
    "apply",
    "count_parameters",
    "load_adapter",
    "merge",
    "needs_source",
    "param_groups",
    "prepare",
    "read_adapter",
    "save_adapter",
]
