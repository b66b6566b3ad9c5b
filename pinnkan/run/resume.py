"""Resuming a stopped run: the config fingerprint a resume must match, the checks before it
continues from checkpoint.pt, and what a failed write leaves to resume from."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pinnkan.common.atomic import WriteFailed
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import STATE_FILE, remove_stale_temporaries
from pinnkan.io.results import RESULTS_FILE, finished
from pinnkan.run.config import RunConfig
from pinnkan.train.state import TrainState, is_out_of_memory, load_train_state

log = logging.getLogger("pinnkan")


def config_fingerprint(cfg: dict[str, Any]) -> str:
    """Hash of the resolved config without `resume`: a resumed run must have the same one."""
    body = {k: v for k, v in cfg.items() if k != "resume"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def load_resume(cfg: RunConfig, run_dir: Path, stage: str) -> tuple[dict, TrainState] | None:
    """The training state to continue from when cfg has `resume`, after every check."""
    resume = cfg.resume
    if not resume:
        return None
    if Path(resume).resolve() != Path(run_dir).resolve():
        raise PinnkanError(
            f"resume={resume} must be the directory this run writes to ({run_dir}); "
            f"the command `pinnkan {stage} resume=<run dir>` sets both"
        )
    run_dir = Path(run_dir)
    if finished(run_dir / RESULTS_FILE):
        raise PinnkanError(f"{run_dir} already finished (results.h5 status ok); nothing to resume")
    remove_stale_temporaries(run_dir)
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise PinnkanError(
            f"no checkpoint in {run_dir}: the run stopped before its first checkpoint "
            "(train.checkpoint_every); start it again"
        )
    meta, state = load_train_state(path)
    if meta.get("stage") != stage:
        raise PinnkanError(
            f"{run_dir} holds a {meta.get('stage')} run; resume it with "
            f"`pinnkan {meta.get('stage')} resume={run_dir}`"
        )
    if meta.get("fingerprint") != config_fingerprint(cfg.as_dict()):
        raise PinnkanError(
            f"the config differs from the one {run_dir} started with; resume takes no other "
            "overrides (the run continues with its own config)"
        )
    log.info("resuming %s from step %d (%s)", run_dir, state.step, path)
    return meta, state


@contextmanager
def stage_faults(run_dir: Path, stage: str) -> Iterator[None]:
    """A failed write (disk full, ...) ends the stage with one line saying what survived: the
    last complete checkpoint.pt and how to resume from it once there is space again. Memory
    running out outside a training step (evaluation, adapter init) is one line too."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, WriteFailed):
            raise WriteFailed(f"{exc}; {_resume_hint(run_dir, stage)}") from None
        if is_out_of_memory(exc):  # outside a training step (those are OutOfMemory)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise PinnkanError(
                f"out of memory ({first}); lower train.n_interior / train.n_boundary, "
                "model.hidden or eval.n"
            ) from None
        raise


def _resume_hint(run_dir: Path, stage: str) -> str:
    """What survived a failed write, and how to go on from it."""
    state = Path(run_dir) / STATE_FILE
    if not state.is_file():
        return "no checkpoint was written yet: make space and start the run again"
    try:
        step = f" (step {load_train_state(state)[1].step})"
    except PinnkanError:
        step = ""
    return (
        f"the last complete checkpoint{step} is intact: make space, then "
        f"`pinnkan {stage} resume={run_dir}`"
    )
