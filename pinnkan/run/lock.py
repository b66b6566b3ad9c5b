"""One pinnkan process per run directory: an advisory lock file, ``<run dir>/.pinnkan.lock``.

The lock is ``flock`` on that file, so the kernel frees it when its process dies, however it
dies: a lock file nobody holds is stale (its killed run is named in the log) and is taken over.
The file says who holds it (pid, host, start time, command) for the refusal message. Without
``fcntl`` (Windows) or on a file system without locks, runs go on unlocked, with a warning.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pinnkan.common.atomic import make_dir, write_failed
from pinnkan.errors import PinnkanError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("pinnkan")

LOCK_FILE = ".pinnkan.lock"
_HELD: dict[Path, int] = {}  # lock file -> open descriptor holding the flock


class RunDirBusy(PinnkanError):
    """Another live process holds the run directory's lock."""


def _holder(fd: int) -> dict[str, Any]:
    """What the lock file says about its holder ({} when empty or unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _who(info: dict[str, Any]) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {when}"


def acquire(run_dir: Path) -> bool:
    """Take `run_dir`'s lock for this process (again: no-op); RunDirBusy if a live process
    holds it. Returns False when locking is not available here."""
    path = (make_dir(run_dir) / LOCK_FILE).absolute()
    if path in _HELD:
        return True
    if fcntl is None:
        return False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_failed(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _holder(fd)
            os.close(fd)
            raise RunDirBusy(
                f"{run_dir} is in use by another pinnkan run ({_who(info)}); wait for it to "
                "end, or write to another directory (hydra.run.dir=...)"
            ) from None
        except OSError as exc:  # e.g. ENOLCK: a file system without locks
            os.close(fd)
            log.warning("cannot lock %s (%s); running without a lock", path, exc.strerror)
            return False
        try:  # the holder we waited for may have removed the file: lock the current one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _holder(fd)
    if stale:
        log.warning("%s: took over the stale lock of a run that is gone (%s)", run_dir, _who(stale))
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    me["command"] = " ".join(sys.argv)[:1000]
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise write_failed(path, exc) from None
    _HELD[path] = fd
    return True


def release(run_dir: Path) -> None:
    """Give up `run_dir`'s lock and remove the lock file (no-op when not held)."""
    path = (Path(run_dir) / LOCK_FILE).absolute()
    fd = _HELD.pop(path, None)
    if fd is None:
        return
    try:
        path.unlink(missing_ok=True)  # while still locked: a waiting process re-checks the inode
    except OSError:
        pass
    os.close(fd)


@contextmanager
def locked_while_running(run_dir: Path) -> Iterator[None]:
    """For a block that calls `acquire(run_dir)` once it is about to write (so a refused config
    makes no directory): release the lock at its end, unless it was held before."""
    held = (Path(run_dir) / LOCK_FILE).absolute() in _HELD
    try:
        yield
    finally:
        if not held:
            release(run_dir)


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        release(path.parent)
