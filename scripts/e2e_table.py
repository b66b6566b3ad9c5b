"""Run the CLI end to end with the default configs and tabulate what each run measured.

For every model kind and PDE family: `pinnkan pretrain pde=X model=M`, then
`pinnkan transfer pde=X model=M` with adapter=lotra at cr 0.5 and 0.25, adapter=full and
adapter=scratch (`--runs` picks a subset). Each command runs alone, one after the other (run
this script with nothing else on the machine). Prints a Markdown table (relative L2, max error,
trainable and total parameters, wall time of the whole command, training time per step) and,
with --out, writes it to a file. `--pretrain-steps` / `--transfer-steps` set an equal budget
for every model (default: the configs' own).

    python scripts/e2e_table.py --pdes elliptic parabolic --out docs/e2e_defaults.md
    python scripts/e2e_table.py --models bspline rational chebyshev mlp lmkan \
        --pdes elliptic parabolic --runs pretrain "lotra cr=0.25" \
        --pretrain-steps 1000 --transfer-steps 500 --out docs/models_table.md
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import torch

RUNS = [
    ("pretrain", []),
    ("lotra cr=0.5", ["adapter=lotra", "cr=0.5"]),
    ("lotra cr=0.25", ["adapter=lotra", "cr=0.25"]),
    ("full", ["adapter=full"]),
    ("scratch", ["adapter=scratch"]),
]


def run(args: list[str], run_dir: Path) -> tuple[float, dict]:
    """One CLI call into `run_dir`; returns its wall time and the metrics of its results.h5."""
    cmd = [
        sys.executable,
        "-m",
        "pinnkan.cli",
        *args,
        f"hydra.run.dir={run_dir}",
        "train.progress=log",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    with h5py.File(run_dir / "results.h5", "r") as f:
        m = dict(f["metrics"].attrs)
        params = json.loads(f.attrs["pde_params"])
    return wall, {**{k: float(v) for k, v in m.items()}, "params": params}


def budget_note(args: argparse.Namespace) -> str:
    """How the step budget was set, for the table's header line."""
    if args.pretrain_steps is None and args.transfer_steps is None:
        return "default configs"
    return (
        f"default configs except train.steps: pretrain {args.pretrain_steps or 'default'}, "
        f"transfer {args.transfer_steps or 'default'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pdes", nargs="+", default=["elliptic", "parabolic", "advection", "wave"])
    ap.add_argument("--models", nargs="+", default=["bspline"])
    ap.add_argument("--runs", nargs="+", default=[n for n, _ in RUNS], choices=[n for n, _ in RUNS])
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--transfer-steps", type=int, default=None)
    ap.add_argument("--work", type=Path, default=Path("outputs/e2e_table"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    lines = [
        f"Measured with `python scripts/e2e_table.py` on {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"{budget_note(args)}.",
        "",
        "| model | PDE | run | parameters | rel. L2 | max abs err | trainable | total | full FT"
        " | command wall s | train s | ms/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in args.models:
        for pde in args.pdes:
            source = args.work / model / pde / "pretrain"
            for name, extra in RUNS:
                if name not in args.runs:
                    continue
                stage = "pretrain" if name == "pretrain" else "transfer"
                slug = name.replace(" ", "_").replace("=", "")
                run_dir = source if stage == "pretrain" else args.work / model / pde / slug
                cli = [stage, f"pde={pde}", f"model={model}", *extra]
                steps = args.pretrain_steps if stage == "pretrain" else args.transfer_steps
                if steps is not None:
                    cli.append(f"train.steps={steps}")
                if stage == "transfer":
                    cli.append(f"source={source}")
                wall, m = run(cli, run_dir)
                full = int(m.get("n_full_finetune", m["n_trainable"]))
                row = (
                    f"| {model} | {pde} | {name} | {json.dumps(m['params'])} |"
                    f" {m['rel_l2']:.2e} | {m['max_abs_error']:.2e} | {int(m['n_trainable'])} |"
                    f" {int(m['n_total'])} | {full} | {wall:.0f} | {m['train_seconds']:.0f} |"
                    f" {1000 * m['train_seconds'] / max(m.get('steps_done', m['steps']), 1):.1f} |"
                )
                print(row, flush=True)
                lines.append(row)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
