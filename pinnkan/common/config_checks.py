"""Range and type checks for config values, each failing with one line that names the field.

Every numeric field a stage reads goes through `as_int` or `as_float`, so `steps=2.5`,
`lr=nan` or `grid_size=-1` stop before any work with a message like `steps=2.5 must be an
integer >= 1` (a `FieldError`, which the CLI reports under its own key: `train.steps=2.5 ...`).
"""

from __future__ import annotations

import math
from typing import Any

from pinnkan.errors import FieldError


def as_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """`value` as an int in [lo, hi]; a bool, a non-integral float or text is refused."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        ok, value = True, int(value)
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise FieldError(name, f"={value!r} must be an integer{_range(lo, hi)}")
    return int(value)


def as_float(
    value: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """`value` as a finite float in the range (open or closed at each end)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    ok = ok and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        raise FieldError(
            name, f"={value!r} must be a finite number{_range(lo, hi, lo_open, hi_open)}"
        )
    return v


def as_choice(value: Any, name: str, choices: tuple[str, ...] | list[str]) -> str:
    """`value` as one of the allowed strings."""
    if not isinstance(value, str) or value not in choices:
        raise FieldError(name, f"={value!r}; choose one of: {', '.join(choices)}")
    return value


def _range(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi:g}"
    return ""
