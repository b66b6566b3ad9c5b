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


# families renamed since files were written: old name -> current (files keep the old one)
RENAMED = {"hyperbolic": "advection"}


def current_name(name: str) -> str:
    """A family's current name, also for a file written under an old one."""
    return RENAMED.get(name, name)


def build_pde(
    name: str, params: dict[str, Any] | None = None, weights: dict[str, float] | None = None
) -> PDEFamily:
    """The member of family `name` with the given parameters (missing ones: the source
    member's, `defaults`) and loss weights (missing ones: `DEFAULT_WEIGHTS`)."""
    if name not in FAMILIES:
        renamed = f" (renamed: pde={RENAMED[name]})" if name in RENAMED else ""
        raise PinnkanError(
            f"unknown pde {name!r}{renamed}; choose one of: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[name](weights=weights, **dict(params or {}))


__all__ = ["FAMILIES", "RENAMED", "Condition", "PDEFamily", "build_pde", "current_name"]
