"""Finding and reading runs for `pinnkan report`: every run directory below the given paths,
each read into one row (config, metrics, status) plus its error curve, sorted."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from pinnkan.adapters import FACTORS, adapter_names, get_adapter
from pinnkan.errors import PinnkanError
from pinnkan.io.results import RESULTS_FILE, results_problem
from pinnkan.pde import current_name
from pinnkan.run.sweep import failure_message

# column -> kind ("s" text, "f" float with NaN for none, "i" int with -1 for none)
COLUMNS: dict[str, str] = {
    "run": "s",
    "stage": "s",
    "pde": "s",
    "target": "s",
    "adapter": "s",
    "cr": "f",
    "lr_strategy": "s",
    "multipliers": "s",  # LoTRA lr constants c_G/c_U1/c_U2/c_U3
    "init": "s",
    "seed": "i",
    "ranks": "s",
    "n_trainable": "i",
    "rel_l2": "f",
    "max_abs_error": "f",
    "nrmse": "f",  # PDEBench's metrics (time-dependent runs; pinnkan.run.pdebench_metrics)
    "brmse": "f",
    "steps": "i",
    "train_seconds": "f",
    "status": "s",
    "note": "s",
}


def is_tucker(adapter: str) -> bool:
    """Whether cr, lr_strategy and init apply to the adapter (a registered Tucker kind)."""
    return adapter in adapter_names() and get_adapter(adapter).tucker


@dataclass
class Run:
    """One row of the report plus what the plots need beside it."""

    row: dict[str, Any]
    path: Path
    history: dict[str, np.ndarray] = field(default_factory=dict)  # step, rel_l2


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Run directories at or below `paths`: those with a results.h5 or a .hydra folder."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise PinnkanError(f"{p} does not exist; pass a multirun directory or run directories")
        if p.is_file():
            problem = results_problem(p) if p.name == RESULTS_FILE else "not a results.h5"
            if problem:
                raise PinnkanError(
                    f"{p}: {problem}; pass a run directory, a multirun directory or a run's "
                    "results.h5"
                )
            found.add(p.parent.resolve())
            continue
        for marker in (RESULTS_FILE, ".hydra"):
            found.update(m.parent.resolve() for m in p.rglob(marker))
            if (p / marker).exists():
                found.add(p.resolve())
    return sorted(found)


def _empty_row(path: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        c: (math.nan if k == "f" else -1 if k == "i" else "") for c, k in COLUMNS.items()
    }
    row["run"] = str(path)
    return row


def _load_yaml(text: str) -> dict[str, Any]:
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def multipliers_text(mult: Any) -> str:
    """LoTRA's per-component lr constants as "c_G/c_U1/c_U2/c_U3" (1 where not given)."""
    if not isinstance(mult, dict):
        return ""
    return "/".join(f"{float(mult.get(k, 1.0)):g}" for k in FACTORS)


def _from_config(row: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Fill stage, PDE, target, adapter, cr, lr_strategy, init and seed from a run's config."""
    stage = str(cfg.get("stage", row["stage"]) or "")
    pde = cfg.get("pde") or {}
    adapter = cfg.get("adapter") or {}
    row["stage"] = stage
    row["pde"] = row["pde"] or current_name(str(pde.get("name", "")))
    if not row["target"]:
        reference = pde.get("reference") or {}
        if reference.get("initial"):  # the member is the file's sample: its parameters too
            params = {"sample": reference.get("sample", 0)}
        else:
            params = pde.get("target" if stage == "transfer" else "source")
        row["target"] = json.dumps(params, sort_keys=True) if params else ""
    name = str(adapter.get("name", "")) if stage == "transfer" else ""
    row["adapter"] = name
    if is_tucker(name):
        try:
            row["cr"] = float(cfg.get("cr"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
        row["lr_strategy"] = str(adapter.get("lr_strategy", ""))
        row["multipliers"] = multipliers_text(adapter.get("multipliers"))
        row["init"] = str(adapter.get("init", "")) if name == "lotra" else ""
    if row["seed"] == -1 and isinstance(cfg.get("seed"), int):
        row["seed"] = int(cfg["seed"])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _member(attrs: dict[str, Any]) -> str:
    """The member a run solved: its parameters (JSON), and for one posed from a data file's
    sample (pde.reference.initial) the sample, which its parameters do not tell apart."""
    params = json.loads(_text(attrs["pde_params"]))
    if bool(attrs.get("reference_initial", False)):
        params["sample"] = int(attrs["reference_sample"])
    return json.dumps(params, sort_keys=True)


def read_run(run_dir: Path) -> Run:
    """The report row of one run directory (status missing / unreadable when it has to be)."""
    run_dir = Path(run_dir)
    row = _empty_row(run_dir)
    run = Run(row=row, path=run_dir)
    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    results = run_dir / RESULTS_FILE
    failed = failure_message(run_dir)
    if not results.is_file():
        row["status"] = "missing"
        row["note"] = failed or "no results.h5"
        if hydra_cfg.is_file():
            _from_config(row, _load_yaml(hydra_cfg.read_text(encoding="utf-8")))
        return run
    try:
        with h5py.File(results, "r") as f:
            attrs = {k: f.attrs[k] for k in f.attrs}
            row["status"] = _text(attrs.get("status", "ok"))
            row["stage"] = _text(attrs["stage"])
            row["pde"] = current_name(_text(attrs["pde"]))  # one family, one name
            row["target"] = _member(attrs)
            row["seed"] = int(attrs["seed"])
            _from_config(row, _load_yaml(_text(attrs.get("config", ""))))
            metrics = {k: f["metrics"].attrs[k] for k in f["metrics"].attrs}
            for key in ("n_trainable", "steps"):
                if key in metrics:
                    row[key] = int(metrics[key])
            for key in ("rel_l2", "max_abs_error", "nrmse", "brmse", "train_seconds"):
                if key in metrics:
                    row[key] = float(metrics[key])
            if "lotra" in f:
                shapes = [
                    (int(name.removeprefix("layer_")), f["lotra"][name]["G"].shape)
                    for name in f["lotra"]
                ]
                row["ranks"] = ";".join("x".join(map(str, s)) for _, s in sorted(shapes))
            if "history" in f and {"step", "rel_l2"} <= set(f["history"]):
                run.history = {k: f["history"][k][()] for k in ("step", "rel_l2")}
    except (OSError, KeyError, ValueError, TypeError) as exc:
        row["status"] = "unreadable"
        first = str(exc).splitlines()[0] if str(exc) else ""
        row["note"] = results_problem(results) or f"{type(exc).__name__}: {first}"
        if hydra_cfg.is_file():
            _from_config(row, _load_yaml(hydra_cfg.read_text(encoding="utf-8")))
        return run
    if row["status"] == "diverged":
        row["note"] = failed or "non-finite loss"
    elif failed:
        row["note"] = failed
    elif _text(attrs.get("reference", "")) == "none":
        loss = metrics.get("loss")
        row["note"] = "no reference" + (f": held-out loss {float(loss):.3e}" if loss else "")
    return run


def _sort_key(run: Run) -> tuple:
    r = run.row
    cr = -r["cr"] if not math.isnan(r["cr"]) else 0.0
    return (
        r["stage"],
        r["pde"],
        r["target"],
        r["adapter"],
        r["lr_strategy"],
        r["multipliers"],
        r["init"],
        cr,
        r["seed"],
        r["run"],
    )


def collect(paths: Iterable[Path]) -> list[Run]:
    """Every run below `paths`, sorted, with `run` relative to their common parent."""
    dirs = find_run_dirs(paths)
    if not dirs:
        shown = ", ".join(str(p) for p in paths)
        raise PinnkanError(
            f"no results.h5 and no Hydra job directory below {shown}; pass a multirun "
            "directory (outputs/multirun/...) or run directories"
        )
    runs = [read_run(d) for d in dirs]
    base = Path(*Path(dirs[0]).parts[: _common_depth(dirs)]) if len(dirs) > 1 else dirs[0].parent
    for run in runs:
        run.row["run"] = str(run.path.relative_to(base)) if run.path != base else run.path.name
    return sorted(runs, key=_sort_key)


def _common_depth(dirs: list[Path]) -> int:
    parts = [d.parts for d in dirs]
    depth = 0
    while all(len(p) > depth for p in parts) and len({p[depth] for p in parts}) == 1:
        depth += 1
    return depth
