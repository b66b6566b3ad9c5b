"""Reproduce the LoTRA study (docs/results.md): every number there comes from this script.

For each PDE family (elliptic, parabolic, hyperbolic, wave):
1. one source KAN, pretrained with the default config (seed 0);
2. transfers to the family's default target, each with `--seeds` seeds (the seed sets the
   collocation points and the random Tucker factors; the source is the same):
   - LoTRA at cr 1, 0.5, 0.25, 0.125 (theory learning rates, the defaults);
   - full fine-tuning and training from scratch;
   - slim KAN (no source) at cr 0.5 and 0.25;
   - LoTRA cr 0.25 learning-rate strategies: `uniform` (η for every component) and `theory`
     with unit constants (c = 1: the theory's 1/n_in, 1/n_d scaling, untuned: mis-scaled);
   - LoTRA cr 0.25 with init `random` instead of `grad`.
The transfers use a reduced budget (`--steps`, `--n-interior`) so that the whole study fits in
about an hour on 2 CPU cores; docs/results.md states the budget. Each group is one Hydra
multirun below `--root`, `--jobs` jobs at a time through the joblib launcher (the `sweep`
extra; `--jobs 1`: Hydra's basic launcher, one job after the other); a group whose sweep
directory holds a `.done` marker is skipped, so an interrupted study continues where it stopped.
`--tables FILE` then runs `pinnkan report` on the study (report.csv, plots, the ΔA
diagnostics of every full fine-tuning run) and rewrites the block between the
`<!-- reproduce:tables -->` markers of FILE with the Markdown tables (mean and min–max over
seeds); `--img DIR` copies the report's plots there.

    python scripts/reproduce.py                       # the study (about an hour)
    python scripts/reproduce.py --tables docs/results.md --img docs/img
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from pinnkan.diagnostics import hosvd_rel_error, read_update
from pinnkan.report import Run, collect, run_report
from pinnkan.results import RESULTS_FILE

PDES = ("elliptic", "parabolic", "hyperbolic", "wave")
UNIT = ["adapter.multipliers.U1=1", "adapter.multipliers.U3=1"]

# (group name, overrides); seeds are added to every group
GROUPS: list[tuple[str, list[str]]] = [
    ("lotra_cr", ["adapter=lotra", "cr=1,0.5,0.25,0.125"]),
    ("baselines", ["adapter=full,scratch"]),
    ("slim", ["adapter=slim", "cr=0.5,0.25"]),
    ("lr_unit", ["adapter=lotra", "cr=0.25", "adapter.lr_strategy=theory,uniform", *UNIT]),
    ("init_random", ["adapter=lotra", "cr=0.25", "adapter.init=random"]),
]


def pinnkan(args: list[str]) -> None:
    """One CLI call; stops the study on failure (a failed job inside a sweep is only logged)."""
    cmd = [sys.executable, "-m", "pinnkan.cli", *args, "train.progress=log"]
    print("+ pinnkan", " ".join(args), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False)
    print(f"  rc {proc.returncode}, {time.perf_counter() - t0:.0f} s", flush=True)
    if proc.returncode not in (0, 2):
        raise SystemExit(f"stopped: rc {proc.returncode} from pinnkan {' '.join(args)}")


def run_study(
    root: Path, pdes: list[str], seeds: list[int], steps: int, n_int: int, jobs: int
) -> None:
    """Pretrain each family once, then every transfer group as one multirun."""
    seed_list = "seed=" + ",".join(str(s) for s in seeds)
    budget = [f"train.steps={steps}", f"train.n_interior={n_int}"]
    if jobs > 1:  # joblib launcher (the `sweep` extra); threads=auto splits the cores
        budget += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    for pde in pdes:
        source = root / pde / "pretrain"
        if not (source / "model.pt").is_file():
            pinnkan(["pretrain", f"pde={pde}", f"hydra.run.dir={source}"])
        for name, overrides in GROUPS:
            sweep = root / pde / name
            if (sweep / ".done").is_file():
                continue
            pinnkan(
                [
                    "transfer",
                    "-m",
                    f"pde={pde}",
                    f"source={source}",
                    *overrides,
                    seed_list,
                    *budget,
                    f"hydra.sweep.dir={sweep}",
                ]
            )
            (sweep / ".done").write_text("done\n")


MARK = re.compile(r"(<!-- reproduce:tables -->\n).*?(<!-- /reproduce:tables -->)", re.S)
MAIN_ROWS = [
    *(("lotra_cr", f"LoTRA cr {c}", {"cr": float(c)}) for c in ("1", "0.5", "0.25", "0.125")),
    ("baselines", "full fine-tuning", {"adapter": "full"}),
    ("baselines", "scratch", {"adapter": "scratch"}),
    ("slim", "slim KAN cr 0.5", {"cr": 0.5}),
    ("slim", "slim KAN cr 0.25", {"cr": 0.25}),
]
LR_ROWS = [
    ("lotra_cr", "theory, c_U1 = 16, c_U3 = 9 (default)", {"cr": 0.25}),
    ("lr_unit", "theory, c = 1 (mis-scaled)", {"lr_strategy": "theory"}),
    ("lr_unit", "uniform (η for all)", {"lr_strategy": "uniform"}),
]
INIT_ROWS = [
    ("lotra_cr", "grad (default)", {"cr": 0.25}),
    ("init_random", "random", {}),
]


def _select(runs: list[Run], root: Path, pde: str, group: str, match: dict) -> list[Run]:
    """The finished runs of one study group and PDE whose row matches `match`."""
    out = []
    for run in runs:
        rel = run.path.relative_to(root).parts
        if len(rel) < 3 or rel[0] != pde or rel[1] != group or run.row["status"] != "ok":
            continue
        if all(run.row[k] == v for k, v in match.items()):
            out.append(run)
    return out


def _stat(values: list[float], fmt: str = "{:.2e}") -> str:
    """mean (min–max, n) of a list, or – when empty."""
    if not values:
        return "–"
    mean = fmt.format(float(np.mean(values)))
    if len(values) == 1:
        return f"{mean} (n=1)"
    return f"{mean} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def _table(runs: list[Run], root: Path, pdes: list[str], rows: list, first: str) -> list[str]:
    """One Markdown table: a row per variant, rel. L2 and trainable parameters per PDE."""
    head = f"| {first} | " + " | ".join(f"{p} rel. L2 | trainable" for p in pdes) + " |"
    lines = [head, "|---|" + "---|---|" * len(pdes)]
    for group, label, match in rows:
        cells = []
        for pde in pdes:
            sel = _select(runs, root, pde, group, match)
            cells.append(_stat([r.row["rel_l2"] for r in sel]))
            cells.append(str(sel[0].row["n_trainable"]) if sel else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _diagnostics_table(runs: list[Run], root: Path, pdes: list[str]) -> list[str]:
    """Truncated-HOSVD error of ΔA (full fine-tuning, mean over seeds) at each cr's ranks, next
    to the same error of A_pretrained (control), per layer."""
    crs = (0.5, 0.25, 0.125)
    lines = [
        "| PDE | layer | shape | "
        + " | ".join(f"ΔA @ cr {c:g} | A_pt @ cr {c:g}" for c in crs)
        + " | ‖ΔA‖/‖A_pt‖ |",
        "|---|---|---|" + "---|---|" * len(crs) + "---|",
    ]
    for pde in pdes:
        per_layer: dict[int, list] = defaultdict(list)
        for run in _select(runs, root, pde, "baselines", {"adapter": "full"}):
            for layer, (a_pt, delta) in read_update(run.path / RESULTS_FILE).items():
                per_layer[layer].append((torch.as_tensor(a_pt), torch.as_tensor(delta)))
        for layer, pairs in sorted(per_layer.items()):
            shape = tuple(pairs[0][0].shape)
            cells = []
            for c in crs:
                ranks = tuple(max(1, math.ceil(round(c * d, 9))) for d in shape)
                d_err = [hosvd_rel_error(d, ranks) for _, d in pairs]
                a_err = hosvd_rel_error(pairs[0][0], ranks)  # same source for every seed
                cells += [_stat(d_err, "{:.2f}"), f"{a_err:.2f}"]
            ratio = [float(d.norm() / a.norm()) for a, d in pairs]
            cells.append(_stat(ratio, "{:.3f}"))
            lines.append(
                f"| {pde} | {layer} | {'×'.join(map(str, shape))} | " + " | ".join(cells) + " |"
            )
    return lines


def write_tables(root: Path, pdes: list[str], target: Path, img: Path | None) -> None:
    """Report on the study, then the Markdown tables into `target`'s marked block."""
    out = root / "report"
    run_report([root], out)
    runs = collect([root])
    sources = []
    for pde in pdes:
        src = [r for r in runs if r.path.relative_to(root).parts[:2] == (pde, "pretrain")]
        sources.append(f"{src[0].row['rel_l2']:.2e}" if src else "–")
    parts = [
        "Sources (pretrained once, default config, seed 0), rel. L2: "
        + ", ".join(f"{p} {s}" for p, s in zip(pdes, sources))
        + ".",
        "",
        "**LoTRA against the baselines** (rel. L2: mean over seeds (min–max)):",
        "",
        *_table(runs, root, pdes, MAIN_ROWS, "run"),
        "",
        "**LoTRA learning rates** (cr 0.25):",
        "",
        *_table(runs, root, pdes, LR_ROWS, "lr strategy"),
        "",
        "**LoTRA initialisation** (cr 0.25):",
        "",
        *_table(runs, root, pdes, INIT_ROWS, "init"),
        "",
        "**Is ΔA of full fine-tuning low tensor rank?** Relative truncated-HOSVD error at the "
        "ranks each cr implies, ΔA (mean over seeds (min–max)) next to the pretrained tensor:",
        "",
        *_diagnostics_table(runs, root, pdes),
    ]
    text = target.read_text(encoding="utf-8")
    if not MARK.search(text):
        raise SystemExit(f"{target} has no <!-- reproduce:tables --> block")
    body = "\n".join(parts) + "\n"
    target.write_text(MARK.sub(lambda m: m.group(1) + body + m.group(2), text), encoding="utf-8")
    if img is not None:
        img.mkdir(parents=True, exist_ok=True)
        for name in ("error_vs_cr.png", "error_vs_params.png", "curves.png"):
            if (out / name).is_file():
                shutil.copy(out / name, img / f"results_{name}")
    print(f"wrote the tables into {target}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("outputs/reproduce"))
    ap.add_argument("--pdes", nargs="+", default=list(PDES), choices=PDES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=500, help="transfer Adam steps")
    ap.add_argument("--n-interior", type=int, default=512, help="transfer collocation points")
    ap.add_argument("--jobs", type=int, default=2, help="parallel sweep jobs (joblib launcher)")
    ap.add_argument("--tables", type=Path, default=None, help="write tables into this file")
    ap.add_argument("--img", type=Path, default=None, help="copy the report's plots here")
    args = ap.parse_args()
    if args.tables is not None:
        write_tables(args.root, args.pdes, args.tables, args.img)
        return
    t0 = time.perf_counter()
    run_study(args.root, args.pdes, args.seeds, args.steps, args.n_interior, args.jobs)
    print(f"study done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
