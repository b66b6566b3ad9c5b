"""An exception raised in a user's own code (a PDE family's residual, say) as one line that
names the function, its file and line and the error, instead of a traceback through pinnkan,
torch and Hydra. `HYDRA_FULL_ERROR=1` keeps the whole traceback."""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from pathlib import Path
from types import FrameType

from pinnkan.errors import PinnkanError
from pinnkan.pde.base import PDEFamily

_PACKAGE = Path(__file__).resolve().parents[1]  # pinnkan/


def _library_roots() -> tuple[Path, ...]:
    """Where Python's standard library and installed packages live (not the user's code)."""
    roots = {_PACKAGE}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(Path(path).resolve())
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix):
        roots.add((Path(prefix) / "lib").resolve())
    return tuple(roots)


def _is_library(filename: str, roots: tuple[Path, ...]) -> bool:
    if filename.startswith("<"):  # <frozen ...>, <string>: Python's own machinery
        return True
    path = Path(filename).resolve()
    return any(path.is_relative_to(root) for root in roots)


def _where(frame: FrameType) -> str:
    """`Class.method` for a method (the class of `self`; a PDE family's name too), else the
    function's name."""
    owner = frame.f_locals.get("self")
    name = frame.f_code.co_name
    if owner is None:
        return name
    family = f" of the PDE family {owner.name!r}" if isinstance(owner, PDEFamily) else ""
    return f"{type(owner).__name__}.{name}{family}"


def user_code_error(exc: BaseException) -> PinnkanError | None:
    """One line for `exc` if its traceback passes through the user's code (the innermost such
    frame is named); None for an error of pinnkan or a library it calls on its own."""
    if isinstance(exc, PinnkanError) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    roots = _library_roots()
    user = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if not _is_library(frame.f_code.co_filename, roots):
            user = (frame, line)
    if user is None:
        return None
    frame, line = user
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    error = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return PinnkanError(
        f"{error} in {_where(frame)} ({frame.f_code.co_filename}:{line}), your code; "
        "HYDRA_FULL_ERROR=1 shows the whole traceback"
    )
