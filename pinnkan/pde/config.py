"""A family member from its `pde:` config: a built-in family by `name`, or the user's own
`PDEFamily` subclass named by `_target_` (a dotted import path), with an optional `domain`,
and its reference solution from a file (`reference.source` / `reference.target`)."""

from __future__ import annotations

import importlib
from typing import Any

from pinnkan.errors import PinnkanError
from pinnkan.pde import FAMILIES, PDEFamily, build_pde
from pinnkan.pde.reference import FileReference


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
    if target is None and domain is None and not reference.get(which):
        return build_pde(pde.get("name", "?"), params, weights)
    if target is not None:
        cls = family_class(target)
    elif pde.get("name") in FAMILIES:
        cls = FAMILIES[pde["name"]]
    else:
        raise PinnkanError(f"unknown pde {pde.get('name')!r}")
    overrides: dict[str, Any] = {}
    if target is not None:  # results and `transfer`'s source search know it by this name
        overrides["name"] = str(pde.get("name") or getattr(cls, "name", cls.__name__.lower()))
    if domain is not None:
        overrides["domain"] = _domain(domain, cls)
    if reference.get(which):  # the file's solution replaces the closed form
        ref = FileReference(
            reference[which],
            cls.coords,
            overrides.get("domain", cls.domain),
            field=reference.get("field"),
            axes=reference.get("axes"),
            order=reference.get("order"),
            sample=int(reference.get("sample") or 0),
            periodic_axes=cls.periodic_axes,
        )
        overrides["exact"] = lambda self, x: ref(x)
        overrides["grid"] = lambda self, n, dtype: ref.grid(dtype)  # the file's own points
        overrides["reference_file"] = str(reference[which])
    if overrides:  # the class as configured: a subclass, so the user's class is untouched
        cls = type(cls.__name__, (cls,), overrides)
    return cls(weights=weights, **dict(params))
