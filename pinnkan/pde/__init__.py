"""PDE families by name; `build_pde` makes one member from its parameters."""

from __future__ import annotations

from typing import Any

from pinnkan.errors import PinnkanError
from pinnkan.pde.advection import Advection
from pinnkan.pde.allen_cahn import AllenCahn
from pinnkan.pde.base import Condition, PDEFamily
from pinnkan.pde.burgers import Burgers
from pinnkan.pde.elliptic import Elliptic
from pinnkan.pde.heat2d import Heat2D
from pinnkan.pde.helmholtz import Helmholtz
from pinnkan.pde.parabolic import Parabolic
from pinnkan.pde.wave import Wave

FAMILIES: dict[str, type[PDEFamily]] = {
    cls.name: cls
    for cls in (Elliptic, Parabolic, Advection, Wave, Helmholtz, Heat2D, Burgers, AllenCahn)
}


# other names of a family -> its name. "hyperbolic" is the mission's name for the first-order
# hyperbolic family (advection; wave is the second-order one), and what files written before
# the family took its class's name record; runs record the family's own name.
ALIASES = {"hyperbolic": "advection"}


def current_name(name: str) -> str:
    """A family's own name, also for one of its aliases or a file written under one."""
    return ALIASES.get(name, name)


def build_pde(
    name: str, params: dict[str, Any] | None = None, weights: dict[str, float] | None = None
) -> PDEFamily:
    """The member of family `name` (or an alias of it) with the given parameters (missing ones:
    the source member's, `defaults`) and loss weights (missing ones: `DEFAULT_WEIGHTS`)."""
    return family_of(name)(weights=weights, **dict(params or {}))


def family_of(name: Any) -> type[PDEFamily]:
    """The built-in family called `name` (or an alias of it): the one place a PDE name is
    checked."""
    family = FAMILIES.get(current_name(str(name)))
    if family is None:
        known = ", ".join(sorted([*FAMILIES, *ALIASES]))
        raise PinnkanError(f"unknown pde {name!r}; choose one of: {known}")
    return family


__all__ = [
    "ALIASES",
    "FAMILIES",
    "Condition",
    "PDEFamily",
    "build_pde",
    "current_name",
    "family_of",
]
