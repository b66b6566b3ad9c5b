"""PNG plots written beside results.h5: solution/error fields and training curves (Agg only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pinnkan.common.atomic import atomic_replace, make_dir
from pinnkan.io.results import RunResult

DPI = 100


def save_png(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Render ``fig`` with the Agg canvas to ``path`` atomically; no pyplot state is touched."""
    FigureCanvasAgg(fig)
    with atomic_replace(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def _as_2d(result: RunResult, u: np.ndarray) -> tuple[np.ndarray, str]:
    """Reduce a field to 2-D (middle slice of axes beyond the second) for display."""
    note = ""
    while u.ndim > 2:
        mid = u.shape[-1] // 2
        c = result.coords[u.ndim - 1]
        note += f", {c}={float(np.asarray(result.grid[c])[mid]):.3g}"
        u = u[..., mid]
    return u, note


def plot_fields(path: Path, result: RunResult) -> Path:
    """Plot prediction, reference and |error| side by side so a run can be judged at a glance."""
    u_pred = np.asarray(result.u_pred, dtype=np.float64)  # (n_c0, n_c1, ...)
    panels = [("prediction", u_pred)]
    u_ref = u_pred
    if result.u_ref is not None:  # else a run without a reference: the prediction alone
        u_ref = np.asarray(result.u_ref, dtype=np.float64)  # same shape
        panels += [("reference", u_ref), ("|error|", np.abs(u_pred - u_ref))]
    coords = result.coords
    fig = Figure(figsize=(4 * len(panels), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    if u_pred.ndim == 1:
        x = np.asarray(result.grid[coords[0]])  # (n_c0,)
        for ax, (title, u) in zip(axes, panels):
            ax.plot(x, u)
            ax.set_xlabel(coords[0])
            ax.set_ylabel("u")
            ax.set_title(title)
    else:
        x = np.asarray(result.grid[coords[0]])  # (n_c0,) -> horizontal axis
        y = np.asarray(result.grid[coords[1]])  # (n_c1,) -> vertical axis
        shown = [_as_2d(result, u) for _, u in panels]  # (n_c0, n_c1) slices, notes
        vmin = float(min(np.nanmin(u2) for u2, _ in shown[:2]))  # of what is shown: a 3-D
        vmax = float(max(np.nanmax(u2) for u2, _ in shown[:2]))  # field's slice, not all of it
        for i, (ax, (title, _), (u2, note)) in enumerate(zip(axes, panels, shown)):
            shared = i < 2 and bool(np.isfinite([vmin, vmax]).all())
            limits = {"vmin": vmin, "vmax": vmax} if shared else {}
            cmap = "viridis" if i < 2 else "magma"
            mesh = ax.pcolormesh(x, y, u2.T, shading="auto", cmap=cmap, **limits)
            fig.colorbar(mesh, ax=ax)
            ax.set_xlabel(coords[0])
            ax.set_ylabel(coords[1])
            ax.set_title(title + note)
    fig.suptitle(f"{result.stage}: {result.pde} {result.pde_params}")
    return save_png(fig, path)


def _curve(ax: Axes, step: np.ndarray, values: np.ndarray, ylabel: str) -> None:
    """Draw one positive-valued curve on a log axis, skipping NaN/inf/non-positive samples."""
    ok = np.isfinite(values) & np.isfinite(step) & (values > 0)
    if ok.any():
        ax.plot(step[ok], values[ok], marker="o" if ok.sum() == 1 else None)
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no finite data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def plot_training(path: Path, result: RunResult) -> Path:
    """Plot loss and rel_l2 against step on log scales, to read convergence and time-to-accuracy."""
    hist = result.history
    step = np.asarray(hist.get("step", []), dtype=np.float64).reshape(-1)  # (n_samples,)
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_err = fig.subplots(1, 2)
    for ax, key in ((ax_loss, "loss"), (ax_err, "rel_l2")):
        values = np.asarray(hist.get(key, []), dtype=np.float64).reshape(-1)  # (n_samples,)
        n = min(len(step), len(values))
        _curve(ax, step[:n], values[:n], key)
    ax_loss.set_title("training loss")
    ax_err.set_title("relative L2 error")
    fig.suptitle(f"{result.stage}: {result.pde} {result.pde_params}")
    return save_png(fig, path)


def plot_run(out_dir: Path, result: RunResult) -> list[Path]:
    """Write fields.png and training.png into ``out_dir`` (beside results.h5); return the paths."""
    out_dir = make_dir(out_dir)
    return [
        plot_fields(out_dir / "fields.png", result),
        plot_training(out_dir / "training.png", result),
    ]
