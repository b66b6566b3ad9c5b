"""Compose a stage's config as Hydra will and validate it as the stage will
(`pinnkan.run.setup.validate_config`), before Hydra runs or makes a directory: an unknown
key, a value of the wrong type or out of range is one line naming the setting. Every value of
a sweep is composed (keys and types); ranges are checked for the first job, the others' by
their own jobs, so one bad value fails its job, not the sweep.

A comma or `choice()` sweep is composed once per value; Hydra's other sweep functions
(`interval`, `range`) are left to Hydra."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from pinnkan.errors import PinnkanError
from pinnkan.network.kan import LAYER_KINDS
from pinnkan.run.config import RunConfig, set_dotted
from pinnkan.run.setup import validate_config
from pinnkan.stages.schema import TRANSFER_ONLY, register


def _variants(overrides: list[Override]) -> list[list[str]]:
    """Override lists to compose: every sweep at its first value, then each further value of
    one sweep at a time (the others at their first)."""
    firsts: list[str] = []
    more: list[tuple[int, list[str]]] = []
    for i, o in enumerate(overrides):
        if not o.is_sweep_override():
            firsts.append(o.input_line)
            continue
        if not isinstance(o.value(), ChoiceSweep):
            firsts.append("")  # interval / range: Hydra checks them
            continue
        key = o.get_key_element()
        values = [f"{key}={v}" for v in o.sweep_string_iterator()]
        firsts.append(values[0])
        more.append((i, values[1:]))
    out = [[f for f in firsts if f]]
    for i, values in more:
        for v in values:
            out.append([v if j == i else f for j, f in enumerate(firsts) if f])
    return out


def _compose(stage: str, overrides: list[str], config_dirs: list[Path]) -> DictConfig:
    register()
    if config_dirs:
        paths = ",".join(f"file://{Path(d).absolute()}" for d in config_dirs)
        overrides = [*overrides, f"hydra.searchpath=[{paths}]"]
    GlobalHydra.instance().clear()
    with initialize_config_module("pinnkan.conf", version_base="1.3"):
        return compose(config_name=stage, overrides=overrides)


def _settings(cfg: DictConfig, dotted: str) -> list[str]:
    """The keys of the node at `dotted` ("" for the top level), or [] if there is none."""
    node: Any = cfg
    for part in [p for p in dotted.split(".") if p]:
        node = node.get(part) if isinstance(node, DictConfig) else None
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _kinds_with(key: str) -> str:
    """'; grid_size is an option of model=bspline, model=lmkan' for model.grid_size ('' when no
    layer kind has it)."""
    name = key.rpartition(".")[2]
    kinds = [f"model={k}" for k, kind in LAYER_KINDS.items() if name in kind.defaults()]
    return f"; {name} is an option of {', '.join(kinds)}" if kinds else ""


def _message(
    stage: str, override: str, others: list[str], cause: BaseException, dirs: list[Path]
) -> str:
    """One line for a failed override (composed with the `others`): an unknown key, or the
    library's own check of the value."""
    key, _, raw = override.lstrip("+~").partition("=")
    parent = key.rpartition(".")[0]
    if isinstance(cause, ConfigKeyError | ConfigAttributeError):
        if key in TRANSFER_ONLY and stage != "transfer":
            return f"{key}= applies to `pinnkan transfer`, not `pinnkan {stage}`"
        composed = _compose(stage, others, dirs)
        known = _settings(composed, parent)
        where = f"{parent} has" if parent else "the top level has"
        if parent == "model":  # name the kind, and the kinds that have the option
            where = f"model={composed.model.name} has"
        listed = f"; {where}: {', '.join(known)}" if known else ""
        return f"unknown setting {key}{listed}{_kinds_with(key) if parent == 'model' else ''}"
    if isinstance(cause, ValidationError):  # a type error: the library's own line for it
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        plain = OmegaConf.to_container(_compose(stage, others, dirs), resolve=True)
        set_dotted(plain, key, value)  # type: ignore[arg-type]
        try:
            validate_config(RunConfig.from_dict(plain))  # type: ignore[arg-type]
        except PinnkanError as exc:
            return str(exc)
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return f"{override}: {first}"


def _failed_override(variant: list[str], exc: BaseException, full_key: Any) -> str | None:
    """The override Hydra failed on: the one setting the error's key, else the longest one
    its message quotes (a shorter one may be a prefix of it, e.g. steps=1 of steps=10)."""
    keyed = [o for o in variant if full_key and o.lstrip("+~").partition("=")[0] == full_key]
    quoted = sorted((o for o in variant if o in str(exc)), key=len, reverse=True)
    return next(iter(keyed or quoted), None)


def check_composes(stage: str, args: list[str], config_dirs: list[Path]) -> str | None:
    """None if every variant of `args` composes and validates, else one line about the first
    that does not."""
    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    overrides = [a for a in overrides if not a.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None  # a syntax error: Hydra's own message names it
    for i, variant in enumerate(_variants(parsed)):
        try:
            cfg = _compose(stage, variant, config_dirs)
            if i == 0:  # a sweep's further values are checked by their own jobs
                plain = OmegaConf.to_container(cfg, resolve=True)
                validate_config(RunConfig.from_dict(plain))  # type: ignore[arg-type]
        except PinnkanError as exc:  # a value out of range: the stage's own line
            return str(exc)
        except (HydraException, OmegaConfBaseException) as exc:
            cause = exc.__cause__ or exc
            bad = _failed_override(variant, exc, getattr(cause, "full_key", None))
            if bad is None:
                return str(exc).strip().splitlines()[0]
            others = [o for o in variant if o != bad]
            return _message(stage, bad, others, cause, config_dirs)
        finally:
            GlobalHydra.instance().clear()
    return None
