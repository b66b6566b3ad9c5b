"""The run configuration as dataclasses: the single source of defaults for the library and the
CLI alike (`pinnkan.stages.schema` registers them in Hydra's ConfigStore as the schema of
conf/'s groups, whose YAML files keep only comments).

`RunConfig.from_dict` builds one from a plain dict (a composed Hydra config, or a library
call's partial dict), filling defaults and refusing unknown keys in one line; the values' types
and ranges are checked where they are used (`pinnkan.run.setup`), also in one line each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from pinnkan.adapters import AdapterConfig
from pinnkan.errors import PinnkanError
from pinnkan.layers.base import MODEL_FIELDS
from pinnkan.network.kan import DEFAULT_KIND, LAYER_KINDS
from pinnkan.pde import FAMILIES, PDEFamily, current_name
from pinnkan.pde.base import DEFAULT_WEIGHTS
from pinnkan.train.optimizers import DEFAULT_OPTIMIZER, get_optimizer
from pinnkan.train.options import TrainOptions, TransferOptions

STAGES = ("pretrain", "transfer")


@dataclass
class EvalOptions:
    """`eval:` the evaluation grid."""

    n: int | None = None  # points per axis; null: the family's (101 in 2-D, 33 in 3-D)


@dataclass
class ReferenceOptions:
    """`pde.reference:` reference solutions from files (HDF5 / NPZ, docs/usage.md)."""

    source: str | None = None  # file for the source member (pretrain); null: the family's own
    target: str | None = None  # file for the target member (transfer)
    field: str | None = None  # dataset of u (null: u, fields/u_ref or tensor)
    axes: dict[str, str] | None = None  # {coordinate: dataset} (null: by name)
    order: list[str] | None = None  # the field's axis order, e.g. [t, x] (null: from shapes)
    sample: int = 0  # which sample of a PDEBench-style file (samples first)
    # the member itself from the file's sample: initial value, domain, parameters, periodic x
    initial: bool = False


@dataclass
class PDEConfig:
    """`pde=`: a family (built in by `name`, or the user's class by `_target_`) and its source
    and target members' parameters."""

    name: str = "elliptic"
    source: dict[str, Any] = field(default_factory=dict)  # parameters; missing: the family's
    target: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    domain: Any = None  # [[lo, hi], ...] replacing the family's box
    reference: ReferenceOptions = field(default_factory=ReferenceOptions)
    # pretrain: {parameter: [lo, hi]} taken as inputs of the network (a parametric PINN);
    # a parameter set to null (a family's config lists them all) is not swept
    parametric: dict[str, Any] = field(default_factory=dict)
    _target_: str | None = None  # package.module.Class of a PDEFamily of your own

    @classmethod
    def of_family(cls, family: type[PDEFamily]) -> PDEConfig:
        """The config of a built-in family: its source and target members."""
        return cls(
            name=family.name,
            source=dict(family.defaults),
            target=dict(family.target_params),
            parametric=dict.fromkeys(family.defaults),
        )


def model_class(kind: str) -> type:
    """The `model=<kind>` dataclass: name, hidden and the layer kind's options."""
    if kind not in LAYER_KINDS:
        raise PinnkanError(f"unknown model {kind!r}; choose one of: {', '.join(LAYER_KINDS)}")
    return LAYER_KINDS[kind].model


# the adapter group's fields: AdapterConfig's, less `cr` (defaults from AdapterConfig)
ADAPTER_FIELDS = [f.name for f in fields(AdapterConfig) if f.name != "cr"]


@dataclass
class RunConfig:
    """A stage's whole config. `adapter`, `cr`, `source` and `transfer` apply to transfer
    only."""

    stage: str = "pretrain"
    seed: int = 0
    precision: str = "auto"  # auto (float64 with optim=lm, float32 otherwise) | float32 | float64
    device: str = "auto"  # auto | cpu | cuda
    outputs_root: str = "outputs"  # run directories go below this; transfer finds sources here
    resume: str | None = None  # a run directory to continue from its checkpoint
    threads: Any = "auto"  # torch threads: auto (a share of the cores per parallel job) | N
    train: TrainOptions = field(default_factory=TrainOptions)
    eval: EvalOptions = field(default_factory=EvalOptions)
    pde: PDEConfig = field(default_factory=lambda: PDEConfig.of_family(FAMILIES["elliptic"]))
    model: Any = field(default_factory=lambda: model_class(DEFAULT_KIND)())
    optim: Any = field(default_factory=lambda: get_optimizer(DEFAULT_OPTIMIZER).options())
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    cr: float = AdapterConfig.cr  # LoTRA compression ratio in (0, 1]: r_m = max(1, ceil(cr dim_m))
    source: str | None = None  # a pretrain run dir or model file; null: the newest of this PDE
    transfer: TransferOptions = field(default_factory=TransferOptions)  # where it starts

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> RunConfig:
        """Defaults completed with `cfg` (nested dicts per section); an unknown key is one
        line naming it. A missing `pde.source` / `.target` takes the family's members."""
        cfg = dict(cfg)
        _refuse_unknown(cfg, [f.name for f in fields(cls)], "")
        out = cls()
        scalars = ("stage", "seed", "precision", "device", "outputs_root", "resume", "threads")
        for key in (*scalars, "cr", "source"):
            if key in cfg:
                setattr(out, key, cfg[key])
        out.train = _section(TrainOptions, cfg.get("train"), "train")
        out.eval = _section(EvalOptions, cfg.get("eval"), "eval")
        out.transfer = _section(TransferOptions, cfg.get("transfer"), "transfer")
        out.pde = _pde(cfg.get("pde"))
        model = dict(cfg.get("model") or {})
        kind = str(model.get("name", DEFAULT_KIND))
        model_class(kind)  # an unknown kind is one line
        LAYER_KINDS[kind].refuse_unknown(kind, set(model) - set(MODEL_FIELDS))
        out.model = _section(model_class(kind), model, "model")
        optim = dict(cfg.get("optim") or {})
        name = optim.get("name", DEFAULT_OPTIMIZER)
        out.optim = _section(get_optimizer(name).options, optim, "optim")
        adapter = dict(cfg.get("adapter") or {})
        _refuse_unknown(adapter, ADAPTER_FIELDS, "adapter.")
        out.adapter = AdapterConfig(**{**adapter, "cr": out.cr})
        return out

    def as_dict(self) -> dict[str, Any]:
        """The config as plain nested dicts (what `from_dict` reads back)."""
        out = dataclasses.asdict(self)
        out["adapter"].pop("cr")
        return out


def set_dotted(cfg: dict[str, Any], path: str, value: Any) -> None:
    """cfg["a"]["b"] = value for the dotted path "a.b", creating missing levels (a library
    call's way to write a command line's `a.b=value`)."""
    *parents, last = path.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _refuse_unknown(given: dict[str, Any], known: list[str], prefix: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        where = prefix[:-1] or "the top level"
        raise PinnkanError(f"unknown setting {prefix}{unknown[0]}; {where} has: {', '.join(known)}")


def _section(cls: type, given: Any, name: str) -> Any:
    """Dataclass `cls` with the keys of `given` (a dict, or None for all defaults)."""
    if given is None:
        return cls()
    if not isinstance(given, dict):
        raise PinnkanError(f"{name}={given!r} must be a mapping of settings")
    _refuse_unknown(given, [f.name for f in fields(cls)], f"{name}.")
    return cls(**given)


def _pde(given: Any) -> PDEConfig:
    """`pde:` with the family's members where the dict names a built-in family without them."""
    given = dict(given or {})
    if "name" in given and not given.get("_target_"):  # an alias: the family's own name
        given["name"] = current_name(str(given["name"]))
    family = FAMILIES.get(str(given.get("name", "elliptic")))
    base = PDEConfig.of_family(family) if family and not given.get("_target_") else PDEConfig()
    merged = {**dataclasses.asdict(base), **given}
    merged["reference"] = _section(ReferenceOptions, merged.get("reference"), "pde.reference")
    _refuse_unknown(merged, [f.name for f in fields(PDEConfig)], "pde.")
    return PDEConfig(**merged)
