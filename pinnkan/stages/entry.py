"""Shared wrapper of the stage entry points: resolve the Hydra config to a plain dict, run the
Hydra-free stage function in the Hydra run directory, and turn user errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pinnkan.errors import PinnkanError
from pinnkan.interrupts import exit_code
from pinnkan.malloc import keep_freed_memory
from pinnkan.runner import StageInterrupted

log = logging.getLogger("pinnkan")

EXIT_USER_ERROR = 2

# (job number, message) of the jobs of this process' sweep that failed with a user error;
# the CLI reads it after the sweep to exit non-zero (in-process launchers only).
FAILED_JOBS: list[tuple[int, str]] = []


def run_stage(cfg: DictConfig, stage: Callable[[dict[str, Any], Path, str], Any]) -> float | None:
    """Run `stage` for one Hydra job; returns the relative L2 error (None if the job failed).

    In a single run a user error exits with status 2 after one line on stderr; in a multirun
    the failed job is logged and the sweep goes on with the other jobs.
    """
    keep_freed_memory()  # steady large per-step buffers; see pinnkan/malloc.py
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        yaml = OmegaConf.to_yaml(cfg, resolve=True)
        result = stage(plain, run_dir, yaml)  # type: ignore[arg-type]
    except (PinnkanError, OmegaConfBaseException) as exc:
        msg = str(exc).strip().splitlines()[0]
        if hc.mode == RunMode.MULTIRUN:
            log.error("job %s failed: %s", hc.job.num, msg)
            FAILED_JOBS.append((int(hc.job.num), msg))
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
