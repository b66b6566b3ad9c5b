"""Atomic file writes (a file is always either its previous complete version or the new one),
and the check that an output directory can be made at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_replace(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (``.<name>.tmp-<pid>``, which resume clears away);
    when the block succeeds, fsync it and rename it over `path`; on any error delete it."""
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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def unwritable_dir(path: Path | str) -> str | None:
    """Why directory `path` cannot be created or written (None when it can): its nearest
    existing ancestor must be a directory we may write into."""
    probe = Path(path).expanduser().absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None
