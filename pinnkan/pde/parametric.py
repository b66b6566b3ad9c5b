"""A parametric member: the family's parameters named in `pde.parametric` become inputs of the
network over their ranges (a parametric PINN), so that one pretrain covers every member in the
range; a transfer from it evaluates (or fine-tunes) the network at the target's values.

Points carry the swept parameters after the coordinates, (B, D + k). The residual and the
conditions run the member's own code with those parameters set to per-point tensors (B,), so
a family takes part when its residual and conditions are written with torch operations (they
broadcast); the reference (`exact`) runs once per distinct value with plain floats, the
member's code path exactly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from pinnkan.common.config_checks import as_float
from pinnkan.errors import PinnkanError
from pinnkan.layers.jet import Jet, zero_jet
from pinnkan.pde.base import Condition, PDEFamily


def parse_ranges(value: Any, member: PDEFamily) -> dict[str, tuple[float, float]]:
    """`pde.parametric` as {parameter: (lo, hi)}, each a parameter of the family with lo < hi
    above its lower bound; one line for anything else."""
    if not isinstance(value, dict) and not hasattr(value, "items"):
        raise PinnkanError(f"pde.parametric={value!r} must map parameters to [lo, hi]")
    out = {}
    for name, pair in value.items():
        key = f"pde.parametric.{name}"
        if name not in member.params:
            raise PinnkanError(
                f"{key}: pde={member.name} has no parameter {name!r}; it takes "
                f"{sorted(member.params)}"
            )
        try:
            lo_raw, hi_raw = pair
        except (TypeError, ValueError):
            raise PinnkanError(f"{key}={pair!r} must be [lo, hi]") from None
        bound = member.lower_bounds.get(name)
        lo = as_float(lo_raw, f"{key}[0]", bound, lo_open=bound is not None)
        hi = as_float(hi_raw, f"{key}[1]")
        if not lo < hi:
            raise PinnkanError(f"{key}=[{lo:g}, {hi:g}] must have lo < hi")
        out[str(name)] = (lo, hi)
    return out


class ParametricMember(PDEFamily):
    """`member` with the parameters of `ranges` as extra coordinates (after the member's)."""

    def __init__(self, member: PDEFamily, ranges: dict[str, tuple[float, float]]) -> None:
        if not ranges:
            raise PinnkanError("pde.parametric names no parameter")
        if member.reference_file is not None:
            raise PinnkanError(
                "pde.parametric with pde.reference: a data file holds one member's solution; "
                "drop one of them"
            )
        self.member = member
        self.swept = tuple(ranges)
        self.ranges = dict(ranges)
        n = member.dim
        self.name = member.name
        self.coords = (*member.coords, *self.swept)
        self.domain = (*member.domain, *(tuple(r) for r in ranges.values()))
        self.defaults = member.defaults
        self.lower_bounds = member.lower_bounds
        self.params = dict(member.params)
        self.weights = member.weights
        self.linear = member.linear
        self.periodic_axes = member.periodic_axes
        # about as many evaluation points as the member's grid: n^D ≈ member's
        self.eval_points = max(8, round(member.eval_points ** (n / (n + len(self.swept)))))
        self._probe()

    @property
    def has_reference(self) -> bool:
        return self.member.has_reference

    @contextlib.contextmanager
    def _at(self, values: dict[str, Any]) -> Iterator[None]:
        """Inside: the member's swept parameters set to `values` (floats or (B,) tensors)."""
        kept = dict(self.member.params)
        self.member.params.update(values)
        try:
            yield
        finally:
            self.member.params.clear()
            self.member.params.update(kept)

    def _per_point(self, x: Tensor) -> dict[str, Tensor]:
        n = self.member.dim
        return {k: x[:, n + i] for i, k in enumerate(self.swept)}

    def residual(self, x: Tensor, jet: Jet) -> Tensor:
        with self._at(self._per_point(x)):
            return self.member.residual(x[:, : self.member.dim], jet)

    def exact(self, x: Tensor) -> Tensor:
        """The member's reference at each point's parameter values, one call per distinct
        value (plain floats: the member's own code path)."""
        n = self.member.dim
        values, inverse = torch.unique(x[:, n:], dim=0, return_inverse=True)
        out = x.new_empty(x.shape[0])
        for i, row in enumerate(values.tolist()):
            mask = inverse == i
            with self._at(dict(zip(self.swept, row))):
                out[mask] = self.member.exact(x[mask, :n]).to(out)
        return out

    def conditions(self) -> list[Condition]:
        return [self._condition(c) for c in self.member.conditions()]

    def _condition(self, cond: Condition) -> Condition:
        """`cond` at random parameter values per point (one per pair of a paired condition)."""
        lo = torch.tensor([r[0] for r in self.ranges.values()], dtype=torch.float64)
        hi = torch.tensor([r[1] for r in self.ranges.values()], dtype=torch.float64)
        n = self.member.dim

        def sample(m: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
            pts = cond.sample(m, gen, dtype)
            count = pts.shape[0] // 2 if cond.paired else pts.shape[0]
            unit = torch.rand(count, len(self.swept), generator=gen, dtype=dtype)
            values = lo.to(dtype) + unit * (hi - lo).to(dtype)
            if cond.paired:  # both points of a pair are the same member
                values = torch.cat([values, values])
            return torch.cat([pts, values], dim=1)

        def residual(x: Tensor, jet: Jet) -> Tensor:
            with self._at(self._per_point(x)):
                return cond.residual(x[:, :n], jet)

        return Condition(cond.name, sample, residual, cond.weight, cond.derivatives, cond.paired)

    def _probe(self) -> None:
        """Refuse, in one line, a family whose residual or conditions cannot take per-point
        parameter values (written with math.* or Python branches on them)."""
        gen = torch.Generator().manual_seed(0)
        try:
            x = self.sample_interior(3, gen, torch.float64)
            self.residual(x, zero_jet(x, self.member.dim))
            for cond in self.conditions():
                xc = cond.sample(4, gen, torch.float64)
                cond.residual(xc, zero_jet(xc, self.member.dim))
        except Exception as exc:  # the family's own code: any failure means "cannot"
            raise PinnkanError(
                f"pde.parametric: pde={self.name}'s residual or conditions do not take "
                f"per-point values of {', '.join(self.swept)} ({type(exc).__name__}: {exc}); "
                "write them with torch operations that broadcast over points"
            ) from None

    def describe(self) -> str:
        fixed = [f"{k}={v:g}" for k, v in self.params.items() if k not in self.swept]
        swept = [f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in self.ranges.items()]
        return f"{self.name}({', '.join([*fixed, *swept])})"


def member_values(
    params: dict[str, float], swept: tuple[str, ...], ranges: dict[str, Any] | None
) -> tuple[list[float], list[str]]:
    """The values a parametric network is fixed at for the member `params`, and a note for each
    value outside the range it was trained on (an extrapolation)."""
    values, notes = [], []
    for k in swept:
        if k not in params:
            raise PinnkanError(f"the source network takes {k} as an input; this member has none")
        v = float(params[k])
        values.append(v)
        lo, hi = (ranges or {}).get(k, (-math.inf, math.inf))
        if not lo <= v <= hi:
            notes.append(f"{k}={v:g} lies outside the trained range [{lo:g}, {hi:g}]")
    return values, notes
