"""Side-by-side cost of one PINN training step, in one process (issue 6).

A step is: residual loss of the elliptic PDE (−Δu = f on (0,1)², B interior points) plus the
Dirichlet boundary loss (B/4 points), backward, Adam step, on pinnkan's B-spline KAN
(`model=bspline`, the layer its peers implement; the default Chebyshev network's
Levenberg–Marquardt step is scripts/bench_lm_step.py's). Variants on the same problem:

  forward     pinnkan's forward derivative engine (fused jet layers, hand-written backward)
  compiled    the same engine under torch.compile, as train.compile=true runs it (--compile)
  unfused     the same jet propagation written with plain autograd ops (the layer path before
              the fused layer; BSplineLayer.forward_jet(fused=False))
  autograd    pinnkan's own KAN with nested autograd (create_graph=True)
  effkan-ref  an efficient-kan-style layer written below (Cox–de Boor recursion, SiLU base
              branch), nested autograd: the common practice users start from
  pykan       pykan's KAN in speed() mode, nested autograd (only if pykan is installed:
              pip install -e ".[bench]")
  floor       the bare matrix products of the forward engine's contractions (forward and both
              backward products per layer), on preallocated tensors

Timings are medians after warm-up; ratios are against `forward` on the same row. Peak memory
is the growth of the resident set over a few steps, measured in a fresh subprocess per variant
(CPU), or torch.cuda.max_memory_allocated (CUDA). Run it alone: other jobs on the same cores
distort every figure.

    python scripts/bench_step.py          # the full grid -> docs/benchmarks/step_step.json
    python scripts/bench_step.py --quick  # [2,32,32,1], grid 5, batch 4096, float32; no file
    python scripts/bench_step.py --tables # rewrite the blocks bench-step-* of docs/benchmarks.md

Every timing goes to the raw data (with the command, commit, machine and software); the page's
blocks are generated from it alone (scripts/docblocks.py checks them).
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docblocks
import torch
from torch import Tensor, nn

from pinnkan.adapters import AdapterConfig, apply, param_groups
from pinnkan.common.malloc import keep_freed_memory
from pinnkan.layers.jet import Jet
from pinnkan.network.derivatives import autograd_jet
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "docs" / "benchmarks"  # step_<section>.json: each section's raw data
PAGE = ROOT / "docs" / "benchmarks.md"
BLOCK = "bench-step-"  # block bench-step-<section> of PAGE
WIDTHS = {"16": [2, 16, 16, 1], "32": [2, 32, 32, 1], "64": [2, 64, 64, 1]}
VARIANTS = ("forward", "compiled", "unfused", "autograd", "effkan-ref", "pykan", "floor")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
SHAPE = ("widths", "grid", "batch", "dtype")  # a row's shape keys in the raw data


def shape_of(row: dict[str, Any]) -> tuple:
    """A raw-data row's shape as a hashable key."""
    return tuple(tuple(row[k]) if k == "widths" else row[k] for k in SHAPE)


# the shape whose memory is measured by default and whose row the summary spells out
HEADLINE = shape_of({"widths": WIDTHS["32"], "grid": 5, "batch": 4096, "dtype": "float32"})


# ----------------------------------------------------------------------------- reference layer
class CoxDeBoorKANLayer(nn.Module):
    """efficient-kan's layout: SiLU base branch plus B-splines from the Cox–de Boor recursion
    on a uniform grid extended by k knots each side; dense (B, n_in, grid + k) features."""

    def __init__(self, n_in: int, n_out: int, grid: int, k: int = 3, gen=None, dtype=None):
        super().__init__()
        h = 2.0 / grid
        knots = torch.arange(-k, grid + k + 1, dtype=dtype) * h - 1.0
        self.k = k
        self.register_buffer("knots", knots.expand(n_in, -1).contiguous())
        self.base_weight = nn.Parameter(torch.randn(n_out, n_in, generator=gen, dtype=dtype))
        spline = 0.1 * torch.randn(n_out, n_in, grid + k, generator=gen, dtype=dtype)
        self.spline_weight = nn.Parameter(spline / n_in**0.5)
        self.base_weight.data /= n_in**0.5

    def bsplines(self, x: Tensor) -> Tensor:
        g, x = self.knots, x.unsqueeze(-1)  # (n_in, n_knots), (B, n_in, 1)
        b = ((x >= g[:, :-1]) & (x < g[:, 1:])).to(x.dtype)
        for p in range(1, self.k + 1):
            left = (x - g[:, : -(p + 1)]) / (g[:, p:-1] - g[:, : -(p + 1)]) * b[..., :-1]
            right = (g[:, p + 1 :] - x) / (g[:, p + 1 :] - g[:, 1:-p]) * b[..., 1:]
            b = left + right
        return b  # (B, n_in, grid + k)

    def forward(self, x: Tensor) -> Tensor:
        base = nn.functional.linear(nn.functional.silu(x), self.base_weight)
        return base + nn.functional.linear(
            self.bsplines(x).flatten(1), self.spline_weight.flatten(1)
        )


class Normalised(nn.Module):
    """(0,1)² -> [-1,1]² in front of a network that expects inputs on its grid range."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.n_coords = 2  # what pinnkan's autograd_jet differentiates

    def forward(self, x: Tensor) -> Tensor:
        return self.net(2.0 * x - 1.0)


@functools.cache
def _pykan_dir() -> tempfile.TemporaryDirectory:
    """A checkpoint folder for pykan (it insists on one), made on first use, removed at exit."""
    return tempfile.TemporaryDirectory(prefix="pykan-")


def make_net(variant: str, widths: list[int], grid: int, dtype, device) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    if variant in ("forward", "compiled", "unfused", "autograd", "floor"):
        return KAN(
            widths,
            [(0.0, 1.0)] * 2,
            kind="bspline",  # the layer the peers implement (the default network is Chebyshev)
            grid_size=grid,
            dtype=dtype,
            device=device,
            generator=gen,
        )
    if variant == "effkan-ref":
        layers = [
            CoxDeBoorKANLayer(a, b, grid, gen=gen, dtype=dtype)
            for a, b in zip(widths[:-1], widths[1:])
        ]
        return Normalised(nn.Sequential(*layers)).to(device)
    if variant == "pykan":
        from kan import KAN as PyKAN  # optional extra

        ckpt = _pykan_dir().name
        net = PyKAN(
            width=list(widths),  # pykan rewrites the list it is given
            grid=grid,
            k=3,
            seed=0,
            auto_save=False,
            ckpt_path=ckpt,
            device=str(device),
        )
        net.speed()
        return Normalised(net.to(dtype))
    raise ValueError(variant)


# ------------------------------------------------------------------------------------- steps
def make_step(variant: str, widths, grid: int, batch: int, dtype, device) -> Callable[[], None]:
    """A closure running one full training step of `variant` at this shape."""
    pde = build_pde("elliptic", {}, {"boundary": 10.0})
    gen = torch.Generator().manual_seed(1)
    x = pde.sample_interior(batch, gen, dtype).to(device)
    (bc,) = pde.conditions()
    xb = bc.sample(max(batch // 4, 4), gen, dtype).to(device)
    net = make_net(variant, widths, grid, dtype, device)

    if variant == "floor":
        return floor_step(net, batch, dtype, device)

    def loss_of(jet_fn: Callable[[Tensor], Jet]) -> Tensor:
        res = pde.residual(x, jet_fn(x))
        return res.square().mean() + bc.weight * bc.residual(xb, Jet(net(xb))).square().mean()

    if variant == "forward":
        loss_fn = lambda: loss_of(net.forward_jet)  # noqa: E731
    elif variant == "compiled":
        compiled = torch.compile(lambda: loss_of(lambda z: net.forward_jet(z)))
        loss_fn = compiled
    elif variant == "unfused":
        loss_fn = lambda: loss_of(lambda z: net.forward_jet(z, fused=False))  # noqa: E731
    else:
        loss_fn = lambda: loss_of(lambda z: autograd_jet(net, z))  # noqa: E731
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()

    return step


def floor_step(net: KAN, batch: int, dtype, device) -> Callable[[], None]:
    """Forward and both backward matmuls of every layer of the forward engine, nothing else."""
    n_blocks = 1 + 2 * len(net.lo)
    mats = []
    for layer in net.layers:
        k = layer.n_in * layer.n_d
        f = torch.randn(n_blocks * batch, k, dtype=dtype, device=device)
        w = torch.randn(k, layer.n_out, dtype=dtype, device=device)
        g = torch.randn(n_blocks * batch, layer.n_out, dtype=dtype, device=device)
        mats.append((f, w, g))

    def step() -> None:
        for f, w, g in mats:
            f @ w, g @ w.T, f.T @ g  # noqa: B018

    return step


def transfer_step(adapter: str, widths, grid, batch, dtype, device) -> Callable[[], None]:
    """A transfer step with the forward engine: LoTRA (cr 0.25) or full fine-tuning."""
    pde = build_pde("elliptic", {"mu": 1.5}, {"boundary": 10.0})
    gen = torch.Generator().manual_seed(1)
    x = pde.sample_interior(batch, gen, dtype).to(device)
    (bc,) = pde.conditions()
    xb = bc.sample(max(batch // 4, 4), gen, dtype).to(device)
    net = make_net("forward", widths, grid, dtype, device)
    cfg = AdapterConfig(name=adapter, cr=0.25, init="random")
    apply(net, cfg, gen)
    opt = torch.optim.Adam(param_groups(net, cfg, 1e-3))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        res = pde.residual(x, net.forward_jet(x))
        loss = res.square().mean() + bc.weight * bc.residual(xb, Jet(net(xb))).square().mean()
        loss.backward()
        opt.step()

    return step


# ------------------------------------------------------------------------------------ timing
def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], None], device) -> float:
    t = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t


def time_variants(
    builders: dict[str, Callable[[], Callable[[], None]]], device, args: argparse.Namespace
) -> tuple[dict[str, float | None], dict[str, float]]:
    """Median seconds per step of each variant, and the seconds of its first call (compile
    time for `compiled`). Variants are timed in interleaved rounds, so that a slow drift of the
    machine hits them all alike; each gets at least 3 timed steps, and stops adding steps to a
    round once `args.budget` / rounds seconds are spent."""
    steps: dict[str, Callable[[], None]] = {}
    firsts: dict[str, float] = {}
    times: dict[str, list[float]] = {}
    for name, build in builders.items():
        try:
            steps[name] = build()
            firsts[name] = timed(steps[name], device)
            for _ in range(args.warmup - 1):
                steps[name]()
        except Exception as exc:  # a variant that cannot run at this shape
            print(f"# {name} failed: {exc!s:.200}", file=sys.stderr)
            steps.pop(name, None)
        times[name] = []
    rounds = 3
    per_round = max(1, math.ceil(args.repeats / rounds))
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for i in range(per_round):
                if i >= 1 and time.perf_counter() - start > args.budget / rounds:
                    break
                times[name].append(timed(step, device))
    return {n: statistics.median(t) if t else None for n, t in times.items()}, firsts


def proc_status_bytes(key: str) -> int:
    """A memory line of /proc/self/status (kB) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory_child(args: argparse.Namespace) -> None:
    """Subprocess entry: growth of the peak resident set over 3 steps, printed as JSON.

    The high-water mark is reset after setup (/proc/self/clear_refs), then read as VmHWM;
    ru_maxrss would not do: Linux carries it over from the parent across exec."""
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    builder = transfer_step if args.variant in ("lotra", "full") else make_step
    step = builder(args.variant, WIDTHS[args.width], args.grid, args.batch, dtype, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = proc_status_bytes("VmRSS")
    for _ in range(3):
        step()
    sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = proc_status_bytes("VmHWM") - base
    print(json.dumps({"peak": peak}))


def peak_memory(variant: str, width: str, grid: int, batch: int, dtype: str, args) -> float | None:
    """Peak memory growth in MiB, measured in a fresh process (None if that process failed)."""
    cmd = [
        sys.executable,
        __file__,
        "--child-memory",
        "--variant",
        variant,
        "--width",
        width,
        "--grid",
        str(grid),
        "--batch",
        str(batch),
        "--dtype",
        dtype,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ] + (["--no-malloc-tuning"] if args.no_malloc_tuning else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak"] / 2**20


# ----------------------------------------------------------------------------------- measure
def measure(args: argparse.Namespace, variants: list[str], malloc_tuned: bool) -> dict[str, Any]:
    """Time every shape (and the headline's memory, the transfer step) into the raw data."""
    device = torch.device(args.device)
    rows: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    for width in args.widths:
        for grid in args.grids:
            for batch in args.batches:
                for dname in args.dtypes:
                    builders = {
                        v: functools.partial(
                            make_step, v, WIDTHS[width], grid, batch, DTYPES[dname], device
                        )
                        for v in variants
                    }
                    times, firsts = time_variants(builders, device, args)
                    shape = {"widths": WIDTHS[width], "grid": grid, "batch": batch, "dtype": dname}
                    rows.append({**shape, "seconds": times, "first_seconds": firsts})
                    print(rows[-1], flush=True)
                    headline = shape_of(shape) == HEADLINE
                    if args.memory == "all" or (args.memory == "headline" and headline):
                        mib = {
                            v: peak_memory(v, width, grid, batch, dname, args)
                            for v in variants
                            if v != "compiled"
                        }
                        memory.append({**shape, "mib": mib})
                        print(memory[-1], flush=True)
    transfer: list[dict[str, Any]] = []
    if not args.no_transfer:
        for batch in args.batches:
            for dname in args.dtypes:
                builders = {
                    a: functools.partial(
                        transfer_step, a, WIDTHS["32"], 5, batch, DTYPES[dname], device
                    )
                    for a in ("lotra", "full")
                }
                t, _ = time_variants(builders, device, args)
                shape = {"widths": WIDTHS["32"], "grid": 5, "batch": batch, "dtype": dname}
                transfer.append({**shape, "seconds": t})
                print(transfer[-1], flush=True)
    hb = docblocks.owner("hard_benchmarks")  # provenance
    return {
        "schema": 1,
        "section": args.section,
        "command": "python scripts/bench_step.py " + " ".join(sys.argv[1:]),
        "provenance": hb.provenance(threads=args.threads),
        "device": device_name(device),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "malloc_tuning": malloc_tuned,
        "pykan": _version("pykan") if "pykan" in variants else None,
        "settings": {
            k: getattr(args, k) for k in ("warmup", "repeats", "budget", "threads", "memory")
        },
        "variants": variants,
        "rows": rows,
        "memory": memory,
        "transfer": transfer,
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


# ------------------------------------------------------------------------------------ report
def fmt_ms(s: float | None) -> str:
    return "–" if s is None else f"{1e3 * s:.1f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def over(row: dict[str, Any], variant: str, base: str = "forward") -> float | None:
    """`variant`'s time over `base`'s in one row (None where either did not run)."""
    return ratio(row["seconds"].get(variant), row["seconds"].get(base))


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.1f}×"


def span(values: list[float], digits: int = 1, unit: str = "×") -> str:
    """`lo–hi` of the values (as the table rounds them), with the unit after each."""
    lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return f"{lo}{unit}" if lo == hi else f"{lo}{unit}–{hi}{unit}"


def shape_label(row: dict[str, Any]) -> str:
    return f"{row['widths']}, grid {row['grid']}, batch {row['batch']}, {row['dtype']}"


def table(data: dict[str, Any]) -> str:
    """The block: the timings, memory and transfer tables and what they say, from the raw data."""
    prov = data["provenance"]
    variants = data["variants"]
    hb = docblocks.owner("hard_benchmarks")
    pykan = f", pykan {data['pykan']}" if data.get("pykan") else ""
    lines = [
        f"Measured at commit {hb.commit_label(prov)} on {prov['date'][:10]}: {data['device']}, "
        f"{prov['machine']['cpu_count']} cores, {data['settings']['threads']} threads, "
        f"torch {prov['torch']}{pykan}, {data['python']}, malloc tuning "
        f"{'on' if data['malloc_tuning'] else 'off'}. Raw data: "
        f"`docs/benchmarks/step_{data['section']}.json`.",
        "",
        "Milliseconds per training step (median); `×` = that variant's time over `forward`'s.",
        "",
    ]
    head = ["widths", "grid", "batch", "dtype"]
    for v in variants:
        head += [f"{v} ms"] + ([f"{v} ×"] if v != "forward" else [])
    if "compiled" in variants:
        head += ["compile s"]
    if "floor" in variants:
        head += ["forward / floor"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in data["rows"]:
        t = row["seconds"]
        cells = [str(row["widths"]), str(row["grid"]), str(row["batch"]), row["dtype"]]
        for v in variants:
            cells.append(fmt_ms(t.get(v)))
            if v != "forward":
                cells.append(fmt_ratio(over(row, v)))
        if "compiled" in variants:
            first = row["first_seconds"].get("compiled")
            cells.append("–" if first is None else f"{first:.0f}")
        if "floor" in variants:
            cells.append(fmt_ratio(over(row, "forward", "floor")))
        lines.append("| " + " | ".join(cells) + " |")
    if data["memory"]:
        mem_head = list(data["memory"][0]["mib"])
        lines += [
            "",
            "Peak memory growth over 3 steps, MiB (resident set on CPU, fresh process per cell):",
            "",
            "| widths | grid | batch | dtype | " + " | ".join(mem_head) + " |",
            "|" + "---|" * (4 + len(mem_head)),
        ]
        for m in data["memory"]:
            cells = " | ".join(
                "–" if m["mib"][v] is None else f"{m['mib'][v]:.0f}" for v in mem_head
            )
            lines.append(f"| {m['widths']} | {m['grid']} | {m['batch']} | {m['dtype']} | {cells} |")
    if data["transfer"]:
        lines += [
            "",
            "Transfer step (forward engine, Adam): LoTRA at cr 0.25 against full fine-tuning, "
            "ms per step.",
            "",
            "| widths | grid | batch | dtype | lotra ms | full ms | lotra / full |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in data["transfer"]:
            t = r["seconds"]
            lines.append(
                f"| {r['widths']} | {r['grid']} | {r['batch']} | {r['dtype']} | "
                f"{fmt_ms(t['lotra'])} | {fmt_ms(t['full'])} | {t['lotra'] / t['full']:.2f} |"
            )
    said = summary(data)
    return "\n".join(lines + ([""] + said if said else []))


def summary(data: dict[str, Any]) -> list[str]:
    """What the tables say, as ranges over their rows (computed, never typed)."""
    rows, out = data["rows"], []
    slower = {  # variant -> its time over forward's, per row where both ran
        v: [r for r in (over(x, v) for x in rows) if r]
        for v in data["variants"]
        if v not in ("forward", "floor")
    }
    for v, rs in slower.items():
        if not rs:
            continue
        if v == "compiled":
            firsts = [x["first_seconds"]["compiled"] for x in rows if x["seconds"].get("compiled")]
            cold = [f for f in firsts if f >= 1.0]  # a shape that reused inductor's cache: ~0
            out.append(
                f"- Compiled steps take {span(rs)} the eager step's time at every shape"
                + (f", after a cold compile of {span(cold, 0, ' s')}." if cold else ".")
            )
        else:
            out.append(
                f"- `{v}` takes {span(rs)} the forward engine's time per step "
                f"({sum(r > 1 for r in rs)} of {len(rs)} shapes slower)."
            )
    floor = [r for r in (over(x, "forward", "floor") for x in rows) if r]
    if floor:
        out.append(f"- The forward engine takes {span(floor)} the matrix-product floor's time.")
    head = next((x for x in rows if shape_of(x) == HEADLINE), None)
    if head is not None and len(data["variants"]) > 1:
        t = head["seconds"]
        others = ", ".join(
            f"{v} {fmt_ratio(over(head, v))}"
            for v in data["variants"]
            if v != "forward" and t.get(v) is not None
        )
        out.append(
            f"- At {shape_label(head)}: forward {fmt_ms(t['forward'])} ms per step; "
            f"the others over it: {others}."
        )
    for m in data["memory"]:
        mib = ", ".join(f"{v} {x:.0f}" for v, x in m["mib"].items() if x is not None)
        out.append(f"- Peak memory at {shape_label(m)}, MiB: {mib}.")
    if data["transfer"]:
        rs = [r["seconds"]["lotra"] / r["seconds"]["full"] for r in data["transfer"]]
        out.append(
            f"- An Adam step with LoTRA takes {span(rs, 2)} a full fine-tuning Adam step's time."
        )
    return out


def raw_path(section: str) -> Path:
    return RAW / f"step_{section}.json"


def block(name: str, doc: Path) -> str:
    """The page's block `bench-step-<section>` from the committed raw data
    (scripts/docblocks.py)."""
    section = name.removeprefix(BLOCK)
    data = json.loads(raw_path(section).read_text(encoding="utf-8"))
    text = table(data)
    if not data["malloc_tuning"] and raw_path("step").is_file():
        tuned = json.loads(raw_path("step").read_text(encoding="utf-8"))
        text += "".join("\n" + line for line in untuned_against_tuned(data, tuned))
    return text


def untuned_against_tuned(untuned: dict[str, Any], tuned: dict[str, Any]) -> list[str]:
    """The forward engine's distance to the floor without the malloc tuning, against the same
    shape's with it (another run, the main table): what the tuning is worth, within noise."""
    with_tuning = {shape_of(r): over(r, "forward", "floor") for r in tuned["rows"]}
    out = []
    for row in untuned["rows"]:
        off, on = over(row, "forward", "floor"), with_tuning.get(shape_of(row))
        if off is not None and on is not None:
            out.append(
                f"- At {shape_label(row)}: forward / floor {fmt_ratio(off)} without the tuning, "
                f"{fmt_ratio(on)} with it (the main table, another run)."
            )
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--widths", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    p.add_argument("--grids", nargs="+", type=int, default=[5, 10])
    p.add_argument("--batches", nargs="+", type=int, default=[1024, 4096])
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument(
        "--variants",
        nargs="+",
        default=[v for v in VARIANTS if v not in ("compiled", "unfused")],
        choices=VARIANTS,
    )
    p.add_argument("--compile", action="store_true", help="also time the torch.compile variant")
    p.add_argument(
        "--quick", action="store_true", help="only [2,32,32,1], grid 5, batch 4096, float32"
    )
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument(
        "--budget", type=float, default=20.0, help="max timed seconds per variant and shape"
    )
    p.add_argument(
        "--memory",
        choices=["headline", "all", "none"],
        default="headline",
        help="peak memory for the headline shape only, every shape, or none",
    )
    p.add_argument("--no-transfer", action="store_true", help="skip the LoTRA vs full step table")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--section",
        default="step",
        help="the raw data docs/benchmarks/step_SECTION.json and the block bench-step-SECTION",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc malloc as it is")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="raw data JSON (default: docs/benchmarks/step_SECTION.json; --quick writes none)",
    )
    p.add_argument("--tables", action="store_true", help="rewrite docs/benchmarks.md's blocks")
    p.add_argument("--check", action="store_true", help="exit 1 if a block differs")
    # subprocess entry for peak memory
    p.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--width", help=argparse.SUPPRESS)
    p.add_argument("--grid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    args = p.parse_args()

    done = docblocks.table_mode(args.tables, args.check, PAGE, lambda: docblocks.regenerated(PAGE))
    if done is not None:
        return done
    torch.set_num_threads(args.threads)
    malloc_tuned = False if args.no_malloc_tuning else keep_freed_memory()
    if args.child_memory:
        peak_memory_child(args)
        return 0
    if args.quick:
        args.widths, args.grids, args.batches, args.dtypes = ["32"], [5], [4096], ["float32"]
    variants = list(args.variants) + (
        ["compiled"] if args.compile and "compiled" not in args.variants else []
    )
    if "pykan" in variants and _version("pykan") is None:
        print("pykan is not installed (pip install -e '.[bench]'); skipping it", file=sys.stderr)
        variants.remove("pykan")
    data = measure(args, variants, malloc_tuned)
    out = args.out or (None if args.quick else raw_path(args.section))
    docblocks.write_raw(out, data)
    print(table(data))
    if out is not None:
        print(
            f"\nwrote {out}; `python scripts/bench_step.py --tables` rewrites the page",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
