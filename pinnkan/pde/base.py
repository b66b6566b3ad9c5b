"""What a PDE family is to pinnkan: coordinates on a box, parameters, a residual written
against a Jet, boundary/initial conditions, and the exact solution used as reference."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from pinnkan.common.config_checks import as_float
from pinnkan.errors import PinnkanError
from pinnkan.layers.jet import Jet

PI = math.pi
# the loss weights of the residual and of each condition group, for the library and conf/ alike
DEFAULT_WEIGHTS = {"residual": 1.0, "boundary": 10.0, "initial": 10.0}


@dataclass
class Condition:
    """A boundary or initial condition: where to sample it and its residual there.

    `sample(n, gen, dtype)` returns points (m, D); `residual(x, jet)` returns (m,) residuals,
    squared and averaged into the loss with `weight`. `derivatives` says whether the residual
    reads jet.d1/jet.d2 (then the jet engine runs there, else a plain forward pass).
    `paired`: the sampler's two halves are compared point by point (a periodic condition).
    """

    name: str
    sample: Callable[[int, torch.Generator, torch.dtype], Tensor]
    residual: Callable[[Tensor, Jet], Tensor]
    weight: float = 1.0
    derivatives: bool = False
    paired: bool = False


@dataclass(frozen=True)
class FileProblem:
    """The problem a data file's samples solve, for a family that can pose its members from
    one (`pde.reference.initial`, pinnkan.pde.from_file): periodic in x, as PDEBench's 1-D
    problems are, with the initial value from the sample's first time slice.

    `attributes` maps a parameter to the file attribute it comes from and the factor from that
    attribute to it (PDEBench's Burgers files store Nu = πν); `slope`: u_x periodic too (a
    second-order operator in x)."""

    attributes: dict[str, tuple[str, float]]
    slope: bool = False


class PDEFamily:
    """Base class of a PDE family member; subclasses set the class attributes and methods.

    To add an operator, subclass this, set `name`, `coords`, `domain`, `defaults` (and
    `periodic_axes` for a periodic one), write `residual`, `exact` and `conditions`, and
    register the class in `pinnkan.pde.FAMILIES`.
    """

    name: ClassVar[str]
    coords: ClassVar[tuple[str, ...]]
    domain: ClassVar[tuple[tuple[float, float], ...]]
    defaults: ClassVar[dict[str, float]]  # the source member's parameters
    # the target member's parameters for `pinnkan transfer` (missing ones: `defaults`)
    target_params: ClassVar[dict[str, float]] = {}
    # parameters that must be strictly greater than a bound (e.g. a diffusivity > 0)
    lower_bounds: ClassVar[dict[str, float]] = {}
    # evaluation grid points per axis when eval.n is null (n^D points: fewer in 3-D)
    eval_points: ClassVar[int] = 101
    reference_file: ClassVar[str | None] = None  # set when `exact` reads a file (pde.reference)
    # how a member is posed from a data file's sample (pde.reference.initial); None: it cannot be
    file_problem: ClassVar[FileProblem | None] = None
    # coordinates in which the solution is periodic over the box (hi - lo): the network embeds
    # them as cos / sin (model.periodic, pinnkan.network.kan.KAN): u is exactly periodic there
    periodic_axes: ClassVar[tuple[int, ...]] = ()
    # whether the residual and every condition are affine in u and its derivatives (then the
    # loss is quadratic in the last layer's coefficients: adapter=lstsq solves it exactly);
    # a family not declared linear is treated as nonlinear
    linear: ClassVar[bool] = False
    # parameters that are inputs of the network over a range (a parametric member,
    # pinnkan.pde.parametric): its points carry them after the coordinates
    swept: ClassVar[tuple[str, ...]] = ()

    def __init__(self, weights: dict[str, float] | None = None, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise PinnkanError(
                f"unknown parameter(s) {unknown} for pde={self.name}; "
                f"it takes {sorted(self.defaults)}"
            )
        self.params = {}
        for k, v in self.defaults.items():
            lo = self.lower_bounds.get(k)
            self.params[k] = as_float(
                params.get(k, v), f"pde parameter {k}", lo, lo_open=lo is not None
            )
        self.weights = dict(DEFAULT_WEIGHTS)
        for k, v in (weights or {}).items():
            self.weights[k] = as_float(v, f"weights.{k}", 0.0)

    # --- to implement -----------------------------------------------------------------------
    def residual(self, x: Tensor, jet: Jet) -> Tensor:
        """PDE residual at interior points x (B, D), shape (B,)."""
        raise NotImplementedError

    def exact(self, x: Tensor) -> Tensor:
        """Exact solution at points x (B, D), shape (B,)."""
        raise NotImplementedError

    def conditions(self) -> list[Condition]:
        """Boundary and initial conditions."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return len(self.coords)

    @property
    def has_reference(self) -> bool:
        """Whether `exact` is implemented (a closed form, a solver or a file); without it a run
        reports its residual and condition losses instead of errors."""
        return type(self).exact is not PDEFamily.exact

    def sample_interior(self, n: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
        """n uniform random points in the open box, (n, D)."""
        return self.box_points(torch.rand(n, self.dim, generator=gen, dtype=dtype))

    def box_points(self, unit: Tensor) -> Tensor:
        """Map points of [0, 1]^D to the domain box."""
        lo = torch.tensor([d[0] for d in self.domain], dtype=unit.dtype)
        hi = torch.tensor([d[1] for d in self.domain], dtype=unit.dtype)
        return lo + unit * (hi - lo)

    def grid(self, n: int, dtype: torch.dtype) -> tuple[dict[str, Tensor], Tensor]:
        """Evaluation grid: 1-D axes per coordinate and the points (n^D, D) in 'ij' order."""
        axes = {
            c: torch.linspace(a, b, n, dtype=dtype) for c, (a, b) in zip(self.coords, self.domain)
        }
        mesh = torch.meshgrid(*axes.values(), indexing="ij")
        return axes, torch.stack([m.reshape(-1) for m in mesh], dim=1)

    def reference_record(self) -> dict[str, Any] | None:
        """The data file this member's reference comes from (path, sha256, sample, whether the
        member was posed from it), as runs record it; None for the family's own reference."""
        return None

    def describe(self) -> str:
        ps = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.name}({ps})"


# --- sampling helpers shared by the families -------------------------------------------------
def edge_points(
    family: PDEFamily, n: int, gen: torch.Generator, dtype: torch.dtype, axis: int, side: int
) -> Tensor:
    """n random points on the face where coordinate `axis` is at its low (0) or high (1) end."""
    unit = torch.rand(n, family.dim, generator=gen, dtype=dtype)
    unit[:, axis] = float(side)
    return family.box_points(unit)


def periodic_pairs(family: PDEFamily, axis: int = 0) -> Callable:
    """Sampler of n//2 points on the low face of `axis` stacked over the same points moved to
    its high face, (2·(n//2), D): a periodic condition compares the two halves."""

    def sample(n: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
        low = edge_points(family, max(1, n // 2), gen, dtype, axis=axis, side=0)
        high = low.clone()
        high[:, axis] = family.domain[axis][1]
        return torch.cat([low, high])

    return sample


def halves_differ(values: Tensor) -> Tensor:
    """First half minus second half of `values` (m,): the residual on `periodic_pairs`."""
    half = values.shape[0] // 2
    return values[:half] - values[half:]


def dirichlet_box(family: PDEFamily, axes: tuple[int, ...]) -> Callable:
    """Sampler over both faces of each listed axis (n points split evenly)."""

    def sample(n: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
        faces = [(a, s) for a in axes for s in (0, 1)]
        per = max(1, n // len(faces))
        return torch.cat([edge_points(family, per, gen, dtype, a, s) for a, s in faces])

    return sample


# --- the conditions the families share ---------------------------------------------------------
Value = Callable[[Tensor], Tensor]


def on_faces(
    family: PDEFamily, axes: tuple[int, ...], value: Value | None = None, name: str = "boundary"
) -> Condition:
    """Dirichlet: u = value(x) on both faces of each listed axis (value None: u = 0)."""

    def residual(x: Tensor, jet: Jet) -> Tensor:
        return jet.u if value is None else jet.u - value(x)

    return Condition(name, dirichlet_box(family, axes), residual, family.weights[name])


def start_points(family: PDEFamily) -> Callable:
    """Sampler of the face where time (the last coordinate) starts."""

    def sample(n: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
        return edge_points(family, n, gen, dtype, axis=family.dim - 1, side=0)

    return sample


def at_start(family: PDEFamily, value: Value | None = None, name: str = "initial") -> Condition:
    """Initial value: u = value(x) where time starts (value None: the exact solution)."""
    value = family.exact if value is None else value
    return Condition(
        name, start_points(family), lambda x, jet: jet.u - value(x), family.weights["initial"]
    )


def periodic(family: PDEFamily, axis: int = 0, slope: bool = False) -> Condition:
    """u (with `slope`, also ∂u/∂x_axis: a second condition) equal on both faces of `axis`.

    A family that uses it also lists `axis` in `periodic_axes`. The condition stays in the
    loss when the network embeds the axis (model.periodic): its residual is then exactly zero
    and its Jacobian rows zero, a little wasted work, but the loss, its residual vector and
    the recorded condition losses keep one layout whether or not the embedding is on, and a
    network without it (model.periodic=false) still needs the penalty.
    """
    if slope:
        return Condition(
            "boundary_dx",
            periodic_pairs(family, axis),
            lambda x, jet: halves_differ(jet.d(axis)),
            family.weights["boundary"],
            derivatives=True,
            paired=True,
        )
    return Condition(
        "boundary",
        periodic_pairs(family, axis),
        lambda x, jet: halves_differ(jet.u),
        family.weights["boundary"],
        paired=True,
    )
