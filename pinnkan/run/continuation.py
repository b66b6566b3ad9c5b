"""Where a transfer starts (`transfer.start`): from the source (the default), from the nearest
member already solved beside it (`nearest`: in a sweep, the jobs numbered before this one), or
from a given transfer run; optionally moved along the secant through the two nearest members
(`transfer.predictor=secant`).

A start changes only the trainable tensors' first values (Tucker factors, layers trained in
full): the result is still an update of the same source, so `merge` needs only the source and
the member's own files. The members it started from are recorded (`start_from`,
`predictor_from`), so the member can be reproduced alone with `transfer.start=<that run>`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pinnkan.adapters.files import FACTORS, adapter_file, check_base, read_adapter
from pinnkan.common.config_checks import as_int
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import MODEL_FILE, MODEL_FORMAT, load_checkpoint
from pinnkan.io.results import RESULTS_FILE, root_attrs
from pinnkan.network.kan import KAN
from pinnkan.pde import PDEFamily, current_name
from pinnkan.run.sweep import FAILED_FILE
from pinnkan.train.options import TransferOptions

if TYPE_CHECKING:
    from pinnkan.run.config import RunConfig

log = logging.getLogger("pinnkan")

STARTS = ("source", "nearest")  # or the path of a finished transfer run
PREDICTORS = ("none", "secant")  # or, with a path start, the second run of the secant
_JOB = re.compile(r"^(\d+)_")  # a sweep job's directory: <num>_<overrides>


@dataclass(frozen=True)
class Member:
    """A finished transfer run that a new one may start from."""

    run_dir: Path
    params: dict[str, float]
    job: int | None  # its number in a sweep (None: not a sweep job)


def validate(opts: TransferOptions) -> None:
    """One line for a bad `transfer.start` / `transfer.predictor`."""
    for key, value, names in (
        ("start", opts.start, STARTS),
        ("predictor", opts.predictor, PREDICTORS),
    ):
        if not isinstance(value, str) or not value:
            raise PinnkanError(f"transfer.{key}={value!r}: choose {' | '.join(names)} or a run")
        if value not in names and not Path(value).is_dir():
            raise PinnkanError(
                f"transfer.{key}={value!r} is neither {' | '.join(names)} nor a run directory"
            )
    if opts.predictor not in PREDICTORS and opts.start in STARTS:
        raise PinnkanError(
            "transfer.predictor=<run> is the secant's second member: it needs transfer.start=<run>"
        )
    if opts.predictor == "secant" and opts.start != "nearest":
        raise PinnkanError(
            "transfer.predictor=secant picks the two nearest solved members: it needs "
            "transfer.start=nearest (or give both runs: transfer.start=<run> "
            "transfer.predictor=<run>)"
        )
    if not (isinstance(opts.wait_seconds, int | float) and opts.wait_seconds >= 0):
        raise PinnkanError(f"transfer.wait_seconds={opts.wait_seconds!r} must be >= 0")
    opts.homotopy = as_int(opts.homotopy, "transfer.homotopy", 1, 10_000)
    opts.leg_steps = as_int(opts.leg_steps, "transfer.leg_steps", 1)


def job_number(run_dir: Path) -> int | None:
    """A sweep job's number from its directory name (`<num>_<overrides>`), else None."""
    match = _JOB.match(Path(run_dir).name)
    return int(match.group(1)) if match else None


def _ended(run_dir: Path) -> bool:
    return (run_dir / RESULTS_FILE).is_file() or (run_dir / FAILED_FILE).is_file()


def wait_for_earlier_jobs(run_dir: Path, timeout: float, poll: float = 1.0) -> None:
    """In a sweep, wait until jobs 0 … k-1 beside job k have ended (results or failed.txt), so
    the choice of the nearest member does not depend on which launcher ran them or how fast.
    With the basic launcher they have; with joblib or a cluster they may still run."""
    k = job_number(run_dir)
    if k is None or k == 0:
        return
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        jobs = {job_number(d): d for d in run_dir.parent.iterdir() if d.is_dir()}
        waiting = [j for j in range(k) if j not in jobs or not _ended(jobs[j])]
        if not waiting:
            return
        if time.monotonic() > deadline:
            log.warning(
                "transfer.start=nearest: jobs %s of the sweep still running after %g s "
                "(transfer.wait_seconds); choosing among the finished ones",
                waiting,
                timeout,
            )
            return
        if not announced:
            log.info("transfer.start=nearest: waiting for earlier sweep jobs %s", waiting)
            announced = True
        time.sleep(poll)


def solved_members(run_dir: Path, want: dict[str, Any]) -> list[Member]:
    """The finished transfer runs beside `run_dir` (the sweep's earlier jobs; outside a sweep,
    every sibling) whose family, source, adapter, cr and network equal `want`'s."""
    k = job_number(run_dir)
    out = []
    parent = Path(run_dir).parent
    if not parent.is_dir():
        return []
    for d in sorted(parent.iterdir()):
        if not d.is_dir() or d.resolve() == Path(run_dir).resolve():
            continue
        j = job_number(d)
        if k is not None and (j is None or j >= k):
            continue  # a sweep job starts only from jobs numbered before it
        attrs = root_attrs(d / RESULTS_FILE)
        if _mismatch(attrs, want) is None:
            params = json.loads(attrs.get("pde_params", "{}"))
            out.append(Member(d, {k_: float(v) for k_, v in params.items()}, j))
    return out


# what a member must share with the run that starts from it
MATCHED = ("source", "adapter", "model", "widths")


def _mismatch(attrs: dict[str, Any], want: dict[str, Any]) -> str | None:
    """Why a run (its results.h5 attributes) cannot start one with `want` (None: it can)."""
    if attrs.get("status") != "ok" or attrs.get("stage") != "transfer":
        return "not a finished transfer run"
    if current_name(str(attrs.get("pde"))) != want["pde"]:
        return f"pde={attrs.get('pde')}, this run is pde={want['pde']}"
    for key in MATCHED:
        if str(attrs.get(key)) != str(want[key]):
            return f"its {key} is {attrs.get(key)}, this run's {want[key]}"
    if not math.isclose(float(attrs.get("cr", -1.0)), float(want["cr"])):
        return f"its cr is {attrs.get('cr')}, this run's {want['cr']}"
    return None


def distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Euclidean distance between two members' parameters (the keys of `a`)."""
    return math.sqrt(sum((float(a[k]) - float(b.get(k, math.nan))) ** 2 for k in a))


def nearest(members: list[Member], params: dict[str, float], n: int) -> list[Member]:
    """The `n` members nearest to `params`; ties go to the earlier job, then the path."""

    def key(m: Member) -> tuple[float, int, str]:
        return (distance(params, m.params), m.job if m.job is not None else -1, str(m.run_dir))

    return sorted((m for m in members if math.isfinite(distance(params, m.params))), key=key)[:n]


def trainable_state(run_dir: Path, model: KAN) -> dict[str, Tensor]:
    """A finished member's trained tensors, named as `model`'s trainable parameters: the
    Tucker factors and full-trained layers of its adapter file (checked against `model`'s
    base), or, for full fine-tuning (no adapter file), its model file's layer tensors."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if any(layer.adapter is not None for layer in model.layers):
        try:
            adapter = read_adapter(adapter_file(run_dir))
        except PinnkanError as exc:
            raise PinnkanError(f"transfer.start: {run_dir} has no usable adapter ({exc})") from None
        check_base(adapter, model, "this transfer's source")
        state = {}
        for name, value in adapter.tensors.items():
            prefix, last = name.rsplit(".", 1)
            state[f"{prefix}.adapter.{last}" if last in FACTORS else name] = value
    else:
        _, merged = load_checkpoint(Path(run_dir) / MODEL_FILE, MODEL_FORMAT)
        state = {n: v for n, v in merged.items() if n in names}
    if set(state) != names:
        raise PinnkanError(
            f"transfer.start: {run_dir} was trained with other trainable tensors than this run "
            "(another adapter, cr or per-layer choice)"
        )
    return state


@torch.no_grad()
def apply_start(
    model: KAN,
    first: Member,
    second: Member | None,
    params: dict[str, float],
) -> dict[str, Any]:
    """Set `model`'s trainable tensors to `first`'s, moved along the secant through `second`
    when given (w = w1 + s·(w1 − w2), s the projection of params − p1 on p1 − p2); returns the
    attributes that record it."""
    state = trainable_state(first.run_dir, model)
    record: dict[str, Any] = {"start_from": str(first.run_dir)}
    if second is not None:
        other = trainable_state(second.run_dir, model)
        keys = sorted(first.params)
        d = [first.params[k] - second.params[k] for k in keys]
        dd = sum(v * v for v in d)
        s = sum((params[k] - first.params[k]) * dk for k, dk in zip(keys, d)) / dd if dd else 0.0
        state = {n: v + s * (v - other[n].to(v.dtype)) for n, v in state.items()}
        record |= {"predictor_from": str(second.run_dir), "predictor_step": s}
    own = dict(model.named_parameters())
    for name, value in state.items():
        own[name].copy_(value.to(own[name].dtype))
    return record


def choose_start(
    opts: TransferOptions,
    run_dir: Path,
    want: dict[str, Any],
    params: dict[str, float],
) -> tuple[Member | None, Member | None]:
    """The member(s) a transfer starts from: (None, None) for the source."""
    if opts.start == "source":
        return None, None
    if opts.start != "nearest":  # given runs: reproduce a recorded chain
        first = _given(Path(opts.start), want, "start")
        second = None
        if opts.predictor not in PREDICTORS:
            second = _given(Path(opts.predictor), want, "predictor")
        return first, second
    wait_for_earlier_jobs(run_dir, float(opts.wait_seconds))
    members = solved_members(run_dir, want)
    picked = nearest(members, params, 2 if opts.predictor == "secant" else 1)
    if not picked:
        log.info("transfer.start=nearest: no solved member beside %s; from the source", run_dir)
        return None, None
    if len(picked) == 2 and distance(picked[0].params, picked[1].params) > 0:
        return picked[0], picked[1]
    return picked[0], None


def _given(run_dir: Path, want: dict[str, Any], key: str) -> Member:
    """A run named by transfer.start / .predictor, refused in one line if it cannot start this."""
    attrs = root_attrs(run_dir / RESULTS_FILE)
    why = _mismatch(attrs, want)
    if why is not None:
        raise PinnkanError(f"transfer.{key}={run_dir}: {why}")
    params = json.loads(attrs.get("pde_params", "{}"))
    return Member(run_dir, {k: float(v) for k, v in params.items()}, job_number(run_dir))


def start(
    cfg: RunConfig,
    run_dir: Path,
    model: KAN,
    pde: PDEFamily,
    adapter: str,
    source_path: Path | None,
    resume: tuple[dict, Any] | None,
) -> dict[str, Any]:
    """Start the trainable tensors where `transfer.start` says (pinnkan.run.continuation) and
    return the record of it; a resumed run keeps the record of its first start."""
    opts = cfg.transfer  # validated with the stage's config (pinnkan.run.setup)
    if resume is not None:
        return dict(resume[0].get("start") or {"start": "source"})
    if opts.start == "source":
        return {"start": "source"}
    if adapter == "scratch":
        log.info("adapter=scratch starts afresh: transfer.start=%s unused", opts.start)
        return {"start": "source"}
    want = {
        "pde": pde.name,
        "source": str(source_path) if source_path else None,
        "adapter": adapter,
        "model": model.kind,
        "widths": json.dumps(model.widths),
        "cr": float(cfg.cr),
    }
    first, second = choose_start(opts, run_dir, want, dict(pde.params))
    if first is None:
        return {"start": opts.start, "start_from": None}
    record = apply_start(model, first, second, dict(pde.params))
    log.info(
        "transfer.start=%s: from %s%s",
        opts.start,
        first.run_dir,
        f" (secant through {second.run_dir})" if second else "",
    )
    return {"start": opts.start, **record}
