"""The built-in adapter kinds (lotra, full, scratch, slim, lstsq): what each does to a network
before a transfer trains it, registered by name (`pinnkan.adapters.registry`), and `apply`,
which runs the configured kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pinnkan.adapters.config import SLIM_INIT, AdapterConfig, default_modes
from pinnkan.adapters.files import record_base, set_trainable
from pinnkan.adapters.registry import AdapterKind, get_adapter, register_adapter
from pinnkan.adapters.tucker import TuckerUpdate
from pinnkan.network.kan import KAN


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


def _train_all(model: KAN, cfg: AdapterConfig, generator: torch.Generator, loss_fn: Any) -> None:
    """full and scratch: every parameter trains."""
    for layer in model.layers:
        set_trainable(layer, True)


def _last_layer(model: KAN, cfg: AdapterConfig, generator: torch.Generator, loss_fn: Any) -> None:
    """lstsq: only the last layer's A and bias (the output is linear in them) are solved for."""
    for layer in model.layers:
        set_trainable(layer, False)
    last = model.layers[-1]
    last.A.requires_grad_(True)
    bias = getattr(last, "bias", None)  # enters the output linearly, as A does
    if bias is not None:
        bias.requires_grad_(True)


def _tucker(
    model: KAN,
    cfg: AdapterConfig,
    generator: torch.Generator,
    loss_fn: Callable[[KAN], Tensor] | None,
    slim: bool = False,
) -> None:
    """lotra (and slim, with A zeroed: the Tucker form alone is the layer): per adapter.layers
    mode, a Tucker update on the frozen A, the layer trained in full, or frozen."""
    n_layers = len(model.layers)
    # slim keeps the Tucker form everywhere by default: it has no pretrained layer to fine-tune
    modes = cfg.layers or (["lotra"] * n_layers if slim else default_modes(n_layers))
    grads: list[Tensor | None] = [None] * n_layers
    if not slim and cfg.init in ("grad", "hosvd"):
        if loss_fn is None:
            raise ValueError("LoTRA init from the gradient needs loss_fn")
        grads = list(loss_gradients(model, loss_fn))
    for idx, (layer, mode) in enumerate(zip(model.layers, modes)):
        if slim and mode == "lotra":
            with torch.no_grad():
                layer.A.zero_()  # the Tucker form alone is the layer
        set_trainable(layer, mode == "full")
        if mode != "lotra":
            continue
        shape = layer_shape(model, idx)
        upd = TuckerUpdate(
            shape, cfg.layer_ranks(idx, shape), dtype=layer.A.dtype, device=layer.A.device
        )
        if slim:
            upd.initialise_like(layer.init_factor(), generator)
        else:
            upd.initialise(cfg.init, generator, grads[idx])
        layer.adapter = upd


def _slim(model: KAN, cfg: AdapterConfig, generator: torch.Generator, loss_fn: Any) -> None:
    _tucker(model, cfg, generator, loss_fn, slim=True)


def apply(
    model: KAN,
    config: AdapterConfig,
    generator: torch.Generator,
    loss_fn: Callable[[KAN], Tensor] | None = None,
) -> KAN:
    """Attach adapters to `model` in place as `config`'s adapter kind does (its `prepare`) and
    record the hash of the base they adapt, which `save_adapter` writes; returns `model`.
    `loss_fn` (the target loss) is needed by the gradient inits (grad, hosvd)."""
    if not config.validated_for(len(model.layers)):  # a stage's config comes validated
        config.validate(len(model.layers))
    get_adapter(config.name).prepare(model, config, generator, loss_fn)
    record_base(model)
    return model


for _kind in (
    AdapterKind("lotra", _tucker, tucker=True),
    AdapterKind("full", _train_all, diagnose=True),
    AdapterKind("scratch", _train_all, needs_source=False, records_delta=False),
    AdapterKind("slim", _slim, needs_source=False, tucker=True, init=SLIM_INIT),
    AdapterKind("lstsq", _last_layer, solve=True, layer_modes=False, writes_adapter=True),
):
    register_adapter(_kind)
