"""`pinnkan report`: many runs' results.h5 files as one table (CSV, HDF5, stdout) and plots.

No Hydra here: a run is any directory with a ``results.h5``, or a Hydra job directory (with
``.hydra/``) without one, which is reported as ``missing`` (a job that failed before writing).
Full fine-tuning runs lacking the ΔA diagnostics get them computed (pinnkan.run.diagnostics), the
only thing this command writes into a run directory.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import TextIO

from pinnkan.common.atomic import make_dir, unwritable_dir
from pinnkan.errors import PinnkanError
from pinnkan.report.collect import COLUMNS, collect
from pinnkan.report.plots import plot_curves, plot_error_vs_cr, plot_error_vs_params
from pinnkan.report.tables import (
    PRINTED,
    diagnostics_kinds,
    diagnostics_rows,
    format_table,
    short_run,
    write_csv,
    write_diagnostics_csv,
    write_h5,
)


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
    shown = [{**r.row, "run": short_run(r.row["run"])} for r in runs]
    print(format_table(shown, PRINTED, COLUMNS), file=stream)
    notes = [(r.row["run"], r.row["note"]) for r in runs if r.row["note"]]
    for run_name, note in notes:
        print(f"  {run_name}: {note}", file=stream)
    if diag:
        kinds = diagnostics_kinds(diag)
        write_diagnostics_csv(out / "diagnostics.csv", diag, kinds)
        written.append(out / "diagnostics.csv")
        print(
            "\nΔA of full fine-tuning: relative truncated-HOSVD error at the ranks of each cr",
            file=stream,
        )
        shown_diag = [{**d, "run": short_run(d["run"])} for d in diag]
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
