"""Run the CLI end to end with the default configs and tabulate what each run measured.

For every PDE family: `pinnkan pretrain pde=X`, then `pinnkan transfer pde=X` with
adapter=lotra at cr 0.5 and 0.25, adapter=full and adapter=scratch. Each command runs alone,
one after the other (run this script with nothing else on the machine). Prints a Markdown
table (relative L2, max error, trainable parameters, wall time of the whole command, training
time) and, with --out, writes it to a file.

    python scripts/e2e_table.py --pdes elliptic parabolic --out docs/e2e_defaults.md
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pdes", nargs="+", default=["elliptic", "parabolic", "hyperbolic", "wave"])
    ap.add_argument("--work", type=Path, default=Path("outputs/e2e_table"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    lines = [
        f"Measured with `python scripts/e2e_table.py` on {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, default configs.",
        "",
        "| PDE | run | parameters | rel. L2 | max abs err | trainable | full FT | command wall s"
        " | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for pde in args.pdes:
        source = args.work / pde / "pretrain"
        for name, extra in RUNS:
            stage = "pretrain" if name == "pretrain" else "transfer"
            slug = name.replace(" ", "_").replace("=", "")
            run_dir = source if stage == "pretrain" else args.work / pde / slug
            cli = [stage, f"pde={pde}", *extra]
            if stage == "transfer":
                cli.append(f"source={source}")
            wall, m = run(cli, run_dir)
            full = int(m.get("n_full_finetune", m["n_trainable"]))
            row = (
                f"| {pde} | {name} | {json.dumps(m['params'])} | {m['rel_l2']:.2e} |"
                f" {m['max_abs_error']:.2e} | {int(m['n_trainable'])} | {full} | {wall:.0f} |"
                f" {m['train_seconds']:.0f} |"
            )
            print(row, flush=True)
            lines.append(row)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
