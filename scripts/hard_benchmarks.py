"""The hard members of the PDE families: run each classic problem, keep its raw curve, tabulate.

For each problem (conf/experiment/<name>.yaml) and seed, one at a time:
`pinnkan pretrain experiment=<name> seed=<s> [train.max_seconds=<seconds>] ...` in a
subprocess; its results.h5 becomes one raw-data JSON, <out>/<name>_seed<s>.json (the whole
curve, the final metrics, the exact command, commit, machine, torch, threads, wall time). A run
that fails is recorded with the tail of its output, and the next one starts.

    python scripts/hard_benchmarks.py                        # every problem, seeds 0,1,2
    python scripts/hard_benchmarks.py --problems burgers_classic --seeds 0 --seconds 600
    python scripts/hard_benchmarks.py --tables               # docs page + plot from the JSONs
    python scripts/hard_benchmarks.py --check                # exit 1 if the page's blocks differ
    python scripts/hard_benchmarks.py --references           # the reference solvers' convergence

`--tables` rewrites, from the JSONs alone, the blocks of docs/hard_benchmarks.md between the
`generated:hard-table` and `generated:hard-references` markers, and docs/img/hard_curves.png.
`--peers` also runs DeepXDE's Burgers example (optional: `pip install deepxde`) for the same
seconds, evaluated on the same grid against the same reference (`burgers_classic_deepxde`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docblocks

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1  # the raw-data JSON layout (see run_record)
PROBLEMS = (
    "burgers_classic",
    "allen_cahn_classic",
    "advection_beta40",
    "wave_c2",
    "elliptic_floor",
)
# a run is "done" when its final rel. L2 is at most this (the median over seeds is compared)
DONE = {
    "burgers_classic": 1e-3,
    "allen_cahn_classic": 1e-2,
    "advection_beta40": 1e-3,
    "wave_c2": 1e-3,
    "elliptic_floor": 1e-7,
}
# the best figure we know of in the literature for the same problem: (rel. L2, source, hardware)
PUBLISHED = {
    "burgers_classic": (6.7e-4, "Raissi, Perdikaris & Karniadakis 2019, PINN", "not stated"),
    "allen_cahn_classic": (2.2e-5, "PirateNets (Wang et al. 2024)", "GPU, 256-wide network"),
    "advection_beta40": (1.9e-3, "Rathore et al. 2024, Adam + L-BFGS + NNCG", "not stated"),
    "wave_c2": (1.3e-2, "Rathore et al. 2024, Adam + L-BFGS + NNCG", "not stated"),
    "elliptic_floor": (6e-8, "energy natural gradient (Müller & Zeinhofer 2023)", "GPU, float64"),
}
PEER_SUFFIX = "_deepxde"
TABLE = docblocks.markers("hard-table")
REFS = docblocks.markers("hard-references")
DOC = ROOT / "docs" / "hard_benchmarks.md"
IMG = ROOT / "docs" / "img" / "hard_curves.png"
OUT = ROOT / "docs" / "hard"
TAIL = 4000  # characters of a failed run's stderr/stdout kept in its JSON
HISTORY = ("step", "seconds", "loss", "rel_l2", "heldout_loss")
FINAL = ("rel_l2", "max_abs_error", "n_trainable", "n_total", "train_seconds", "steps")


# --- provenance ------------------------------------------------------------------------------
def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def provenance(threads: int) -> dict[str, Any]:
    """Commit, date, machine and software of this benchmark process (the child runs the same)."""
    from pinnkan.common.machine import machine_info

    info = machine_info()
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if dirty is None else bool(dirty),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": info["platform"],
            "processor": platform.machine(),
            "cpu_count": _cores(),
            # CPU, the SIMD level MKL and ATen use, MKL's cap: runs sensitive to round-off (a
            # stiff member at its step budget) end elsewhere on another instruction set
            **{k: info[k] for k in ("cpu", "cpu_capability", "mkl_instructions", "gpu")},
        },
        "python": info["python"],
        "torch": info["torch"],
        "threads": threads,
    }


def commit_label(rec: dict[str, Any]) -> str:
    """A record's commit as the pages show it: 9 hex digits, `+` when its tree had uncommitted
    changes to tracked files (`git_dirty`), `?` when unknown."""
    return (rec.get("git_commit") or "?")[:9] + ("+" if rec.get("git_dirty") else "")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- one run -----------------------------------------------------------------------------------
def command(
    name: str, seed: int, seconds: float | None, root: Path, threads: int, raw: list[str] | None
) -> list[str]:
    """The CLI call of one run; `raw` replaces `experiment=<name>` (a problem without its YAML)."""
    problem = raw if raw is not None else [f"experiment={name}"]
    budget = [] if seconds is None else [f"train.max_seconds={seconds:g}"]
    return [
        sys.executable,
        "-m",
        "pinnkan.cli",
        "pretrain",
        *problem,
        f"seed={seed}",
        *budget,
        "train.progress=log",
        f"threads={threads}",
        f"outputs_root={root}",
        f"hydra.run.dir={root / f'{name}_{seed}'}",
    ]


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    n = str(threads)
    env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return env


def run_child(cmd: list[str], env: dict[str, str], timeout: float | None) -> tuple[int, str, str]:
    """Run `cmd`; past `timeout` it gets SIGINT (pinnkan then writes its results as
    `interrupted`), and is killed if it has not stopped two minutes later."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        err += f"\n[hard_benchmarks: stopped after the {timeout:.0f} s timeout]"
    return proc.returncode, out, err


def read_run(results: Path) -> dict[str, Any]:
    """What the tables need from one results.h5: attrs, final metrics, the curve."""
    import yaml

    from pinnkan.io.results import read_results

    res = read_results(results)
    attrs, metrics = res["attrs"], res["metrics"]
    history = {k: res["history"][k].tolist() for k in HISTORY if k in res["history"]}
    config = yaml.safe_load(attrs.get("config") or "{}") or {}
    train = config.get("train") or {}
    final = {k: metrics.get(k) for k in FINAL}
    final["steps_done"] = metrics.get("steps_done")
    final["status"] = attrs.get("status")
    final["stop_reason"], final["stop_reason_source"] = stop_reason(
        attrs, metrics, train.get("max_seconds") or 0.0
    )
    return {
        "pde": attrs.get("pde"),
        "pde_params": attrs.get("pde_params"),
        "optimizer": attrs.get("optimizer"),
        "precision": attrs.get("precision"),
        "device_setting": config.get("device"),
        "pinnkan_version": attrs.get("pinnkan_version"),
        "max_seconds": train.get("max_seconds"),
        "final": final,
        "metrics": metrics,
        "history": history,
        "config": attrs.get("config"),
    }


def stop_reason(
    attrs: dict[str, Any], metrics: dict[str, Any], max_seconds: float
) -> tuple[str, str]:
    """Why training stopped, and whether the run recorded it or it is inferred here from the
    status, steps and seconds (results.h5 has no stop-reason field of its own yet)."""
    for where in (metrics, attrs):
        if where.get("stop_reason"):
            return str(where["stop_reason"]), "recorded"
    status = attrs.get("status")
    if status in ("interrupted", "diverged"):
        return str(status), "inferred"
    done, steps = metrics.get("steps_done"), metrics.get("steps")
    if done is not None and steps is not None and done >= steps:
        return "steps", "inferred"
    if max_seconds and (metrics.get("train_seconds") or 0.0) >= max_seconds:
        return "max_seconds", "inferred"
    return "early (before the step and time budgets)", "inferred"


def run_record(
    name: str,
    seed: int,
    cmd: list[str],
    seconds: float | None,
    wall: float,
    rc: int,
    out: str,
    err: str,
    results: Path,
    meta: dict[str, Any],
    reader: Callable[[Path], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The raw-data JSON of one run (layout SCHEMA): provenance, then the run's own numbers
    (`reader`, default read_run, of its results file) when that file exists, else `failed`
    with the output's tail."""
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "problem": name,
        "seed": seed,
        "command": shlex.join(cmd),
        "seconds_budget": seconds,
        "wall_seconds": round(wall, 3),
        "returncode": rc,
        **meta,
    }
    if results.is_file():
        record.update((reader or read_run)(results))
    else:
        record["final"] = {"status": "failed"}
    if rc != 0 or not results.is_file():
        record["stderr_tail"] = err[-TAIL:]
        record["stdout_tail"] = out[-TAIL:]
    return record


def run_all(args: argparse.Namespace) -> list[Path]:
    raw = shlex.split(args.pretrain_args) if args.pretrain_args is not None else None
    meta = provenance(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in args.problems:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix="hard_") as tmp:
                root = Path(tmp)
                cmd = command(name, seed, args.seconds, root, args.threads, raw)
                timeout = None if args.seconds is None else 3 * args.seconds + 600
                print(f"{name} seed {seed}: {shlex.join(cmd)}", flush=True)
                t0 = time.perf_counter()
                rc, out, err = run_child(cmd, child_env(args.threads), timeout)
                wall = time.perf_counter() - t0
                results = root / f"{name}_{seed}" / "results.h5"
                record = run_record(
                    name, seed, cmd, args.seconds, wall, rc, out, err, results, meta
                )
                if args.keep:
                    shutil.copytree(root, args.out / "runs" / f"{name}_{seed}", dirs_exist_ok=True)
            path = args.out / f"{name}_seed{seed}.json"
            path.write_text(json.dumps(record, indent=1) + "\n")
            written.append(path)
            f = record["final"]
            print(
                f"  -> {path}: {f.get('status')}, rel_l2 {_e(f.get('rel_l2'))}, "
                f"{f.get('train_seconds') or 0:.1f} s training, {wall:.1f} s wall",
                flush=True,
            )
    return written


# --- tables ------------------------------------------------------------------------------------
def load_runs(folder: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(folder.glob("*_seed*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            runs.append(data)
    return runs


def base_problem(name: str) -> str:
    return name.removesuffix(PEER_SUFFIX)


def _order(names: set[str]) -> list[str]:
    def key(n: str) -> tuple[int, str]:
        b = base_problem(n)
        return (PROBLEMS.index(b) if b in PROBLEMS else len(PROBLEMS), n)

    return sorted(names, key=key)


def _e(v: float | None) -> str:
    return "–" if v is None else f"{v:.2e}"


def _spread(values: list[float]) -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return _e(med)
    return f"{_e(med)} [{_e(min(values))}–{_e(max(values))}]"


def _machine(run: dict[str, Any]) -> str:
    m = run.get("machine") or {}
    gpu = m.get("gpu") if run.get("device_setting") in ("cuda", "auto") else None
    text = f"{m.get('processor', '?')}, {m.get('cpu_count', '?')} cores, {run.get('threads')} thr"
    return f"{text}, {gpu}" if gpu else text


def _params(run: dict[str, Any]) -> str:
    p = run.get("pde_params") or {}
    return ", ".join(f"{k}={v:.4g}" for k, v in p.items()) if p else "–"


def _stop(final: dict[str, Any]) -> str:
    why = str(final.get("stop_reason"))
    return f"{why} (inferred)" if final.get("stop_reason_source") == "inferred" else why


def problem_row(name: str, runs: list[dict[str, Any]]) -> str:
    """One table row: the statistics over the seeds of one problem."""
    ok = [r for r in runs if (r.get("final") or {}).get("rel_l2") is not None]
    finals = [float(r["final"]["rel_l2"]) for r in ok]
    best = [
        min(float(v) for v in r["history"]["rel_l2"])
        for r in ok
        if (r.get("history") or {}).get("rel_l2")
    ]
    seconds = [float(r["final"]["train_seconds"]) for r in ok]
    trainable = sorted({int(r["final"]["n_trainable"]) for r in ok})
    stops = sorted({_stop(r["final"]) for r in ok})
    commits = sorted({commit_label(r) for r in runs})
    machines = sorted({_machine(r) for r in runs})
    base = base_problem(name)
    done = DONE.get(base)
    meets = (
        "–"
        if done is None or not finals
        else ("yes" if statistics.median(finals) <= done else "no")
    )
    pub = PUBLISHED.get(base)
    seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
    failed = len(runs) - len(ok)
    cells = [
        name,
        _params(ok[0] if ok else runs[0]),
        f"{seeds}" + (f" ({failed} failed)" if failed else ""),
        _spread(finals),
        _e(pub[0]) if pub else "–",
        f"{pub[1]}; {pub[2]}" if pub else "–",
        _e(done),
        meets,
        _spread(best),
        f"{statistics.median(seconds):.0f}" if seconds else "–",
        "/".join(str(t) for t in trainable) or "–",
        "; ".join(stops) or "–",
        " ".join(commits),
        "; ".join(machines),
    ]
    return "| " + " | ".join(cells) + " |"


def table_block(runs: list[dict[str, Any]], doc: Path, img: Path) -> str:
    """The generated-table block's body: the table, a note on each failed run, the plot."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_name.setdefault(r["problem"], []).append(r)
    lines = [
        "| problem | parameters | seeds | final rel. L2, median [min–max] | published rel. L2 "
        "| published: source; hardware | done at | median done | best rel. L2 along the curve "
        "| train s (median) | trainable | stop | commit | machine |",
        "|" + "---|" * 14,
    ]
    for name in _order(set(by_name) | set(PROBLEMS)):
        if name in by_name:
            lines.append(problem_row(name, by_name[name]))
        else:
            pub = PUBLISHED[name]
            cells = [name, "–", "not run", "–", _e(pub[0]), f"{pub[1]}; {pub[2]}"]
            cells += [_e(DONE[name]), "–", "–", "–", "–", "–", "–", "–"]
            lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for r in sorted(runs, key=lambda r: (r["problem"], r["seed"])):
        f = r.get("final") or {}
        if f.get("rel_l2") is None:
            why = (r.get("stderr_tail") or "").strip().splitlines()
            notes.append(
                f"- {r['problem']} seed {r['seed']}: {f.get('status')}, exit {r.get('returncode')}"
                + (f": `{why[-1][:200]}`" if why else "")
            )
    if notes:
        lines += ["", "Runs without an error measurement:", "", *notes]
    if any((r.get("history") or {}).get("rel_l2") for r in runs):
        rel = os.path.relpath(img, doc.parent)
        lines += ["", f"![relative L2 against training seconds, every seed]({rel})"]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> bool:
    """rel. L2 against training seconds, a panel per problem, a thin line per seed; False
    (nothing written) without any curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = [p for p in PROBLEMS if any(base_problem(r["problem"]) == p for r in runs)]
    bases += sorted({base_problem(r["problem"]) for r in runs} - set(bases))
    if not bases:
        return False
    cols = min(3, len(bases))
    rows = -(-len(bases) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(bases) :]:
        ax.set_visible(False)
    for ax, base in zip(axes.flat, bases):
        names = _order({r["problem"] for r in runs if base_problem(r["problem"]) == base})
        for colour, name in zip(("C0", "C1", "C2", "C3"), names):
            first = True
            for r in sorted(runs, key=lambda r: r["seed"]):
                h = r.get("history") or {}
                if r["problem"] != name or not h.get("rel_l2"):
                    continue
                label = name if first else None
                ax.semilogy(h["seconds"], h["rel_l2"], color=colour, lw=0.8, label=label)
                ax.plot(h["seconds"][-1], h["rel_l2"][-1], ".", color=colour, ms=4)  # its stop
                first = False
        if base in DONE:
            ax.axhline(DONE[base], color="k", ls="--", lw=0.7, label="done threshold")
        if base in PUBLISHED:
            ax.axhline(PUBLISHED[base][0], color="0.5", ls=":", lw=0.9, label="published")
        ax.set_title(base, fontsize=10)
        ax.set_xlabel("training seconds")
        ax.set_ylabel("relative L2 error")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def references_block(data: dict[str, Any]) -> str:
    lines = [
        "| reference | setting | compared with | grid | max abs difference |",
        "|---|---|---|---|---|",
    ]
    for row in data["checks"]:
        lines.append(
            f"| {row['reference']} | {row['setting']} | {row['against']} | {row['grid']} |"
            f" {_e(row['max_abs_diff'])} |"
        )
    lines += [
        "",
        f"Computed by `python scripts/hard_benchmarks.py --references` at commit "
        f"{commit_label(data)} ({data.get('date')}); raw data: `references.json`.",
    ]
    return "\n".join(lines)


def regenerated(doc: Path, out: Path, img: Path) -> str:
    """The page with its generated blocks rebuilt from the JSONs in `out`."""
    text = doc.read_text()
    text = docblocks.replace(text, TABLE, table_block(load_runs(out), doc, img), doc)
    refs = out / "references.json"
    if refs.is_file() and REFS[0] in text:
        text = docblocks.replace(text, REFS, references_block(json.loads(refs.read_text())), doc)
    return text


def block(name: str, doc: Path) -> str:
    """The body of the generated block `name` (hard-table, hard-references) of `doc` from the
    committed raw data in docs/hard/ (scripts/docblocks.py)."""
    if name == "hard-references":
        return references_block(json.loads((OUT / "references.json").read_text()))
    return table_block(load_runs(OUT), doc, IMG)


def write_tables(doc: Path, out: Path, img: Path) -> None:
    doc.write_text(regenerated(doc, out, img))
    plotted = plot(load_runs(out), img)
    print(f"wrote {doc}" + (f" and {img}" if plotted else f" (no curves in {out}: no plot)"))


def check_tables(doc: Path, out: Path, img: Path) -> int:
    """0 when the page's generated blocks are what the JSONs give, else 1 (and a diff)."""
    diff = docblocks.differences(doc.read_text(), regenerated(doc, out, img), doc)
    if not diff:
        print(f"{doc}: generated blocks match {out}")
        return 0
    print(diff)
    print(f"{doc}: a generated block differs from {out}; run --tables (never edit it by hand)")
    return 1


# --- references -------------------------------------------------------------------------------
def experiment_settings(name: str) -> dict[str, Any] | None:
    """The composed pretrain config of conf/experiment/<name>.yaml (None if there is none)."""
    if not (ROOT / "conf" / "experiment" / f"{name}.yaml").is_file():
        return None
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from pinnkan.stages.schema import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_module("pinnkan.conf", version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=[f"experiment={name}"])
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    return plain


def _member(name: str, family: str, param: str, default: float) -> tuple[float, int, str]:
    """The parameter and evaluation grid size of a problem: from its experiment config when it
    exists, else `default` on the family's own grid."""
    from pinnkan.pde import FAMILIES

    cfg = experiment_settings(name)
    n = FAMILIES[family].eval_points
    if cfg is None:
        return default, n, "default (no conf/experiment/" + name + ".yaml)"
    value = float((cfg["pde"].get("source") or {}).get(param, default))
    n = int(cfg["eval"]["n"]) if (cfg.get("eval") or {}).get("n") else n
    return value, n, f"conf/experiment/{name}.yaml"


def _hermgauss_scipy(n: int) -> tuple[Any, Any]:
    """Gauss–Hermite nodes and log-weights from scipy: numpy's hermgauss overflows (NaN
    weights) above about 360 nodes; the outermost weights underflow to 0 (log −inf), as in
    pinnkan.pde.burgers._hermgauss."""
    import numpy as np

    try:
        from scipy.special import roots_hermite
    except ImportError:
        raise SystemExit("--references needs scipy (pip install scipy)") from None
    z, w = roots_hermite(n)
    with np.errstate(divide="ignore"):
        return z, np.log(w)


def _check(reference: str, setting: str, against: str, n: int, origin: str, a, b) -> dict:
    import numpy as np

    return {
        "reference": reference,
        "setting": setting,
        "against": against,
        "grid": f"{n}×{n}",
        "params_from": origin,
        "max_abs_diff": float(np.max(np.abs(a - b))),
    }


def burgers_checks() -> list[dict[str, Any]]:
    """pinnkan's Cole–Hopf (QUAD_NODES nodes from numpy) against the same formula with 400 and
    800 nodes from scipy, on the problem's evaluation grid."""
    import math
    from unittest import mock

    import torch

    from pinnkan.pde import burgers

    nu, n, origin = _member("burgers_classic", "burgers", "nu", 0.01 / math.pi)
    _, pts = burgers.Burgers(nu=nu).grid(n, torch.float64)
    xs, t = pts[:, 0].numpy(), pts[:, 1].numpy()
    q = burgers.QUAD_NODES
    base = burgers.cole_hopf(xs, t, nu)  # what the family evaluates
    name, setting = "Burgers, Cole–Hopf (Gauss–Hermite)", f"ν = {nu:.6g}, {q} nodes (numpy)"
    out = []
    with mock.patch.object(burgers, "_hermgauss", _hermgauss_scipy):
        for k in (q, 400, 800):
            finer = burgers.cole_hopf(xs, t, nu, nodes=k)
            out.append(_check(name, setting, f"{k} nodes (scipy)", n, origin, base, finer))
    return out


def allen_cahn_checks() -> list[dict[str, Any]]:
    """pinnkan's spectral / ETDRK4 solve (MODES, STEP, SAVE) against twice the modes, half the
    step, both, and snapshots twice as dense in t (the cubic interpolation between them)."""
    import numpy as np
    import torch

    from pinnkan.pde import allen_cahn as ac

    eps, n, origin = _member("allen_cahn_classic", "allen_cahn", "eps", 1e-4)
    _, pts = ac.AllenCahn(eps=eps).grid(n, torch.float64)
    xs, t = pts[:, 0].numpy(), pts[:, 1].numpy()
    m = ac.MODES if eps >= ac.THIN_EPS else 4 * ac.MODES  # as `reference` picks them
    s, save = ac.STEP, ac.SAVE
    base = ac.reference(xs, t, eps)  # what the family evaluates
    name, setting = "Allen–Cahn, Fourier / ETDRK4", f"ε = {eps:g}, {m} modes, step {s:g}"
    out = []
    for modes, step, what in (
        (2 * m, s, f"{2 * m} modes"),
        (m, s / 2, f"step {s / 2:g}"),
        (2 * m, s / 2, f"{2 * m} modes, step {s / 2:g}"),
    ):
        finer = ac.reference(xs, t, eps, modes, step)
        out.append(_check(name, setting, what, n, origin, base, finer))
    coef, dense = ac.solve(eps, m, s, save / 2)  # reference() takes no snapshot spacing
    finer = np.where(t <= 0.0, ac.initial(xs), ac.evaluate(coef, dense, xs, t, m))
    out.append(_check(name, setting, f"snapshots every {save / 2:g}", n, origin, base, finer))
    # whether twice the modes is itself converged
    two, four = (ac.reference(xs, t, eps, k * m, s) for k in (2, 4))
    setting2 = f"ε = {eps:g}, {2 * m} modes, step {s:g}"
    out.append(_check(name, setting2, f"{4 * m} modes", n, origin, two, four))
    return out


def check_references(out: Path, doc: Path) -> None:
    import torch

    t0 = time.perf_counter()
    checks = burgers_checks()
    print(f"Burgers: {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    checks += allen_cahn_checks()
    print(f"Allen–Cahn: {time.perf_counter() - t0:.1f} s", flush=True)
    data = {"schema": SCHEMA, **provenance(torch.get_num_threads()), "checks": checks}
    out.mkdir(parents=True, exist_ok=True)
    (out / "references.json").write_text(json.dumps(data, indent=1) + "\n")
    if doc.is_file() and REFS[0] in doc.read_text():
        doc.write_text(docblocks.replace(doc.read_text(), REFS, references_block(data), doc))
    print(references_block(data))


# --- peers -------------------------------------------------------------------------------------
PEER_EVAL_EVERY = 100  # Adam iterations between evaluations; L-BFGS: every call of 100 iterations


def deepxde_burgers(seed: int, seconds: float, nu: float, n: int) -> dict[str, Any]:
    """DeepXDE's Burgers example (examples/pinn_forward/Burgers.py: FNN [2, 20, 20, 20, 1] tanh,
    2540 + 80 + 160 points, Adam lr 1e-3 for 15000 iterations, then L-BFGS), on t in (0, 1]
    instead of its data file's (0, 0.99], stopped after `seconds` of training. The error is
    measured like pinnkan's: on the family's n×n grid against pinnkan's Cole–Hopf reference,
    evaluation time excluded; the history's loss is DeepXDE's training loss at its latest test
    (every PEER_EVAL_EVERY Adam iterations, every L-BFGS call)."""
    import deepxde as dde
    import numpy as np
    import torch

    from pinnkan.io.results import max_abs_error, relative_l2
    from pinnkan.pde.burgers import Burgers

    dde.config.set_random_seed(seed)
    _, pts = Burgers(nu=nu).grid(n, torch.float64)
    u_ref = Burgers(nu=nu).exact(pts).numpy()
    points = pts.numpy().astype(np.float32)
    geom = dde.geometry.GeometryXTime(dde.geometry.Interval(-1, 1), dde.geometry.TimeDomain(0, 1))

    def pde(x, y):
        dy_x = dde.grad.jacobian(y, x, i=0, j=0)
        dy_t = dde.grad.jacobian(y, x, i=0, j=1)
        dy_xx = dde.grad.hessian(y, x, i=0, j=0)
        return dy_t + y * dy_x - nu * dy_xx

    bc = dde.icbc.DirichletBC(geom, lambda x: 0, lambda _, on_boundary: on_boundary)
    ic = dde.icbc.IC(geom, lambda x: -np.sin(np.pi * x[:, 0:1]), lambda _, on_initial: on_initial)
    data = dde.data.TimePDE(geom, pde, [bc, ic], num_domain=2540, num_boundary=80, num_initial=160)
    net = dde.nn.FNN([2] + [20] * 3 + [1], "tanh", "Glorot normal")
    model = dde.Model(data, net)
    hist: dict[str, list[float]] = {k: [] for k in ("step", "seconds", "loss", "rel_l2")}
    clock = {"elapsed": 0.0, "last": 0.0, "why": "steps"}

    class Clock(dde.callbacks.Callback):
        """Training seconds without evaluation; a history sample every PEER_EVAL_EVERY."""

        def __init__(self, every: int) -> None:
            super().__init__()
            self.every = every

        def on_train_begin(self) -> None:
            clock["last"] = time.perf_counter()

        def on_epoch_end(self) -> None:
            now = time.perf_counter()
            clock["elapsed"] += now - clock["last"]
            step = self.model.train_state.step
            out_of_time = clock["elapsed"] >= seconds
            if out_of_time:
                clock["why"] = "max_seconds"
                self.model.stop_training = True
            if out_of_time or step % self.every == 0:
                sample(step)
            clock["last"] = time.perf_counter()

    def sample(step: int) -> np.ndarray:
        u = model.predict(points)[:, 0].astype(np.float64)
        hist["step"].append(int(step))
        hist["seconds"].append(clock["elapsed"])
        hist["loss"].append(float(np.sum(model.train_state.loss_train)))
        hist["rel_l2"].append(relative_l2(u, u_ref))
        return u

    model.compile("adam", lr=1e-3)
    model.train(iterations=15000, display_every=PEER_EVAL_EVERY, callbacks=[Clock(PEER_EVAL_EVERY)])
    if clock["elapsed"] < seconds:
        dde.optimizers.config.set_LBFGS_options()
        dde.optimizers.config.LBFGS_options.update(iter_per_step=100, fun_per_step=125)
        model.compile("L-BFGS")
        model.train(display_every=PEER_EVAL_EVERY, callbacks=[Clock(1)])
        if clock["why"] != "max_seconds":
            clock["why"] = "L-BFGS converged or at maxiter"
    step = int(model.train_state.step)
    if not hist["step"] or hist["step"][-1] != step:
        u = sample(step)
    else:
        u = model.predict(points)[:, 0].astype(np.float64)
    n_params = sum(p.numel() for p in net.parameters())
    return {
        "pde": "burgers",
        "pde_params": {"nu": nu},
        "optimizer": "deepxde adam (15000) + L-BFGS",
        "precision": "float32",
        "device_setting": "cpu",
        "deepxde": dde.__version__,
        "max_seconds": seconds,
        "final": {
            "rel_l2": relative_l2(u, u_ref),
            "max_abs_error": max_abs_error(u, u_ref),
            "n_trainable": n_params,
            "n_total": n_params,
            "train_seconds": clock["elapsed"],
            "steps": 15000 + dde.optimizers.config.LBFGS_options["maxiter"],
            "steps_done": step,
            "status": "ok",
            "stop_reason": clock["why"],
            "stop_reason_source": "recorded",
        },
        "history": hist,
    }


def run_peers(args: argparse.Namespace) -> None:
    """DeepXDE's Burgers in a child process per seed; <out>/burgers_classic_deepxde_seed<s>.json."""
    import math

    nu, n, origin = _member("burgers_classic", "burgers", "nu", 0.01 / math.pi)
    seconds = args.seconds
    if seconds is None:
        cfg = experiment_settings("burgers_classic")
        seconds = float(((cfg or {}).get("train") or {}).get("max_seconds") or 0.0)
        if not seconds:
            raise SystemExit("--peers needs --seconds (burgers_classic sets no train.max_seconds)")
    meta = provenance(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "burgers_classic" + PEER_SUFFIX
    env = {**child_env(args.threads), "DDE_BACKEND": "pytorch"}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="hard_peer_") as tmp:
            result = Path(tmp) / "peer.json"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--peer-run",
                str(result),
                "--seeds",
                str(seed),
                "--seconds",
                f"{seconds:g}",
                "--threads",
                str(args.threads),
            ]
            print(f"{name} seed {seed}: {shlex.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            rc, out, err = run_child(cmd, env, 3 * seconds + 600)
            wall = time.perf_counter() - t0
            own = {**meta, "params_from": origin, "eval_n": n}
            record = run_record(
                name,
                seed,
                cmd,
                seconds,
                wall,
                rc,
                out,
                err,
                result,
                own,
                reader=lambda p: json.loads(p.read_text()),
            )
        path = args.out / f"{name}_seed{seed}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        f = record["final"]
        print(f"  -> {path}: {f.get('status')}, rel_l2 {_e(f.get('rel_l2'))}", flush=True)


def peer_child(result: Path, seed: int, seconds: float, threads: int) -> None:
    import math

    import torch

    torch.set_num_threads(threads)
    nu, n, _ = _member("burgers_classic", "burgers", "nu", 0.01 / math.pi)
    result.write_text(json.dumps(deepxde_burgers(seed, seconds, nu, n)))


# --- command line ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated")
    ap.add_argument(
        "--seconds", type=float, default=None, help="train.max_seconds (default: the experiment's)"
    )
    ap.add_argument("--threads", type=int, default=_cores(), help="torch/OMP threads of a run")
    ap.add_argument("--out", type=Path, default=OUT, help="raw-data folder")
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--img", type=Path, default=IMG)
    ap.add_argument(
        "--pretrain-args",
        default=None,
        help="raw overrides instead of experiment=<name>, e.g. 'pde=burgers'",
    )
    ap.add_argument("--keep", action="store_true", help="copy each run directory to <out>/runs/")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--tables", action="store_true", help="rewrite the page and plot from the JSONs"
    )
    mode.add_argument(
        "--check", action="store_true", help="exit 1 if the page differs from the JSONs"
    )
    mode.add_argument("--references", action="store_true", help="check the reference solvers")
    mode.add_argument("--peers", action="store_true", help="run DeepXDE's Burgers example")
    mode.add_argument("--peer-run", type=Path, help=argparse.SUPPRESS)  # the child of --peers
    args = ap.parse_args(argv)
    args.problems = [p for p in args.problems.split(",") if p]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.tables:
        write_tables(args.doc, args.out, args.img)
    elif args.check:
        return check_tables(args.doc, args.out, args.img)
    elif args.references:
        check_references(args.out, args.doc)
    elif args.peers:
        run_peers(args)
    elif args.peer_run:
        peer_child(args.peer_run, args.seeds[0], args.seconds, args.threads)
    else:
        run_all(args)
        print(table_block(load_runs(args.out), args.doc, args.img))
        print("\n(the page is not changed: run --tables to rewrite it from the JSONs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
