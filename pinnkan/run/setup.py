"""What a stage derives from its config before any file is written: precision, device and the
training budget (`Setup`), the network, the PDE member and the memory check."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from pinnkan.adapters import (
    AdapterConfig,
    apply,
    get_adapter,
)
from pinnkan.common.config_checks import as_choice, as_int
from pinnkan.common.dtypes import PRECISIONS
from pinnkan.errors import FieldError, PinnkanError
from pinnkan.network.kan import KAN, LAYER_KINDS
from pinnkan.pde import PDEFamily
from pinnkan.pde.config import member_from_config
from pinnkan.pde.parametric import ParametricMember, parse_ranges
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run import continuation
from pinnkan.run.config import STAGES, RunConfig
from pinnkan.train.config import TrainConfig
from pinnkan.train.lstsq import refuse_unsupported
from pinnkan.train.memory import check_fits, estimate_step
from pinnkan.train.optimizers import get_optimizer
from pinnkan.train.options import TrainOptions, stage_value


@dataclass(frozen=True)
class Setup:
    """What a stage derives from its config before any file is written, validated once
    (`validate_config`); the tiers below receive it and check nothing of it again."""

    dtype: torch.dtype
    device: torch.device
    train: TrainConfig
    seed: int
    precision: str = "float32"
    evaluate_only: bool = False  # a transfer with train.steps=0: no training (evaluate_only)
    pde: PDEFamily | None = None  # the member the stage solves (validate_config)
    adapter: AdapterConfig | None = None  # a transfer's adapter, cr included (validate_config)


def as_run_config(cfg: RunConfig | dict[str, Any], stage: str) -> RunConfig:
    """The config of `stage`: a RunConfig, or a plain dict completed with the defaults."""
    if not isinstance(cfg, RunConfig):
        cfg = RunConfig.from_dict({"stage": stage, **cfg})
    if cfg.stage != stage:
        raise PinnkanError(f"stage={cfg.stage!r} in the config of `pinnkan {stage}`")
    return cfg


# TrainConfig's fields that the CLI sets in `optim:` (the rest are `train.<field>`)
_OPTIM_FIELDS = {
    "lr": "lr",
    "lr_decay": "lr_decay",
    "lbfgs_steps": "lbfgs_steps",
    "optimizer": "name",
}


def cli_key(section: str, field: str) -> str:
    """The CLI's key for a library argument of `section`'s object: TrainConfig (train), its
    LM options (`lm.<f>`: optim.<f>), AdapterConfig (adapter; its cr is the top-level cr), a
    layer kind's options (model) and a family's loss weights (pde.weights)."""
    if section == "train" and field.startswith("lm."):
        return "optim." + field[3:]
    if section == "train" and field in _OPTIM_FIELDS:
        return "optim." + _OPTIM_FIELDS[field]
    if section == "adapter" and field == "cr":
        return "cr"
    if section == "pde" and not field.startswith("weights."):
        return field  # the member's parameters and files: named as the config names them
    return f"{section}.{field}"


@contextmanager
def cli_keys(section: str) -> Iterator[None]:
    """Report a library argument's bad value under the CLI's key (`cli_key`)."""
    try:
        yield
    except FieldError as exc:
        raise exc.renamed(cli_key(section, exc.field)) from None


def resolve_setup(cfg: RunConfig) -> Setup:
    """Validate the stage-independent part of the config (precision, device, budget, seed).

    `precision: auto` is float64 for optim=lm (second-order steps need it) and for a transfer
    with adapter=lstsq (a least-squares solve), float32 for Adam; `train.steps: null` takes the
    optimizer's default for the stage (`optim.steps`), and `optim.lr` may be per stage too
    ({pretrain: .., transfer: ..})."""
    t, o = cfg.train, cfg.optim
    precision = cfg.precision
    if precision == "auto":
        solve = cfg.stage == "transfer" and get_adapter(cfg.adapter.name).solve
        precision = "float64" if get_optimizer(o.name).float64 or solve else "float32"
    precision = as_choice(precision, "precision", tuple(PRECISIONS))
    device = str(cfg.device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise PinnkanError(f"device={device!r}; choose cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PinnkanError("device=cuda but CUDA is not available here; use device=cpu or auto")
    seed = as_int(cfg.seed, "seed", 0)
    stage = as_choice(cfg.stage, "stage", STAGES)
    steps = t.steps if t.steps is not None else stage_value(o.steps, stage, "optim.steps")
    # a transfer may evaluate its start without training (pinnkan.train.evaluate_only)
    evaluate = stage == "transfer" and isinstance(steps, int) and steps == 0
    steps = 1 if evaluate else steps
    own = get_optimizer(o.name).settings(o, stage)
    if stage == "transfer" and "lm" in own and not get_adapter(cfg.adapter.name).needs_source:
        # a fresh network (adapter=scratch, slim) is as far from its solution as a pretrain's:
        # it starts at the pretrain's damping (docs/family_benchmark.md, the damping search);
        # a transfer that starts at the source's function or a solved member's, the transfer's
        own["lm"] = replace(own["lm"], damping=stage_value(o.damping, "pretrain", "optim.damping"))
    train_options = {f.name: getattr(t, f.name) for f in fields(TrainOptions) if f.name != "steps"}
    tc = TrainConfig(steps=steps, optimizer=o.name, **own, **train_options)
    with cli_keys("train"):
        tc.validate()
    if cfg.eval.n is not None:
        as_int(cfg.eval.n, "eval.n", 2, 4096)
    return Setup(PRECISIONS[precision], torch.device(device), tc, seed, precision, evaluate)


def _model_options(cfg: RunConfig) -> tuple[str, list[int], Any, dict[str, Any]]:
    """(kind, hidden widths, `periodic` as given, the kind's options) of `model:`, the widths
    checked."""
    m = dataclasses.asdict(cfg.model)
    name, hidden, periodic = m.pop("name"), m.pop("hidden"), m.pop("periodic")
    if not isinstance(hidden, list | tuple) or not hidden:
        raise PinnkanError(f"model.hidden={hidden!r} must list positive layer widths, e.g. [32,32]")
    return name, [as_int(w, "model.hidden[]", 1, 4096) for w in hidden], periodic, m


def periodic_axes(value: Any, pde: PDEFamily) -> tuple[int, ...]:
    """The axes `model.periodic` embeds exactly periodically: auto, the family's
    `periodic_axes` (none for most); true, those, and a family without any is an error;
    false, none (u periodic only as far as the loss's periodic condition makes it)."""
    choice = str(value).lower() if isinstance(value, bool) else value  # YAML booleans
    as_choice(choice, "model.periodic", ("auto", "true", "false"))
    if choice == "true" and not pde.periodic_axes:
        raise PinnkanError(
            f"model.periodic=true, but pde={pde.name} has no periodic axes; use auto or false"
        )
    return () if choice == "false" else tuple(pde.periodic_axes)


def validate_config(cfg: RunConfig) -> Setup:
    """Every check a stage makes before it writes anything, in one place (one line each):
    the settings, the network's options, the PDE member, the adapter and where a transfer
    starts. The Setup it returns carries the member and the (validated) adapter config."""
    setup = resolve_setup(cfg)
    kind, hidden, periodic, options = _model_options(cfg)
    with cli_keys("model"):
        LAYER_KINDS[kind].resolve(kind, options)
    pde = pde_from_config(cfg, "target" if cfg.stage == "transfer" else "source")
    loss_from_setup(pde, setup)
    periodic_axes(periodic, pde)
    if cfg.stage != "transfer":
        return replace(setup, pde=pde)
    adapter = replace(cfg.adapter, cr=cfg.cr)
    with cli_keys("adapter"):
        adapter.validate(len(hidden) + 1)
    if get_adapter(adapter.name).solve:
        with cli_keys("train"):
            refuse_unsupported(pde, setup.train)
    _check_transfer(cfg, setup, adapter)
    return replace(setup, pde=pde, adapter=adapter)


def _check_transfer(cfg: RunConfig, setup: Setup, adapter: AdapterConfig) -> None:
    """`transfer:` (start, predictor, homotopy) and the options that need LM's own signals
    (homotopy legs, rank growth), against each other."""
    continuation.validate(cfg.transfer)
    homotopy, grow_to = cfg.transfer.homotopy, adapter.grow_to
    optim = setup.train.optimizer
    legs = get_optimizer(optim).legs
    trains = not (setup.evaluate_only or get_adapter(adapter.name).solve)
    why = None
    if homotopy > 1:
        if not trains:
            why = "a transfer that does not train (train.steps=0, or a solve) has no legs"
        elif not legs:
            why = f"its legs end on LM's signals: it needs optim=lm (not optim={optim})"
        elif cfg.pde.reference.target or cfg.pde.reference.source:
            why = "the members along the path need the family's own data, not a reference file's"
        elif setup.train.time_windows > 1:
            why = "use one of train.time_windows and transfer.homotopy"
        elif grow_to is not None:
            why = "use one of adapter.grow_to and transfer.homotopy"
    if why:
        raise PinnkanError(f"transfer.homotopy={homotopy}: {why}")
    if grow_to is not None and not (trains and legs):
        raise PinnkanError(
            f"adapter.grow_to={grow_to:g} grows the ranks on LM's signals while it trains: it "
            f"needs optim=lm (here optim={optim}) and train.steps > 0"
        )


def build_model(cfg: RunConfig, pde: PDEFamily, setup: Setup, gen: torch.Generator) -> KAN:
    """The network the model config describes (a `model=` layer kind), on the PDE's domain,
    with the periodic axes `model.periodic` resolves to for `pde`."""
    name, hidden, periodic, m = _model_options(cfg)
    with cli_keys("model"):
        return KAN(
            [pde.dim, *hidden, 1],
            list(pde.domain),
            kind=name,
            dtype=setup.dtype,
            device=setup.device,
            generator=gen,
            periodic=periodic_axes(periodic, pde),
            params=pde.swept,
            **m,
        )


def check_memory(
    model: KAN, pde: PDEFamily, setup: Setup, adapter: AdapterConfig | None = None
) -> None:
    """Refuse (one line) a config whose training step cannot fit in the device's free memory
    (pinnkan.train.memory); `train.check_memory=false` skips it. With `adapter`, the estimate is
    for a copy of the model with those adapters attached (randomly initialised: the real init
    from the loss gradient could itself run out of memory), at the ranks of `grow_to` when the
    ranks may grow."""
    if not setup.train.check_memory:
        return
    if adapter is not None:
        model = copy.deepcopy(model)
        init = "random" if adapter.init in ("grad", "hosvd") else adapter.init
        cr = adapter.grow_to if adapter.grow_to is not None else adapter.cr
        largest = replace(adapter, init=init, cr=cr, grow_to=None)
        apply(model, largest, torch.Generator().manual_seed(0))
    check_fits(estimate_step(model, pde, setup.train), setup.device)


def loss_from_setup(pde: PDEFamily, setup: Setup) -> PinnLoss:
    """The training loss of `pde` with the setup's engine and causal weighting (a family
    without a time coordinate and train.causal > 0 or train.time_windows > 1 is one line)."""
    t = setup.train
    if pde.swept and (t.time_windows > 1 or t.causal > 0):
        raise PinnkanError(
            "pde.parametric takes the parameters as the last inputs, where train.time_windows "
            "and train.causal look for time: set train.time_windows=1 and train.causal=0"
        )
    if t.time_windows > 1 and pde.coords[-1] != "t":
        raise PinnkanError(
            f"train.time_windows={t.time_windows} needs a time-dependent PDE (last coordinate "
            f"t); pde={pde.name} has ({', '.join(pde.coords)}): set train.time_windows=1"
        )
    with cli_keys("train"):
        return PinnLoss(pde, t.derivatives, t.causal, t.causal_slices)


def eval_points(cfg: RunConfig, pde: PDEFamily) -> int:
    """Evaluation grid points per axis: `eval.n`, or the family's default when it is null."""
    return pde.eval_points if cfg.eval.n is None else int(cfg.eval.n)


def pde_from_config(cfg: RunConfig, which: str) -> PDEFamily:
    """The family member at the config's `source` or `target` parameters; a pretrain with
    `pde.parametric` gets the parametric member over those ranges (pinnkan.pde.parametric)."""
    with cli_keys("pde"):
        member = member_from_config(dataclasses.asdict(cfg.pde), which)
    swept = {k: v for k, v in (cfg.pde.parametric or {}).items() if v is not None}
    if not swept:
        return member
    if cfg.stage != "pretrain":
        raise PinnkanError(
            "pde.parametric trains a parametric source (`pinnkan pretrain`); a transfer from "
            "one takes the member's values from pde.target: drop pde.parametric here"
        )
    return ParametricMember(member, parse_ranges(swept, member))
