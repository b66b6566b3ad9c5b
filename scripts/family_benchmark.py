"""What a user of a sweep pays: one pretrain plus 10 members of a family, by strategy.

For a family, a seed and each strategy, one at a time, as a user runs them:
`pinnkan pretrain pde=<family> seed=<s>` once, then per strategy one multirun
`pinnkan transfer -m pde=<family> source=<pretrain> pde.target.<p>=<10 values> <strategy's
overrides>` (scratch needs no pretrain). Every run stops by its own signal (`train.tol`, or LM
converged, or the step budget); each member's rel. L2 is then read from its results.h5 and
checked against the target (1e-4; 1e-3 on wave). The raw data of one (family, strategy, seed)
is one JSON in docs/family/: every member's error, training and wall seconds, stop reason,
steps and stored bytes, the pretrain's, the exact commands, commit, date and machine.

    python scripts/family_benchmark.py --families elliptic --seeds 0
    python scripts/family_benchmark.py --families elliptic --strategies scratch,nearest
    python scripts/family_benchmark.py --families wave --tol 1e-5   # every run at train.tol 1e-5
    python scripts/family_benchmark.py --tables   # docs/family_benchmark.md from the JSONs
    python scripts/family_benchmark.py --check    # exit 1 if the page's table differs

Totals: training seconds summed over the members (and the pretrain, for strategies that use
it); the saving is scratch's total over the strategy's, per seed, then the median over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import docblocks

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1
OUT = ROOT / "docs" / "family"
DOC = ROOT / "docs" / "family_benchmark.md"
TABLE = docblocks.markers("family-table")
# the search of the transfers' initial damping (--damping, held-out seed): its own records
SEARCH = OUT / "search"
SEARCH_TABLE = docblocks.markers("family-damping")
# family: (parameter, source value, last target, target rel. L2)
FAMILIES: dict[str, tuple[str, float, float, float]] = {
    "elliptic": ("mu", 1.0, 2.0, 1e-4),
    "parabolic": ("nu", 0.1, 0.4, 1e-4),
    "advection": ("beta", 1.0, 5.0, 1e-4),
    "wave": ("c", 1.0, 1.5, 1e-3),
    "helmholtz": ("k", 2.0, 3.5, 1e-4),
}
N_MEMBERS = 10
# LM's damping rule (optim.damping_rule) a record was measured with: records without the field
# predate the option and ran under "nielsen" (commit c28987c made "divide" the default for one
# commit; its records say so); rows under another rule than today's default are rows of their
# own (docs/damping.md)
RULE_BEFORE = "nielsen"
# the transfers' initial LM damping (optim.damping's transfer entry) a record was measured
# with: records without the field ran at 1e-3, the one damping of both stages before it became
# per stage; rows at another damping than today's default are rows of their own
DAMPING_BEFORE = 1e-3
# the sources a strategy can start from: the family's default pretrain, or a parametric PINN
# over the family's range (pde.parametric), with the pretrain budget of its own searched
# setting (docs/family_benchmark.md, "parametric")
DEFAULT, PARAMETRIC, PARAMETRIC_SHORT = "default", "parametric", "parametric_short"
SOURCES: dict[str, list[str]] = {
    DEFAULT: [],
    PARAMETRIC: [],  # the pretrain's own budget (train.tol or 500 LM steps)
    PARAMETRIC_SHORT: ["train.steps=100"],
}
# strategy: (overrides of the transfer sweep, the source it starts from; None: no pretrain)
STRATEGIES: dict[str, tuple[list[str], str | None]] = {
    "scratch": (["adapter=scratch"], None),
    "lotra_source": ([], DEFAULT),  # the defaults: LoTRA cr 0.5, each member from the source
    "lotra_source_cr0.25": (["cr=0.25"], DEFAULT),
    "full_source": (["adapter=full"], DEFAULT),
    "nearest": (["transfer.start=nearest"], DEFAULT),  # LoTRA cr 0.5 from the nearest member
    "nearest_secant": (["transfer.start=nearest", "transfer.predictor=secant"], DEFAULT),
    "full_nearest": (["adapter=full", "transfer.start=nearest"], DEFAULT),
    "full_nearest_secant": (
        ["adapter=full", "transfer.start=nearest", "transfer.predictor=secant"],
        DEFAULT,
    ),
    # rank growth: LoTRA from cr 0.25, the ranks doubling on a stall up to cr 1
    "grow_source": (["cr=0.25", "adapter.grow_to=1.0"], DEFAULT),
    "grow_nearest": (["cr=0.25", "adapter.grow_to=1.0", "transfer.start=nearest"], DEFAULT),
    # one-shot: the last layer from one least-squares solve (linear families)
    "lstsq": (["adapter=lstsq"], DEFAULT),
    # a parametric PINN over the range, evaluated at each member (no training per member)
    "parametric": (["train.steps=0"], PARAMETRIC),
    # ... from a shorter parametric pretrain, each member fine-tuned in full
    "parametric_full": (["adapter=full"], PARAMETRIC_SHORT),
}


def source_overrides(family: str, source: str) -> list[str]:
    """The pretrain overrides of `source` for `family` (its range for a parametric one)."""
    param, lo, hi, _ = FAMILIES[family]
    swept = [f"pde.parametric.{param}=[{lo:g},{hi:g}]"] if source != DEFAULT else []
    return [*swept, *SOURCES[source]]


def targets(family: str) -> list[float]:
    """The 10 evenly spaced targets after the source, the last at the range's end."""
    _, lo, hi, _ = FAMILIES[family]
    return [round(lo + (hi - lo) * k / N_MEMBERS, 10) for k in range(1, N_MEMBERS + 1)]


EXTRA: list[str] = []  # --extra: overrides added to every command (e.g. a smoke test's)
TOL: list[float] = []  # --tol: train.tol of every run (the pretrain's too); none: the default
DAMPING: list[float] = []  # --damping: the transfers' optim.damping; none: the default


def tol_label(tol: float | None) -> str:
    """'' for the default tolerance, else '_tol1e-05': in file and work-directory names."""
    return "" if tol is None else f"_tol{tol:.0e}"


def damping_label() -> str:
    """'' at the transfers' default damping, else '_damping1e-03' (file and directory names)."""
    return f"_damping{DAMPING[0]:.0e}" if DAMPING else ""


def setting_name(family: str, tol: float | None) -> str:
    """A table row's family, with its train.tol when not the default."""
    return family if tol is None else f"{family}, train.tol {tol:g}"


def base_args(threads: int, root: Path, seed: int, family: str) -> list[str]:
    return [
        *EXTRA,
        *(f"train.tol={t:g}" for t in TOL),
        f"pde={family}",
        f"seed={seed}",
        f"threads={threads}",
        f"outputs_root={root}",
        "train.progress=log",
    ]


def read_member(run_dir: Path) -> dict[str, Any]:
    """One run's record from its results.h5 (and its stored files' sizes)."""
    import h5py

    rec: dict[str, Any] = {"run_dir": run_dir.name}
    results = run_dir / "results.h5"
    if not results.is_file():
        failed = run_dir / "failed.txt"
        rec["status"] = "failed"
        rec["error"] = failed.read_text()[:500] if failed.is_file() else "no results.h5"
        return rec
    with h5py.File(results, "r") as f:
        attrs, metrics = dict(f.attrs), dict(f["metrics"].attrs)
    rec.update(
        status=str(attrs.get("status")),
        pde_params=json.loads(attrs.get("pde_params", "{}")),
        rel_l2=float(metrics["rel_l2"]) if "rel_l2" in metrics else None,
        train_seconds=float(metrics.get("train_seconds", 0.0)),
        steps_done=int(metrics.get("steps_done", 0)),
        stop_reason=str(attrs.get("stop_reason")),
        relative_loss=float(attrs.get("relative_loss", float("nan"))),
        start=json.loads(attrs["start"]) if "start" in attrs else None,
        n_trainable=int(metrics.get("n_trainable", 0)),
        damping=float(attrs["damping"]) if "damping" in attrs else None,  # LM's initial λ
    )
    modes = docblocks.layer_modes(attrs)
    if modes is not None:  # each layer's mode: lotra | full | frozen
        rec["layer_modes"] = modes
    adapter = run_dir / "adapter.safetensors"
    model = run_dir / "model.safetensors"
    rec["bytes_stored"] = (
        (adapter if adapter.is_file() else model).stat().st_size if model.is_file() else None
    )
    return rec


def run_strategy(
    hb: Any, family: str, strategy: str, seed: int, root: Path, threads: int, pretrain: dict | None
) -> dict[str, Any]:
    """One transfer multirun over the family's 10 targets; its raw-data record."""
    param, _, _, goal = FAMILIES[family]
    overrides, source = STRATEGIES[strategy]
    sweep = root / f"{strategy}"
    values = ",".join(f"{v:g}" for v in targets(family))
    cmd = [
        sys.executable,
        "-m",
        "pinnkan.cli",
        "transfer",
        "-m",
        *base_args(threads, root, seed, family),
        f"pde.target.{param}={values}",
        *overrides,
        *(f"optim.damping={d:g}" for d in DAMPING),
        f"hydra.sweep.dir={sweep}",
    ]
    if source is not None:
        cmd.append(f"source={pretrain['run_path']}")
    t0 = time.perf_counter()
    rc, out, err = hb.run_child(cmd, hb.child_env(threads), None)
    wall = time.perf_counter() - t0
    jobs = (
        sorted(
            (d for d in sweep.iterdir() if d.is_dir() and d.name[0].isdigit()),
            key=lambda d: int(d.name.split("_", 1)[0]),
        )
        if sweep.is_dir()
        else []
    )
    members = [read_member(d) for d in jobs]
    for m in members:
        m["reached"] = m.get("rel_l2") is not None and m["rel_l2"] <= goal
    return {
        "schema": SCHEMA,
        "family": family,
        "strategy": strategy,
        "seed": seed,
        "goal_rel_l2": goal,
        "tol": TOL[0] if TOL else None,  # None: the default train.tol
        "damping_rule": damping_rule_of_run(),
        "transfer_damping": DAMPING[0] if DAMPING else default_transfer_damping(),
        "command": " ".join(cmd[2:]),
        "returncode": rc,
        "stderr_tail": err[-3000:] if rc else "",
        "wall_seconds": wall,
        "pretrain": pretrain if source is not None else None,
        "members": members,
        **hb.provenance(threads),
    }


def default_damping_rule() -> str:
    """LM's default `optim.damping_rule` in the pinnkan that the runs import."""
    from pinnkan.train.levenberg_marquardt import LMConfig

    return LMConfig().damping_rule


def default_transfer_damping() -> float:
    """LM's default initial damping of a transfer in the pinnkan that the runs import."""
    from pinnkan.train.lm_loop import LMOptions
    from pinnkan.train.options import stage_value

    return float(stage_value(LMOptions().damping, "transfer", "optim.damping"))


def transfer_damping(rec: dict[str, Any]) -> float:
    """The transfers' initial damping a record was measured with (DAMPING_BEFORE without one)."""
    return float(rec.get("transfer_damping", DAMPING_BEFORE))


def damping_rule_of_run() -> str:
    """The damping rule this run's commands use (an --extra override, else the default)."""
    for o in EXTRA:
        if o.startswith("optim.damping_rule="):
            return o.split("=", 1)[1]
    return default_damping_rule()


def damping_rule(rec: dict[str, Any]) -> str:
    """The damping rule a record was measured with (RULE_BEFORE for records without one)."""
    return str(rec.get("damping_rule", RULE_BEFORE))


def run_pretrain(
    hb: Any, family: str, seed: int, root: Path, threads: int, source: str = DEFAULT
) -> dict[str, Any]:
    run_dir = root / ("pretrain" if source == DEFAULT else f"pretrain_{source}")
    cmd = [
        sys.executable,
        "-m",
        "pinnkan.cli",
        "pretrain",
        *base_args(threads, root, seed, family),
        *source_overrides(family, source),
        f"hydra.run.dir={run_dir}",
    ]
    t0 = time.perf_counter()
    rc, out, err = hb.run_child(cmd, hb.child_env(threads), None)
    if rc:
        raise SystemExit(f"pretrain failed: {' '.join(cmd)}\n{err[-2000:]}")
    rec = read_member(run_dir)
    rec.update(
        command=" ".join(cmd[2:]), wall_seconds=time.perf_counter() - t0, run_path=str(run_dir)
    )
    return rec


def run_all(args: argparse.Namespace) -> None:
    hb = docblocks.owner("hard_benchmarks")  # provenance, child processes
    args.out.mkdir(parents=True, exist_ok=True)
    for family in args.families:
        for seed in args.seeds:
            root = args.work / f"{family}{tol_label(args.tol)}{damping_label()}_seed{seed}"
            pretrains: dict[str, dict[str, Any]] = {}  # one of each source, shared
            for strategy in args.strategies:
                source = STRATEGIES[strategy][1]
                if source is not None and source not in pretrains:
                    pretrains[source] = run_pretrain(hb, family, seed, root, args.threads, source)
                pretrain = pretrains.get(source) if source is not None else None
                rec = run_strategy(hb, family, strategy, seed, root, args.threads, pretrain)
                name = f"{family}{tol_label(args.tol)}_{strategy}_seed{seed}{damping_label()}"
                path = args.out / f"{name}.json"
                path.write_text(json.dumps(rec, indent=1, default=str) + "\n")
                print(f"{path.name}: {summary_line(rec)}", flush=True)


# --- tables ----------------------------------------------------------------------------------
def totals(rec: dict[str, Any]) -> dict[str, Any]:
    """Training seconds of the members (+ the pretrain where used), wall seconds, all reached."""
    members = rec["members"]
    train = sum(m.get("train_seconds", 0.0) for m in members)
    pre = rec["pretrain"]["train_seconds"] if rec.get("pretrain") else 0.0
    pre_wall = rec["pretrain"]["wall_seconds"] if rec.get("pretrain") else 0.0
    errors = [m.get("rel_l2") for m in members]
    return {
        "train": train + pre,
        "wall": rec["wall_seconds"] + pre_wall,
        "reached": sum(bool(m.get("reached")) for m in members),
        "n": len(members),
        "worst": max((e for e in errors if e is not None), default=None),
        "bytes": statistics.median([stored_bytes(m) for m in members] or [0]),
    }


# a strategy's saving is shown for a seed only when its worst member's rel. L2 is at most this
# factor above scratch's worst (a cheaper run to a much larger error is no saving)
COMPARABLE = 2.0


def comparable(t: dict[str, Any], scratch: dict[str, Any]) -> bool:
    """Whether totals `t` end at errors like scratch's (worst within COMPARABLE×)."""
    return (
        t["worst"] is not None
        and scratch["worst"] is not None
        and t["worst"] <= COMPARABLE * scratch["worst"]
    )


def stored_bytes(member: dict[str, Any]) -> int:
    """What a member needs beyond its source: its adapter or model file; nothing for a member
    that was only evaluated (train.steps=0: the source at the member's values)."""
    if member.get("stop_reason") == "evaluated":
        return 0
    return int(member.get("bytes_stored") or 0)


# strategies whose members train Tucker updates (the default adapter, LoTRA)
TUCKER = (
    "lotra_source",
    "lotra_source_cr0.25",
    "nearest",
    "nearest_secant",
    "grow_source",
    "grow_nearest",
)
EVERY_LAYER = ", Tucker on every layer"


def strategy_label(rec: dict[str, Any]) -> str:
    """A record's strategy as its table row names it: a LoTRA strategy measured with Tucker
    updates on every layer (before the edge layers trained in full by default; such records
    have no `layer_modes`) is a row of its own."""
    if rec["strategy"] not in TUCKER:
        return rec["strategy"]
    modes = next((m["layer_modes"] for m in rec["members"] if m.get("layer_modes")), None)
    return rec["strategy"] + (EVERY_LAYER if docblocks.tucker_everywhere(modes) else "")


def summary_line(rec: dict[str, Any]) -> str:
    t = totals(rec)
    worst = f"{t['worst']:.1e}" if t["worst"] is not None else "-"
    return f"{t['reached']}/{t['n']} reached, worst {worst}, {t['train']:.0f} s training"


def load(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def measured_at(rec: dict[str, Any]) -> float:
    """When a record was measured (its ISO date; 0 for a record without one)."""
    date = rec.get("date")
    return datetime.fromisoformat(date).timestamp() if date else 0.0


def scratch_beside(rec: dict[str, Any], scratches: list[dict[str, Any]]) -> dict | None:
    """The scratch record of `rec`'s seed measured nearest in time to it (None: no such)."""
    same = [s for s in scratches if s["seed"] == rec["seed"]]
    return min(same, key=lambda s: abs(measured_at(s) - measured_at(rec)), default=None)


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| family | strategy | seeds | members at goal | worst rel. L2 "
        "| training s (pretrain incl.) | saving vs scratch | wall s | bytes / member |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    # runs at another tolerance (--tol), under another damping rule or at another transfer
    # damping are rows of their own, compared with scratch at the same settings
    today, damping = default_damping_rule(), default_transfer_damping()
    Key = tuple[str, float | None, str, float]
    by: dict[tuple[Key, str], list[dict[str, Any]]] = {}
    for r in runs:
        key = (r["family"], r.get("tol"), damping_rule(r), transfer_damping(r))
        by.setdefault((key, strategy_label(r)), []).append(r)
    settings = sorted(
        {k for k, _ in by},
        key=lambda k: (
            list(FAMILIES).index(k[0]),
            k[3] != damping,
            k[2] != today,
            -1 if k[1] is None else k[1],
        ),
    )
    for setting in settings:
        family, tol, rule, lam = setting
        # a row shows the newest record per seed (one measured again replaces it; the older
        # stays in the raw data), compared with the scratch record of its seed measured
        # nearest in time to it (the machine's speed drifts between days)
        scratches = by.get((setting, "scratch"), [])
        name = setting_name(family, tol)
        name += "" if rule == today else f", optim.damping_rule={rule}"
        name += "" if lam == damping else f", transfer damping {lam:g}"
        labels = [s + every for s in STRATEGIES for every in ("", EVERY_LAYER)]
        for strategy in labels:
            newest = {
                r["seed"]: r for r in sorted(by.get((setting, strategy), []), key=measured_at)
            }
            group = sorted(newest.values(), key=lambda r: r["seed"])
            if not group:
                continue
            ts = [totals(r) for r in group]
            # a saving only where the members end at errors like scratch's (COMPARABLE)
            beside = [scratch_beside(r, scratches) for r in group]
            paired = [(t, totals(s)) for t, s in zip(ts, beside) if s is not None]
            savings = [
                st["train"] / t["train"] for t, st in paired if t["train"] and comparable(t, st)
            ]
            med = statistics.median
            seeds = ",".join(str(r["seed"]) for r in group)
            reached = "; ".join(f"{t['reached']}/{t['n']}" for t in ts)
            worst = max((t["worst"] for t in ts if t["worst"] is not None), default=None)
            saving = (
                f"{med(savings):.2f}× ({min(savings):.2f}–{max(savings):.2f})"
                if savings
                else "- (errors above scratch's)"
                if scratches
                else "-"
            )
            lines.append(
                f"| {name} | {strategy} | {seeds} | {reached} | "
                f"{worst:.1e} | {med([t['train'] for t in ts]):.0f} | {saving} | "
                f"{med([t['wall'] for t in ts]):.0f} | {med([t['bytes'] for t in ts]):.0f} |"
                if worst is not None
                else f"| {name} | {strategy} | - | {reached} | - | - | - | - | - |"
            )
    return "\n".join(lines)


def search_table(runs: list[dict[str, Any]]) -> str:
    """One row per record of the damping search: what each initial damping cost, member by
    member, with the pretrain apart (it runs at the pretrain's damping whatever --damping)."""
    lines = [
        "| family | strategy | seed | transfer damping | pretrain s (LM steps) "
        "| members' training s | members' LM steps, sum (min–max) | worst rel. L2 "
        "| members at goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(
        runs,
        key=lambda r: (
            r["family"],
            r.get("tol") or 0,
            strategy_label(r),
            r["seed"],
            -transfer_damping(r),
        ),
    ):
        name = setting_name(r["family"], r.get("tol"))
        pre = r.get("pretrain")
        pre_s = f"{pre['train_seconds']:.1f} ({pre['steps_done']})" if pre else "-"
        members = r["members"]
        steps = [m.get("steps_done", 0) for m in members]
        t = totals(r)
        worst = f"{t['worst']:.1e}" if t["worst"] is not None else "-"
        lines.append(
            f"| {name} | {strategy_label(r)} | {r['seed']} | {transfer_damping(r):g} | {pre_s} | "
            f"{sum(m.get('train_seconds', 0.0) for m in members):.1f} | "
            f"{sum(steps)} ({min(steps)}–{max(steps)}) | {worst} | {t['reached']}/{t['n']} |"
        )
    return "\n".join(lines)


def regenerated(doc: Path, out: Path) -> str:
    text = docblocks.replace(doc.read_text(), TABLE, table(load(out)), doc)
    return docblocks.replace(text, SEARCH_TABLE, search_table(load(out / "search")), doc)


def block(name: str, doc: Path) -> str:
    """The family-table block's body from the committed JSONs (scripts/docblocks.py), or the
    damping search's (family-damping)."""
    return search_table(load(SEARCH)) if name == "family-damping" else table(load(OUT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", type=lambda s: s.split(","), default=list(FAMILIES))
    p.add_argument("--strategies", type=lambda s: s.split(","), default=list(STRATEGIES))
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "family_benchmark")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--tables", action="store_true")
    p.add_argument("--check", action="store_true")
    p.add_argument("--extra", nargs="*", default=[], help="overrides for every run (smoke tests)")
    p.add_argument("--tol", type=float, default=None, help="train.tol of every run")
    p.add_argument("--damping", type=float, default=None, help="the transfers' optim.damping")
    args = p.parse_args(argv)
    EXTRA[:] = args.extra
    TOL[:] = [] if args.tol is None else [args.tol]
    DAMPING[:] = [] if args.damping is None else [args.damping]
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    unknown += [f for f in args.families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown: {', '.join(unknown)}")
    mode = docblocks.table_mode(args.tables, args.check, DOC, lambda: regenerated(DOC, args.out))
    if mode is not None:
        return mode
    run_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
