"""Sweep plumbing without Hydra: launcher extras, torch threads per job, failed-job markers.

A failed sweep job writes ``failed.txt`` (one line: the error) into its job directory, so the
failure survives whichever launcher ran the job (in-process, joblib worker, submitit process)
and ``pinnkan report`` can show it next to the job's missing or diverged results.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from pinnkan.errors import PinnkanError

log = logging.getLogger("pinnkan")
# optuna imports alembic, which logs one INFO line per plugin it sets up ("setup plugin ...")
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

FAILED_FILE = "failed.txt"
SWEEP_EXTRA_HINT = 'pip install -e ".[sweep]"'
# hydra/launcher choice -> the plugin module that provides it (None: built into Hydra)
LAUNCHERS: dict[str, str | None] = {
    "basic": None,
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
}
OPTUNA_EXTRA_HINT = 'pip install -e ".[optuna]"'
# hydra/sweeper choice -> the plugin module that provides it (None: built into Hydra)
SWEEPERS: dict[str, str | None] = {
    "basic": None,
    "optuna": "hydra_plugins.hydra_optuna_sweeper",
}
# Hydra's sweep functions: choice(a,b) lists values; interval/range/tag... are checked by Hydra
_SWEEP_FUNCTION = re.compile(r"\s*(\w+)\s*\((.*)\)\s*", re.DOTALL)


MAX_JOB_DIRNAME = 200  # bytes; file systems refuse names over 255


def job_dirname(num: Any, overrides: Any) -> str:
    """A sweep job's directory name, `<num>_<overrides>` (hydra.sweep.subdir in conf/base.yaml),
    shortened when many overrides would exceed the file system's name limit: the head of the
    overrides, then `+~` and a hash of the whole, so distinct jobs keep distinct names."""
    name = f"{num}_{overrides}"
    if len(name.encode()) <= MAX_JOB_DIRNAME:
        return name
    digest = hashlib.sha1(str(overrides).encode()).hexdigest()[:10]
    head = name.encode()[: MAX_JOB_DIRNAME - 13].decode(errors="ignore")
    return f"{head}+~{digest}"


# Hydra plugin groups checked before Hydra runs: (choice -> plugin module, what a missing
# plugin needs, in words)
PLUGIN_GROUPS: dict[str, tuple[dict[str, str | None], str]] = {
    "hydra/launcher": (
        LAUNCHERS,
        f"the optional sweep launchers; install them with `{SWEEP_EXTRA_HINT}` "
        "(or pip install hydra-joblib-launcher hydra-submitit-launcher)",
    ),
    "hydra/sweeper": (
        SWEEPERS,
        f"the optional Optuna sweeper; install it with `{OPTUNA_EXTRA_HINT}` "
        "(or pip install hydra-optuna-sweeper)",
    ),
}


def check_plugin(group: str, choice: str) -> str | None:
    """A one-line message when `<group>=<choice>` (a PLUGIN_GROUPS group) cannot run here,
    else None."""
    plugins, needs = PLUGIN_GROUPS[group]
    if choice not in plugins:
        return f"unknown {group} {choice!r}; choose one of: {', '.join(plugins)}"
    if not _plugin_present(plugins[choice]):
        return f"{group}={choice} needs {needs}"
    return None


def _plugin_present(module: str | None) -> bool:
    try:
        return module is None or find_spec(module) is not None
    except ModuleNotFoundError:  # the hydra_plugins namespace itself is absent
        return False


def sweep_values(value: str) -> list[str]:
    """The plain values of an override's value that the CLI can check before Hydra: a comma
    list's items, `choice(a,b)`'s items, none for Hydra's other sweep functions
    (`interval(...)`, `range(...)`, `tag(log,interval(...))`, ...: Hydra checks those)."""
    call = _SWEEP_FUNCTION.fullmatch(value)
    if call is None:
        return value.split(",")
    if call.group(1) == "choice":
        return [v.strip().strip("'\"") for v in call.group(2).split(",")]
    return []


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def joblib_workers(n_jobs: Any, cores: int) -> int:
    """How many jobs joblib runs at once for its `n_jobs` (-1: all cores, -2: all but one)."""
    if n_jobs is None:
        return 1
    n = int(n_jobs)
    if n < 0:
        n = cores + 1 + n
    return max(1, n)


def threads_for_job(setting: Any, launcher: Mapping[str, Any] | None, cores: int) -> int | None:
    """Torch threads for one job, so parallel sweep jobs share the cores instead of fighting.

    `setting` is the config's `threads`: a positive int is used as is; `auto` gives
    cores // parallel jobs under the joblib launcher, `cpus_per_task` (else 1: submitit_local
    starts every job at once) under submitit, and None (torch's default) otherwise.
    `launcher` is the job's `hydra.launcher` config (None outside a multirun).
    """
    if setting != "auto":
        ok = isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1
        if not ok:
            raise PinnkanError(f"threads={setting!r}; pass auto or a positive integer")
        return setting
    target = str((launcher or {}).get("_target_", ""))
    if "JoblibLauncher" in target:
        return max(1, cores // joblib_workers(launcher.get("n_jobs", -1), cores))  # type: ignore[union-attr]
    if "submitit_launcher" in target:
        cpus = launcher.get("cpus_per_task")  # type: ignore[union-attr]
        return max(1, int(cpus)) if cpus else 1
    return None


def mark_failed(job_dir: Path, message: str) -> None:
    """Record a failed sweep job in its directory (read back by `failures`)."""
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / FAILED_FILE).write_text(message.strip() + "\n", encoding="utf-8")
    except OSError as exc:  # e.g. the disk is full: the job's log line must do
        log.error("cannot record the failure in %s: %s", job_dir, exc.strerror or exc)


def clear_failed(job_dir: Path) -> None:
    """Forget an earlier failure of this job directory (a job run again into the same dir)."""
    (job_dir / FAILED_FILE).unlink(missing_ok=True)


def failure_message(job_dir: Path) -> str | None:
    """The recorded error of a failed job, or None when the job did not fail."""
    path = job_dir / FAILED_FILE
    try:
        return path.read_text(encoding="utf-8").strip() or "failed"
    except OSError:
        return None


def failures(sweep_dir: Path, since: float = 0.0) -> list[tuple[Path, str]]:
    """(job dir, message) of the jobs below `sweep_dir` that failed at or after `since`."""
    found = []
    for marker in sorted(Path(sweep_dir).rglob(FAILED_FILE)):
        try:
            fresh = marker.stat().st_mtime >= since
        except OSError:
            continue
        message = failure_message(marker.parent)
        if fresh and message is not None:
            found.append((marker.parent, message))
    return found
