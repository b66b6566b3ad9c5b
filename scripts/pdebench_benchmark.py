"""PDEBench's 1-D advection and Burgers problems, posed from files in PDEBench's layout: pretrain
on one sample, then solve other samples of the same file by transfer and from scratch.

For each problem, as a user runs it (default network and budget):
`pinnkan pretrain pde=<family> pde.reference.source=FILE pde.reference.initial=true
pde.reference.sample=0` once, then per strategy one multirun `pinnkan transfer -m pde=<family>
pde.reference.target=FILE pde.reference.initial=true source=<pretrain>
pde.reference.sample=1,2,3 <strategy's overrides>`. Each run's rel. L2, PDEBench's nRMSE and
boundary RMSE (all on the file's grid) and the training seconds until its rel. L2 first
reached the problem's goal are read from its results.h5. The raw data of one (problem,
strategy) is one JSON: every sample's errors and times, the pretrain's, the file's path,
sha256 and how it was made, the exact commands, commit, date, machine and torch version.

The files are written here from exact solutions, in PDEBench's layout (float32 `tensor` of
samples × 201 × 1024, `x-coordinate` of 1024 cell centres on (0, 1), `t-coordinate` of 202
values 0, 0.01, ..., 2.01 of which the slices take the first 201), with PDEBench's random
superposition of sines as initial values (`initial_values`):
- advection, β = 0.1 (attribute `beta`): u(x, t) = u0(x − βt), periodic;
- Burgers at Nu = 0.01 (attribute `Nu`; PDEBench's viscosity is Nu/π): the Cole–Hopf solution
  (`pinnkan.pde.burgers.cole_hopf_periodic`), periodic.
Or give PDEBench's own files (--advection-file, --burgers-file).

    python scripts/pdebench_benchmark.py                        # both problems, samples 1..3
    python scripts/pdebench_benchmark.py --problems advection --strategies lotra,scratch
    python scripts/pdebench_benchmark.py --advection-file 1D_Advection_Sols_beta0.1.hdf5
    python scripts/pdebench_benchmark.py --quick                # tiny files and runs: it works
    python scripts/pdebench_benchmark.py --tables               # docs/pdebench.md from the JSONs
    python scripts/pdebench_benchmark.py --check                # exit 1 if the table differs
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import docblocks
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1
OUT = ROOT / "docs" / "pdebench"
DOC = ROOT / "docs" / "pdebench.md"
TABLE = docblocks.markers("pdebench-table")


class Problem(NamedTuple):  # NamedTuples: docblocks loads scripts outside sys.modules
    """A PDEBench 1-D problem: its pinnkan family, file attribute and the goal in rel. L2."""

    family: str
    attribute: str
    value: float
    goal: float


PROBLEMS = {
    "advection": Problem("advection", "beta", 0.1, 1e-3),
    "burgers": Problem("burgers", "Nu", 0.01, 1e-2),
}
# strategy: (the stage of its multirun over the samples, its overrides, starts from the pretrain)
STRATEGIES: dict[str, tuple[str, list[str], bool]] = {
    "lotra": ("transfer", [], True),  # the defaults: LoTRA cr 0.5
    "lotra_cr0.25": ("transfer", ["cr=0.25"], True),
    "full": ("transfer", ["adapter=full"], True),
    "scratch": ("transfer", ["adapter=scratch"], False),
    # `pinnkan pretrain` of each sample: the pretrain's budget (500 steps), the issue's
    # criterion ("pretrain ... on any of its samples"), where scratch has a transfer's 300
    "pretrain_each": ("pretrain", [], False),
    # the same with the settings of the classic hard Burgers member (experiment=burgers_classic:
    # a tanh MLP, 4096 residual-sampled points) and time marching in 8 windows, 300 s each
    "pretrain_each_hard": (
        "pretrain",
        [
            "model=mlp",
            "model.hidden=[20,20,20]",
            "train.n_interior=4096",
            "optim.sampling=rad",
            "train.time_windows=8",
            "train.max_seconds=300",
            "train.steps=100000",
        ],
        False,
    ),
}
SOURCE_SAMPLE, SAMPLES = 0, [1, 2, 3]  # the pretrain's sample, the transfers'
# PDEBench's layout and the tiny one of --quick
LAYOUT = {"nx": 1024, "nt": 201, "t_end": 2.0}
QUICK_LAYOUT = {"nx": 64, "nt": 21, "t_end": 2.0}
QUICK_RUNS = [
    "optim=adam",
    "train.steps=3",
    "train.n_interior=64",
    "train.n_boundary=16",
    "train.eval_every=1",
    "model.hidden=[4]",
]


# --- the files ----------------------------------------------------------------------------------
class InitialValue(NamedTuple):
    """One of PDEBench's random initial values on the unit period: Σ_k a_k sin(w_k x + φ_k),
    signed, optionally |·| and windowed. w_k = 0 for a wavenumber not drawn, which adds the
    constant a_k sin φ_k (as in PDEBench's generator)."""

    wavenumbers: np.ndarray  # (k_tot,) angular, 2π·k·(times drawn)
    amplitudes: np.ndarray  # (k_tot,), the sign included
    phases: np.ndarray  # (k_tot,)
    absolute: bool = False
    window: tuple[float, float] | None = None  # tanh window's edges (PDEBench: width 0.01)

    @property
    def smooth(self) -> bool:
        return not self.absolute and self.window is None

    @property
    def mean(self) -> float:
        """The constant part (the unselected wavenumbers'); the rest has zero mean."""
        still = self.wavenumbers == 0
        return float((self.amplitudes[still] * np.sin(self.phases[still])).sum())

    def _terms(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        moving = self.wavenumbers != 0
        w, a, p = self.wavenumbers[moving], self.amplitudes[moving], self.phases[moving]
        return (
            w.reshape((-1,) + (1,) * x.ndim),
            a.reshape((-1,) + (1,) * x.ndim),
            p.reshape((-1,) + (1,) * x.ndim),
        )

    def wave(self, x: np.ndarray) -> np.ndarray:
        """The zero-mean periodic part at x (any shape)."""
        w, a, p = self._terms(np.asarray(x))
        return (a * np.sin(w * x + p)).sum(axis=0)

    def primitive(self, x: np.ndarray) -> np.ndarray:
        """An antiderivative of `wave` (periodic: the wave has zero mean)."""
        w, a, p = self._terms(np.asarray(x))
        return (-a / w * np.cos(w * x + p)).sum(axis=0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.mod(np.asarray(x, np.float64), 1.0)
        u = self.mean + self.wave(x)
        if self.absolute:
            u = np.abs(u)
        if self.window is not None:
            lo, hi = self.window
            u = u * 0.5 * (np.tanh((x - lo) / 0.01) - np.tanh((x - hi) / 0.01))
        return u


def initial_values(
    n: int, seed: int, k_tot: int = 4, n_choice: int = 2, absolute: float = 0.0, window: float = 0.0
) -> list[InitialValue]:
    """n initial values drawn as PDEBench's `init_multi` draws them (pdebench/data_gen/
    data_gen_NLE/utils.py), with numpy's generator instead of JAX's: `n_choice` wavenumbers
    from 1..k_tot with replacement, amplitudes U(0, 1) and phases U(0, 2π) for every k, a
    random sign, |u| on a fraction `absolute` and a tanh window on a fraction `window` of
    them (PDEBench: k_tot 4, 0.1 and 0.1). One deviation: the wavenumbers are 2πk over the
    period 1, where PDEBench divides by x_last − x_first = 1 − dx, which leaves its initial
    values a jump of O(k·dx) at x = 0; here u0 is exactly periodic."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        drawn = np.bincount(rng.integers(0, k_tot, n_choice), minlength=k_tot)
        amplitudes = rng.uniform(size=k_tot) * rng.choice([1.0, -1.0])
        phases = 2.0 * np.pi * rng.uniform(size=k_tot)
        edges = (float(rng.uniform(0.1, 0.45)), float(rng.uniform(0.55, 0.9)))
        is_abs, is_window = rng.uniform() < absolute, rng.uniform() < window
        out.append(
            InitialValue(
                2.0 * np.pi * np.arange(1, k_tot + 1) * drawn,
                amplitudes,
                phases,
                bool(is_abs),
                edges if is_window else None,
            )
        )
    return out


def coordinates(nx: int, nt: int, t_end: float) -> tuple[np.ndarray, np.ndarray]:
    """PDEBench's float32 axes: nx cell centres on (0, 1), nt + 1 times of step t_end/(nt−1)."""
    x = ((np.arange(nx) + 0.5) / nx).astype(np.float32)
    t = (np.arange(nt + 1) * (t_end / (nt - 1))).astype(np.float32)
    return x, t


def exact_solution(problem: str, u0: InitialValue, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """u on the grid (len(t), len(x)) from u0: advection moves it by βt; Burgers by Cole–Hopf."""
    X, T = np.meshgrid(np.asarray(x, np.float64), np.asarray(t, np.float64))
    if problem == "advection":
        return u0(X - PROBLEMS["advection"].value * T)
    from pinnkan.pde.burgers import cole_hopf_periodic

    if not u0.smooth:
        raise SystemExit("burgers: the Cole-Hopf reference needs smooth initial values")
    nu = PROBLEMS["burgers"].value / np.pi
    u = cole_hopf_periodic(X.ravel(), T.ravel(), nu, u0.wave, u0.primitive, u0.mean)
    return u.reshape(X.shape)


def write_file(
    path: Path,
    problem: str,
    values: list[InitialValue],
    nx: int,
    nt: int,
    t_end: float,
) -> dict[str, Any]:
    """A PDEBench-layout HDF5 file of the problem's exact solutions; what it holds (JSON)."""
    import h5py

    x, t = coordinates(nx, nt, t_end)
    tensor = np.stack([exact_solution(problem, u0, x, t[:nt]) for u0 in values])
    spec = PROBLEMS[problem]
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["tensor"] = tensor.astype(np.float32)
        f["x-coordinate"], f["t-coordinate"] = x, t
        f.attrs[spec.attribute] = spec.value
    return {"samples": len(values), "nx": nx, "nt": nt, "t_end": t_end, spec.attribute: spec.value}


# --- the runs -----------------------------------------------------------------------------------
def seconds_to(history: dict[str, list[float]], goal: float) -> float | None:
    """Training seconds at the first evaluation whose rel. L2 is at most `goal` (None: never)."""
    for err, sec in zip(history.get("rel_l2", []), history.get("seconds", [])):
        if err is not None and not math.isnan(err) and err <= goal:
            return float(sec)
    return None


def read_member(run_dir: Path, goal: float) -> dict[str, Any]:
    """One run's record from its results.h5."""
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
        history = {k: f["history"][k][()].tolist() for k in ("step", "seconds", "rel_l2")}
    value = {k: float(metrics[k]) if k in metrics else None for k in ("rel_l2", "nrmse", "brmse")}
    rec.update(
        status=str(attrs.get("status")),
        sample=int(attrs["reference_sample"]) if "reference_sample" in attrs else None,
        pde_params=json.loads(attrs.get("pde_params", "{}")),
        **value,
        max_abs_error=float(metrics.get("max_abs_error", math.nan)),
        train_seconds=float(metrics.get("train_seconds", 0.0)),
        seconds_to_goal=seconds_to(history, goal),
        steps_done=int(metrics.get("steps_done", 0)),
        stop_reason=str(attrs.get("stop_reason")),
        n_trainable=int(metrics.get("n_trainable", 0)),
    )
    rec["reached"] = rec["rel_l2"] is not None and rec["rel_l2"] <= goal
    return rec


def _pinnkan(stage: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "pinnkan.cli", stage, *args]


def problem_args(problem: str, file: Path, which: str, threads: int, root: Path) -> list[str]:
    return [
        *EXTRA,
        f"pde={PROBLEMS[problem].family}",
        f"pde.reference.{which}={file}",
        "pde.reference.initial=true",
        f"threads={threads}",
        f"outputs_root={root}",
        "train.progress=log",
    ]


EXTRA: list[str] = []  # --quick / --extra: overrides added to every command


def run_pretrain(hb: Any, problem: str, file: Path, sample: int, root: Path, threads: int) -> dict:
    run_dir = root / "pretrain"
    cmd = _pinnkan(
        "pretrain",
        *problem_args(problem, file, "source", threads, root),
        f"pde.reference.sample={sample}",
        f"hydra.run.dir={run_dir}",
    )
    t0 = time.perf_counter()
    rc, _, err = hb.run_child(cmd, hb.child_env(threads), None)
    if rc:
        raise SystemExit(f"pretrain failed: {' '.join(cmd)}\n{err[-2000:]}")
    rec = read_member(run_dir, PROBLEMS[problem].goal)
    rec.update(
        command=" ".join(cmd[2:]), wall_seconds=time.perf_counter() - t0, run_path=str(run_dir)
    )
    return rec


def run_strategy(
    hb: Any,
    problem: str,
    strategy: str,
    file: dict[str, Any],
    samples: list[int],
    root: Path,
    threads: int,
    pretrain: dict | None,
) -> dict[str, Any]:
    """One multirun over the samples (a transfer, or pretrain_each's pretrain); its raw-data
    record."""
    stage, overrides, uses_source = STRATEGIES[strategy]
    sweep = root / strategy
    which = "source" if stage == "pretrain" else "target"  # the stage's reference file
    cmd = _pinnkan(
        stage,
        "-m",
        *problem_args(problem, Path(file["path"]), which, threads, root),
        f"pde.reference.sample={','.join(map(str, samples))}",
        *overrides,
        f"hydra.sweep.dir={sweep}",
    )
    if uses_source:
        cmd.append(f"source={pretrain['run_path']}")  # type: ignore[index]
    t0 = time.perf_counter()
    rc, _, err = hb.run_child(cmd, hb.child_env(threads), None)
    wall = time.perf_counter() - t0
    jobs = sorted(
        (d for d in sweep.iterdir() if d.is_dir() and d.name[0].isdigit())
        if sweep.is_dir()
        else [],
        key=lambda d: int(d.name.split("_", 1)[0]),
    )
    goal = PROBLEMS[problem].goal
    return {
        "schema": SCHEMA,
        "problem": problem,
        "strategy": strategy,
        "goal_rel_l2": goal,
        "file": file,
        "command": " ".join(cmd[2:]),
        "returncode": rc,
        "stderr_tail": err[-3000:] if rc else "",
        "wall_seconds": wall,
        "pretrain": pretrain if uses_source else None,
        "members": [read_member(d, goal) for d in jobs],
        **hb.provenance(threads),
    }


def prepare_file(args: argparse.Namespace, problem: str) -> dict[str, Any]:
    """The problem's file: the user's, or one written here; its path, sha256 and origin."""
    from pinnkan.pde.reference import file_sha256

    given = getattr(args, f"{problem}_file")
    if given is not None:
        path, made = Path(given).resolve(), {"origin": "given"}
    else:
        layout = QUICK_LAYOUT if args.quick else LAYOUT
        n = max([args.source_sample, *args.samples]) + 1
        values = initial_values(n, args.seed, absolute=args.absolute, window=args.window)
        path = args.work / f"{problem}.h5"
        made = {"origin": "written by scripts/pdebench_benchmark.py", "seed": args.seed}
        made |= {"absolute": args.absolute, "window": args.window}
        made |= write_file(path, problem, values, **layout)
    return {"path": str(path), "sha256": file_sha256(path), **made}


def run_all(args: argparse.Namespace) -> None:
    hb = docblocks.owner("hard_benchmarks")  # provenance, child processes
    args.out.mkdir(parents=True, exist_ok=True)
    for problem in args.problems:
        file = prepare_file(args, problem)
        root = args.work / problem
        pretrain = None
        for strategy in args.strategies:
            if STRATEGIES[strategy][2] and pretrain is None:
                pretrain = run_pretrain(
                    hb, problem, Path(file["path"]), args.source_sample, root, args.threads
                )
            rec = run_strategy(
                hb, problem, strategy, file, args.samples, root, args.threads, pretrain
            )
            path = args.out / f"{problem}_{strategy}.json"
            path.write_text(json.dumps(rec, indent=1, default=str) + "\n")
            print(f"{path}: {summary_line(rec)}", flush=True)


# --- tables -------------------------------------------------------------------------------------
def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(kept) if kept else None


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def summary_line(rec: dict[str, Any]) -> str:
    members = rec["members"]
    reached = sum(bool(m.get("reached")) for m in members)
    worst = max((m["rel_l2"] for m in members if m.get("rel_l2") is not None), default=None)
    return f"{reached}/{len(members)} at goal, worst rel. L2 {_e(worst)}"


def _row(problem: str, what: str, members: list[dict[str, Any]], saving: str) -> str:
    errors = [m.get("rel_l2") for m in members]
    worst = max((e for e in errors if e is not None), default=None)
    reached = sum(bool(m.get("reached")) for m in members)
    samples = ",".join(str(m.get("sample")) for m in members)
    return (
        f"| {problem} | {what} | {samples} | {_e(_median(errors))} ({_e(worst)}) | "
        f"{_e(_median([m.get('nrmse') for m in members]))} | "
        f"{_e(_median([m.get('brmse') for m in members]))} | {reached}/{len(members)} | "
        f"{_s(_median([m.get('seconds_to_goal') for m in members]))} | "
        f"{_s(sum(m.get('train_seconds', 0.0) for m in members))} | {saving} |"
    )


def saving(members: list[dict[str, Any]], scratch: list[dict[str, Any]]) -> str:
    """Scratch's seconds to the goal over the strategy's, per sample both reached: median."""
    theirs = {m.get("sample"): m.get("seconds_to_goal") for m in scratch}
    ratios = [
        theirs[m["sample"]] / m["seconds_to_goal"]
        for m in members
        if m.get("seconds_to_goal") and theirs.get(m.get("sample"))
    ]
    return f"{statistics.median(ratios):.2f}× (n={len(ratios)})" if ratios else "-"


def settings(runs: list[dict[str, Any]]) -> str:
    """The problems the script measures, from its own definitions, with the strategies each
    has data for."""
    lines = [
        "| problem | file attribute | pretrain sample | transfer samples | goal rel. L2 "
        "| strategies |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in PROBLEMS.items():
        attribute = f"{p.attribute} = {p.value:g}" + (" (ν = Nu/π)" if p.attribute == "Nu" else "")
        have = {r.get("strategy") for r in runs if r.get("problem") == name}
        measured = [s for s in STRATEGIES if s in have] or list(STRATEGIES)
        lines.append(
            f"| {name} | {attribute} | {SOURCE_SAMPLE} | {','.join(map(str, SAMPLES))} | "
            f"{p.goal:g} | {', '.join(measured)} |"
        )
    return "\n".join(lines)


def table(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return (
            "No measurements committed yet: `python scripts/pdebench_benchmark.py` writes them "
            "to docs/pdebench/, then `--tables` fills this table."
        )
    lines = [
        "| problem | run | samples | rel. L2 median (worst) | nRMSE median | bRMSE median "
        "| at goal | s to goal (median) | training s (sum) | vs scratch (s to goal) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["problem"], r["strategy"]): r for r in runs}
    for problem in PROBLEMS:
        pretrain = next(
            (r["pretrain"] for r in runs if r["problem"] == problem and r["pretrain"]), None
        )
        if pretrain is not None:
            lines.append(_row(problem, "pretrain", [pretrain], "-"))
        scratch = by.get((problem, "scratch"), {}).get("members", [])
        for strategy in STRATEGIES:
            rec = by.get((problem, strategy))
            if rec is None:
                continue
            gain = saving(rec["members"], scratch) if strategy != "scratch" else "1×"
            lines.append(_row(problem, strategy, rec["members"], gain))
    return "\n".join(lines)


def load(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def regenerated(doc: Path, out: Path) -> str:
    runs = load(out)
    return docblocks.replace(doc.read_text(), TABLE, f"{settings(runs)}\n\n{table(runs)}", doc)


def block(name: str, doc: Path) -> str:
    """The pdebench-table block's body: the settings, then the committed JSONs' table."""
    runs = load(OUT)
    return f"{settings(runs)}\n\n{table(runs)}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", type=lambda s: s.split(","), default=list(PROBLEMS))
    p.add_argument("--strategies", type=lambda s: s.split(","), default=list(STRATEGIES))
    p.add_argument("--samples", type=lambda s: [int(v) for v in s.split(",")], default=SAMPLES)
    p.add_argument("--source-sample", type=int, default=SOURCE_SAMPLE)
    p.add_argument("--seed", type=int, default=2022, help="of the written files' initial values")
    p.add_argument("--absolute", type=float, default=0.0, help="fraction of |u0| (PDEBench 0.1)")
    p.add_argument("--window", type=float, default=0.0, help="fraction windowed (PDEBench 0.1)")
    p.add_argument("--advection-file", type=Path, help="a PDEBench advection file to use")
    p.add_argument("--burgers-file", type=Path, help="a PDEBench Burgers file to use")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "pdebench_benchmark")
    p.add_argument("--out", type=Path, help="the JSONs (default docs/pdebench; --quick: WORK/json)")
    p.add_argument("--quick", action="store_true", help="tiny files and runs (does it work)")
    p.add_argument("--tables", action="store_true")
    p.add_argument("--check", action="store_true")
    p.add_argument("--extra", nargs="*", default=[], help="overrides for every run")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = args.work / "json" if args.quick else OUT
    EXTRA[:] = [*(QUICK_RUNS if args.quick else []), *args.extra]
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    unknown += [q for q in args.problems if q not in PROBLEMS]
    if unknown:
        p.error(f"unknown: {', '.join(unknown)}")
    mode = docblocks.table_mode(args.tables, args.check, DOC, lambda: regenerated(DOC, args.out))
    if mode is not None:
        return mode
    run_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
