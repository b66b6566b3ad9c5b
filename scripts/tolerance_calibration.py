"""Calibrate `train.tol`: which relative held-out loss goes with which rel. L2 on the default
members, and where a run with each candidate tolerance would have stopped.

Per family: the default pretrain and `transfer cr=0.25` on its default target, with
`train.tol=0` (no stop) and the held-out loss recorded every 10 steps:

    python scripts/tolerance_calibration.py                 # runs (or reuses) them, writes JSON
    python scripts/tolerance_calibration.py --tables        # docs/tolerance.md's table
    python scripts/tolerance_calibration.py --check         # exit 1 if the page's table differs

The relative held-out loss is the run's `history/heldout_loss` over the loss u = 0 has on a
large Sobol set of the same member (16384 interior points, 4096 per condition): the run's own
held-out set is of the same distribution, so the ratio is the one `train.tol` tests, up to the
sampling of that set. The stop is read at the recorded points (every 10 steps), where the run
itself tests every accepted step, so the table's stop is at most 10 steps late.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import docblocks

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "tolerance"
DOC = ROOT / "docs" / "tolerance.md"
TABLE = docblocks.markers("tolerance-table")
FAMILIES = ("elliptic", "parabolic", "advection", "wave")
CANDIDATES = (1e-5, 1e-6, 1e-7, 1e-8, 1e-9)


def commands(family: str, work: Path) -> dict[str, list[str]]:
    common = ["train.eval_every=10", "train.tol=0", f"outputs_root={work / 'out'}"]
    pre = work / family / "pre"
    return {
        "pretrain": ["pretrain", f"pde={family}", *common, f"hydra.run.dir={pre}"],
        "transfer": [
            "transfer",
            f"pde={family}",
            "cr=0.25",
            f"source={pre}",
            *common,
            f"hydra.run.dir={work / family / 'tr'}",
        ],
    }


def zero_loss(family: str, params: dict[str, float]) -> float:
    """The loss u = 0 has on a large Sobol set of the member (the scale train.tol uses)."""
    import torch

    from pinnkan.pde import build_pde
    from pinnkan.pinn.loss import PinnLoss

    loss = PinnLoss(build_pde(family, params))
    gen = torch.Generator().manual_seed(0)
    batch = loss.sample(16384, 4096, gen, torch.float64, torch.device("cpu"), quasi=True)
    return loss.zero_loss(batch)


def record(family: str, stage: str, run_dir: Path, cmd: list[str]) -> dict[str, Any]:
    import h5py

    with h5py.File(run_dir / "results.h5", "r") as f:
        params = json.loads(f.attrs["pde_params"])
        network = {"model": str(f.attrs["model"]), "widths": json.loads(f.attrs["widths"])}
        hist = {k: f["history"][k][()].tolist() for k in ("step", "seconds", "rel_l2")}
        hist["heldout_loss"] = f["history/heldout_loss"][()].tolist()
    scale = zero_loss(family, params)
    return {
        "family": family,
        "stage": stage,
        "pde_params": params,
        **network,  # the default network of the run (the commands name no model=)
        "command": "pinnkan " + " ".join(cmd),
        "zero_loss": scale,
        "history": hist,
        "relative_heldout": [h / scale for h in hist["heldout_loss"]],
    }


def run_all(work: Path, out: Path, families: list[str]) -> None:
    hb = docblocks.owner("hard_benchmarks")  # provenance, child processes
    out.mkdir(parents=True, exist_ok=True)
    for family in families:
        for stage, cmd in commands(family, work).items():
            run_dir = Path(cmd[-1].split("=", 1)[1])
            if not (run_dir / "results.h5").is_file():
                full = [sys.executable, "-m", "pinnkan.cli", *cmd, "train.progress=log"]
                rc, _, err = hb.run_child(full, hb.child_env(2), None)
                if rc:
                    raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
            rec = {**record(family, stage, run_dir, cmd), **hb.provenance(2)}
            (out / f"{family}_{stage}.json").write_text(json.dumps(rec, indent=1) + "\n")
            print(family, stage, "done", flush=True)


def stop_at(rec: dict[str, Any], tol: float) -> tuple[float, float, int] | None:
    """(rel. L2, seconds, step) at the first recorded point with relative held-out ≤ tol."""
    h = rec["history"]
    for i, rel in enumerate(rec["relative_heldout"]):
        if rel <= tol:
            return h["rel_l2"][i], h["seconds"][i], h["step"][i]
    return None


def table(out: Path) -> str:
    recs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    head = "| family | stage | final rel. L2 (no stop) | " + " | ".join(
        f"tol {t:.0e}: rel. L2 @ s" for t in CANDIDATES
    )
    lines = [head + " |", "|---|---|---|" + "---|" * len(CANDIDATES)]
    for rec in sorted(recs, key=lambda r: (FAMILIES.index(r["family"]), r["stage"])):
        cells = []
        for tol in CANDIDATES:
            hit = stop_at(rec, tol)
            cells.append("never" if hit is None else f"{hit[0]:.1e} @ {hit[1]:.0f}")
        final = rec["history"]["rel_l2"][-1]
        lines.append(
            f"| {rec['family']} | {rec['stage']} | {final:.1e} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def block(name: str, doc: Path) -> str:
    """The tolerance-table block's body from the committed JSONs (scripts/docblocks.py)."""
    return table(OUT)


def regenerated(doc: Path, out: Path) -> str:
    return docblocks.replace(doc.read_text(), TABLE, table(out), doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "tolerance_calibration")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--families", type=lambda v: v.split(","), default=list(FAMILIES))
    p.add_argument("--tables", action="store_true")
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    if args.tables:
        DOC.write_text(regenerated(DOC, args.out))
        return 0
    if args.check:
        return docblocks.check(DOC, regenerated(DOC, args.out))
    run_all(args.work, args.out, args.families)
    return 0


if __name__ == "__main__":
    sys.exit(main())
