"""The report's figures: rel. L2 error against cr and against trainable parameters, and the
error curves, one panel per PDE and target."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from pinnkan.io.plots import save_png
from pinnkan.report.collect import Run, is_tucker

REFERENCES = ("full", "scratch")  # horizontal reference lines of the error-vs-cr plot
DPI = 100


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
            if is_tucker(r["adapter"]) and not math.isnan(r["cr"]):
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
