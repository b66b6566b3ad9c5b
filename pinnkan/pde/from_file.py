"""A family member posed from one sample of a data file (`pde.reference.initial`, PDEBench's
layout): the domain from the file's coordinates, the parameters from its attributes, the
initial value from the sample's first time slice and the boundary conditions of the file's
problem (the family's `file_problem`); the sample is also the member's reference."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from pinnkan.errors import PinnkanError
from pinnkan.pde.base import Condition, FileProblem, PDEFamily, at_start, periodic
from pinnkan.pde.reference import FileReference

log = logging.getLogger("pinnkan")


def file_params(
    problem: FileProblem,
    ref: FileReference,
    configured: dict[str, Any],
    defaults: dict[str, Any],
    key: str,
) -> dict[str, Any]:
    """The member's parameters: each one the problem maps to a file attribute is the file's.

    A configured value other than the family's default for this member (`defaults`) is the
    user's: it must agree with the file's (one line if not). A file without the attribute
    keeps the configured value, with a warning. `key` is the config's (pde.source / target)."""
    params = dict(configured)
    for name, (attr, factor) in problem.attributes.items():
        given, default = configured.get(name, defaults.get(name)), defaults.get(name)
        if attr not in ref.attrs:
            log.warning(
                "%s has no attribute %s: %s.%s=%s (the configured value) is used",
                ref.path,
                attr,
                key,
                name,
                given,
            )
            continue
        raw = _number(ref.attrs[attr])
        if raw is None:
            raise PinnkanError(
                f"attribute {attr} of {ref.path} is not a number: {ref.attrs[attr]!r}"
            )
        value = raw * factor
        if not _same(given, default) and not _same(given, value):
            via = f" ({attr}·{factor:.6g})" if factor != 1.0 else ""
            raise PinnkanError(
                f"{key}.{name}={given!r} contradicts {ref.path}: its attribute {attr}={raw:g} "
                f"gives {name}={value:.6g}{via}; drop the override or set {key}.{name}={value:.6g}"
            )
        params[name] = value
    return params


def posed_overrides(problem: FileProblem, ref: FileReference) -> dict[str, Any]:
    """Class attributes of the member posed from `ref`: its box, x periodic, and the
    conditions: u (and with `slope` u_x) periodic in x, u = the first slice at t's start."""

    def conditions(self: PDEFamily) -> list[Condition]:
        out = [periodic(self, 0)]
        if problem.slope:
            out.append(periodic(self, 0, slope=True))
        return [*out, at_start(self, ref)]

    return {"domain": ref.domain, "periodic_axes": (0,), "conditions": conditions}


def _number(value: Any) -> float | None:
    """A file attribute as a float: float32 ones at their shortest decimal (0.1, not
    0.10000000149), one-element arrays unwrapped; None when it is no finite number."""
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        return None
    item = arr.reshape(-1)[0]
    number = float(str(item)) if arr.dtype.kind == "f" and arr.dtype.itemsize < 8 else float(item)
    return number if math.isfinite(number) else None


def _same(a: Any, b: Any) -> bool:
    """Whether two parameter values agree (to float32 rounding); False for a non-number."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False
