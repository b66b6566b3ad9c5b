"""The optimizers by name (`optim=<name>`), like the layer kinds: each is one options dataclass
(its `optim:` section, defaults per stage), one loop and the facts the memory estimate and the
precision default need. `pinnkan.train.first_order` and `pinnkan.train.lm_loop` register the
built-in ones; a new optimizer is one module that calls `register_optimizer`, plus its YAML."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pinnkan.errors import PinnkanError

DEFAULT_OPTIMIZER = "lm"

# (run: LoopRun, loss_fn: PinnLoss, groups, resume: TrainState | None, path, growth) -> History
OptimizerLoop = Callable[..., Any]


@dataclass(frozen=True)
class Optimizer:
    """One `optim=` choice. `settings(options, stage)` gives its TrainConfig fields (steps
    excluded) from its options section, e.g. the stage's lr."""

    name: str
    options: type  # the `optim:` dataclass; its `steps` may be per stage
    loop: OptimizerLoop
    settings: Callable[[Any, str], dict[str, Any]]
    float64: bool = False  # precision=auto trains in float64 (second-order steps need it)
    gauss_newton: bool = False  # memory: chunks of J and a Gram matrix, not one backward pass
    state_per_param: int = 2  # parameter-sized tensors a first-order step holds (param, grad)
    lbfgs: bool = False  # train.lbfgs_steps run after its steps
    legs: bool = False  # drives homotopy legs, rank growth and time windows on its own signals


_OPTIMIZERS: dict[str, Optimizer] = {}


def register_optimizer(optimizer: Optimizer) -> Optimizer:
    """Add (or replace) an optimizer under its name; returns it."""
    _OPTIMIZERS[optimizer.name] = optimizer
    return optimizer


def optimizer_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(_OPTIMIZERS)


def get_optimizer(name: Any) -> Optimizer:
    """The optimizer called `name`: the one place an optimizer name is checked."""
    found = _OPTIMIZERS.get(name) if isinstance(name, str) else None
    if found is None:
        raise PinnkanError(f"unknown optim {name!r}; choose one of: {', '.join(_OPTIMIZERS)}")
    return found
