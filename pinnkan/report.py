"""`pinnkan report`: many runs' results.h5 files as one table (CSV, HDF5, stdout) and plots.

No Hydra here: a run is any directory with a ``results.h5``, or a Hydra job directory (with
``.hydra/``) without one, which is reported as ``missing`` (a job that failed before writing).
Full fine-tuning runs lacking the ΔA diagnostics get them computed (pinnkan.diagnostics), the
only thing this command writes into a run directory.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import h5py
import numpy as np
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

import pinnkan
from pinnkan.atomic import atomic_replace, make_dir, unwritable_dir
from pinnkan.diagnostics import diagnose_run, has_diagnostics, read_diagnostics
from pinnkan.errors import PinnkanError
from pinnkan.plots import save_png
from pinnkan.results import RESULTS_FILE, results_problem
from pinnkan.sweep import failure_message

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
    "steps": "i",
    "train_seconds": "f",
    "status": "s",
    "note": "s",
}
PRINTED = [c for c in COLUMNS if c != "note"]
TUCKER_ADAPTERS = ("lotra", "slim")  # the adapters cr, lr_strategy and init apply to
REFERENCES = ("full", "scratch")  # horizontal reference lines of the error-vs-cr plot
DPI = 100


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
    return "/".join(f"{float(mult.get(k, 1.0)):g}" for k in ("G", "U1", "U2", "U3"))


def _from_config(row: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Fill stage, PDE, target, adapter, cr, lr_strategy, init and seed from a run's config."""
    stage = str(cfg.get("stage", row["stage"]) or "")
    pde = cfg.get("pde") or {}
    adapter = cfg.get("adapter") or {}
    row["stage"] = stage
    row["pde"] = row["pde"] or str(pde.get("name", ""))
    if not row["target"]:
        params = pde.get("target" if stage == "transfer" else "source")
        row["target"] = json.dumps(params, sort_keys=True) if params else ""
    name = str(adapter.get("name", "")) if stage == "transfer" else ""
    row["adapter"] = name
    if name in TUCKER_ADAPTERS:
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
            row["pde"] = _text(attrs["pde"])
            row["target"] = json.dumps(json.loads(_text(attrs["pde_params"])), sort_keys=True)
            row["seed"] = int(attrs["seed"])
            _from_config(row, _load_yaml(_text(attrs.get("config", ""))))
            metrics = {k: f["metrics"].attrs[k] for k in f["metrics"].attrs}
            for key in ("n_trainable", "steps"):
                if key in metrics:
                    row[key] = int(metrics[key])
            for key in ("rel_l2", "max_abs_error", "train_seconds"):
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


# --- writing -------------------------------------------------------------------------------
FLOAT_FORMATS = {"cr": "{:g}", "train_seconds": "{:.1f}"}  # others: "{:.3e}"


def _cell(value: Any, kind: str, col: str) -> str:
    """Text of one cell for stdout (empty for none)."""
    if kind == "f":
        return "" if math.isnan(value) else FLOAT_FORMATS.get(col, "{:.3e}").format(value)
    if kind == "i":
        return "" if value == -1 else str(value)
    return str(value)


def write_csv(path: Path, runs: list[Run]) -> None:
    """report.csv: one row per run, the COLUMNS in order (floats at full precision)."""
    with atomic_replace(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for run in runs:
            cells = []
            for col, kind in COLUMNS.items():
                value = run.row[col]
                full = kind == "f" and not math.isnan(value)
                cells.append(repr(float(value)) if full else _cell(value, kind, col))
            w.writerow(cells)


def write_h5(path: Path, runs: list[Run], sources: list[Path]) -> None:
    """report.h5: group ``table`` with one dataset per column (readable with plain h5py)."""
    with atomic_replace(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["pinnkan_version"] = str(pinnkan.__version__)
        f.attrs["columns"] = json.dumps(list(COLUMNS))
        f.attrs["n_rows"] = len(runs)
        f.attrs["sources"] = json.dumps([str(s) for s in sources])
        f.attrs["description"] = (
            "one row per run; table/<column> datasets of equal length; NaN / -1 / '' = none"
        )
        table = f.create_group("table")
        for col, kind in COLUMNS.items():
            values = [run.row[col] for run in runs]
            if kind == "s":
                table.create_dataset(
                    col, data=np.array(values, dtype=object), dtype=h5py.string_dtype()
                )
            else:
                table.create_dataset(
                    col, data=np.array(values, np.float64 if kind == "f" else np.int64)
                )


def format_table(rows: list[dict[str, Any]], columns: list[str], kinds: dict[str, str]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[_cell(r[c], kinds[c], c) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def fmt(vals: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if kinds[c] != "s" else v.ljust(w) for v, w, c in zip(vals, widths, columns)
        ).rstrip()

    lines = [fmt(list(columns)), fmt(["-" * w for w in widths])]
    lines += [fmt(row) for row in cells]
    return "\n".join(lines)


def _short(run: str, width: int = 48) -> str:
    """A run path for the printed table: its first and last parts, the last one cut at
    `width` (the job directory name starts with the job number and the swept values)."""
    if len(run) <= width:
        return run
    parts = Path(run).parts
    text = f"{parts[0]}/…/{parts[-1]}" if len(parts) > 2 else run
    return text if len(text) <= width else text[: width - 1] + "…"


# --- plots ---------------------------------------------------------------------------------
def _groups(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Finished transfer runs grouped by (PDE, target parameters)."""
    out: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        r = run.row
        if r["stage"] == "transfer" and r["status"] == "ok" and not math.isnan(r["rel_l2"]):
            out[(r["pde"], r["target"])].append(run)
    return dict(sorted(out.items()))


def _series_label(r: dict[str, Any]) -> str:
    # runs that differ in lr strategy, constants or init are separate series, never averaged
    if r["adapter"] == "lotra":
        return f"lotra ({r['lr_strategy']} c={r['multipliers']}, init {r['init']})"
    if r["adapter"] == "slim":
        return f"slim ({r['lr_strategy']} c={r['multipliers']})"
    return r["adapter"]


def _grid(n: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _title(pde: str, target: str) -> str:
    try:
        params = ", ".join(f"{k}={v:g}" for k, v in json.loads(target).items())
    except (ValueError, TypeError, AttributeError):
        params = target
    return f"{pde} {params}"


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    return save_png(fig, path, DPI)


def plot_error_vs_cr(path: Path, runs: list[Run]) -> Path | None:
    """Rel. L2 vs cr per PDE+target: Tucker adapters as lines (mean over seeds, min–max bars),
    full fine-tuning and scratch as horizontal reference lines (min–max band)."""
    groups = _groups(runs)
    if not groups:
        return None
    fig, axes = _grid(len(groups))
    colours = {"full": "C3", "scratch": "C7"}
    for ax, ((pde, target), members) in zip(axes, groups.items()):
        series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        refs: dict[str, list[float]] = defaultdict(list)
        for run in members:
            r = run.row
            if r["adapter"] in TUCKER_ADAPTERS and not math.isnan(r["cr"]):
                series[_series_label(r)][r["cr"]].append(r["rel_l2"])
            elif r["adapter"] in REFERENCES:
                refs[r["adapter"]].append(r["rel_l2"])
        crs: set[float] = set()
        for label, points in sorted(series.items()):
            x = sorted(points)
            crs.update(x)
            mean = np.array([np.mean(points[c]) for c in x])
            lo = mean - np.array([np.min(points[c]) for c in x])
            hi = np.array([np.max(points[c]) for c in x]) - mean
            several = any(len(points[c]) > 1 for c in x)
            ax.errorbar(
                x,
                mean,
                yerr=(lo, hi) if several else None,
                marker="o",
                ms=4,
                capsize=3,
                label=label,
            )
        for name, values in sorted(refs.items()):
            m = float(np.mean(values))
            ax.axhline(
                m, color=colours.get(name), ls="--", lw=1.2, label=f"{name} (n={len(values)})"
            )
            if len(values) > 1:
                ax.axhspan(min(values), max(values), color=colours.get(name), alpha=0.12)
        ax.set_yscale("log")
        if crs:
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(crs), [f"{c:g}" for c in sorted(crs)])
        ax.set_xlabel("cr")
        ax.set_ylabel("rel. L2 error")
        ax.set_title(_title(pde, target), fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_error_vs_params(path: Path, runs: list[Run]) -> Path | None:
    """Rel. L2 against trainable parameters for every finished transfer run."""
    groups = _groups(runs)
    if not groups:
        return None
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    markers = {"lotra": "o", "full": "s", "scratch": "^", "slim": "D"}
    for i, ((pde, target), members) in enumerate(groups.items()):
        by_adapter: dict[str, list[Run]] = defaultdict(list)
        for run in members:
            by_adapter[run.row["adapter"]].append(run)
        for adapter, rs in sorted(by_adapter.items()):
            ax.scatter(
                [r.row["n_trainable"] for r in rs],
                [r.row["rel_l2"] for r in rs],
                color=f"C{i}",
                marker=markers.get(adapter, "x"),
                s=24,
                label=f"{_title(pde, target)}: {adapter}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short decades
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("rel. L2 error")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_curves(path: Path, runs: list[Run]) -> Path | None:
    """history/rel_l2 against step, every transfer run of a PDE+target overlaid."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.history and len(run.history["step"]):
            groups[(run.row["pde"], run.row["target"])].append(run)
    if not groups:
        return None
    fig, axes = _grid(len(groups))
    for ax, ((pde, target), members) in zip(axes, sorted(groups.items())):
        for run in members:
            r = run.row
            label = r["adapter"] or r["stage"]
            if not math.isnan(r["cr"]):
                label += f" cr={r['cr']:g}"
            label += f" s{r['seed']}"
            ax.semilogy(run.history["step"], run.history["rel_l2"], lw=1, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("rel. L2 error")
        ax.set_title(_title(pde, target), fontsize=9)
        if len(members) <= 12:
            ax.legend(fontsize=6)
    return _save(fig, path)


# --- diagnostics ---------------------------------------------------------------------------
DIAG_KINDS = {"run": "s", "layer": "i", "shape": "s", "delta_norm": "f"}


def diagnostics_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """Per layer of every finished full fine-tuning run: HOSVD error of ΔA at each cr (the
    diagnostics are computed and stored in the run's results.h5 where missing)."""
    rows = []
    for run in runs:
        r = run.row
        if r["stage"] != "transfer" or r["adapter"] != "full" or r["status"] != "ok":
            continue
        results = run.path / RESULTS_FILE
        layers = read_diagnostics(results) if has_diagnostics(results) else diagnose_run(run.path)
        for layer, d in layers.items():
            row: dict[str, Any] = {
                "run": r["run"],
                "layer": layer,
                "shape": "x".join(map(str, d.shape)),
                "delta_norm": d.delta_norm,
            }
            for cr, ranks, err in zip(d.crs, d.ranks, d.hosvd_rel_error):
                row[f"ranks@{cr:g}"] = "x".join(map(str, ranks))
                row[f"hosvd_err@{cr:g}"] = err
            rows.append(row)
    return rows


def _diag_kinds(rows: list[dict[str, Any]]) -> dict[str, str]:
    kinds = dict(DIAG_KINDS)
    for key in rows[0]:
        kinds.setdefault(key, "f" if key.startswith("hosvd_err") else "s")
    return kinds


def run_report(paths: list[Path], out: Path | None = None, stream: TextIO | None = None) -> Path:
    """Collect, write report.csv / report.h5 / PNGs into `out`, print the table; returns `out`."""
    stream = stream or sys.stdout
    runs = collect(paths)
    first = Path(paths[0])
    out = Path(out) if out is not None else (first if first.is_dir() else first.parent)
    problem = unwritable_dir(out)
    if problem:
        raise PinnkanError(f"cannot write the report to {out}: {problem}; pass --out DIR")
    make_dir(out)
    diag = diagnostics_rows(runs)
    write_csv(out / "report.csv", runs)
    write_h5(out / "report.h5", runs, list(paths))
    written = [out / "report.csv", out / "report.h5"]
    for name, plot in (
        ("error_vs_cr.png", plot_error_vs_cr),
        ("error_vs_params.png", plot_error_vs_params),
        ("curves.png", plot_curves),
    ):
        made = plot(out / name, runs)
        if made is not None:
            written.append(made)
    shown = [{**r.row, "run": _short(r.row["run"])} for r in runs]
    print(format_table(shown, PRINTED, COLUMNS), file=stream)
    notes = [(r.row["run"], r.row["note"]) for r in runs if r.row["note"]]
    for run_name, note in notes:
        print(f"  {run_name}: {note}", file=stream)
    if diag:
        kinds = _diag_kinds(diag)
        with (
            atomic_replace(out / "diagnostics.csv") as tmp,
            open(tmp, "w", newline="", encoding="utf-8") as fh,
        ):
            w = csv.DictWriter(fh, fieldnames=list(kinds))
            w.writeheader()
            w.writerows(diag)
        written.append(out / "diagnostics.csv")
        print(
            "\nΔA of full fine-tuning: relative truncated-HOSVD error at the ranks of each cr",
            file=stream,
        )
        shown_diag = [{**d, "run": _short(d["run"])} for d in diag]
        print(format_table(shown_diag, list(kinds), kinds), file=stream)
    counts = defaultdict(int)
    for r in runs:
        counts[r.row["status"]] += 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(
        f"\n{len(runs)} runs ({summary}); wrote {', '.join(p.name for p in written)} to {out}",
        file=stream,
    )
    return out
