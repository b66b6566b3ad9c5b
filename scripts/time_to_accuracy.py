"""Relative L2 error against training seconds, Adam vs Levenberg–Marquardt, pretrain and transfer.

For each family, one process runs every variant one after the other (never two at once):
pretrain with Adam (3000 steps) and with 1000 Adam steps then L-BFGS (width 32, Adam's best),
and LM (the default width 16); then, from the LM source,
transfers with LoTRA cr 0.5 and 0.25, full fine-tuning and scratch, each with Adam and LM.
Writes docs/tta/<family>.json, docs/img/tta_<family>.png and, from the JSONs alone, two
generated blocks of docs/benchmarks.md: `tta` (per family: time to 1e-2 ... 1e-5, best error at
fixed times) and `tta-summary` (LM transfers' time to 1e-3 against scratch; Adam against LM).

    python scripts/time_to_accuracy.py                       # all four families (about 1 h)
    python scripts/time_to_accuracy.py --families elliptic --pretrain-seconds 60
    python scripts/time_to_accuracy.py --tables-only          # rewrite the docs from the JSONs
    python scripts/time_to_accuracy.py --check                # exit 1 if the page's blocks differ

Training seconds exclude evaluation (history/seconds); this machine's speed drifts, so compare
curves within one family's run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docblocks

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("elliptic", "parabolic", "advection", "wave")
THRESHOLDS = (1e-2, 1e-3, 1e-4, 1e-5)
DATA = ROOT / "docs" / "tta"
DOC = ROOT / "docs" / "benchmarks.md"
SUMMARY_LEVEL = 1e-3  # the tta-summary block's error level
ADAPTERS = ("LoTRA cr 0.5", "LoTRA cr 0.25", "full", "scratch")  # transfer labels before ", LM"


def variants(pretrain_s: float, transfer_s: float) -> list[tuple[str, str, dict[str, Any]]]:
    """(stage, label, config changes) in run order; the LM pretrain is the transfer source."""
    adam = {"optim": {"name": "adam", "lr": 0.01, "lr_decay": 0.1, "lbfgs_steps": 0}}
    lm = {"optim": {"name": "lm"}}
    wide = {"model.hidden": [32, 32]}  # Adam's own best width (docs/method.md)
    out: list[tuple[str, str, dict[str, Any]]] = [
        ("pretrain", "Adam [32,32]", {**adam, **wide, "train.steps": 3000, "train.eval_every": 50}),
        (
            "pretrain",
            "Adam + L-BFGS [32,32]",
            {
                "optim": {**adam["optim"], "lbfgs_steps": 100000},
                **wide,
                "train.steps": 1000,  # leaves most of the budget to L-BFGS
                "train.eval_every": 50,
            },
        ),
        ("pretrain", "LM", {**lm, "train.steps": 100000, "train.eval_every": 5}),
    ]
    for opt_label, opt in (("Adam", adam), ("LM", lm)):
        for label, adapter in (
            ("LoTRA cr 0.5", {"adapter": {"name": "lotra"}, "cr": 0.5}),
            ("LoTRA cr 0.25", {"adapter": {"name": "lotra"}, "cr": 0.25}),
            ("full", {"adapter": {"name": "full"}}),
            ("scratch", {"adapter": {"name": "scratch"}}),
        ):
            change = {**adapter, "optim": {**opt["optim"]}}
            if opt_label == "Adam":
                change["optim"]["lr"] = 0.03
                change.update({"train.steps": 2500, "train.eval_every": 50})
            else:
                change.update({"train.steps": 100000, "train.eval_every": 5})
            out.append(("transfer", f"{label}, {opt_label}", change))
    for stage, _, change in out:
        change["train.max_seconds"] = pretrain_s if stage == "pretrain" else transfer_s
    return out


def _config(family: str, stage: str, change: dict[str, Any], root: Path) -> dict[str, Any]:
    """The stage config the CLI would build (conf/ defaults) with `change` applied."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(stage, [f"pde={family}"])
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    plain.update({"outputs_root": str(root), "threads": 2, "device": "cpu"})
    plain["train"]["progress"] = "none"
    plain["train"]["checkpoint_every"] = 0
    for key, value in change.items():
        node = plain
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last] = {**node[last], **value}
        else:
            node[last] = value
    return plain


def run_family(family: str, pretrain_s: float, transfer_s: float, out: Path) -> None:
    """Every variant of one family, in this process, one at a time; results to `out` (JSON)."""
    import torch

    from pinnkan.run import runner

    torch.set_num_threads(2)
    root = ROOT / "outputs" / "tta" / family / time.strftime("%Y-%m-%d_%H-%M-%S")
    rows, source = [], None
    for i, (stage, label, change) in enumerate(variants(pretrain_s, transfer_s)):
        cfg = _config(family, stage, change, root)
        if stage == "transfer":
            cfg["source"] = str(source)
        run_dir = root / f"{i:02d}_{stage}_{label.replace(' ', '_').replace(',', '')}"
        fn = runner.pretrain if stage == "pretrain" else runner.transfer
        res = fn(cfg, run_dir)
        if stage == "pretrain" and label == "LM":
            source = run_dir
        h = res.history
        rows.append(
            {
                "stage": stage,
                "label": label,
                "seconds": [float(v) for v in h["seconds"]],
                "rel_l2": [float(v) for v in h["rel_l2"]],
                "final_rel_l2": float(res.metrics["rel_l2"]),
                "trainable": int(res.metrics["n_trainable"]),
                "steps_done": int(res.metrics["steps_done"]),
                "run_dir": str(run_dir.relative_to(ROOT)),
            }
        )
        print(f"{family} {stage} {label}: rel_l2 {rows[-1]['final_rel_l2']:.2e}", flush=True)
    meta = {
        "family": family,
        "pretrain_seconds": pretrain_s,
        "transfer_seconds": transfer_s,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    out.write_text(json.dumps({"meta": meta, "runs": rows}, indent=1))


def time_to(row: dict[str, Any], threshold: float) -> float | None:
    for t, e in zip(row["seconds"], row["rel_l2"]):
        if e <= threshold:
            return t
    return None


def best_by(row: dict[str, Any], seconds: float) -> float | None:
    errs = [e for t, e in zip(row["seconds"], row["rel_l2"]) if t <= seconds]
    return min(errs) if errs else None


def _fmt_t(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _fmt_e(v: float | None) -> str:
    return "–" if v is None else f"{v:.1e}"


def family_name(data: dict[str, Any]) -> str:
    """The family's own name, also for a run recorded under an alias (hyperbolic: advection)."""
    from pinnkan.pde import current_name

    return current_name(data["meta"]["family"])


def table(data: dict[str, Any]) -> str:
    m = data["meta"]
    marks = sorted({60.0, 120.0, float(m["pretrain_seconds"])})
    lines = [
        f"#### {family_name(data)} (budget {m['pretrain_seconds']:.0f} s pretrain, "
        f"{m['transfer_seconds']:.0f} s transfer; torch {m['torch']}, {m['threads']} threads)",
        "",
        "| stage | variant | trainable | "
        + " | ".join(f"s to {t:g}" for t in THRESHOLDS)
        + " | "
        + " | ".join(f"best by {s:.0f} s" for s in marks)
        + " | final |",
        "|" + "---|" * (4 + len(THRESHOLDS) + len(marks)),
    ]
    for row in data["runs"]:
        cells = [row["stage"], row["label"], str(row["trainable"])]
        cells += [_fmt_t(time_to(row, t)) for t in THRESHOLDS]
        cells += [_fmt_e(best_by(row, s)) for s in marks]
        cells.append(_fmt_e(row["final_rel_l2"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, stage in zip(axes, ("pretrain", "transfer")):
        for row in data["runs"]:
            if row["stage"] != stage:
                continue
            style = "-" if row["label"].endswith("LM") or row["label"] == "LM" else "--"
            ax.semilogy(row["seconds"], row["rel_l2"], style, label=row["label"])
        ax.set_title(f"{family_name(data)}: {stage}")
        ax.set_xlabel("training seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("relative L2 error")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load(families: list[str] | tuple[str, ...] = FAMILIES) -> dict[str, dict[str, Any]]:
    """The committed raw curves, docs/tta/<family>.json, of the families that have one."""
    paths = {f: DATA / f"{f}.json" for f in families}
    return {f: json.loads(p.read_text()) for f, p in paths.items() if p.is_file()}


def _ratio(v: float) -> str:
    return f"{v:.0f}×" if v >= 100 else f"{v:.1f}×"


def summary(runs: dict[str, dict[str, Any]]) -> str:
    """Two tables from the curves: each LM transfer's seconds to SUMMARY_LEVEL and scratch's
    over it (from the unrounded times); Adam's best error within the transfer budget against
    LM's for the same adapter."""
    level = f"{SUMMARY_LEVEL:.0e}".replace("e-0", "e-")
    lines = [
        f"Seconds to rel. L2 {level} with LM, and in brackets the saving: scratch's seconds over "
        'the variant\'s (both unrounded); "–": not reached, with the best error within the '
        "budget:",
        "",
        "| family | " + " | ".join(ADAPTERS) + " |",
        "|" + "---|" * (1 + len(ADAPTERS)),
    ]
    for data in runs.values():
        rows = {r["label"]: r for r in data["runs"]}
        budget = float(data["meta"]["transfer_seconds"])
        base = time_to(rows["scratch, LM"], SUMMARY_LEVEL)
        cells = []
        for adapter in ADAPTERS:
            row = rows[f"{adapter}, LM"]
            t = time_to(row, SUMMARY_LEVEL)
            if t is None:
                cells.append(f"– ({_fmt_e(best_by(row, budget))} by {budget:.0f} s)")
            elif adapter == "scratch" or base is None:
                cells.append(f"{_fmt_t(t)} s")
            else:
                cells.append(f"{_fmt_t(t)} s ({_ratio(base / t)})")
        lines.append(f"| {family_name(data)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Adam against LM with the same adapter: best rel. L2 within the transfer budget, "
        "Adam's over LM's, and where Adam's run ended (training seconds, steps):",
        "",
        "| family | adapter | Adam | LM | Adam / LM | Adam ended at |",
        "|---|---|---|---|---|---|",
    ]
    for data in runs.values():
        rows = {r["label"]: r for r in data["runs"]}
        budget = float(data["meta"]["transfer_seconds"])
        for adapter in ADAPTERS:
            row = rows[f"{adapter}, Adam"]
            adam = best_by(row, budget)
            lm = best_by(rows[f"{adapter}, LM"], budget)
            ratio = _ratio(adam / lm) if adam is not None and lm else "–"
            ended = f"{row['seconds'][-1]:.0f} s, {row['steps_done']} steps"
            lines.append(
                f"| {family_name(data)} | {adapter} | {_fmt_e(adam)} | {_fmt_e(lm)} | {ratio} "
                f"| {ended} |"
            )
    return "\n".join(lines)


def block(name: str, doc: Path) -> str:
    """The body of the generated block `name` (tta, tta-summary) from the committed JSONs
    (scripts/docblocks.py); no plot is written."""
    runs = load()
    if name == "tta-summary":
        return summary(runs)
    parts = [table(data) + f"\n\n![{f}](img/tta_{f}.png)\n" for f, data in runs.items()]
    return "\n".join(parts)


def regenerated(doc: Path = DOC) -> str:
    text = doc.read_text()
    for name in ("tta-summary", "tta"):
        text = docblocks.replace(text, name, block(name, doc), doc)
    return text


def write_docs() -> None:
    """The plots and both blocks of docs/benchmarks.md from the JSONs."""
    for family, data in load().items():
        plot(data, ROOT / "docs" / "img" / f"tta_{family}.png")
    DOC.write_text(regenerated(DOC))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--pretrain-seconds", type=float, default=120.0)
    ap.add_argument("--transfer-seconds", type=float, default=60.0)
    ap.add_argument("--tables-only", action="store_true", help="rewrite docs from the JSONs")
    ap.add_argument("--check", action="store_true", help="exit 1 if the page's blocks differ")
    ap.add_argument("--family-run", help=argparse.SUPPRESS)  # the child process' family
    args = ap.parse_args(argv)
    if args.check:
        return docblocks.check(DOC, regenerated(DOC))
    out_dir = DATA
    out_dir.mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
    if args.family_run:
        run_family(
            args.family_run,
            args.pretrain_seconds,
            args.transfer_seconds,
            out_dir / f"{args.family_run}.json",
        )
        return 0
    if not args.tables_only:
        for family in args.families:  # one process per family, one at a time
            cmd = [
                sys.executable,
                __file__,
                "--family-run",
                family,
                "--pretrain-seconds",
                str(args.pretrain_seconds),
                "--transfer-seconds",
                str(args.transfer_seconds),
            ]
            subprocess.run(cmd, check=True)
    write_docs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
