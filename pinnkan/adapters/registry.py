"""The adapter kinds by name (`adapter=<name>`), like the layer kinds and the optimizers: what
each does to a network before a transfer trains it (`prepare`), and what the stages need to
know of it. `pinnkan.adapters` registers the built-in kinds; a new kind is one module that
calls `register_adapter`, plus its conf/adapter/<name>.yaml."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pinnkan.errors import PinnkanError

# (model: KAN, cfg: AdapterConfig, generator, loss_fn: (KAN) -> loss | None) -> None, in place
Prepare = Callable[..., None]


@dataclass(frozen=True)
class AdapterKind:
    """One `adapter=` choice."""

    name: str
    prepare: Prepare  # freeze / attach on the (source) network, in place
    needs_source: bool = True  # starts from a pretrained network (else from a fresh one)
    tucker: bool = False  # attaches Tucker updates at cr's ranks (ranks, init, grow_to apply)
    init: str | None = None  # its fixed init (recorded as `init`), None: adapter.init
    solve: bool = False  # one least-squares solve is the whole training (float64, no loop)
    layer_modes: bool = True  # adapter.layers (lotra | full | frozen per layer) applies
    records_delta: bool = True  # results.h5 keeps A_pretrained and ΔA per layer
    diagnose: bool = False  # ΔA's low-rank diagnostics after the run
    writes_adapter: bool = False  # an adapter file even without Tucker factors (lstsq)


_KINDS: dict[str, AdapterKind] = {}


def register_adapter(kind: AdapterKind) -> AdapterKind:
    """Add (or replace) an adapter kind under its name; returns it."""
    _KINDS[kind.name] = kind
    return kind


def adapter_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(_KINDS)


def get_adapter(name: Any) -> AdapterKind:
    """The adapter kind called `name`: the one place an adapter name is checked."""
    found = _KINDS.get(name) if isinstance(name, str) else None
    if found is None:
        raise PinnkanError(f"unknown adapter {name!r}; choose one of: {', '.join(_KINDS)}")
    return found
