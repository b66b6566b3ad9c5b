"""The sweep demo of docs/usage.md: one source, a cr × target sweep run with each launcher,
full fine-tuning and scratch beside it, and `pinnkan report` over them, with the defaults.

Runs the page's commands one after another (nothing else on the machine), reads every job's
results.h5 and the ΔA diagnostics of the full fine-tuning runs into docs/sweep_demo/demo.json
(with the commands, commit, date and machine), copies the joblib report's plots to
docs/img/report_*.png, and writes the page's two tables from that JSON.

    python scripts/sweep_demo.py            # run the demo (a few minutes on 2 cores)
    python scripts/sweep_demo.py --optuna   # the Optuna section's commands instead
                                            # (needs pip install -e ".[optuna]")
    python scripts/sweep_demo.py --tables   # rewrite docs/usage.md's blocks from the JSON
    python scripts/sweep_demo.py --check    # exit 1 when the page differs from the JSON
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import docblocks

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "sweep_demo" / "demo.json"
OPTUNA_DATA = ROOT / "docs" / "sweep_demo" / "optuna.json"
DOC = ROOT / "docs" / "usage.md"
IMG = ROOT / "docs" / "img"
PLOTS = ("error_vs_cr", "error_vs_params", "curves")  # the joblib report's
SCHEMA = 1
TARGETS = "pde.target.mu=1.5,2"


def commands(work: Path) -> list[tuple[str, list[str]]]:
    """(name, pinnkan arguments) of the demo, in order: the page shows the same commands."""
    common = [f"outputs_root={work}", f"source={work}/source"]
    lotra = ["cr=0.5,0.25,0.125", TARGETS, *common]
    return [
        ("source", ["pretrain", f"outputs_root={work}", f"hydra.run.dir={work}/source"]),
        (
            "joblib",
            ["transfer", "-m", "hydra/launcher=joblib", *lotra, f"hydra.sweep.dir={work}/joblib"],
        ),
        (
            "submitit_local",
            ["transfer", "-m", "hydra/launcher=submitit_local", *lotra,
             f"hydra.sweep.dir={work}/submitit_local"],
        ),
        (
            "refs",
            ["transfer", "-m", "hydra/launcher=joblib", "adapter=full,scratch", TARGETS, *common,
             f"hydra.sweep.dir={work}/refs"],
        ),
        (
            "report_joblib",
            ["report", f"{work}/joblib", f"{work}/refs", "--out", f"{work}/report_joblib"],
        ),
        (
            "report_submitit_local",
            ["report", f"{work}/submitit_local", f"{work}/refs", "--out",
             f"{work}/report_submitit_local"],
        ),
    ]  # fmt: skip


def optuna_commands(work: Path) -> list[tuple[str, list[str]]]:
    """The Optuna section's two commands (docs/usage.md), with explicit directories."""
    return [
        ("source", ["pretrain", "train.steps=200", f"outputs_root={work}",
                    f"hydra.run.dir={work}/source"]),
        (
            "optuna",
            ["transfer", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=8",
             "hydra.sweeper.sampler.seed=0", "optim.damping=tag(log,interval(1e-6,1e-1))",
             "cr=choice(0.5,0.25,0.125)", "train.steps=50", f"outputs_root={work}",
             f"source={work}/source", f"hydra.sweep.dir={work}/optuna"],
        ),
    ]  # fmt: skip


def read_job(run_dir: Path) -> dict[str, Any]:
    """One job's row: its target, adapter, ranks, trainable count, errors, seconds, stop."""
    from pinnkan.io.results import RESULTS_FILE, read_results

    res = read_results(run_dir / RESULTS_FILE)
    attrs, metrics = res["attrs"], res["metrics"]
    layers = json.loads(attrs["layers"]) if attrs.get("layers") else []
    row = {
        "job": f"{run_dir.parent.name}/{run_dir.name.split('_', 1)[0]}",
        "mu": attrs["pde_params"]["mu"],
        "adapter": attrs.get("adapter"),
        "cr": attrs.get("cr"),
        "ranks": ["x".join(map(str, r["ranks"])) for r in layers if r.get("ranks")],
        "trainable": int(metrics["n_trainable"]),
        "rel_l2": float(metrics["rel_l2"]),
        "max_abs_error": float(metrics["max_abs_error"]),
        "train_seconds": float(metrics["train_seconds"]),
        "steps_done": int(metrics.get("steps_done", 0)),
        "stop_reason": str(attrs.get("stop_reason")),
    }
    if (run_dir / "diagnostics.png").is_file():  # full fine-tuning: ΔA's diagnostics
        row["diagnostics"] = diagnostics_rows(run_dir / RESULTS_FILE)
    return row


def diagnostics_rows(results: Path) -> list[dict[str, Any]]:
    """Per layer: shape, ‖ΔA‖ and the truncated-HOSVD error at each cr (pinnkan.run.diagnostics)."""
    import h5py

    out = []
    with h5py.File(results, "r") as f:
        g = f["diagnostics"]
        crs = json.loads(g.attrs["crs"])
        for name in sorted(g, key=lambda n: int(n.split("_")[1])):
            layer = g[name]
            ranks = layer["hosvd_ranks"][()].tolist()
            errs = layer["hosvd_rel_error"][()].tolist()
            out.append(
                {
                    "layer": int(name.split("_")[1]),
                    "shape": json.loads(layer.attrs["shape"]),
                    "delta_norm": float(layer.attrs["delta_norm"]),
                    "hosvd": {
                        str(c): {"ranks": r, "error": e} for c, r, e in zip(crs, ranks, errs)
                    },
                }
            )
    return out


def jobs(sweep: Path) -> list[Path]:
    """A multirun's job directories in job order (pinnkan.run.continuation.job_number)."""
    from pinnkan.run.continuation import job_number

    numbered = [d for d in sweep.iterdir() if d.is_dir() and job_number(d) is not None]
    return sorted(numbered, key=job_number)


def run(work: Path, threads: int) -> dict[str, Any]:
    hb = docblocks.owner("hard_benchmarks")  # provenance
    steps = run_commands(work, threads, commands(work))
    record = {
        "schema": SCHEMA,
        "work": str(work),
        "steps": steps,
        "source": read_job_source(work / "source"),
        "jobs": {
            s: [read_job(d) for d in jobs(work / s)] for s in ("joblib", "submitit_local", "refs")
        },
        **hb.provenance(threads),
    }
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(record, indent=1) + "\n")
    for plot in PLOTS:
        shutil.copy(work / "report_joblib" / f"{plot}.png", IMG / f"report_{plot}.png")
    # the first reference job (full fine-tuning to the first target): its ΔA diagnostics
    shutil.copy(jobs(work / "refs")[0] / "diagnostics.png", IMG / "report_diagnostics.png")
    return record


def run_commands(work: Path, threads: int, cmds: list[tuple[str, list[str]]]) -> list[dict]:
    """Each command in turn in a fresh `work`; its command line and wall seconds."""
    hb = docblocks.owner("hard_benchmarks")  # child processes
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    steps = []
    for name, args in cmds:
        cmd = [sys.executable, "-m", "pinnkan.cli", *args]
        t0 = time.perf_counter()
        rc, _, err = hb.run_child(cmd, hb.child_env(threads), None)
        wall = time.perf_counter() - t0
        if rc:
            raise SystemExit(f"{name} failed: {' '.join(cmd)}\n{err[-2000:]}")
        steps.append({"name": name, "command": "pinnkan " + " ".join(args), "wall_seconds": wall})
        print(f"{name}: {wall:.0f} s", flush=True)
    return steps


def run_optuna(work: Path, threads: int) -> dict[str, Any]:
    """The Optuna section's commands; every trial's parameters and rel. L2, and the plugin's
    optimization_results.yaml, to docs/sweep_demo/optuna.json."""
    import yaml

    from pinnkan.io.results import RESULTS_FILE, read_results

    steps = run_commands(work, threads, optuna_commands(work))
    trials = []
    for d in jobs(work / "optuna"):
        res = read_results(d / RESULTS_FILE)
        cfg = yaml.safe_load(res["attrs"]["config"])
        trials.append(
            {
                "job": d.name.split("_", 1)[0],
                "cr": cfg["cr"],
                "damping": cfg["optim"]["damping"],
                "rel_l2": float(res["metrics"]["rel_l2"]),
                "steps_done": int(res["metrics"].get("steps_done", 0)),
                "stop_reason": str(res["attrs"].get("stop_reason")),
                "train_seconds": float(res["metrics"]["train_seconds"]),
            }
        )
    best = yaml.safe_load((work / "optuna" / "optimization_results.yaml").read_text())
    record = {
        "schema": SCHEMA,
        "work": str(work),
        "steps": steps,
        "source": read_job_source(work / "source"),
        "trials": trials,
        "optimization_results": {k: best[k] for k in ("best_params", "best_value")},
        **docblocks.owner("hard_benchmarks").provenance(threads),
    }
    OPTUNA_DATA.parent.mkdir(parents=True, exist_ok=True)
    OPTUNA_DATA.write_text(json.dumps(record, indent=1) + "\n")
    return record


def optuna_table(rec: dict[str, Any]) -> str:
    """The study's trials in job order, the source, and the plugin's best."""
    src, best = rec["source"], rec["optimization_results"]
    lines = [
        f"Measured at {docblocks.owner('hard_benchmarks').commit_label(rec)} on "
        f"{rec['date'][:10]} ({rec['machine']['cpu_count']} cores, {rec['threads']} threads; raw "
        "data [sweep_demo/optuna.json](sweep_demo/optuna.json), written by "
        "`python scripts/sweep_demo.py --optuna`): the source (elliptic μ = 1) reached rel. L2 "
        f"{src['rel_l2']:.2e} ({src['steps_done']} LM steps, stop `{src['stop_reason']}`); "
        f"{len(rec['trials'])} trials to μ = 1.5, each 50 LM steps at most:",
        "",
        "| trial | cr | optim.damping | rel. L2 | LM steps | stop |",
        "|---|---|---|---|---|---|",
    ]
    for t in rec["trials"]:
        lines.append(
            f"| {t['job']} | {t['cr']:g} | {t['damping']:.2e} | {t['rel_l2']:.2e} | "
            f"{t['steps_done']} | {t['stop_reason']} |"
        )
    params = ", ".join(f"{k}: {v:.3g}" for k, v in best["best_params"].items())
    lines += ["", f"`optimization_results.yaml`: best_params {{{params}}}, best_value "
              f"{best['best_value']:.3e}."]  # fmt: skip
    return "\n".join(lines)


def read_job_source(run_dir: Path) -> dict[str, Any]:
    from pinnkan.io.results import RESULTS_FILE, read_results

    res = read_results(run_dir / RESULTS_FILE)
    m = res["metrics"]
    return {
        "rel_l2": float(m["rel_l2"]),
        "train_seconds": float(m["train_seconds"]),
        "steps_done": int(m.get("steps_done", 0)),
        "stop_reason": str(res["attrs"].get("stop_reason")),
    }


# --- tables ----------------------------------------------------------------------------------
def jobs_table(rec: dict[str, Any]) -> str:
    """The jobs of both launchers (same seed, same config: their errors are listed once, from
    joblib, with each launcher's training seconds) and the references, by target."""
    other = {(j["mu"], j["cr"]): j for j in rec["jobs"]["submitit_local"]}
    lines = [
        "| job | target μ | adapter | cr | ranks (per layer) | trainable | rel. L2 | max abs err "
        "| LM steps | stop | train s (joblib / submitit_local) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [*rec["jobs"]["joblib"], *rec["jobs"]["refs"]]
    order = {"full": 0, "lotra": 1, "scratch": 2}
    rows.sort(key=lambda j: (j["mu"], order.get(j["adapter"], 3), -(j["cr"] or 0)))
    for j in rows:
        lotra = j["adapter"] == "lotra"
        seconds = f"{j['train_seconds']:.1f}"
        if lotra and (j["mu"], j["cr"]) in other:
            seconds += f" / {other[(j['mu'], j['cr'])]['train_seconds']:.1f}"
        lines.append(
            f"| {j['job']} | {j['mu']:g} | {j['adapter']} | {j['cr']:g} | "
            f"{'; '.join(j['ranks']) if lotra else '–'} | {j['trainable']} | "
            f"{j['rel_l2']:.3e} | {j['max_abs_error']:.3e} | {j['steps_done']} | "
            f"{j['stop_reason']} | {seconds} |"
            if lotra
            else f"| {j['job']} | {j['mu']:g} | {j['adapter']} | – | – | {j['trainable']} | "
            f"{j['rel_l2']:.3e} | {j['max_abs_error']:.3e} | {j['steps_done']} | "
            f"{j['stop_reason']} | {seconds} |"
        )
    return "\n".join(lines)


def diagnostics_table(rec: dict[str, Any]) -> str:
    lines = [
        "| run | layer | shape | ‖ΔA‖ | err cr=0.5 (ranks) | err cr=0.25 (ranks) | "
        "err cr=0.125 (ranks) |",
        "|---|---|---|---|---|---|---|",
    ]
    for j in rec["jobs"]["refs"]:
        for d in j.get("diagnostics", []):
            cells = [
                f"{d['hosvd'][c]['error']:.2f} ({'x'.join(map(str, d['hosvd'][c]['ranks']))})"
                for c in ("0.5", "0.25", "0.125")
            ]
            shape = "x".join(map(str, d["shape"]))
            lines.append(
                f"| {j['job']} (μ={j['mu']:g}) | {d['layer']} | {shape} | "
                f"{d['delta_norm']:.2f} | {' | '.join(cells)} |"
            )
    return "\n".join(lines)


def walls(rec: dict[str, Any]) -> str:
    s = {step["name"]: step["wall_seconds"] for step in rec["steps"]}
    src = rec["source"]
    return (
        f"Measured at {rec['git_commit'][:7]} on {rec['date'][:10]} ({rec['machine']['cpu_count']} "
        f"cores, {rec['threads']} threads, nothing else running; raw data "
        "[sweep_demo/demo.json](sweep_demo/demo.json), tables and plots written by "
        "`python scripts/sweep_demo.py`): the source reached rel. L2 "
        f"{src['rel_l2']:.2e} ({src['steps_done']} LM steps, stop `{src['stop_reason']}`, "
        f"{src['train_seconds']:.1f} s of training). Wall seconds, each command from its start to "
        f"its end: joblib's 6 jobs {s['joblib']:.0f} s, submitit_local's {s['submitit_local']:.0f} "
        f"s ({s['submitit_local'] / s['joblib']:.1f}× joblib's), the 4 references with joblib "
        f"{s['refs']:.0f} s, each report {s['report_joblib']:.0f} and "
        f"{s['report_submitit_local']:.0f} s."
    )


BLOCKS = {
    "sweep-demo-walls": walls,
    "sweep-demo-jobs": jobs_table,
    "sweep-demo-diag": diagnostics_table,
    "optuna-demo": optuna_table,
}


def block(name: str, doc: Path) -> str:
    """A block's body from the committed JSON (scripts/docblocks.py)."""
    data = OPTUNA_DATA if name == "optuna-demo" else DATA
    return BLOCKS[name](json.loads(data.read_text()))


def regenerated() -> str:
    text = DOC.read_text()
    for name in BLOCKS:
        text = docblocks.replace(text, name, block(name, DOC), DOC)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "sweepdemo")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tables", action="store_true")
    p.add_argument("--check", action="store_true")
    p.add_argument("--optuna", action="store_true", help="run the Optuna section's commands")
    args = p.parse_args(argv)
    mode = docblocks.table_mode(args.tables, args.check, DOC, regenerated)
    if mode is not None:
        return mode
    if args.optuna:
        run_optuna(args.work.with_name(args.work.name + "_optuna"), args.threads)
    else:
        run(args.work, args.threads)
    DOC.write_text(regenerated())
    return 0


if __name__ == "__main__":
    sys.exit(main())
