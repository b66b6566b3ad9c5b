"""Reproduce the LoTRA study (docs/results.md): every number and plot there comes from here.

Phases, in order (each a Hydra multirun below `--root`, two jobs at a time through the joblib
launcher; a sweep directory holding a `.done` marker is skipped, so an interrupted study
continues where it stopped):

1. sources: one LM-pretrained source per family (each kind's default network, the defaults),
   plus elliptic sources of `model=mlp` and `model=lmkan` (capped at `--source-seconds`) and
   of width 64 (Adam's 3000-step pretrain);
2. searches on a held-out seed (99), at each family's default target: Adam's learning rate and
   LM's initial damping, for LoTRA cr 0.5 and 0.25, full fine-tuning, scratch and slim KAN;
3. the main grid with LM (each variant at its searched damping): every target of `TARGETS`,
   LoTRA cr 1, 0.5, 0.25, 0.125, full fine-tuning, scratch, slim KAN cr 0.5, seeds 0-2;
4. the same variants but cr 1 and 0.125 with Adam (at their searched rates), default targets;
5. the learning-rate strategies (LoTRA cr 0.25, elliptic default target): the theory's
   scaling (c = 1), uniform, two mis-scaled variants and the tuned default, under plain
   gradient descent (`optim=gd`, the theory's setting) and Adam, widths `WIDTHS`, each over a
   grid of base rates;
6. model kinds at equal training time (elliptic default target), one job at a time: each
   kind's default network, with LoTRA (at a cr that keeps the adapter at about half the
   network), full fine-tuning and scratch (LM), and full fine-tuning with Adam (each kind's lr
   searched on the held-out seed, its step budget what the time allows: the decay completes).

After the runs, every run's record (configuration, error, steps, seconds, stop reason, curve;
for the grid's full fine-tuning ΔA's low-rank data) goes to the raw data, --raw (default
docs/results/study.json), with the commit, date and machine. The page's tables are the
generated block `results-study`, rebuilt from that file alone (`block`, scripts/docblocks.py).

    python scripts/reproduce.py --root outputs/reproduce        # the runs, then the raw data
    python scripts/reproduce.py --tables --img docs/img         # the page and its plots
    python scripts/reproduce.py --smoke --root /tmp/smoke       # the plumbing, tiny budgets
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docblocks
import h5py
import numpy as np
import torch
import yaml

from pinnkan.adapters.tucker import ranks_from_cr
from pinnkan.io.results import RESULTS_FILE
from pinnkan.run.diagnostics import hosvd_rel_error, normalised_singular_values, read_update

ROOT = Path(__file__).resolve().parents[1]
PDES = ("elliptic", "parabolic", "advection", "wave")
PARAM = {"elliptic": "mu", "parabolic": "nu", "advection": "beta", "wave": "c"}
SOURCE = {"elliptic": 1.0, "parabolic": 0.1, "advection": 1.0, "wave": 1.0}
DEFAULT = {"elliptic": 1.5, "parabolic": 0.2, "advection": 2.0, "wave": 1.5}
TARGETS = {
    "elliptic": (1.1, 1.5, 2.0),
    "parabolic": (0.15, 0.2, 0.4),
    "advection": (1.5, 2.0, 5.0),
    "wave": (1.25, 1.5),
}
SEEDS = (0, 1, 2)
SEARCH_SEED = 99
LM_STEPS, ADAM_STEPS, EVAL_EVERY_LM, EVAL_EVERY_ADAM = 100, 1000, 5, 50
ADAM_LRS = (0.003, 0.01, 0.03, 0.1)
ADAM_LRS_EQUAL_TIME = (0.001, *ADAM_LRS)  # phase 6: the Chebyshev KAN's best was 0.003
LM_DAMPINGS = (1e-7, 1e-5, 1e-3, 1e-1)  # 1e-7: the transfer's default (optim.damping)
# the strategies' base rates: grids that bracket each optimizer's best (the first run's
# (1e-4, 1e-3, 1e-2) and (0.003, 0.01, 0.03) had their best at an edge: GD diverged above 1e-4,
# Adam was best at 0.03)
GD_LRS = (1e-5, 1e-4, 1e-3)
ADAM_LRS_STRATEGY = (0.003, 0.01, 0.03, 0.1)
STRATEGY_STEPS = 500
EQUAL_SECONDS = 10.0
PRETRAIN: list[str] = []  # extra overrides of the family sources (--smoke: a few steps)
EXTRA: list[str] = []  # extra overrides of every call (--smoke: tiny grids)
ONLY: list[re.Pattern[str]] = []  # --only: run just the sweeps whose path below --root matches


@dataclass(frozen=True)
class Variant:
    """One adapter setting: its label and the overrides that select it."""

    label: str
    overrides: tuple[str, ...]
    searched_as: str = ""  # the variant whose searched hyperparameter it takes ("": its own)

    @property
    def key(self) -> str:
        return re.sub(r"[^a-z0-9.]+", "_", self.label.lower()).strip("_")


VARIANTS = (
    Variant("LoTRA cr 1", ("adapter=lotra", "cr=1"), "LoTRA cr 0.5"),
    Variant("LoTRA cr 0.5", ("adapter=lotra", "cr=0.5")),
    Variant("LoTRA cr 0.25", ("adapter=lotra", "cr=0.25")),
    Variant("LoTRA cr 0.125", ("adapter=lotra", "cr=0.125"), "LoTRA cr 0.25"),
    Variant("full fine-tuning", ("adapter=full",)),
    Variant("scratch", ("adapter=scratch",)),
    Variant("slim KAN cr 0.5", ("adapter=slim", "cr=0.5")),
)
KEY = {v.label: v.key for v in VARIANTS}  # label -> sweep directory name
SEARCHED = [v for v in VARIANTS if not v.searched_as]
ADAM_VARIANTS = [v for v in VARIANTS if v.label not in ("LoTRA cr 1", "LoTRA cr 0.125")]
UNIT = {"G": 1, "U1": 1, "U2": 1, "U3": 1}
STRATEGIES = {  # label -> (lr_strategy, multipliers): U1's rate in the first hidden layer
    "theory, c = 1 (η/n_in, η/n_d)": ("theory", UNIT),
    "uniform (η everywhere)": ("uniform", UNIT),
    "mis-scaled low (η/(8 n_in), η/(8 n_d))": ("theory", {**UNIT, "U1": 0.125, "U3": 0.125}),
    "mis-scaled high (8η on U1, U3)": ("uniform", {**UNIT, "U1": 8, "U3": 8}),
    "theory, c_U1 = 16, c_U3 = 9 (default)": ("theory", {**UNIT, "U1": 16, "U3": 9}),
}
MODELS = {  # label -> (source dir, model overrides, LoTRA cr: an adapter of 35-46 % of the network)
    "Chebyshev KAN [20,20]": ("elliptic", (), 0.5),  # the default network, 2760 coefficients
    "tanh MLP [50,50]": ("mlp", ("model=mlp",), 0.125),  # n_d = 1: cr 0.5 exceeds the matrix
    "lmKAN [8,8]": ("lmkan", ("model=lmkan",), 0.125),
}
WIDTHS = (20, 64)  # the learning-rate strategies: the default width and a wide network


# --- running ------------------------------------------------------------------------------------
def pinnkan(args: list[str]) -> None:
    """One CLI call; stops the study on a crash. A sweep with failed (e.g. diverged) jobs exits
    1 after recording them in their directories: that is a result, not a crash."""
    cmd = [sys.executable, "-m", "pinnkan.cli", *args, *EXTRA, "train.progress=log"]
    print("+ pinnkan", " ".join(args), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False)
    print(f"  rc {proc.returncode}, {time.perf_counter() - t0:.0f} s", flush=True)
    if proc.returncode not in (0, 1, 2):
        raise SystemExit(f"stopped: rc {proc.returncode} from pinnkan {' '.join(args)}")


def wanted(root: Path, sweep: Path) -> bool:
    """Whether --only selects this sweep (its path below the study root); all without --only."""
    rel = sweep.relative_to(root).as_posix()
    return not ONLY or any(p.search(rel) for p in ONLY)


def multirun(
    stage: str, sweep: Path, overrides: list[str], jobs: int, root: Path | None = None
) -> None:
    """One resumable multirun: skipped when `sweep/.done` exists, or when --only leaves it out
    (given the study `root`; the sources, which every phase needs, always run)."""
    if (sweep / ".done").is_file() or (root is not None and not wanted(root, sweep)):
        return
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    pinnkan([stage, "-m", *overrides, *launcher, f"hydra.sweep.dir={sweep}"])
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / ".done").write_text("done\n")


def _seeds(seeds: tuple[int, ...]) -> str:
    return "seed=" + ",".join(map(str, seeds))


def _mult(m: dict[str, float]) -> list[str]:
    return [f"adapter.multipliers.{k}={v}" for k, v in m.items()]


def lm_budget() -> list[str]:
    return ["optim=lm", f"train.steps={LM_STEPS}", f"train.eval_every={EVAL_EVERY_LM}"]


def adam_budget() -> list[str]:
    return ["optim=adam", f"train.steps={ADAM_STEPS}", f"train.eval_every={EVAL_EVERY_ADAM}"]


def run_study(
    root: Path,
    jobs: int,
    source_seconds: float,
    strategy_widths: tuple[int, ...] = WIDTHS,
    models: bool = True,
) -> None:
    src = root / "sources"
    multirun(
        "pretrain",
        src / "families",
        [f"pde={','.join(PDES)}", "hydra.sweep.subdir=${pde.name}", *PRETRAIN],
        jobs,
    )
    capped = [f"train.max_seconds={source_seconds}", "train.steps=100000", "pde=elliptic"]
    multirun(
        "pretrain",
        src / "models",
        ["model=mlp,lmkan", *capped, "hydra.sweep.subdir=${model.name}"],
        jobs,
    )
    # the wide source by Adam's own pretrain schedule (3000 steps, lr 0.01 decaying to 0.001):
    # LM's Gram matrix at P ≈ 26k makes a step take minutes, and Adam held at lr 0.01 under a
    # time cap diverged after ~1000 steps (rel. L2 0.99 at 120 s)
    wide = [f"model.hidden=[{WIDTHS[1]},{WIDTHS[1]}]", "optim=adam", "pde=elliptic"]
    if WIDTHS[1] in strategy_widths:  # only phase 5 at width 64 uses it
        multirun("pretrain", src / "wide", [*wide, *PRETRAIN, "hydra.sweep.subdir=wide"], 1)
    sources = {p: src / "families" / p for p in PDES}
    sources |= {"mlp": src / "models" / "mlp", "lmkan": src / "models" / "lmkan"}
    sources["wide"] = src / "wide" / "wide"  # a "[64,64]" in the path would break the override

    for pde in PDES:  # 2. searches at the default target, held-out seed
        base = [f"pde={pde}", f"source={sources[pde]}", f"seed={SEARCH_SEED}"]
        for v in SEARCHED:
            damp = "optim.damping=" + ",".join(map(str, LM_DAMPINGS))
            lrs = "optim.lr=" + ",".join(map(str, ADAM_LRS))
            multirun(
                "transfer",
                root / pde / "search_lm" / v.key,
                [*base, *v.overrides, *lm_budget(), damp],
                jobs,
                root,
            )
            multirun(
                "transfer",
                root / pde / "search_adam" / v.key,
                [*base, *v.overrides, *adam_budget(), lrs],
                jobs,
                root,
            )
    runs = collect(root)
    for pde in PDES:  # 3. the LM grid; 4. Adam at the default target
        targets = f"pde.target.{PARAM[pde]}=" + ",".join(map(str, TARGETS[pde]))
        base = [f"pde={pde}", f"source={sources[pde]}", _seeds(SEEDS)]
        for v in VARIANTS:
            sweep = root / pde / "lm" / v.key
            if wanted(root, sweep):  # best() exits when --only left out its search
                damp = f"optim.damping={best(runs, pde, v, 'lm')}"
                multirun(
                    "transfer", sweep, [*base, *v.overrides, *lm_budget(), damp, targets], jobs
                )
        for v in ADAM_VARIANTS:
            sweep = root / pde / "adam" / v.key
            if wanted(root, sweep):
                lr = f"optim.lr={best(runs, pde, v, 'adam')}"
                multirun("transfer", sweep, [*base, *v.overrides, *adam_budget(), lr], jobs)

    for width, source in zip(WIDTHS, (sources["elliptic"], sources["wide"])):  # 5. lr strategies
        if width not in strategy_widths:
            continue
        for opt, lrs in (("gd", GD_LRS), ("adam", ADAM_LRS_STRATEGY)):
            for i, (strategy, mult) in enumerate(STRATEGIES.values()):
                multirun(
                    "transfer",
                    root / "lr_strategies" / f"w{width}_{opt}_{i}",
                    [
                        "pde=elliptic",
                        f"source={source}",
                        f"model.hidden=[{width},{width}]",
                        "adapter=lotra",
                        "cr=0.25",
                        f"adapter.lr_strategy={strategy}",
                        *_mult(mult),
                        f"optim={opt}",
                        "optim.lr=" + ",".join(map(str, lrs)),
                        f"train.steps={STRATEGY_STEPS}",
                        f"train.eval_every={EVAL_EVERY_ADAM}",
                        _seeds(SEEDS),
                    ],
                    jobs,
                    root,
                )
    if not models:
        return
    timed = [f"train.max_seconds={EQUAL_SECONDS}", "train.steps=100000", "pde=elliptic"]
    for label, (name, model, cr) in MODELS.items():  # 6. model kinds at equal time
        key = Variant(label, ()).key
        base = [*model, f"source={sources[name]}", _seeds(SEEDS), *timed]
        multirun(
            "transfer",
            root / "models" / f"{key}_lm_lotra",
            [*base, "optim=lm", "adapter=lotra", f"cr={cr}", "train.eval_every=5"],
            1,  # timed: one job at a time
            root,
        )
        multirun(
            "transfer",
            root / "models" / f"{key}_lm_base",
            [*base, "optim=lm", "adapter=full,scratch", "train.eval_every=5"],
            1,  # timed: one job at a time
            root,
        )
    for label, (name, model, _) in MODELS.items():  # 6b. each kind with Adam, searched
        adam_at_equal_time(root, Variant(label, ()).key, [*model, f"source={sources[name]}"])


def adam_at_equal_time(root: Path, key: str, model: list[str]) -> None:
    """Full fine-tuning of one model kind with Adam at EQUAL_SECONDS, as fair as LM's side:
    a calibration run (held-out seed) counts the steps the time allows, so that the lr decay
    (which spans train.steps) completes within the time; the lr is searched over
    ADAM_LRS_EQUAL_TIME on the held-out seed at that step budget; the seeds run at the searched
    lr. One job at a time (timed). --only selects the three sweeps by the last one's path."""
    if not wanted(root, root / "models" / f"{key}_adam_full"):
        return
    base = [*model, "pde=elliptic", "optim=adam", "adapter=full", "train.eval_every=50"]
    base.append(f"train.max_seconds={EQUAL_SECONDS}")
    held_out = f"seed={SEARCH_SEED}"
    calibrate = root / "models" / f"{key}_adam_calibrate"
    multirun("transfer", calibrate, [*base, held_out, "train.steps=100000"], 1)
    steps = max(1, collect(calibrate)[0].steps)  # the sweep's one run
    budget = [*base, f"train.steps={steps}"]
    search = root / "models" / f"{key}_adam_search"
    lrs = "optim.lr=" + ",".join(map(str, ADAM_LRS_EQUAL_TIME))
    multirun("transfer", search, [*budget, held_out, lrs], 1)
    lr = min(collect(search), key=_score).get("optim.lr")
    multirun(
        "transfer",
        root / "models" / f"{key}_adam_full",
        [*budget, _seeds(SEEDS), f"optim.lr={lr}"],
        1,
    )


# --- reading ------------------------------------------------------------------------------------
CONFIG_KEYS = {  # the parts of a run's config that the tables read or that tell runs apart
    "pde": ("name", "target"),
    "adapter": ("name", "cr", "lr_strategy", "multipliers"),
    "optim": ("name", "damping", "lr", "damping_rule"),
    "model": ("name", "hidden"),
    "train": ("steps", "tol", "max_seconds"),
}
LOWRANK_CRS = (0.5, 0.25)


@dataclass
class Result:
    """What the tables need from one run (read from its results.h5, kept in the raw data)."""

    name: str  # the run's directory name
    group: tuple[str, ...]  # path parts below the study root, up to the sweep directory
    cfg: dict[str, Any]
    status: str
    rel_l2: float
    n_trainable: int
    steps: int = 0
    stop_reason: str = ""
    train_seconds: float = math.nan
    seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    at_step: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the history's steps
    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # rel. L2 along training
    update: dict[str, Any] | None = None  # full fine-tuning of the LM grid: ΔA's low-rank data

    def get(self, dotted: str) -> Any:
        node: Any = self.cfg
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    @property
    def target(self) -> float:
        return float(self.get(f"pde.target.{PARAM[self.get('pde.name')]}"))

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": list(self.group),
            "cfg": self.cfg,
            "status": self.status,
            "rel_l2": self.rel_l2,
            "n_trainable": self.n_trainable,
            "steps": self.steps,
            "stop_reason": self.stop_reason,
            "train_seconds": self.train_seconds,
            "seconds": self.seconds.tolist(),
            "at_step": self.at_step.tolist(),
            "curve": self.curve.tolist(),
            "update": self.update,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Result:
        return cls(
            **{k: rec[k] for k in ("name", "cfg", "status", "n_trainable", "steps", "update")},
            group=tuple(rec["group"]),
            rel_l2=_float(rec["rel_l2"]),
            stop_reason=rec["stop_reason"],
            train_seconds=_float(rec["train_seconds"]),
            seconds=np.asarray(rec["seconds"], dtype=float),
            at_step=np.asarray(rec["at_step"], dtype=float),
            curve=np.asarray(rec["curve"], dtype=float),
        )


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def _kept_config(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": cfg.get("seed")}
    for section, keys in CONFIG_KEYS.items():
        node = cfg.get(section) or {}
        out[section] = {k: node[k] for k in keys if k in node}
    return out


def update_data(results: Path) -> dict[str, Any] | None:
    """ΔA of the hidden layer against A_pretrained: truncated-HOSVD errors at LOWRANK_CRS,
    ‖ΔA‖/‖A_pt‖ and the mode spectra, computed once when the raw data is written."""
    layers = read_update(results)
    if 1 not in layers:
        return None
    a_pt, delta = (torch.as_tensor(x) for x in layers[1])
    hosvd = {}
    for c in LOWRANK_CRS:
        ranks = ranks_from_cr(tuple(a_pt.shape), c)
        hosvd[f"{c:g}"] = {
            "delta": hosvd_rel_error(delta, ranks),
            "a_pt": hosvd_rel_error(a_pt, ranks),
        }

    def spectra(t: torch.Tensor) -> list[list[float]]:
        return [[float(v) for v in sv] for sv in normalised_singular_values(t)]

    return {
        "shape": list(a_pt.shape),
        "hosvd": hosvd,
        "norm_ratio": float(delta.norm() / a_pt.norm()),
        "spectra_delta": spectra(delta),
        "spectra_a_pt": spectra(a_pt),
    }


def collect(root: Path) -> list[Result]:
    """Every run below `root`, from its results.h5."""
    out = []
    for h5 in sorted(root.rglob(RESULTS_FILE)):
        group = h5.parent.relative_to(root).parts[:-1]
        with h5py.File(h5, "r") as f:
            cfg = yaml.safe_load(str(f.attrs.get("config", ""))) or {}
            m = f["metrics"].attrs if "metrics" in f else {}
            hist = f["history"] if "history" in f else {}
            r = Result(
                name=h5.parent.name,
                group=group,
                cfg=_kept_config(cfg),
                status=str(f.attrs.get("status", "")),
                rel_l2=float(m.get("rel_l2", math.nan)),
                n_trainable=int(m.get("n_trainable", -1)),
                steps=int(m.get("steps_done", m.get("steps", 0))),
                stop_reason=str(f.attrs.get("stop_reason", "")),
                train_seconds=float(m.get("train_seconds", math.nan)),
                seconds=np.asarray(hist["seconds"][()]) if "seconds" in hist else np.zeros(0),
                at_step=np.asarray(hist["step"][()]) if "step" in hist else np.zeros(0),
                curve=np.asarray(hist["rel_l2"][()]) if "rel_l2" in hist else np.zeros(0),
            )
        if group[1:3] == ("lm", KEY["full fine-tuning"]) and r.status == "ok":
            r.update = update_data(h5)
        out.append(r)
    return out


def merge(records: list[dict[str, Any]], old: dict[str, Any]) -> dict[str, Any]:
    """The old raw data's runs of every sweep that `records` does not hold, and where each kept
    sweep was measured: `earlier` lists {provenance, sweeps} (the old file's own `earlier`
    entries keep theirs; its other sweeps take its provenance)."""
    fresh = {tuple(r["group"]) for r in records}
    kept = [r for r in old["runs"] if tuple(r["group"]) not in fresh]
    where = {tuple(g): i for i, e in enumerate(old.get("earlier", [])) for g in e["sweeps"]}
    sources = [*old.get("earlier", []), {"provenance": old["provenance"], "sweeps": []}]
    groups: dict[int, list[list[str]]] = {}
    for g in sorted({tuple(r["group"]) for r in kept}):
        groups.setdefault(where.get(g, len(sources) - 1), []).append(list(g))
    earlier = [{"provenance": sources[i]["provenance"], "sweeps": gs} for i, gs in groups.items()]
    return {"earlier": earlier, "runs": kept}


def export(
    root: Path,
    out: Path,
    minutes: list[float],
    old: Path | None = None,
    note: str = "",
    command: str = "",
) -> None:
    """The raw data of the study: every run's record, with the command, commit and machine;
    with `old`, merged with that raw data's runs of the sweeps not run again below `root`."""
    hb = docblocks.owner("hard_benchmarks")  # provenance
    records = [r.record() for r in collect(root)]
    history = []  # notes on how the runs went, kept across exports of the same study (or merge)
    base = old if old is not None else out
    if base.is_file():
        history = json.loads(base.read_text(encoding="utf-8")).get("history", [])
    earlier: list[dict[str, Any]] = []
    if old is not None:
        merged = merge(records, json.loads(old.read_text(encoding="utf-8")))
        earlier, records = merged["earlier"], records + merged["runs"]
    data = {
        "command": command or f"python scripts/reproduce.py --root ROOT --raw {out}",
        "provenance": hb.provenance(threads=1),
        "jobs": "two at a time (joblib, one torch thread each); the equal-time phase one at a time",
        "study_minutes": minutes,
        "history": history + ([note] if note else []),
        "runs": records,
    }
    if earlier:
        data["earlier"] = earlier
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=None, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {len(records)} runs to {out}", flush=True)


def load(raw: Path) -> list[Result]:
    """The study's runs from its committed raw data."""
    data = json.loads(raw.read_text(encoding="utf-8"))
    return [Result.from_record(rec) for rec in data["runs"]]


def select(runs: list[Result], *group: str, **match: Any) -> list[Result]:
    """Runs below `group` whose config matches every dotted key (`pde__target` style)."""
    sel = []
    for r in runs:
        if r.group[: len(group)] != group:
            continue
        if all(_same(r.get(k.replace("__", ".")), v) for k, v in match.items()):
            sel.append(r)
    return sel


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, float) and isinstance(a, int | float):
        return math.isclose(float(a), b, rel_tol=1e-9)
    return a == b


def _score(r: Result) -> float:
    return r.rel_l2 if r.status == "ok" and math.isfinite(r.rel_l2) else math.inf


def best(runs: list[Result], pde: str, v: Variant, opt: str) -> float:
    """The searched hyperparameter (lowest rel. L2 on the held-out seed) of a variant."""
    name = v.searched_as or v.label
    key = KEY[name]
    sel = select(runs, pde, f"search_{opt}", key)
    if not sel:
        raise SystemExit(f"no search runs for {pde} {name} {opt}")
    top = min(sel, key=_score)
    return float(top.get("optim.damping" if opt == "lm" else "optim.lr"))


# --- tables -------------------------------------------------------------------------------------
def stat(values: list[float], fmt: str = "{:.1e}") -> str:
    """median (min–max) over seeds; – when empty; failed runs are counted and named."""
    good = [v for v in values if math.isfinite(v)]
    bad = len(values) - len(good)
    if not good:
        return f"failed ×{bad}" if bad else "–"
    text = fmt.format(float(np.median(good)))
    if len(good) > 1:
        text += f" ({fmt.format(min(good))}–{fmt.format(max(good))})"
    return text + (f", {bad} failed" if bad else "")


def errors(sel: list[Result]) -> list[float]:
    return [r.rel_l2 if r.status == "ok" else math.nan for r in sel]


def grid_table(runs: list[Result], pde: str) -> list[str]:
    targets = TARGETS[pde]
    p = PARAM[pde]
    lines = [
        f"| {pde} ({p} {SOURCE[pde]:g} →) | trainable | "
        + " | ".join(f"{p} = {t:g}" for t in targets)
        + " |",
        "|---|---|" + "---|" * len(targets),
    ]
    for v in VARIANTS:
        sel = select(runs, pde, "lm", v.key)
        n = sel[0].n_trainable if sel else "–"
        cells = [stat(errors([r for r in sel if _same(r.target, t)])) for t in targets]
        lines.append(f"| {v.label} | {n} | " + " | ".join(cells) + " |")
    return lines


def _target_row(pde: str, t: float, *cells: str) -> str:
    """A markdown table row for one target of `pde`: "| <pde> <param> = <t> | cells... |"."""
    return "| " + " | ".join([f"{pde} {PARAM[pde]} = {t:g}", *cells]) + " |"


def flatness_table(runs: list[Result]) -> list[str]:
    """Have the curves flattened? Median over targets and seeds of rel. L2 at half the budget
    divided by the final rel. L2 (1: flat over the second half; 2: still halving)."""
    lines = ["| variant | " + " | ".join(PDES) + " |", "|---|" + "---|" * len(PDES)]
    for v in VARIANTS:
        cells = []
        for pde in PDES:
            ratios = []
            for r in select(runs, pde, "lm", v.key):
                if r.status == "ok" and r.curve.size > 2 and r.curve[-1] > 0:
                    ratios.append(float(r.curve[(r.curve.size - 1) // 2] / r.curve[-1]))
            cells.append(f"{np.median(ratios):.2f}" if ratios else "–")
        lines.append(f"| {v.label} | " + " | ".join(cells) + " |")
    return lines


def _span(values: list[float]) -> tuple[float, float]:
    good = [v for v in values if math.isfinite(v)]
    return (min(good), max(good)) if good else (math.nan, math.nan)


def _times(x: float) -> str:
    """A ratio to two significant digits, without an exponent (190, not 1.9e+02)."""
    return f"{float(f'{x:.2g}'):g}"


def ratio_table(runs: list[Result], ref: str = "full fine-tuning") -> list[str]:
    """Each LM-grid variant against `ref`, per family: the ratio of the seeds' median errors
    on each target (min–max over the family's targets), and on how many targets the seed
    ranges are apart, the variant's above ("worse") or below ("better")."""
    lines = ["| variant | " + " | ".join(PDES) + " |", "|---|" + "---|" * len(PDES)]
    for v in VARIANTS:
        if v.label == ref:
            continue
        cells = []
        for pde in PDES:
            ratios, worse, better = [], 0, 0
            for t in TARGETS[pde]:
                mine, theirs = (
                    errors([r for r in select(runs, pde, "lm", k) if _same(r.target, t)])
                    for k in (v.key, KEY[ref])
                )
                (lo, hi), (ref_lo, ref_hi) = _span(mine), _span(theirs)
                if math.isnan(lo) or math.isnan(ref_lo):
                    continue
                ratios.append(float(np.nanmedian(mine) / np.nanmedian(theirs)))
                worse += lo > ref_hi
                better += hi < ref_lo
            if not ratios:
                cells.append("–")
                continue
            lo, hi = (_times(x) for x in (min(ratios), max(ratios)))
            text = f"{lo}×" if lo == hi else f"{lo}–{hi}×"
            apart = ", ".join(
                f"{n}/{len(ratios)} {side}"
                for n, side in ((worse, "worse"), (better, "better"))
                if n
            )
            cells.append(f"{text} ({apart})" if apart else text)
        lines.append(f"| {v.label} | " + " | ".join(cells) + " |")
    return lines


def adam_table(runs: list[Result]) -> list[str]:
    lines = [
        "| variant | " + " | ".join(f"{p} LM | {p} Adam (lr)" for p in PDES) + " |",
        "|---|" + "---|---|" * len(PDES),
    ]
    for v in ADAM_VARIANTS:
        cells = []
        for pde in PDES:
            lm = [r for r in select(runs, pde, "lm", v.key) if _same(r.target, DEFAULT[pde])]
            adam = select(runs, pde, "adam", v.key)
            lr = adam[0].get("optim.lr") if adam else "–"
            cells += [stat(errors(lm)), f"{stat(errors(adam))} ({lr})"]
        lines.append(f"| {v.label} | " + " | ".join(cells) + " |")
    return lines


def search_table(runs: list[Result], opt: str) -> list[str]:
    key, values = ("optim.damping", LM_DAMPINGS) if opt == "lm" else ("optim.lr", ADAM_LRS)
    name = "initial damping" if opt == "lm" else "learning rate"
    lines = [
        "| family | variant | " + " | ".join(f"{name} {x:g}" for x in values) + " |",
        "|---|---|" + "---|" * len(values),
    ]
    for pde in PDES:
        for v in SEARCHED:
            sel = select(runs, pde, f"search_{opt}", v.key)
            cells = []
            for x in values:
                hit = [r for r in sel if _same(r.get(key), float(x))]
                cells.append(stat(errors(hit)))
            lines.append(f"| {pde} | {v.label} | " + " | ".join(cells) + " |")
    return lines


def strategy_table(runs: list[Result]) -> list[str]:
    """Per strategy and optimizer: the base rate η whose median over seeds is lowest, and the
    seeds' rel. L2 at it (median (min–max)); how many runs of the other η diverged."""
    ran = {int(r.group[1][1:].split("_")[0]) for r in select(runs, "lr_strategies")}
    cols = [(w, o) for o in ("gd", "adam") for w in WIDTHS if w in ran]
    names = {"gd": "gradient descent", "adam": "Adam"}
    lines = [
        "| strategy | " + " | ".join(f"{names[o]}, width {w}" for w, o in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for i, label in enumerate(STRATEGIES):
        cells = []
        for w, o in cols:
            sel = select(runs, "lr_strategies", f"w{w}_{o}_{i}")
            if not sel:
                cells.append("–")
                continue
            by_lr: dict[float, list[Result]] = {}
            for r in sel:
                by_lr.setdefault(float(r.get("optim.lr")), []).append(r)
            medians = {lr: float(np.median([_score(r) for r in rs])) for lr, rs in by_lr.items()}
            lr = min(sorted(by_lr), key=medians.__getitem__)
            failed = sum(1 for r in sel if not math.isfinite(_score(r)))
            cell = stat([_score(r) for r in by_lr[lr]]) + f" (η {lr:g})"
            cells.append(cell + (f"; {failed}/{len(sel)} runs diverged" if failed else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def strategy_seeds(runs: list[Result]) -> list[int]:
    """The seeds the strategies ran with (the first run of the study had seed 0 only)."""
    return sorted({int(r.get("seed")) for r in select(runs, "lr_strategies")})


def lowrank_table(runs: list[Result]) -> list[str]:
    """Truncated-HOSVD error of ΔA (LM full fine-tuning) at each of LOWRANK_CRS, against the
    same truncation of A_pretrained, the hidden layer, per target distance."""
    lines = [
        "| target | "
        + " | ".join(f"ΔA @ cr {c:g} | A_pt @ cr {c:g}" for c in LOWRANK_CRS)
        + " | ‖ΔA‖/‖A_pt‖ |",
        "|---|" + "---|---|" * len(LOWRANK_CRS) + "---|",
    ]
    key = KEY["full fine-tuning"]
    for pde in PDES:
        for t in TARGETS[pde]:
            ups = [r.update for r in select(runs, pde, "lm", key) if _same(r.target, t)]
            ups = [u for u in ups if u]
            if not ups:
                continue
            cells = []
            for c in LOWRANK_CRS:
                cells.append(stat([u["hosvd"][f"{c:g}"]["delta"] for u in ups], "{:.2f}"))
                cells.append(f"{ups[0]['hosvd'][f'{c:g}']['a_pt']:.2f}")
            ratio = [u["norm_ratio"] for u in ups]
            lines.append(_target_row(pde, t, *cells, stat(ratio, "{:.3f}")))
    return lines


def hidden_shape(runs: list[Result]) -> str:
    """The hidden layer's coefficient shape (in × out × basis) as the low-rank data holds it."""
    shapes = {tuple(r.update["shape"]) for r in runs if r.update}
    return " / ".join("×".join(map(str, sh)) for sh in sorted(shapes)) or "–"


def models_table(runs: list[Result]) -> list[str]:
    """Each kind's runs at equal time: the error where each run stopped (its time cap or its
    own tolerance), with the steps and seconds it took; no first crossings of the exact error."""
    lines = [
        "| model | adapter | trainable | rel. L2 at the stop | steps | seconds | stopped by |",
        "|---|---|---|---|---|---|---|",
    ]
    rows: list[tuple[str, str, list[Result]]] = []
    for label in MODELS:
        key = Variant(label, ()).key
        cr = MODELS[label][2]
        rows.append((label, f"LoTRA cr {cr:g} (LM)", select(runs, "models", f"{key}_lm_lotra")))
        for a in ("full", "scratch"):
            sel = select(runs, "models", f"{key}_lm_base", adapter__name=a)
            rows.append((label, f"{'full fine-tuning' if a == 'full' else a} (LM)", sel))
    for label in MODELS:  # Adam at its searched lr and the steps the time allowed
        key = Variant(label, ()).key
        sel = select(runs, "models", f"{key}_adam_full")
        if sel:
            lr = sel[0].get("optim.lr")
            rows.append((label, f"full fine-tuning (Adam, lr {lr:g})", sel))
    for label, adapter, sel in rows:
        n = sel[0].n_trainable if sel else "–"
        steps = stat([float(r.steps) for r in sel], "{:.0f}")
        secs = stat([r.train_seconds for r in sel], "{:.1f}")
        stops = ", ".join(sorted({r.stop_reason for r in sel})) or "–"
        lines.append(
            f"| {label} | {adapter} | {n} | {stat(errors(sel))} | {steps} | {secs} | {stops} |"
        )
    return lines


def sources_line(runs: list[Result]) -> str:
    parts = []
    for sub, names in (("families", PDES), ("models", ("mlp", "lmkan"))):
        for name in names:
            sel = [r for r in runs if r.group == ("sources", sub) and r.name == name]
            parts.append(f"{name} {sel[0].rel_l2:.1e}" if sel else f"{name} –")
    wide = select(runs, "sources", "wide")
    parts.append(f"elliptic width 64 {wide[0].rel_l2:.1e}" if wide else "elliptic width 64 –")
    return "Sources, rel. L2: " + ", ".join(parts) + "."


def plots(runs: list[Result], img: Path) -> None:
    """Error against trainable parameters (LM grid) and error along the LM steps (defaults)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(PDES), figsize=(4 * len(PDES), 3.4), squeeze=False)
    axes = axes[0]
    for ax, pde in zip(axes, PDES):
        for t in TARGETS[pde]:
            xs, ys = [], []
            for v in VARIANTS:
                sel = [r for r in select(runs, pde, "lm", v.key) if _same(r.target, t)]
                e = [x for x in errors(sel) if math.isfinite(x)]
                if e:
                    xs.append(sel[0].n_trainable)
                    ys.append(float(np.median(e)))
                    if v.label in ("full fine-tuning", "scratch", "slim KAN cr 0.5"):
                        ax.annotate(v.label.split()[0], (xs[-1], ys[-1]), fontsize=6)
            if xs:
                ax.scatter(xs, ys, label=f"{PARAM[pde]} = {t:g}", s=14)
        ax.set(title=pde, xlabel="trainable parameters")
        if ax.has_data():
            ax.set(xscale="log", yscale="log")
            ax.legend(fontsize=7)
    axes[0].set_ylabel(f"rel. L2 after {LM_STEPS} LM steps")
    fig.tight_layout()
    fig.savefig(img / "results_error_vs_params.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(PDES), figsize=(4 * len(PDES), 3.4), squeeze=False)
    axes = axes[0]
    for ax, pde in zip(axes, PDES):
        for v in VARIANTS:
            sel = [r for r in select(runs, pde, "lm", v.key) if _same(r.target, DEFAULT[pde])]
            sel = [r for r in sel if r.curve.size]
            if not sel:
                continue
            mid = sorted(sel, key=_score)[len(sel) // 2]  # the median seed's curve
            ax.plot(mid.at_step, mid.curve, label=v.label, lw=1)
        ax.set(title=f"{pde} {PARAM[pde]} = {DEFAULT[pde]:g}", xlabel="LM step")
        if ax.has_data():
            ax.set(yscale="log")
    axes[0].set_ylabel("rel. L2 (median seed)")
    axes[-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(img / "results_curves.png", dpi=100)
    plt.close(fig)


def spectra_plot(runs: list[Result], img: Path) -> None:
    """σ_i/σ_1 of the hidden layer's mode unfoldings: ΔA of LM full fine-tuning (seed 0) at
    the nearest and the farthest target of each family, and A_pretrained as the control."""
    import matplotlib.pyplot as plt

    key = KEY["full fine-tuning"]
    fig, axes = plt.subplots(len(PDES), 3, figsize=(10, 2.4 * len(PDES)), squeeze=False)
    for row, pde in enumerate(PDES):
        for t, style in ((TARGETS[pde][0], "-"), (TARGETS[pde][-1], "--")):
            sel = [r for r in select(runs, pde, "lm", key, seed=0) if _same(r.target, t)]
            up = sel[0].update if sel else None
            if not up:
                continue
            for m, sv in enumerate(up["spectra_delta"]):
                axes[row, m].semilogy(sv, style, label=f"ΔA, {PARAM[pde]} = {t:g}")
            if t == TARGETS[pde][0]:
                for m, sv in enumerate(up["spectra_a_pt"]):
                    axes[row, m].semilogy(sv, ":", color="k", label="A_pretrained")
        for m in range(3):
            axes[row, m].set_title(f"{pde}, mode {m + 1}", fontsize=8)
        axes[row, 2].legend(fontsize=6)
    fig.supylabel(f"σ_i / σ_1 (hidden layer {hidden_shape(runs)})")
    fig.tight_layout()
    fig.savefig(img / "results_spectra.png", dpi=100)
    plt.close(fig)


BLOCK = "results-study"  # the generated block of docs/results.md (scripts/docblocks.py)
RAW = ROOT / "docs" / "results" / "study.json"


def unsearched(runs: list[Result]) -> list[str]:
    """The LM-grid and Adam sweeps that did not run at their variant's searched damping or
    learning rate (a merged raw data whose searches were re-run without them)."""
    out = []
    for pde in PDES:
        for opt, key, variants in (
            ("lm", "optim.damping", VARIANTS),
            ("adam", "optim.lr", ADAM_VARIANTS),
        ):
            for v in variants:
                sel = select(runs, pde, opt, v.key)
                if not sel or not select(runs, pde, f"search_{opt}"):
                    continue
                want = best(runs, pde, v, opt)
                ran = {float(r.get(key)) for r in sel}
                if ran != {want}:
                    out.append(f"{pde}/{opt}/{v.key} ran at {sorted(ran)}, searched {want:g}")
    return out


def provenance_line(data: dict[str, Any]) -> str:
    """Where the runs were measured: the raw data's commit and date, and the sweeps an earlier
    commit measured (merged raw data, `earlier`)."""

    def at(prov: dict[str, Any]) -> str:
        return f"commit {prov['git_commit'][:7]} ({prov['date'][:10]})"

    earlier = data.get("earlier", [])
    n_old = [sum(1 for r in data["runs"] if r["group"] in e["sweeps"]) for e in earlier]
    parts = [f"{len(data['runs']) - sum(n_old)} runs written at {at(data['provenance'])}"]
    parts += [
        f"{n} kept from the data written at {at(e['provenance'])}" for n, e in zip(n_old, earlier)
    ]
    return "Raw data: " + "; ".join(parts) + " (the raw data's history says where each phase ran)."


def body(runs: list[Result], data: dict[str, Any] | None = None) -> str:
    """The page's generated block: every table of the study, from the raw data alone; fails
    when a grid sweep did not run at its searched setting."""
    stale = unsearched(runs)
    if stale:
        raise SystemExit("not at the searched setting: " + "; ".join(stale))
    head = [provenance_line(data)] if data else []
    sections: list[tuple[str, Callable[[], list[str]]]] = [
        ("", lambda: [*head, sources_line(runs)]),
        (
            f"**LM, every target** (rel. L2 at the stop: {LM_STEPS} LM steps or the default "
            f"tolerance; median (min–max) over seeds {', '.join(map(str, SEEDS))}):",
            lambda: [x for p in PDES for x in [*grid_table(runs, p), ""]],
        ),
        (
            "**Against full fine-tuning** (LM grid): the median rel. L2 of a variant over full "
            "fine-tuning's, per target (min–max over the family's targets), and on how many "
            "targets every seed of one is above (worse) or below (better) every seed of the "
            "other:",
            lambda: ratio_table(runs),
        ),
        (
            "**Have the LM curves flattened?** rel. L2 at half the run / final rel. L2, "
            "median over targets and seeds:",
            lambda: flatness_table(runs),
        ),
        (
            f"**LM against Adam at the default targets** (LM {LM_STEPS} steps, "
            f"Adam {ADAM_STEPS} steps; each at its searched damping / learning rate):",
            lambda: adam_table(runs),
        ),
        (
            f"**LM initial-damping search** (held-out seed {SEARCH_SEED}, default targets):",
            lambda: search_table(runs, "lm"),
        ),
        (
            f"**Adam learning-rate search** (held-out seed {SEARCH_SEED}, default targets):",
            lambda: search_table(runs, "adam"),
        ),
        (
            f"**LoTRA learning-rate strategies** (cr 0.25, elliptic μ 1 → 1.5, "
            f"{STRATEGY_STEPS} steps; the base rate η with the lowest median over seeds "
            f"{', '.join(map(str, strategy_seeds(runs)))}, and the seeds' rel. L2 there, "
            "median (min–max)):",
            lambda: strategy_table(runs),
        ),
        (
            f"**Is ΔA low tensor rank?** LM full fine-tuning, hidden layer ({hidden_shape(runs)}): "
            "relative truncated-HOSVD error at each cr's ranks, ΔA (median (min–max) over seeds) "
            "next to A_pretrained:",
            lambda: lowrank_table(runs),
        ),
    ]
    if select(runs, "models"):  # phase 6 can be left out (--no-models)
        sections.append(
            (
                f"**Model kinds at equal time** (elliptic μ 1 → 1.5, at most "
                f"{EQUAL_SECONDS:g} s of training each, one job at a time; median (min–max) "
                f"over seeds {', '.join(map(str, SEEDS))}):",
                lambda: models_table(runs),
            )
        )
    parts: list[str] = []
    for title, make in sections:
        if title:
            parts += [title, ""]
        parts += [*make(), ""]
    return "\n".join(parts).rstrip("\n")


def block(name: str, doc: Path) -> str:
    """The page's block from the committed raw data (scripts/docblocks.py)."""
    return body(load(RAW), json.loads(RAW.read_text(encoding="utf-8")))


def write_tables(raw: Path, target: Path, img: Path | None) -> None:
    runs, data = load(raw), json.loads(raw.read_text(encoding="utf-8"))
    text = target.read_text(encoding="utf-8")
    target.write_text(docblocks.replace(text, BLOCK, body(runs, data), target), encoding="utf-8")
    if img is not None:
        plots(runs, img)
        spectra_plot(runs, img)
    print(f"wrote the tables into {target} ({len(runs)} runs)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("outputs/reproduce"))
    ap.add_argument("--jobs", type=int, default=2, help="parallel sweep jobs (joblib launcher)")
    ap.add_argument(
        "--source-seconds",
        type=float,
        default=120.0,
        help="training-time cap of the MLP and lmKAN sources",
    )
    ap.add_argument(
        "--raw",
        type=Path,
        default=None,
        help="the raw data: written after the runs, read by --tables "
        "(default docs/results/study.json; --smoke: ROOT/study.json)",
    )
    ap.add_argument("--tables", action="store_true", help="rewrite --page's block from --raw")
    ap.add_argument("--page", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--img", type=Path, default=None, help="--tables: write the plots here")
    ap.add_argument("--smoke", action="store_true", help="every phase with tiny budgets")
    ap.add_argument("--collect", action="store_true", help="only write --raw from --root's runs")
    ap.add_argument(
        "--strategy-widths",
        type=int,
        nargs="+",
        default=list(WIDTHS),
        help=f"the widths of the learning-rate strategies (of {WIDTHS})",
    )
    ap.add_argument("--no-models", action="store_true", help="leave out phase 6")
    ap.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="REGEX",
        help="run just the sweeps whose path below --root matches one of these (the sources "
        "always run), e.g. to re-measure what a change of defaults made stale",
    )
    ap.add_argument(
        "--merge",
        type=Path,
        default=None,
        metavar="RAW",
        help="write --raw as this raw data with the sweeps run below --root replaced",
    )
    ap.add_argument("--note", default="", help="a line for the raw data's history")
    args = ap.parse_args()
    ONLY.extend(re.compile(x) for x in args.only)
    if args.smoke:  # checks the plumbing in a few minutes (elliptic); its numbers mean nothing
        global LM_STEPS, ADAM_STEPS, EQUAL_SECONDS, SEEDS, PDES, STRATEGY_STEPS
        LM_STEPS, ADAM_STEPS, EQUAL_SECONDS, SEEDS, PDES = 2, 3, 1.0, (0,), ("elliptic",)
        STRATEGY_STEPS = 3
        args.source_seconds = 1.0
        PRETRAIN.append("train.steps=2")
        EXTRA.extend(["eval.n=11", "train.n_interior=64", "train.n_boundary=16"])
    raw = args.raw or (args.root / "study.json" if args.smoke else RAW)
    if args.tables:
        write_tables(raw, args.page, args.img)
        return
    log = args.root / "study_minutes.json"
    minutes = json.loads(log.read_text()) if log.is_file() else []
    if not args.collect:
        t0 = time.perf_counter()
        run_study(
            args.root,
            args.jobs,
            args.source_seconds,
            tuple(args.strategy_widths),
            models=not args.no_models,
        )
        print(f"study done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
        minutes = [*minutes, round((time.perf_counter() - t0) / 60, 1)]
        log.write_text(json.dumps(minutes))
    command = "python scripts/reproduce.py --root ROOT"
    if args.only:
        command += " --only " + " ".join(shlex.quote(x) for x in args.only)
    if args.merge:
        command += f" --merge {_shown(args.merge)}"
    export(args.root, raw, minutes, args.merge, args.note, f"{command} --raw {_shown(raw)}")


def _shown(path: Path) -> str:
    """A path as the raw data's command shows it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    main()
