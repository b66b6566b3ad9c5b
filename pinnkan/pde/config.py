"""A family member from its `pde:` config: a built-in family by `name`, or the user's own
`PDEFamily` subclass named by `_target_` (a dotted import path), with an optional `domain`,
and its reference solution from a file (`reference.source` / `reference.target`), or the
whole member posed from one of the file's samples (`reference.initial`)."""

from __future__ import annotations

import importlib
from typing import Any

from pinnkan.common.config_checks import as_int
from pinnkan.errors import PinnkanError
from pinnkan.pde import FAMILIES, PDEFamily, build_pde, family_of
from pinnkan.pde.base import FileProblem
from pinnkan.pde.from_file import file_params, posed_overrides
from pinnkan.pde.reference import TIME, FileReference, file_sha256


def family_class(target: str) -> type[PDEFamily]:
    """The class at dotted path `target` ("package.module.Class"); one line when it cannot be
    imported or is no PDEFamily."""
    module_name, _, attr = str(target).rpartition(".")
    if not module_name:
        raise PinnkanError(f"pde._target_={target!r} must be a dotted path: package.module.Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PinnkanError(
            f"pde._target_={target}: cannot import {module_name} ({exc}); is its package "
            "installed or on PYTHONPATH?"
        ) from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, PDEFamily)):
        raise PinnkanError(
            f"pde._target_={target} is not a PDEFamily subclass (see docs/adding_a_pde.md)"
        )
    missing = [a for a in ("coords", "domain", "defaults") if not hasattr(cls, a)]
    if missing:
        raise PinnkanError(f"pde._target_={target} does not set {', '.join(missing)}")
    return cls


def _domain(value: Any, cls: type[PDEFamily]) -> tuple[tuple[float, float], ...]:
    """A `domain:` override, [[lo, hi], ...] with one pair per coordinate of the class."""
    try:
        box = tuple((float(lo), float(hi)) for lo, hi in value)
    except (TypeError, ValueError):
        box = ()
    if len(box) != len(cls.coords) or any(not lo < hi for lo, hi in box):
        raise PinnkanError(
            f"pde.domain={value!r} must give [lo, hi] with lo < hi for each of the "
            f"coordinates {list(cls.coords)}"
        )
    return box


def member_from_config(pde: dict[str, Any], which: str) -> PDEFamily:
    """The member at the config's `source` or `target` parameters (`which`)."""
    params, weights = pde.get(which, {}) or {}, pde.get("weights")
    target, domain = pde.get("_target_"), pde.get("domain")
    reference = dict(pde.get("reference") or {})
    initial = _flag(reference.get("initial"), "pde.reference.initial")
    if initial and not reference.get(which):
        stage = "pretrain" if which == "source" else "transfer"
        raise PinnkanError(
            f"pde.reference.initial=true poses the {which} member from a data file: pass "
            f"pde.reference.{which}=FILE (the file `pinnkan {stage}` reads)"
        )
    if target is None and domain is None and not reference.get(which):
        return build_pde(pde.get("name", "?"), params, weights)
    if target is not None:
        cls = family_class(target)
    else:
        cls = family_of(pde.get("name"))
    name = str(pde.get("name") or getattr(cls, "name", cls.__name__.lower()))
    overrides: dict[str, Any] = {}
    if target is not None:  # results and `transfer`'s source search know it by this name
        overrides["name"] = name
    if domain is not None:
        overrides["domain"] = _domain(domain, cls)
    if reference.get(which):  # the file's solution replaces the closed form
        path = str(reference[which])
        sample = as_int(reference.get("sample") or 0, "pde.reference.sample", 0)
        problem = _file_problem(cls, name) if initial else None
        ref = FileReference(
            path,
            cls.coords,
            overrides.get("domain", None if initial else cls.domain),
            field=reference.get("field"),
            axes=reference.get("axes"),
            order=reference.get("order"),
            sample=sample,
            periodic_axes=(0,) if initial else cls.periodic_axes,
        )
        record = {"file": str(ref.path.resolve()), "sample": sample, "initial": initial}
        overrides |= {
            "exact": lambda self, x: ref(x),
            "grid": lambda self, n, dtype: ref.grid(dtype),  # the file's own points
            "reference_file": path,
            "reference_record": lambda self: {**record, "sha256": file_sha256(ref.path)},
        }
        if problem is not None:
            key = f"pde.{which}"
            defaults = {**cls.defaults, **(cls.target_params if which == "target" else {})}
            params = file_params(problem, ref, dict(params), defaults, key)
            overrides |= posed_overrides(problem, ref)
            overrides["describe"] = lambda self: f"{PDEFamily.describe(self)} from {path}[{sample}]"
    if overrides:  # the class as configured: a subclass, so the user's class is untouched
        cls = type(cls.__name__, (cls,), overrides)
    return cls(weights=weights, **dict(params))


def _file_problem(cls: type[PDEFamily], name: str) -> FileProblem:
    """The family's file problem; one line for a family that cannot be posed from a file."""
    problem = getattr(cls, "file_problem", None)
    if problem is None or tuple(cls.coords)[-1:] != (TIME,):
        able = sorted(n for n, c in FAMILIES.items() if c.file_problem is not None)
        raise PinnkanError(
            f"pde.reference.initial=true poses members of {', '.join(able)} from a data file; "
            f"pde={name} cannot be (its class sets no file_problem): drop "
            "pde.reference.initial to score against the file only"
        )
    return problem


def _flag(value: Any, name: str) -> bool:
    """A yes/no setting: a bool, or the words a user writes for one (YAML's true / false)."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    word = str(value).strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise PinnkanError(f"{name}={value!r}; choose true or false")
