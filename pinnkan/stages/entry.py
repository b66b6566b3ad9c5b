"""Shared wrapper of the stage entry points: resolve the Hydra config to a plain dict, run the
Hydra-free stage function in the Hydra run directory, and turn user errors into one line."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pinnkan.errors import PinnkanError
from pinnkan.interrupts import exit_code
from pinnkan.malloc import keep_freed_memory
from pinnkan.runner import StageInterrupted
from pinnkan.sweep import (
    clear_failed,
    cpu_count,
    failures,
    job_dirname,
    mark_failed,
    threads_for_job,
)

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


def set_threads(cfg: DictConfig, hc: Any) -> None:
    """Apply the config's `threads` (see pinnkan.sweep.threads_for_job) to torch."""
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


def run_stage(cfg: DictConfig, stage: Callable[[dict[str, Any], Path, str], Any]) -> float | None:
    """Run `stage` for one Hydra job; returns the relative L2 error (None if the job failed).

    In a single run a user error exits with status 2 after one line on stderr; in a multirun
    the failed job is logged and the sweep goes on with the other jobs.
    """
    keep_freed_memory()  # steady large per-step buffers; see pinnkan/malloc.py
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun:
        clear_failed(run_dir)
    try:
        set_threads(cfg, hc)
        plain = OmegaConf.to_container(cfg, resolve=True)
        yaml = OmegaConf.to_yaml(cfg, resolve=True)
        result = stage(plain, run_dir, yaml)  # type: ignore[arg-type]
    except (PinnkanError, OmegaConfBaseException) as exc:
        msg = str(exc).strip().splitlines()[0]
        if multirun:
            log.error("job %s failed: %s", hc.job.num, msg)
            mark_failed(run_dir, msg)
            return None
        print(f"pinnkan: error: {msg}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
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
    return float(result.metrics["rel_l2"])
