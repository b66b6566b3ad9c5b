"""What a stage derives from its config before any file is written: precision, device and the
training budget (`Setup`), the network, the PDE member and the memory check."""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from pinnkan.adapters import (
    AdapterConfig,
    prepare,
)
from pinnkan.config_checks import as_choice, as_int
from pinnkan.errors import PinnkanError
from pinnkan.kan import KAN, LAYER_KINDS
from pinnkan.levenberg_marquardt import LMConfig
from pinnkan.memory import check_fits, estimate_step
from pinnkan.pde import PDEFamily
from pinnkan.pde.config import member_from_config
from pinnkan.training import (
    OPTIMIZERS,
    TrainConfig,
)

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
MODELS = LAYER_KINDS  # model= choices: name -> LayerKind (pinnkan.kan)


@dataclass
class Setup:
    """What every stage derives from its config before any file is written."""

    dtype: torch.dtype
    device: torch.device
    train: TrainConfig
    seed: int
    precision: str = "float32"


def _stage_default(value: Any, stage: str, name: str) -> Any:
    """A per-stage default ({pretrain: .., transfer: ..}) or a plain value."""
    if isinstance(value, dict):
        if stage not in value:
            raise PinnkanError(f"{name} has no entry for stage {stage!r}: {value}")
        return value[stage]
    return value


def resolve_setup(cfg: dict[str, Any]) -> Setup:
    """Validate the stage-independent part of the config (precision, device, budget, seed).

    `precision: auto` is float64 for optim=lm (second-order steps need it) and float32 for
    Adam; `train.steps: null` takes the optimizer's default for the stage (`optim.steps`), and
    `optim.lr` may be per stage too ({pretrain: .., transfer: ..})."""
    t, o = cfg.get("train", {}) or {}, cfg.get("optim", {}) or {}
    optimizer = as_choice(o.get("name", "adam"), "optim", OPTIMIZERS)
    precision = cfg.get("precision", "float32")
    if precision == "auto":
        precision = "float64" if optimizer == "lm" else "float32"
    precision = as_choice(precision, "precision", tuple(PRECISIONS))
    device = str(cfg.get("device", "auto"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise PinnkanError(f"device={device!r}; choose cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PinnkanError("device=cuda but CUDA is not available here; use device=cpu or auto")
    seed = as_int(cfg.get("seed", 0), "seed", 0)
    stage = str(cfg.get("stage", "pretrain"))
    steps = t.get("steps")
    if steps is None:
        steps = _stage_default(o.get("steps", 2000), stage, "optim.steps")
    lm = LMConfig(**{f.name: o[f.name] for f in fields(LMConfig) if f.name in o})
    tc = TrainConfig(
        steps=steps,
        lbfgs_steps=o.get("lbfgs_steps", 0),
        lr=_stage_default(o.get("lr", 1e-2), stage, "optim.lr"),
        lr_decay=o.get("lr_decay", 0.1),
        n_interior=t.get("n_interior", 1024),
        n_boundary=t.get("n_boundary", 256),
        derivatives=t.get("derivatives", "forward"),
        compile=t.get("compile", False),
        eval_every=t.get("eval_every", 100),
        log_every=t.get("log_every", 200),
        progress=t.get("progress", "auto"),
        checkpoint_every=t.get("checkpoint_every", 0),
        optimizer=optimizer,
        lm=lm,
        max_seconds=t.get("max_seconds", 0.0),
        check_memory=t.get("check_memory", True),
    )
    tc.validate()
    n_eval = (cfg.get("eval", {}) or {}).get("n")
    if n_eval is not None:
        as_int(n_eval, "eval.n", 2, 4096)
    return Setup(PRECISIONS[precision], torch.device(device), tc, seed, precision)


def build_model(cfg: dict[str, Any], pde: PDEFamily, setup: Setup, gen: torch.Generator) -> KAN:
    """The network the model config describes (a `model=` layer kind), on the PDE's domain."""
    m = dict(cfg.get("model", {}))
    name = m.pop("name", "bspline")
    if name not in MODELS:
        raise PinnkanError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    hidden = m.pop("hidden", list(MODELS[name].hidden))
    if not isinstance(hidden, list | tuple) or not hidden:
        raise PinnkanError(f"model.hidden={hidden!r} must list positive layer widths, e.g. [32,32]")
    hidden = [as_int(w, "model.hidden[]", 1, 4096) for w in hidden]
    return KAN(
        [pde.dim, *hidden, 1],
        list(pde.domain),
        kind=name,
        dtype=setup.dtype,
        device=setup.device,
        generator=gen,
        **m,
    )


def check_memory(
    model: KAN, pde: PDEFamily, setup: Setup, adapter: AdapterConfig | None = None
) -> None:
    """Refuse (one line) a config whose training step cannot fit in the device's free memory
    (pinnkan.memory); `train.check_memory=false` skips it. With `adapter`, the estimate is
    for a copy of the model with those adapters attached (randomly initialised: the real init
    from the loss gradient could itself run out of memory)."""
    if not setup.train.check_memory:
        return
    if adapter is not None:
        model = copy.deepcopy(model)
        init = "random" if adapter.init in ("grad", "hosvd") else adapter.init
        prepare(model, replace(adapter, init=init), torch.Generator().manual_seed(0))
    check_fits(estimate_step(model, pde, setup.train), setup.device)


def eval_points(cfg: dict[str, Any], pde: PDEFamily) -> int:
    """Evaluation grid points per axis: `eval.n`, or the family's default when it is null."""
    n = (cfg.get("eval", {}) or {}).get("n")
    return pde.eval_points if n is None else int(n)


def pde_from_config(cfg: dict[str, Any], which: str) -> PDEFamily:
    """The family member at the config's `source` or `target` parameters."""
    return member_from_config(cfg.get("pde", {}) or {}, which)
