"""Calibration of `pinnkan.train.memory.estimate_step`: estimate against the measured peak of
one step.

Each config runs in a fresh subprocess with 2 torch threads and pinnkan.common.malloc's settings (as
the command-line stages): build the model, take the estimate, run one warm-up step on a copy
with a handful of points (code pages, one-time buffers), reset the resident-set high-water
mark (/proc/self/clear_refs; else VmRSS is sampled every 1 ms), run one
`pinnkan.train.training.train` step (LM: Jacobian, solve, trial and held-out losses; Adam: loss,
backward, update; with L-BFGS also one L-BFGS step) and report the peak minus VmRSS before
it. Linux only.

    python scripts/memory_estimate.py            # measures, writes docs/memory/cpu.json
    python scripts/memory_estimate.py --quick    # the first three configs only (prints only)
    python scripts/memory_estimate.py --big      # N = 50 000, P = 22 032: docs/memory/big_cpu.json
    python scripts/memory_estimate.py --big --device cuda   # the same on a GPU: big_cuda.json
    python scripts/memory_estimate.py --big-cg   # that step matrix-free: big_cg_cpu.json
    python scripts/memory_estimate.py --tables   # docs/memory.md's generated blocks from the JSON
    python scripts/memory_estimate.py --check    # exit 1 when they differ from it

On CUDA the peak is torch's max_memory_allocated during the step above what was allocated
before it. `--big` adds, for the primal form, the peak over (one chunk of J + the Gram matrix).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import docblocks  # noqa: E402
import hard_benchmarks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "memory.md"
DATA = ROOT / "docs" / "memory"

# (label, overrides of the base config: dotted keys)
ADAM = {"optim.name": "adam"}
FOUR_K = {"train.n_interior": 3200, "train.n_boundary": 800}
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("lm bspline [16,16] (kernel: N < P)", {}),
    ("lm bspline [16,16], 4k points (primal)", FOUR_K),
    ("lm bspline [16,16], 4k points, solve=kernel", {**FOUR_K, "optim.solve": "kernel"}),
    ("adam bspline [32,32], forward", {**ADAM, "model.hidden": [32, 32]}),
    (
        "adam bspline [32,32], autograd",
        {**ADAM, "model.hidden": [32, 32], "train.derivatives": "autograd"},
    ),
    (
        "adam chebyshev [32,32], forward, float32",
        {**ADAM, "model.name": "chebyshev", "model.hidden": [32, 32], "precision": "float32"},
    ),
    ("adam lmkan [16,16], forward", {**ADAM, "model.name": "lmkan", "model.hidden": [16, 16]}),
    (
        "adam rational [32,32], autograd, L-BFGS",
        {
            **ADAM,
            "model.name": "rational",
            "model.hidden": [32, 32],
            "train.derivatives": "autograd",
            "optim.lbfgs_steps": 5,
        },
    ),
    ("lm rational [16,16]", {"model.name": "rational"}),
    ("lm chebyshev [32,32]", {"model.name": "chebyshev", "model.hidden": [32, 32]}),
    ("lm mlp [98,98]", {"model.name": "mlp", "model.hidden": [98, 98]}),
    ("lm lmkan [16,16]", {"model.name": "lmkan", "model.hidden": [16, 16]}),
    (
        "lm bspline [32,32], 12k points (J ~1 GB)",
        {"model.hidden": [32, 32], "train.n_interior": 9600, "train.n_boundary": 2400},
    ),
]


# an LM step far beyond a whole J: 50 000 interior points x 22 032 parameters (J would be 8.8
# GB); the primal form holds one chunk of J (P / 8 rows) beside the 3.9 GB Gram matrix
BIG: list[tuple[str, dict[str, Any]]] = [
    (
        "lm bspline [48,48], 50k points (primal, chunks)",
        {"model.hidden": [48, 48], "train.n_interior": 50_000, "train.n_boundary": 400},
    ),
]


# the same step matrix-free (optim.solve=cg, pinnkan.train.gauss_newton): no Gram matrix; memory
# does not depend on the CG iterations, 5 keep the step short
BIG_CG: list[tuple[str, dict[str, Any]]] = [
    (
        "lm bspline [48,48], 50k points (solve=cg, 5 CG iterations)",
        {**BIG[0][1], "optim.solve": "cg", "optim.cg_iters": 5},
    ),
]


def base_config() -> dict[str, Any]:
    return {
        "seed": 0,
        "precision": "float64",
        "device": "cpu",
        "pde": {"name": "elliptic", "source": {"mu": 1.0}, "weights": {}},
        "model": {"name": "bspline", "hidden": [16, 16]},
        "optim": {"name": "lm"},
        "train": {"steps": 1, "n_interior": 1600, "n_boundary": 400, "progress": "none"},
        "eval": {"n": 5},
    }


def config_with(changes: dict[str, Any]) -> dict[str, Any]:
    from pinnkan.run.config import set_dotted

    cfg = base_config()
    for path, value in changes.items():
        set_dotted(cfg, path, value)
    return cfg


def _status(key: str) -> int:
    """A /proc/self/status field in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_rss(fn: Callable[[], None]) -> tuple[int, str]:
    """Peak resident set of `fn()` above the resident set before it, and how it was read:
    VmHWM after resetting it through /proc/self/clear_refs, else VmRSS sampled every 1 ms."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
    except OSError:
        pass
    before = _status("VmRSS")
    if _status("VmHWM") <= before + (1 << 20):
        fn()
        return _status("VmHWM") - before, "VmHWM"
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _status("VmRSS"))
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], _status("VmRSS")) - before, "sampled VmRSS"


def child(cfg: dict[str, Any], freeze: list[str], threads: int) -> dict[str, Any]:
    """In a fresh process: the estimate and the measured peak of one step of `cfg`."""
    import copy
    import dataclasses

    import torch

    from pinnkan.common.malloc import keep_freed_memory
    from pinnkan.network.evaluation import Evaluator
    from pinnkan.pinn.loss import PinnLoss
    from pinnkan.run import setup as stage_setup
    from pinnkan.run.config import RunConfig
    from pinnkan.train.memory import estimate_step
    from pinnkan.train.training import train

    torch.set_num_threads(threads)  # glibc keeps a heap arena per thread: fix their number
    keep_freed_memory()  # as the command-line stages do
    run_cfg = RunConfig.from_dict(cfg)
    setup = stage_setup.resolve_setup(run_cfg)
    pde = stage_setup.pde_from_config(run_cfg, "source")
    model = stage_setup.build_model(run_cfg, pde, setup, torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        if any(name.startswith(f) for f in freeze):
            p.requires_grad_(False)
    tc = dataclasses.replace(setup.train, steps=1, eval_every=1, progress="none")
    tc.lbfgs_steps = min(tc.lbfgs_steps, 1)
    est = estimate_step(model, pde, tc)
    _, pts = pde.grid(int(cfg["eval"]["n"]), setup.dtype)
    pts = pts.to(setup.device)
    evaluator = Evaluator(pts, pde.exact(pts))
    loss_fn = PinnLoss(pde, tc.derivatives)

    def one_step(net: torch.nn.Module, c: Any) -> None:
        params = [p for p in net.parameters() if p.requires_grad]
        train(net, loss_fn, [{"params": params, "lr": c.lr}], c, evaluator, torch.Generator())

    # the same code paths on a handful of points first: code pages, one-time buffers
    one_step(copy.deepcopy(model), dataclasses.replace(tc, n_interior=16, n_boundary=8))
    start = time.perf_counter()
    if setup.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        one_step(model, tc)
        torch.cuda.synchronize()
        measured, how = torch.cuda.max_memory_allocated() - before, "cuda max_memory_allocated"
    else:
        measured, how = peak_rss(lambda: one_step(model, tc))
    seconds = time.perf_counter() - start
    return {"estimate": est.total, "measured": measured, "how": how, "seconds": seconds} | vars(est)


def measure(
    cfg: dict[str, Any], freeze: list[str] | None = None, threads: int = 2, timeout: float = 600
) -> dict[str, Any]:
    """Run `child` in a fresh interpreter; its JSON result."""
    arg = json.dumps({"cfg": cfg, "freeze": freeze or [], "threads": threads})
    proc = subprocess.run(
        [sys.executable, __file__, "--child", arg],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row(label: str, res: dict[str, Any]) -> str:
    """One Markdown row of the table."""
    from pinnkan.train.memory import human_bytes

    s, est, got = res["sizes"], res["estimate"], res["measured"]
    return (
        f"| {label} | {s['N']} | {s['P']} | {human_bytes(est)} | {human_bytes(got)} "
        f"| {est / got:.2f} |"
    )


def chunk_line(res: dict[str, Any], changes: dict[str, Any]) -> str | None:
    """The primal form's peak against one chunk of J plus the Gram matrix (None otherwise)."""
    from pinnkan.train.memory import human_bytes

    s = res["sizes"]
    if "chunk" not in s:
        return None
    element = 4 if "float32" in json.dumps(changes) else 8
    chunk, gram = s["chunk"] * s["P"] * element, s["P"] ** 2 * element
    if "Gram" not in s:  # matrix-free: no Gram matrix held
        return (
            f"matrix-free, no Gram matrix (it would be {human_bytes(gram)}): "
            f"peak / Gram = {res['measured'] / gram:.2f}; step {res['seconds']:.1f} s"
        )
    return (
        f"chunk of J {human_bytes(chunk)} ({s['chunk']} rows), Gram {human_bytes(gram)}: "
        f"peak / (chunk + Gram) = {res['measured'] / (chunk + gram):.2f}; "
        f"step {res['seconds']:.1f} s"
    )


HEADER = [
    "| config | N | P | estimate | measured peak | estimate / measured |",
    "|---|---:|---:|---:|---:|---:|",
]


def block(name: str, doc: Path) -> str:
    """The generated block `name` of docs/memory.md from docs/memory/*.json: memory-table (the
    calibration, cpu.json) or memory-big (the N = 50 000 step, big_*.json, one row per
    device, with the peak against one chunk of J plus the Gram matrix)."""
    big = name == "memory-big"
    files = sorted(DATA.glob("big_*.json")) if big else [DATA / "cpu.json"]
    lines = ["| device " + HEADER[0], "|---" + HEADER[1]] if big else list(HEADER)
    notes = []
    for f in files:
        data = json.loads(f.read_text())
        gpu = data["machine"]["gpu"] if data["device"] != "cpu" else None
        where = data["device"] + (f" ({gpu})" if gpu else "")
        for r in data["rows"]:
            lines.append((f"| {where} " if big else "") + row(r["label"], r["result"]))
            extra = chunk_line(r["result"], r["changes"]) if big else None
            if extra:
                notes.append(f"- {where}: {extra}")
        commit = hard_benchmarks.commit_label(data)
        notes.append(
            f"- {f.relative_to(ROOT)}: `{data['command'].strip()}`, commit {commit}, "
            f"{data['date'][:10]}, torch {data['torch']}, {data['threads']} threads"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="the first three configs only")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each step")
    ap.add_argument("--big", action="store_true", help="only the N = 50 000 primal config")
    ap.add_argument("--big-cg", action="store_true", help="only the N = 50 000 cg config")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--out", type=Path, help="the JSON written (default docs/memory/...)")
    ap.add_argument("--tables", action="store_true", help="rewrite docs/memory.md's blocks")
    ap.add_argument("--check", action="store_true", help="exit 1 when the blocks differ")
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child(spec["cfg"], spec["freeze"], spec["threads"])))
        return
    mode = docblocks.table_mode(
        args.tables, args.check, DOC, lambda: docblocks.regenerated(DOC, DOC.read_text())
    )
    if mode is not None:
        sys.exit(mode)
    prefix = "big_cg_" if args.big_cg else "big_" if args.big else ""
    out = args.out or DATA / f"{prefix}{args.device}.json"
    configs = BIG_CG if args.big_cg else BIG if args.big else CONFIGS[:3] if args.quick else CONFIGS
    data = {
        "schema": 1,
        "command": "python scripts/memory_estimate.py " + " ".join(sys.argv[1:]),
        "device": args.device,
        **hard_benchmarks.provenance(args.threads),
        "rows": [],
    }
    print("\n".join(HEADER))
    for label, changes in configs:
        cfg = config_with({**changes, "device": args.device})
        big = args.big or args.big_cg
        res = measure(cfg, threads=args.threads, timeout=3600 if big else 600)
        data["rows"].append({"label": label, "changes": changes, "result": res})
        print(row(label, res), flush=True)
        extra = chunk_line(res, changes)
        if extra:
            print("  " + extra, flush=True)
    if not args.quick:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
