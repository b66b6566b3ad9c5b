"""The report's tables: the run table as report.csv, report.h5 and aligned text, and the
ΔA diagnostics table of full fine-tuning runs (computed where a run lacks it)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pinnkan.common.atomic import atomic_replace
from pinnkan.io.results import RESULTS_FILE
from pinnkan.report.collect import COLUMNS, Run
from pinnkan.run.diagnostics import diagnose_run, has_diagnostics, read_diagnostics
from pinnkan.version import __version__

PRINTED = [c for c in COLUMNS if c != "note"]  # the notes follow the printed table
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
        f.attrs["pinnkan_version"] = str(__version__)
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


def short_run(run: str, width: int = 48) -> str:
    """A run path for the printed table: its first and last parts, the last one cut at
    `width` (the job directory name starts with the job number and the swept values)."""
    if len(run) <= width:
        return run
    parts = Path(run).parts
    text = f"{parts[0]}/…/{parts[-1]}" if len(parts) > 2 else run
    return text if len(text) <= width else text[: width - 1] + "…"


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


def diagnostics_kinds(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Column kinds of the diagnostics table: DIAG_KINDS, then each cr's ranks and error."""
    kinds = dict(DIAG_KINDS)
    for key in rows[0]:
        kinds.setdefault(key, "f" if key.startswith("hosvd_err") else "s")
    return kinds


def write_diagnostics_csv(path: Path, rows: list[dict[str, Any]], kinds: dict[str, str]) -> None:
    """diagnostics.csv: one row per layer of every full fine-tuning run, columns `kinds`."""
    with atomic_replace(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(kinds))
        w.writeheader()
        w.writerows(rows)
