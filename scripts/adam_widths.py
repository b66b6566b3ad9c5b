"""Adam's side of the model comparison: each layer kind at its best width and learning rate.

Every kind's default network (about 2750 parameters) is sized for Levenberg–Marquardt, whose
dense P × P solve grows as P³; Adam's step does not, so a fair comparison gives Adam its own
width. Per kind, elliptic pretrain, at most --seconds of training per run, one run at a time:

1. On the held-out seed 99, for each width of WIDTHS: a calibration run counts the Adam steps
   the time allows (train.steps=100000), so that the learning-rate decay, which spans
   train.steps, completes within the time; then Adam at that many steps for each lr of LRS,
   and the next rate of LADDER past an edge while the width's best sits at that edge. Where
   the kind's best is then its narrowest width, half that width is searched the same way
   (down to MIN_WIDTH), so that no best rests on an untried narrower network.
2. The held-out seed's best (width, lr) runs seeds 0, 1, 2, and so does the kind's default
   network under LM (its own calibrated train.tol) under the same time cap.

The raw data, docs/e2e/adam_widths.json, is scripts/e2e_table.py's format (a record per run,
with its command, commit, date and machine), written after each run: an interrupted study keeps
what it measured and a rerun skips the runs it holds. Block `adam-widths` of docs/models.md is
generated from it.

    python scripts/adam_widths.py                        # measure what the JSON lacks (~80 min)
    python scripts/adam_widths.py --kinds chebyshev mlp  # some kinds only
    python scripts/adam_widths.py --tables               # rewrite the block from the JSON
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docblocks

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "docs" / "e2e" / "adam_widths.json"
PAGE = ROOT / "docs" / "models.md"
BLOCK = "adam-widths"
WIDTHS = {  # hidden widths per kind: half its default, its default (~2750 parameters), then
    # ~4x and ~14x the default's parameters (the half widths were added when the best of four
    # kinds was the default, then the grid's narrowest)
    "chebyshev": (10, 20, 40, 80),
    "bspline": (8, 16, 32, 64),
    "mlp": (25, 50, 100, 200),
    "lmkan": (4, 8, 16, 32),
    "rational": (10, 20, 40, 80),
}
LM_SETTINGS = {"bspline": ("train.tol=1e-6",)}  # each kind's calibrated LM tolerance
LRS = (0.003, 0.01, 0.03)
LADDER = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)  # the rates past the grid's edges
MIN_WIDTH = 2
SEARCH_SEED = 99
SEEDS = (0, 1, 2)
SECONDS = 30.0
CALIBRATE_STEPS = 100000  # a step budget the time cap always ends first

Record = dict[str, Any]
Runner = Callable[[str, int], Record]  # (model, seed) -> the run's record


# --- the models (e2e_table's "<kind>+<override>+..." strings) ------------------------------------
def adam_model(kind: str, width: int, seconds: float, steps: int, lr: float | None) -> str:
    """Adam at one width, capped at `seconds`; no lr: the calibration run (default lr)."""
    parts = [kind, "optim=adam", f"model.hidden=[{width},{width}]"]
    parts += [f"train.max_seconds={seconds:g}", f"train.steps={steps}"]
    return "+".join(parts + ([f"optim.lr={lr:g}"] if lr is not None else []))


def lm_model(kind: str, seconds: float) -> str:
    """The kind's default network under LM (the default optimizer), capped at `seconds`."""
    return "+".join([kind, *LM_SETTINGS.get(kind, ()), f"train.max_seconds={seconds:g}"])


def settings(model: str) -> dict[str, str]:
    """A model string's overrides as a dict, its kind under `kind`."""
    kind, *overrides = model.split("+")
    return {"kind": kind, **dict(o.split("=", 1) for o in overrides)}


def width(model: str) -> int | None:
    hidden = settings(model).get("model.hidden")
    return int(hidden.strip("[]").split(",")[0]) if hidden else None


def is_adam(model: str) -> bool:
    return settings(model).get("optim") == "adam"


def is_search(rec: Record) -> bool:
    """A held-out run of the lr search (not a calibration, not a seed of the comparison)."""
    s = settings(rec["model"])
    return (
        rec["seed"] == SEARCH_SEED
        and s.get("optim") == "adam"
        and "optim.lr" in s
        and not is_calibration(rec)
    )


def score(rec: Record) -> float:
    """A run's error for the search: a diverged run (no error) ranks last."""
    err = rec.get("rel_l2")
    return err if err is not None and math.isfinite(err) else math.inf


def best(runs: list[Record], kind: str, w: int | None = None) -> Record:
    """The kind's best held-out search run (at width `w`, or over every width)."""
    cands = [
        r
        for r in runs
        if is_search(r) and settings(r["model"])["kind"] == kind and w in (None, width(r["model"]))
    ]
    if not cands:
        raise SystemExit(f"no lr search of {kind}" + (f" at width {w}" if w else "") + " yet")
    return min(cands, key=lambda r: (score(r), r["model"]))


# --- measuring -----------------------------------------------------------------------------------
def study(kinds: list[str], seconds: float, run: Runner) -> None:
    """Steps 1 and 2 of the module's docstring for each kind; `run` skips what it holds."""
    for kind in kinds:
        held: list[Record] = []
        widths = list(WIDTHS[kind])
        for w in widths:  # grows below its narrowest while that is the kind's best
            held += search_width(kind, w, seconds, run)
            narrowest = min(widths)
            if w == widths[-1] and width(best(held, kind)["model"]) == narrowest:
                if narrowest // 2 >= MIN_WIDTH:
                    widths.append(narrowest // 2)
        chosen = best(held, kind)["model"]
        for seed in SEEDS:
            run(chosen, seed)
            run(lm_model(kind, seconds), seed)


def search_width(kind: str, w: int, seconds: float, run: Runner) -> list[Record]:
    """One width on the held-out seed: the calibration, the lr grid at the calibrated steps,
    then LADDER's next rate past an edge while the best sits at that edge."""
    cal = run(adam_model(kind, w, seconds, CALIBRATE_STEPS, None), SEARCH_SEED)
    steps = max(1, cal["steps_done"])
    held = [run(adam_model(kind, w, seconds, steps, lr), SEARCH_SEED) for lr in LRS]
    while True:
        tried = sorted(float(settings(r["model"])["optim.lr"]) for r in held)
        top = float(settings(best(held, kind, w)["model"])["optim.lr"])
        i = LADDER.index(top)
        if top == tried[0] and i > 0:
            nxt = LADDER[i - 1]
        elif top == tried[-1] and i + 1 < len(LADDER):
            nxt = LADDER[i + 1]
        else:
            return held
        held.append(run(adam_model(kind, w, seconds, steps, nxt), SEARCH_SEED))


def runner(path: Path, work: Path) -> Runner:
    """A Runner that runs `pinnkan pretrain pde=elliptic` in a subprocess, one at a time, and
    appends each record to the JSON at `path` (a run it holds is returned, not run again)."""
    e2e = docblocks.owner("e2e_table")
    hb = docblocks.owner("hard_benchmarks")  # provenance
    data = json.loads(path.read_text()) if path.is_file() else {"schema": 1, "runs": []}

    def run(model: str, seed: int) -> Record:
        for rec in data["runs"]:
            if (rec["model"], rec["seed"]) == (model, seed):
                return rec
        cmd, where, rc, err, wall = e2e.launch(model, "elliptic", seed, "pretrain", work)
        if rc and _status(where) != "diverged":  # a diverged run is a result, not a failure
            raise SystemExit(f"{' '.join(cmd)} failed (rc {rc}):\n{err[-2000:]}")
        rec = {"model": model, "pde": "elliptic", "seed": seed, "run": "pretrain"}
        rec |= {"command": " ".join(cmd), "wall_seconds": wall, **_read(e2e, where)}
        rec |= hb.provenance(e2e.THREADS)
        data["runs"].append(rec)
        docblocks.write_raw(path, data)
        print(
            f"{model} s{seed}: rel. L2 {score(rec):.2e}, {rec['train_seconds']:.0f} s, "
            f"{rec['steps_done']} steps, {rec['status']}/{rec['stop_reason']}",
            flush=True,
        )
        return rec

    return run


def _status(where: Path) -> str | None:
    """The status a run's results.h5 records (None: no results.h5)."""
    import h5py

    if not (where / "results.h5").is_file():
        return None
    with h5py.File(where / "results.h5", "r") as f:
        return str(f.attrs.get("status", "ok"))


def _read(e2e: Any, where: Path) -> Record:
    """e2e_table's record of a run; a diverged run (no error metrics) keeps its status."""
    import h5py

    if _status(where) != "diverged":
        return e2e.read(where)
    with h5py.File(where / "results.h5", "r") as f:
        m = dict(f["metrics"].attrs)
    return {
        "status": "diverged",
        "stop_reason": "diverged",
        "rel_l2": None,
        "train_seconds": float(m.get("train_seconds", math.nan)),
        "steps_done": int(m.get("diverged_at_step", m.get("steps_done", 0))),
        "n_total": int(m.get("n_total", 0)),
    }


# --- the block -----------------------------------------------------------------------------------
def _err(recs: list[Record]) -> str:
    """median [min–max] of the runs' errors; a single diverged run says so."""
    errs = [score(r) for r in recs]
    if len(errs) == 1 and not math.isfinite(errs[0]):
        return "diverged"
    return docblocks.owner("e2e_table")._spread(errs, ".1e")


def is_calibration(rec: Record) -> bool:
    """A held-out calibration run: Adam at the default lr, its decay spread over so many steps
    that the lr stays within about 6 % of its start (train.steps=CALIBRATE_STEPS)."""
    s = settings(rec["model"])
    return (
        rec["seed"] == SEARCH_SEED
        and s.get("optim") == "adam"
        and s.get("train.steps") == str(CALIBRATE_STEPS)
    )


def search_table(runs: list[Record]) -> list[str]:
    """Held-out seed: a row per kind and width, a column per lr and one for the calibration
    run (the lr held); the kind's best in bold. Steps: the calibrated budget, and how many the
    search's runs made of it within the time."""
    lrs = sorted({float(settings(r["model"])["optim.lr"]) for r in runs if is_search(r)})
    rows = [
        "| kind | hidden | parameters | steps (made) | "
        + " | ".join(f"lr {lr:g}" for lr in lrs)
        + " | lr held (calibration) |",
        "|---|---|---|---|" + "---|" * (len(lrs) + 1),
    ]
    for kind in dict.fromkeys(settings(r["model"])["kind"] for r in runs if is_search(r)):
        top = best(runs, kind)
        mine = [r for r in runs if settings(r["model"])["kind"] == kind]
        for w in sorted({width(r["model"]) for r in mine if is_search(r)}):  # extensions too
            at = [r for r in mine if is_search(r) and width(r["model"]) == w]
            cells = []
            for lr in lrs:
                rec = [r for r in at if float(settings(r["model"])["optim.lr"]) == lr]
                cell = _err(rec) if rec else "–"
                cells.append(f"**{cell}**" if rec and rec[0] is top else cell)
            cal = [r for r in mine if is_calibration(r) and width(r["model"]) == w]
            cells.append(_err(cal) if cal else "–")
            made = [r["steps_done"] for r in at]
            steps = settings(at[0]["model"])["train.steps"]
            rows.append(
                f"| {kind} | [{w},{w}] | {at[0]['n_total']} | {steps} ({min(made)}–{max(made)}) | "
                + " | ".join(cells)
                + " |"
            )
    return rows


def seeds_table(runs: list[Record]) -> list[str]:
    """Seeds 0, 1, 2: each kind's default network under LM against its best Adam setting (the
    held-out seed's best now; a widened search may have moved it)."""
    rows = [
        "| kind | LM: network | rel. L2 | train s | stopped by | Adam: network, lr, steps | "
        "rel. L2 | train s | stopped by | Adam / LM | lower error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    e2e = docblocks.owner("e2e_table")
    seeded = [r for r in runs if r["seed"] in SEEDS]
    for kind in dict.fromkeys(settings(r["model"])["kind"] for r in seeded):
        mine = [r for r in seeded if settings(r["model"])["kind"] == kind]
        lm = sorted((r for r in mine if not is_adam(r["model"])), key=lambda r: r["seed"])
        chosen = best(runs, kind)["model"]  # seeds of a superseded best stay in the raw data
        adam = sorted((r for r in mine if r["model"] == chosen), key=lambda r: r["seed"])
        if not lm or not adam or [r["seed"] for r in lm] != [r["seed"] for r in adam]:
            continue  # like against like: the same seeds on both sides
        s = settings(adam[0]["model"])
        a_err, l_err = [score(r) for r in adam], [score(r) for r in lm]
        lower = e2e._verdict(l_err, a_err, ("LM", "Adam"))
        ratio = e2e._ratio(statistics.median(a_err) / statistics.median(l_err))
        stops = [", ".join(sorted({r["stop_reason"] for r in side})) for side in (lm, adam)]
        secs = [e2e._spread([r["train_seconds"] for r in side], ".0f") for side in (lm, adam)]
        rows.append(
            f"| {kind} | {lm[0]['n_total']} parameters | {_err(lm)} | {secs[0]} | {stops[0]} | "
            f"{s['model.hidden']} ({adam[0]['n_total']}), {s['optim.lr']}, {s['train.steps']} | "
            f"{_err(adam)} | {secs[1]} | {stops[1]} | {ratio} | {lower} |"
        )
    return rows


def table(path: Path = RAW) -> str:
    runs = json.loads(path.read_text())["runs"]
    seconds = sorted({settings(r["model"])["train.max_seconds"] for r in runs})
    return "\n".join(
        [
            f"Held-out seed {SEARCH_SEED}, at most {' / '.join(seconds)} s of training per run "
            "(rel. L2 where the run stopped; bold: the kind's best, which the seeds run):",
            "",
            *search_table(runs),
            "",
            'Seeds 0, 1, 2 (median [min–max]); "lower" names a side only where the seeds\' '
            "ranges do not overlap; Adam / LM is the ratio of the medians:",
            "",
            *seeds_table(runs),
            "",
            docblocks.owner("e2e_table").raw_data(path, runs) + "; one run at a time).",
        ]
    )


def block(name: str, doc: Path) -> str:
    """The body of block adam-widths (scripts/docblocks.py)."""
    return table()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    ap.add_argument("--seconds", type=float, default=SECONDS, help="training cap per run")
    ap.add_argument("--out", type=Path, default=RAW, help="the raw data JSON")
    ap.add_argument("--work", type=Path, default=ROOT / "outputs" / "adam_widths")
    ap.add_argument("--tables", action="store_true", help="rewrite the block from the JSON")
    args = ap.parse_args(argv)
    if not args.tables:
        study(args.kinds, args.seconds, runner(args.out, args.work))
    if not args.out.is_file():
        raise SystemExit(f"{args.out}: no raw data yet; run the study first")
    text = PAGE.read_text()
    if args.out.resolve() != RAW.resolve():  # elsewhere (e.g. a trial): shown, page untouched
        print(table(args.out))
    elif BLOCK in docblocks.names(text, PAGE):
        PAGE.write_text(docblocks.replace(text, BLOCK, table(args.out), PAGE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
