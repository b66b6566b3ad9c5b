"""Rank growth against fixed ranks: LoTRA transfers of one source to one target, per seed.

Each variant is one `pinnkan transfer` with the default config but its overrides, from the
same source run, one job at a time; every run stops by its own signal (train.tol, LM's
convergence, or the 300-step budget). The raw data (docs/growth/<name>.json) holds each run's
error, steps, stop, trainable count, the growth it made and its training seconds, with the
commands, commit, date and machine; the table in docs/growth.md is generated from it.

    python scripts/growth_study.py --source RUN            # run, then write JSON and table
    python scripts/growth_study.py --study wave_c1.5 --source RUN   # another target's study
    python scripts/growth_study.py --collect DIR [--loaded] # JSON from finished runs named
                                                            # <variant>_s<seed> under DIR
    python scripts/growth_study.py --tables                 # the table from the JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import docblocks

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "growth"
DOC = ROOT / "docs" / "growth.md"
# a study: its target (the family's default one) and its table's block in docs/growth.md
STUDIES: dict[str, dict[str, Any]] = {
    "elliptic_mu1.5": {"pde": "elliptic", "target": {"mu": 1.5}, "table": "growth-table"},
    "wave_c1.5": {"pde": "wave", "target": {"c": 1.5}, "table": "growth-wave_c1.5"},
}
NAME = "elliptic_mu1.5"  # the first study (--study picks another)
# variant: the transfer's overrides beside source=, seed= and the run directory
VARIANTS: dict[str, list[str]] = {
    "fixed25": ["cr=0.25"],
    "fixed50": ["cr=0.5"],
    "grow25": ["cr=0.25", "adapter.grow_to=1.0"],
    "grow50": ["cr=0.5", "adapter.grow_to=1.0"],
}
SEEDS = (0, 1, 2)


def command(
    source: Path, variant: str, seed: int, run_dir: Path, threads: int, study: str = NAME
) -> list[str]:
    return [
        "pinnkan",
        "transfer",
        f"pde={STUDIES[study]['pde']}",
        f"source={source}",
        f"hydra.run.dir={run_dir}",
        "train.progress=log",
        f"threads={threads}",
        *VARIANTS[variant],
        f"seed={seed}",
    ]


def read(run_dir: Path) -> dict[str, Any]:
    """One finished run's record: the family benchmark's (`read_member`: error, steps, stop,
    trainable count, seconds) and what growth adds (seed, cr, grow_to, growths, source)."""
    import h5py

    rec = docblocks.owner("family_benchmark").read_member(run_dir)
    with h5py.File(run_dir / "results.h5", "r") as f:
        a, m = dict(f.attrs), dict(f["metrics"].attrs)
    grown = a.get("grown")
    return rec | {
        "run_dir": str(run_dir.resolve()),
        "seed": int(a["seed"]),
        "cr": float(a["cr"]),
        "grow_to": float(a["grow_to"]) if "grow_to" in a else None,
        "n_full": int(m["n_full_finetune"]),
        "grown": json.loads(grown) if grown else [],
        "source": str(a.get("source")),
    }


def collect(
    folder: Path, loaded: bool, threads: int, hb: Any, runs_commit: str | None, study: str = NAME
) -> Path:
    runs: dict[str, list[dict[str, Any]]] = {}
    source = None
    for variant in VARIANTS:
        for seed in SEEDS:
            run_dir = folder / f"{variant}_s{seed}"
            if (run_dir / "results.h5").exists():
                rec = read(run_dir)
                source = source or rec["source"]
                rec["command"] = " ".join(
                    command(Path(rec["source"]), variant, seed, run_dir, threads, study)
                )
                runs.setdefault(variant, []).append(rec)
    data = {
        "schema": 1,
        "target": {"pde": STUDIES[study]["pde"], **STUDIES[study]["target"]},
        "source": source,
        # True: a helper process shared the 2 cores, so the seconds are not comparable
        "loaded": loaded,
        "provenance": hb.provenance(threads),  # of the collecting process
        "runs_commit": runs_commit or hb.provenance(threads)["git_commit"],
        "runs": runs,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{study}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def _range(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    mid = sorted(values)[len(values) // 2]
    return f"{mid:{fmt}} ({lo:{fmt}}–{hi:{fmt}})"


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    rows = [
        "| variant | overrides | seeds | rel. L2, median (min–max) | stopped by | steps, median "
        "(min–max) | train s, median (min–max) | trainable at the end (full: {}) | "
        "grew at steps |".format(next(iter(data["runs"].values()))[0]["n_full"]),
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def seconds(values: list[float]) -> str:  # none where a second process shared the cores
        return "–" if data["loaded"] else _range(values, ".0f")

    for variant, runs in data["runs"].items():
        stops = sorted({r["stop_reason"] for r in runs})
        if not any(r["grown"] for r in runs):
            grew = "–"
        else:
            grew = "; ".join(
                ", ".join(f"{int(e['step'])} (cr {e['cr']:g})" for e in r["grown"]) or "–"
                for r in runs
            )
        trainable = sorted({r["n_trainable"] for r in runs})
        rows.append(
            f"| {variant} | `{' '.join(VARIANTS[variant])}` | "
            f"{', '.join(str(r['seed']) for r in runs)} | "
            f"{_range([r['rel_l2'] for r in runs], '.1e')} | {', '.join(stops)} | "
            f"{_range([float(r['steps_done']) for r in runs], '.0f')} | "
            f"{seconds([r['train_seconds'] for r in runs])} | "
            f"{', '.join(map(str, trainable))} | {grew} |"
        )
    note = (
        "Training seconds are in the JSON but not here: a second process shared the 2 cores "
        "while these runs were made."
        if data["loaded"]
        else ""
    )
    return "\n".join(rows) + ("\n\n" + note if note else "")


def block(name: str, doc: Path) -> str:
    """A study's table block from its committed JSON (scripts/docblocks.py)."""
    study = next(k for k, v in STUDIES.items() if v["table"] == name)
    return table(OUT / f"{study}.json")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path)
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "growth_study")
    p.add_argument("--collect", type=Path)
    p.add_argument("--loaded", action="store_true")
    p.add_argument("--runs-commit", help="--collect: the commit the runs were made at")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tables", action="store_true")
    p.add_argument("--study", choices=list(STUDIES), default=NAME)
    p.add_argument("--variants", type=lambda v: v.split(","), default=list(VARIANTS))
    args = p.parse_args(argv)
    hb = docblocks.owner("hard_benchmarks")  # provenance, child processes
    folder = args.collect
    if args.source is not None:
        folder = args.work / args.study
        env = hb.child_env(args.threads)
        for variant in args.variants:
            for seed in SEEDS:
                run_dir = folder / f"{variant}_s{seed}"
                cmd = command(args.source, variant, seed, run_dir, args.threads, args.study)
                cmd = [sys.executable, "-m", "pinnkan.cli", *cmd[1:]]  # this venv's pinnkan
                code, _, err = hb.run_child(cmd, env, None)
                if code:
                    print(err[-2000:], file=sys.stderr)
                    return code
    if folder is not None:
        print(collect(folder, args.loaded, args.threads, hb, args.runs_commit, args.study))
    if args.tables or folder is not None:
        text = DOC.read_text()
        for study, spec in STUDIES.items():
            if (OUT / f"{study}.json").is_file():
                text = docblocks.replace(text, spec["table"], block(spec["table"], DOC), DOC)
        DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
