"""Shared wrapper of the stage entry points: resolve the Hydra config to a RunConfig, run the
Hydra-free stage function in the Hydra run directory, and turn user errors into one line."""

from __future__ import annotations

import logging
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from pinnkan.common.interrupts import exit_code
from pinnkan.common.malloc import keep_freed_memory
from pinnkan.errors import PinnkanError
from pinnkan.run.config import RunConfig
from pinnkan.run.fit import StageInterrupted
from pinnkan.run.lock import LOCK_FILE, acquire, release
from pinnkan.run.sweep import (
    clear_failed,
    cpu_count,
    failures,
    job_dirname,
    mark_failed,
    threads_for_job,
)
from pinnkan.run.user_code import user_code_error

log = logging.getLogger("pinnkan")
# hydra.sweep.subdir uses it; registered on import, so in launcher worker processes too
OmegaConf.register_new_resolver("pinnkan_dirname", job_dirname, replace=True)

EXIT_USER_ERROR = 2

# (job number, message) of the jobs of this process' sweep that failed with a user error,
# filled by SweepFailures from the jobs' failed.txt markers; the CLI reads it after the sweep.
FAILED_JOBS: list[tuple[int, str]] = []


class SweepFailures(Callback):
    """Hydra callback (hydra.callbacks in conf/base.yaml): after a sweep, gather the failed
    jobs' markers into FAILED_JOBS; markers work for jobs run in other processes too."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time() - 1.0  # slack for coarse file timestamps

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for job_dir, msg in failures(Path(str(config.hydra.sweep.dir)), self.started):
            num = re.match(r"\d+", job_dir.name)
            FAILED_JOBS.append((int(num.group()) if num else -1, msg))
        FAILED_JOBS.sort()


class RunLogHandler(logging.FileHandler):
    """The run's log file (conf/hydra/job_logging/pinnkan.yaml). When it cannot be written
    (disk full...) it says so in one line once and stops, instead of logging's traceback on
    every record; the run's own files report their write failures themselves."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if self.stream is None:  # already given up
            return
        why = sys.exc_info()[1]
        print(
            f"pinnkan: warning: cannot write the log {self.baseFilename} "
            f"({getattr(why, 'strerror', None) or why}); logging to it stops",
            file=sys.stderr,
        )
        stream, self.stream = self.stream, None
        self.emit = lambda record: None  # type: ignore[method-assign]
        try:
            stream.close()
        except OSError:
            pass


MIN_FREE_BYTES = 10 * 1024**2  # below this on the run's disk a run is refused at the start
# single-run directories this process created (parents included, top first): a run refused
# before it wrote anything of its own leaves no directory behind
_CREATED: dict[Path, Path] = {}
HYDRA_FILES = (".hydra", LOCK_FILE)  # and the job's <name>.log


class RunDirGuard(Callback):
    """Hydra callback (conf/base.yaml), before Hydra writes into the run or sweep directory:
    pin its name, take its lock (a second run pointed at it is refused; pinnkan.run.lock) and
    check the disk has room, each failure one line and exit status 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._guard(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._guard(config, "hydra.sweep.dir")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(str(OmegaConf.select(config, "hydra.run.dir"))))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))))

    def _guard(self, config: DictConfig, key: str) -> None:
        HydraConfig.instance().set_config(config)  # as Hydra does before resolving the dir
        path = Path(str(OmegaConf.select(config, key))).absolute()
        node, name = key.rsplit(".", 1)
        with read_write(OmegaConf.select(config, node)):
            OmegaConf.update(config, key, str(path))  # resolved once: ${now:} cannot move it
        top = path
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        created = not path.exists()
        try:
            acquire(path)
            free = shutil.disk_usage(path).free
            if free < MIN_FREE_BYTES:
                raise PinnkanError(
                    f"the disk holding {path} is full ({free / 1e6:.1f} MB free); make space "
                    "or pass outputs_root= on another disk"
                )
        except PinnkanError as exc:
            if created:
                _remove_if_untouched(path, top)
            print(f"pinnkan: error: {exc}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        if created and key == "hydra.run.dir":
            _CREATED[path] = top


def _remove_if_untouched(run_dir: Path, top: Path) -> None:
    """Delete a run directory holding only what Hydra and the lock put there, and its parents
    up to `top` when that leaves them empty."""
    run_dir = run_dir.absolute()
    try:
        names = {p.name for p in run_dir.iterdir()}
    except OSError:
        return
    if any(n not in HYDRA_FILES and not n.endswith(".log") for n in names):
        return
    release(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    while parent != top.parent and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def set_threads(cfg: DictConfig, hc: Any) -> None:
    """Apply the config's `threads` (see pinnkan.run.sweep.threads_for_job) to torch."""
    launcher = None
    if hc.mode == RunMode.MULTIRUN:
        launcher = OmegaConf.to_container(hc.launcher, resolve=False)
    cores = cpu_count()
    n = threads_for_job(cfg.get("threads", "auto"), launcher, cores)
    if n is None:
        return
    if n > cores:
        log.warning("threads=%d is more than the %d cores this job may use", n, cores)
    torch.set_num_threads(n)
    log.info("torch threads: %d (%d cores)", n, cores)


def run_stage(cfg: DictConfig, stage: Callable[[RunConfig, Path, str], Any]) -> float | None:
    """Run `stage` for one Hydra job; returns the relative L2 error, or the held-out loss for a
    PDE without a reference (None if the job failed).

    In a single run a user error exits with status 2 after one line on stderr; in a multirun
    the failed job is logged and the sweep goes on with the other jobs.
    """
    keep_freed_memory()  # steady large per-step buffers; see pinnkan/common/malloc.py
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun:
        clear_failed(run_dir)
    try:
        set_threads(cfg, hc)
        plain = OmegaConf.to_container(cfg, resolve=True)
        yaml = OmegaConf.to_yaml(cfg, resolve=True)
        result = stage(RunConfig.from_dict(plain), run_dir, yaml)  # type: ignore[arg-type]
    except StageInterrupted as exc:  # a sweep stops too: the user asked the process to end
        saved = f"checkpoint at step {exc.saved_step}" if exc.saved_step else "no checkpoint"
        print(
            f"pinnkan: interrupted after step {exc.step} ({saved}, results.h5 status "
            f"interrupted); continue with: pinnkan {cfg.get('stage')} "
            f"resume={exc.run_dir}",
            file=sys.stderr,
        )
        sys.exit(exit_code(exc.signum))
    except KeyboardInterrupt:
        print("pinnkan: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # a user error, or one raised in the user's own code (a PDE family's residual, say)
        known = exc if isinstance(exc, PinnkanError | OmegaConfBaseException) else None
        known = known or user_code_error(exc)
        if known is None:  # pinnkan's own bug: the whole traceback
            raise
        msg = str(known).strip().splitlines()[0]
        if multirun:
            log.error("job %s failed: %s", hc.job.num, msg)
            mark_failed(run_dir, msg)
            return None
        print(f"pinnkan: error: {msg}", file=sys.stderr)
        if run_dir.absolute() in _CREATED:  # refused before it wrote anything: no litter
            _remove_if_untouched(run_dir, _CREATED[run_dir.absolute()])
        sys.exit(EXIT_USER_ERROR)
    m = result.metrics  # the sweep objective (Optuna): rel. L2, or the loss without a reference
    return float(m["rel_l2"] if "rel_l2" in m else m["loss"])
