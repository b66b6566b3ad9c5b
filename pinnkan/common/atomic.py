"""Atomic file writes (a file is always either its previous complete version or the new one),
the one-line error when a write fails (disk full, read-only, quota), and the check that an
output directory can be made at all."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pinnkan.errors import PinnkanError


class WriteFailed(PinnkanError):
    """A file could not be written (disk full, read-only, over quota...); nothing partial of it
    is left: the previous complete version, if any, is still in place."""


def write_failed(path: Path, exc: BaseException) -> WriteFailed:
    """The one-line error for a failed write of `path`, saying why and how full the disk is."""
    path = Path(path)
    text = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)).strip()
    inner = re.search(r"error message = '([^']*)'", text)  # h5py quotes the OS error in its own
    why = inner.group(1) if inner else (text.splitlines() or [type(exc).__name__])[0][:160]
    free = ""
    try:
        left = shutil.disk_usage(_existing_ancestor(path)).free
        if left < 64 * 1024**2 or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            free = f"; {left / 1e6:.1f} MB free on that disk"
    except OSError:
        pass
    return WriteFailed(f"cannot write {path}: {why}{free}")


@contextmanager
def atomic_replace(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (``.<name>.tmp-<pid>``, which resume clears away);
    when the block succeeds, fsync it and rename it over `path`; on any error delete it. An
    OS-level failure of the write (or torch's / h5py's wrapping of one) becomes `WriteFailed`."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
        _discard(tmp)
        raise write_failed(path, exc) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:  # its directory is gone or unusable: then so is the file
        pass


def make_dir(path: Path) -> Path:
    """mkdir -p `path`; a failure is one `WriteFailed` line instead of pathlib's traceback."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(path, exc) from None
    return path


def _existing_ancestor(path: Path) -> Path:
    probe = Path(path).expanduser().absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def unwritable_dir(path: Path | str) -> str | None:
    """Why directory `path` cannot be created or written (None when it can): its nearest
    existing ancestor must be a directory we may write into."""
    probe = _existing_ancestor(path)
    if not probe.is_dir():
        return f"{probe} is a file, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None
