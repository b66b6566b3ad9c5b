"""pinnkan: physics-informed transfer learning of PDE solutions with Kolmogorov–Arnold networks.

`pinnkan.load(run_dir)` returns a trained network as a torch module of physical coordinates
(`pinnkan.run.solution`); the command line is `pinnkan` (`pinnkan.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pinnkan.version import __version__

if TYPE_CHECKING:
    from pinnkan.network.kan import KAN

__all__ = ["__version__", "load"]


def load(path: Path | str, *, adapter: bool = False, dtype: Any = None) -> KAN:
    """The trained network of a run directory or model file (see `pinnkan.run.solution.load`);
    imported on first use, so that `import pinnkan` stays light."""
    from pinnkan.run.solution import load as load_solution

    return load_solution(path, adapter=adapter, dtype=dtype)
