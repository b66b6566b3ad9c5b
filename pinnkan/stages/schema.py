"""pinnkan.run.config's dataclasses in Hydra's ConfigStore: the schema of `pinnkan pretrain` and
`pinnkan transfer` and of every group option (`schema/<group>/<option>`), which the YAML file
of that option includes. Defaults live only in the dataclasses; Hydra checks keys and types."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING as REQUIRED

from pinnkan.adapters import AdapterConfig, adapter_names
from pinnkan.network.kan import LAYER_KINDS
from pinnkan.pde import FAMILIES
from pinnkan.run.config import PDEConfig, RunConfig, model_class
from pinnkan.train.optimizers import get_optimizer, optimizer_names

# filled by the group options' schemas (their types differ per option)
GROUP_NODES = ("model", "optim", "adapter")
TRANSFER_ONLY = ("adapter", "cr", "source", "transfer")


def _copy_fields(cls: type, skip: tuple[str, ...] = (), untyped: tuple[str, ...] = ()) -> list:
    """`cls`'s fields as make_dataclass specs with resolved types and the same defaults."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in fields(cls):
        if f.name in skip:
            continue
        if f.name in untyped:
            specs.append((f.name, Any, dataclasses.field(default=REQUIRED)))
            continue
        default = (
            dataclasses.field(default=f.default)
            if f.default is not MISSING
            else dataclasses.field(default_factory=f.default_factory)  # type: ignore[arg-type]
        )
        specs.append((f.name, hints[f.name], default))
    return specs


def stage_schema(stage: str) -> type:
    """The top-level schema of a stage: RunConfig's settings, less the transfer-only ones for
    pretrain; `model`, `optim` and `adapter` are typed by their group option's schema."""
    skip = () if stage == "transfer" else TRANSFER_ONLY
    specs = _copy_fields(RunConfig, skip=skip, untyped=GROUP_NODES)
    # no family's parameters: Hydra merges dicts key by key, so the pde= option (built in, or
    # the user's YAML file) must find source / target empty
    specs = [
        (n, t, dataclasses.field(default_factory=PDEConfig)) if n == "pde" else (n, t, d)
        for n, t, d in specs
    ]
    return dataclasses.make_dataclass(f"{stage.capitalize()}Config", specs)


# adapter= options: AdapterConfig's fields less `cr` (the top-level cr=)
AdapterOptions = dataclasses.make_dataclass(
    "AdapterOptions", _copy_fields(AdapterConfig, skip=("cr",))
)


def register() -> None:
    """Store every schema (idempotent: storing again replaces)."""
    cs = ConfigStore.instance()
    for stage in ("pretrain", "transfer"):
        cs.store(group="schema", name=stage, node=stage_schema(stage))
    for kind in LAYER_KINDS:
        cs.store(group="schema/model", name=kind, node=model_class(kind))
    for name in optimizer_names():
        cs.store(group="schema/optim", name=name, node=get_optimizer(name).options)
    for name in adapter_names():
        cs.store(group="schema/adapter", name=name, node=AdapterOptions(name=name))
    for name, family in FAMILIES.items():
        cs.store(group="schema/pde", name=name, node=PDEConfig.of_family(family))
