"""Accuracy of the rational layer's initial fit: max |P/Q − f| on the fit's range, per ε.

The rational KAN layer (`model=rational`, pinnkan/layers/rational.py) starts every channel at
a P/Q fitted to its activation (`model.init_activation`: SiLU or GELU) by `fitted_rational`:
a linearised least-squares fit in the kinked form, then Levenberg–Marquardt in the layer's own
form (`model.denominator`: smooth with `model.eps`, or kinked). This script evaluates each fit
on a grid ten times as fine as the fit's own over the same range and keeps the max and RMS
error, so that docs/models.md's figures on what ε costs come from data.

The raw data (every (activation, form, ε) with its errors, the command, commit and machine)
goes to --out; docs/models.md's table is the generated block `rational-fit`, rebuilt from
docs/models/rational_fit.json alone (scripts/docblocks.py).

    python scripts/rational_fit.py --out docs/models/rational_fit.json
    python scripts/rational_fit.py --tables           # rewrite the block from the JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import docblocks
import torch

from pinnkan.layers import rational as rl

RAW = docblocks.ROOT / "docs" / "models" / "rational_fit.json"
CASES = [("smooth", 1e-3), ("smooth", 1e-2), ("smooth", 1e-1), ("kinked", 0.0)]
ACTIVATIONS = ("silu", "gelu")


def fit_errors(activation: str, form: str, eps: float, fine: int) -> dict[str, float]:
    """Max and RMS error of the fitted P/Q against the activation on `fine` points of the
    fit's range."""
    a, b, _ = rl.fitted_rational(activation, form, eps)
    x = torch.linspace(*rl.FIT_RANGE, fine, dtype=torch.float64)
    err = rl.rational(x, torch.tensor(a, dtype=x.dtype), torch.tensor(b, dtype=x.dtype), form, eps)
    err = err - rl._ACT[activation](x)
    return {"max_error": float(err.abs().max()), "rms_error": float(err.square().mean().sqrt())}


def measure(fine: int) -> list[dict[str, Any]]:
    """Every (activation, form, ε) case's errors."""
    return [
        {"activation": act, "form": form, "eps": eps, **fit_errors(act, form, eps, fine)}
        for act in ACTIVATIONS
        for form, eps in CASES
    ]


def table(data: dict[str, Any]) -> str:
    """The block: one row per form and ε, the activations side by side."""
    prov = data["provenance"]
    lo, hi = data["range"]
    rows: dict[tuple[str, float], dict[str, Any]] = {
        (r["form"], r["eps"]): {} for r in data["cases"]
    }
    for r in data["cases"]:
        rows[(r["form"], r["eps"])][r["activation"]] = r
    lines = [
        f"Max and RMS of P/Q − f on [{lo:g}, {hi:g}] ({data['points']} points; the fit uses "
        f"{data['fit_points']}); commit {docblocks.owner('hard_benchmarks').commit_label(prov)}, "
        f"{prov['date'][:10]}, torch {prov['torch']}",
        "",
        "| denominator | ε | SiLU max | SiLU RMS | GELU max | GELU RMS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (form, eps), by_act in rows.items():
        cells = [
            f"{by_act[a]['max_error']:.1e} | {by_act[a]['rms_error']:.1e}" for a in ACTIVATIONS
        ]
        eps_cell = f"{eps:g}" if form == "smooth" else "–"  # the kinked form has no ε
        lines.append(f"| {form} | {eps_cell} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def block(name: str, doc: Path) -> str:
    """The page's block from the committed raw data (scripts/docblocks.py)."""
    return table(json.loads(RAW.read_text(encoding="utf-8")))


def main() -> int:
    """Fit every case, write the raw data and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10 * (rl.FIT_POINTS - 1) + 1)
    ap.add_argument("--out", type=Path, default=None, help="write the raw data here (JSON)")
    ap.add_argument("--tables", action="store_true", help="rewrite docs/models.md's block")
    ap.add_argument("--check", action="store_true", help="exit 1 if the block differs")
    args = ap.parse_args()
    page = docblocks.ROOT / "docs" / "models.md"
    done = docblocks.table_mode(args.tables, args.check, page, lambda: docblocks.regenerated(page))
    if done is not None:
        return done
    hb = docblocks.owner("hard_benchmarks")  # provenance
    data = {
        "command": "python scripts/rational_fit.py " + " ".join(sys.argv[1:]),
        "provenance": hb.provenance(threads=torch.get_num_threads()),
        "range": list(rl.FIT_RANGE),
        "fit_points": rl.FIT_POINTS,
        "points": args.points,
        "cases": measure(args.points),
    }
    docblocks.write_raw(args.out, data)
    print(table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
