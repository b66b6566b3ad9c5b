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


def build_pde(
    name: str, params: dict[str, Any] | None = None, weights: dict[str, float] | None = None
) -> PDEFamily:
    """The member of family `name` with the given parameters (missing ones: the source
    member's, `defaults`) and loss weights (missing ones: `DEFAULT_WEIGHTS`)."""
    if name not in FAMILIES:
        raise PinnkanError(f"unknown pde {name!r}; choose one of: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name](weights=weights, **dict(params or {}))


__all__ = ["FAMILIES", "Condition", "PDEFamily", "build_pde"]
