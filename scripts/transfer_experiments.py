"""Transfer runs with config overrides, in one process, against one pretrained source.

Each positional argument is a JSON object of dotted overrides applied to a base transfer
config (elliptic, [2,32,32,1] by default, LoTRA cr=0.25, 1500 Adam steps, lr 0.01, LoTRA
constants all 1). Prints the final relative L2 error, trainable parameters, time and the error
every 300 steps. Used for the tuning measurements quoted in docs/method.md.

    python scripts/transfer_experiments.py --source outputs/pretrain/elliptic/<run> \\
        '{"pde.target.mu": 1.5, "optim.lr": 0.03, "adapter.lr_strategy": "uniform"}'
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pinnkan.run import runner
from pinnkan.run.config import set_dotted

BASE: dict[str, Any] = {
    "seed": 0,
    "precision": "float32",
    "device": "cpu",
    "pde": {
        "name": "elliptic",
        "source": {"lam": 0.0, "mu": 1.0},
        "target": {"lam": 0.0, "mu": 2.0},
        "weights": {"boundary": 10.0},
    },
    "model": {"name": "bspline", "hidden": [32, 32], "grid_size": 5},
    "optim": {"name": "adam", "lr": 0.01, "lr_decay": 0.1},
    "train": {"steps": 1500, "progress": "none", "eval_every": 100},
    "eval": {"n": 101},
    "cr": 0.25,
    "adapter": {"name": "lotra"},
}


def with_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with dotted keys ("pde.target.mu") set."""
    cfg = copy.deepcopy(base)
    for key, value in overrides.items():
        set_dotted(cfg, key, value)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, help="pretrain run dir (or its model file)")
    ap.add_argument("--hidden", default="32,32", help="hidden widths of the source network")
    ap.add_argument("overrides", nargs="+", help="JSON objects of dotted overrides, one per run")
    args = ap.parse_args()
    base = with_overrides(
        BASE, {"source": args.source, "model.hidden": [int(w) for w in args.hidden.split(",")]}
    )
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(args.overrides):
            cfg = with_overrides(base, json.loads(spec))
            t0 = time.perf_counter()
            r = runner.transfer(cfg, Path(tmp) / str(i))
            curve = [f"{e:.1e}" for e in r.history["rel_l2"][2::3]]
            print(
                f"{spec}  rel_l2 {r.metrics['rel_l2']:.3e}  trainable {r.metrics['n_trainable']}"
                f"  {time.perf_counter() - t0:.0f} s  curve {curve}",
                flush=True,
            )


if __name__ == "__main__":
    main()
