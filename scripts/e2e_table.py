"""Run the CLI end to end with the default configs, per seed, and tabulate from the raw data.

Per model kind, PDE family and seed: `pinnkan pretrain pde=X model=M seed=S`, then from that
source `pinnkan transfer pde=X model=M seed=S` for each of --runs (LoTRA cr 0.5 and 0.25,
full fine-tuning, scratch). Every run stops by its own signal (train.tol, LM's convergence or
its step budget), as a user meets it; one command at a time (run this with nothing else on the
machine). The raw data, docs/e2e/<name>.json, holds every run's metrics and command with the
commit, date and machine, and is written after each run (an interrupted study keeps what it
measured; a rerun skips the runs it holds). The tables are the generated blocks
`<!-- generated:e2e-<name> -->` of README.md and docs/*.md.

    python scripts/e2e_table.py --name default_network --runs pretrain "lotra cr=0.25" \\
        --models chebyshev bspline+train.tol=1e-6 --seeds 0 1 2

A model is a layer kind, optionally with its own settings after `+` (`bspline+train.tol=1e-6`
runs `model=bspline train.tol=1e-6`): each side of a comparison at its own calibrated settings.

    python scripts/e2e_table.py --name damping --compare chebyshev+optim.damping_rule=divide \\
        chebyshev+optim.damping_rule=nielsen   # the two models block e2e-damping.compare sets
                                               # side by side, with a verdict per row
    python scripts/e2e_table.py --tables     # rewrite every e2e block from the JSON
    python scripts/e2e_table.py --check      # exit 1 when a page's e2e block differs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import docblocks

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "e2e"
PREFIX = "e2e-"  # block e2e-<name> is the table of docs/e2e/<name>.json
RUNS = {
    "pretrain": [],
    "lotra cr=0.5": ["adapter=lotra", "cr=0.5"],
    "lotra cr=0.25": ["adapter=lotra", "cr=0.25"],
    "full": ["adapter=full"],
    "scratch": ["adapter=scratch"],
}
THREADS = 2


def run_dir(work: Path, model: str, pde: str, seed: int, run: str) -> Path:
    def slug(name: str) -> str:  # a folder name that Hydra's override grammar takes as a value
        name = name.replace(" ", "_").replace("=", "").replace("+", "_").replace(",", "-")
        return "".join(c for c in name if c not in "[]{}()'\"")

    return work / slug(model) / pde / f"s{seed}" / slug(run)


def command(model: str, pde: str, seed: int, run: str, work: Path) -> list[str]:
    """The pinnkan command line of one run (a transfer's source is the pretrain of its seed)."""
    stage = "pretrain" if run == "pretrain" else "transfer"
    kind, *overrides = model.split("+")  # e.g. bspline+train.tol=1e-6: a kind with its settings
    cmd = ["pinnkan", stage, f"pde={pde}", f"model={kind}", *overrides, f"seed={seed}", *RUNS[run]]
    if stage == "transfer":
        cmd.append(f"source={run_dir(work, model, pde, seed, 'pretrain')}")
    return cmd


def read(path: Path) -> dict[str, Any]:
    """A finished run's record from its results.h5: error, stop, steps, seconds, sizes."""
    import h5py

    with h5py.File(path / "results.h5", "r") as f:
        a, m = dict(f.attrs), dict(f["metrics"].attrs)
    modes = docblocks.layer_modes(a)
    return {
        **({"layer_modes": modes} if modes else {}),  # each layer's: lotra | full | frozen
        "pde_params": json.loads(a["pde_params"]),
        "status": str(a.get("status", "ok")),
        "stop_reason": str(a.get("stop_reason", "")),
        "rel_l2": float(m["rel_l2"]),
        "max_abs_error": float(m["max_abs_error"]),
        "train_seconds": float(m["train_seconds"]),
        "steps_done": int(m.get("steps_done", m["steps"])),
        "n_trainable": int(m["n_trainable"]),
        "n_total": int(m["n_total"]),
        "n_full_finetune": int(m.get("n_full_finetune", m["n_trainable"])),
    }


def launch(
    model: str, pde: str, seed: int, run: str, work: Path
) -> tuple[list[str], Path, int, str, float]:
    """One run's pinnkan command in a subprocess (THREADS torch threads) in its run_dir: the
    command as a user types it, the folder, the exit code, stderr and the wall seconds."""
    hb = docblocks.owner("hard_benchmarks")  # child processes
    cmd = command(model, pde, seed, run, work)
    where = run_dir(work, model, pde, seed, run)
    full = [sys.executable, "-m", "pinnkan.cli", *cmd[1:], f"hydra.run.dir={where}"]
    full += ["train.progress=log", f"threads={THREADS}"]
    t0 = time.perf_counter()
    rc, _, err = hb.run_child(full, hb.child_env(THREADS), None)
    return cmd, where, rc, err, time.perf_counter() - t0


def measure(args: argparse.Namespace) -> Path:
    """Run what the JSON does not hold yet, one command at a time, saving after each."""
    hb = docblocks.owner("hard_benchmarks")  # provenance
    path = args.out / f"{args.name}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"schema": 1, "runs": []}
    held = {(r["model"], r["pde"], r["seed"], r["run"]) for r in data["runs"]}
    for model in args.models:
        for pde in args.pdes:
            for seed in args.seeds:
                todo = [r for r in args.runs if (model, pde, seed, r) not in held]
                source = run_dir(args.work, model, pde, seed, "pretrain")
                if any(r != "pretrain" for r in todo) and not (source / "results.h5").is_file():
                    todo = ["pretrain", *[r for r in todo if r != "pretrain"]]
                for run in sorted(todo, key=lambda r: r != "pretrain"):  # the source first
                    cmd, where, rc, err, wall = launch(model, pde, seed, run, args.work)
                    if rc:
                        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
                    key = (model, pde, seed, run)
                    rec = {
                        "model": model,
                        "pde": pde,
                        "seed": seed,
                        "run": run,
                        "command": " ".join(cmd),
                        "wall_seconds": wall,
                        **read(where),
                        **hb.provenance(THREADS),
                    }
                    data["runs"] = [
                        r
                        for r in data["runs"]
                        if (r["model"], r["pde"], r["seed"], r["run"]) != key
                    ]
                    data["runs"].append(rec)  # a rebuilt source replaces its earlier record
                    docblocks.write_raw(path, data)
                    print(
                        f"{model} {pde} s{seed} {run}: rel. L2 {rec['rel_l2']:.2e}, "
                        f"{rec['train_seconds']:.0f} s, {rec['stop_reason']}",
                        flush=True,
                    )
    return path


def _spread(values: list[float], fmt: str) -> str:
    """median [min–max] (a single value alone)."""
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:{fmt}}"
    return f"{mid:{fmt}} [{min(values):{fmt}}–{max(values):{fmt}}]"


EVERY_LAYER = " (Tucker on every layer)"


def run_label(rec: dict[str, Any]) -> str:
    """A record's run as its row names it: a LoTRA run with Tucker updates on every layer
    (the default before the edge layers trained in full; such records have no `layer_modes`)
    is a row of its own."""
    every = rec["run"].startswith("lotra") and docblocks.tucker_everywhere(rec.get("layer_modes"))
    return rec["run"] + (EVERY_LAYER if every else "")


ROW_RUNS = [r + every for r in RUNS for every in ("", EVERY_LAYER)]  # a table's run labels


def records(runs: list[dict[str, Any]], model: str, pde: str, run: str) -> list[dict[str, Any]]:
    """One table row's records (a model, PDE and run label), by seed."""
    recs = [r for r in runs if (r["model"], r["pde"], run_label(r)) == (model, pde, run)]
    return sorted(recs, key=lambda r: r["seed"])


def table(path: Path) -> str:
    """The Markdown table of one study: a row per model, PDE and run, over its seeds."""
    data = json.loads(path.read_text())
    rows = [
        "| model | PDE | run | member | seeds | rel. L2, median [min–max] | train s, median "
        "[min–max] | steps, median | stopped by | trainable / total |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    models = list(dict.fromkeys(r["model"] for r in data["runs"]))  # in the order measured
    pdes = list(dict.fromkeys(r["pde"] for r in data["runs"]))
    for model in models:
        for pde in pdes:
            for run in ROW_RUNS:
                recs = records(data["runs"], model, pde, run)
                if not recs:
                    continue
                stops = ", ".join(sorted({r["stop_reason"] for r in recs}))
                sizes = sorted({(r["n_trainable"], r["n_total"]) for r in recs})
                rows.append(
                    f"| {model} | {pde} | {run} | {json.dumps(recs[0]['pde_params'])} | "
                    f"{', '.join(str(r['seed']) for r in recs)} | "
                    f"{_spread([r['rel_l2'] for r in recs], '.1e')} | "
                    f"{_spread([r['train_seconds'] for r in recs], '.0f')} | "
                    f"{statistics.median(r['steps_done'] for r in recs):.0f} | {stops} | "
                    + ", ".join(f"{t} / {n}" for t, n in sizes)
                    + " |"
                )
    note = (
        raw_data(path, data["runs"])
        + "). Each run stopped by its own signal; rel. L2 is of the model where it stopped."
    )
    return "\n".join(rows) + "\n\n" + note


def raw_data(path: Path, runs: list[dict[str, Any]]) -> str:
    """A study's raw-data line (no closing parenthesis, for the caller's own additions): the
    file, how many runs, their commits, dates and machine."""
    commits = sorted({docblocks.owner("hard_benchmarks").commit_label(r) for r in runs})
    dates = sorted(r["date"][:10] for r in runs)
    machine = runs[0]["machine"]
    return (
        f"Raw data: `docs/e2e/{path.name}` ({len(runs)} runs; commit "
        f"{', '.join(commits)}; {dates[0]}"
        + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")
        + f"; {machine['processor']}, {machine['cpu_count']} cores, {THREADS} torch threads"
    )


def _ratio(x: float) -> str:
    """A ratio of medians: two significant digits, whole numbers from 100 on."""
    return f"{x:.2g}×" if x < 100 else f"{x:.0f}×"


def _verdict(a: list[float], b: list[float], names: tuple[str, str]) -> str:
    """Which side is lower: a name only where the two seeds' ranges are apart."""
    if max(a) < min(b):
        return names[0]
    if max(b) < min(a):
        return names[1]
    return "overlap"


def compare(path: Path) -> str:
    """The study's two compared models (its JSON's `compare`, A and B) side by side, a row per
    PDE and run both have: median [min–max] of each and which is lower where the ranges of the
    seeds do not overlap, so that a page's verdict is read off the data, not typed."""
    data = json.loads(path.read_text())
    if len(data.get("compare", [])) != 2:
        raise SystemExit(f"{path}: no 'compare': [A, B] (e2e_table.py --compare A B)")
    a_model, b_model = data["compare"]
    names = ("A", "B")
    rows = [
        f'A: `{a_model}`, B: `{b_model}`; "lower" names a side only where the seeds\' '
        "ranges do not overlap; B / A is the ratio of the medians.",
        "",
        "| PDE | run | seeds | rel. L2: A | rel. L2: B | lower error | B / A | train s: A | "
        "train s: B | fewer seconds | B / A | steps, median: A / B |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = data["runs"]
    pdes = list(dict.fromkeys(r["pde"] for r in runs))
    for pde in pdes:
        for run in ROW_RUNS:
            side = [records(runs, m, pde, run) for m in (a_model, b_model)]
            seeds = [[r["seed"] for r in recs] for recs in side]
            if not side[0] or seeds[0] != seeds[1]:
                continue  # only like against like: the same seeds on both sides
            err = [[r["rel_l2"] for r in recs] for recs in side]
            sec = [[r["train_seconds"] for r in recs] for recs in side]
            steps = [statistics.median(r["steps_done"] for r in recs) for recs in side]
            rows.append(
                f"| {pde} | {run} | {', '.join(map(str, seeds[0]))} | "
                f"{_spread(err[0], '.1e')} | {_spread(err[1], '.1e')} | "
                f"{_verdict(*err, names)} | "
                f"{_ratio(statistics.median(err[1]) / statistics.median(err[0]))} | "
                f"{_spread(sec[0], '.0f')} | {_spread(sec[1], '.0f')} | "
                f"{_verdict(*sec, names)} | "
                f"{_ratio(statistics.median(sec[1]) / statistics.median(sec[0]))} | "
                f"{steps[0]:.0f} / {steps[1]:.0f} |"
            )
    return "\n".join(rows)


COMPARE = ".compare"  # block e2e-<name>.compare: compare() of docs/e2e/<name>.json


def block(name: str, doc: Path) -> str:
    """The body of block e2e-<name> (the study's table) or e2e-<name>.compare (its two
    compared models side by side) from docs/e2e/<name>.json (scripts/docblocks.py)."""
    study = name.removeprefix(PREFIX)
    if study.endswith(COMPARE):
        return compare(OUT / f"{study.removesuffix(COMPARE)}.json")
    return table(OUT / f"{study}.json")


def regenerated(doc: Path) -> str:
    text = doc.read_text()
    for name in docblocks.names(text, doc):
        if name.startswith(PREFIX):
            text = docblocks.replace(text, name, block(name, doc), doc)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="defaults", help="the study: docs/e2e/<name>.json")
    ap.add_argument("--pdes", nargs="+", default=["elliptic", "parabolic", "advection", "wave"])
    ap.add_argument("--models", nargs="+", default=["chebyshev"])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--work", type=Path, default=ROOT / "outputs" / "e2e_table")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="record in the study's JSON the two models its .compare block sets side by side",
    )
    ap.add_argument("--tables", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    if args.tables or args.check:
        worst = 0
        for doc in docblocks.docs():
            if any(n.startswith(PREFIX) for n in docblocks.names(doc.read_text(), doc)):
                done = docblocks.table_mode(args.tables, args.check, doc, partial(regenerated, doc))
                worst = max(worst, done or 0)
        return worst
    if args.compare:
        path = args.out / f"{args.name}.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no such study; measure it first")
        data = json.loads(path.read_text())
        held = {r["model"] for r in data["runs"]}
        if missing := [m for m in args.compare if m not in held]:
            raise SystemExit(f"{path}: no runs of {', '.join(missing)} (held: {sorted(held)})")
        data["compare"] = list(args.compare)
        docblocks.write_raw(path, data)
        return 0
    print(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
