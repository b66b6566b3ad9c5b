"""Cost of one lmKAN training step against the grid size (issue 4: it must not grow).

A step is forward_jet of a [2, 32, 32, 1] stack of LookupKANLayer on B points of (0, 1)², a
Poisson-like residual loss mean((u_xx + u_yy + u)²), and backward. Grid sizes are timed in
interleaved rounds in one process (each round visits every grid size, in rotated order), so
drift of a shared machine hits them alike; the table gives the median over rounds of each
round's median ms/step and the ratio to the smallest grid.

The raw data (every round's median per grid, with the command, commit and machine) goes to
--out; the table of docs/lmkan.md is the generated block `lmkan-step`, rebuilt from
docs/benchmarks/lmkan_step.json alone (scripts/docblocks.py).

    python scripts/bench_lmkan.py --grids 8 16 32 64 --rounds 7 \\
        --out docs/benchmarks/lmkan_step.json
    python scripts/bench_lmkan.py --tables            # rewrite the block from the JSON
    python scripts/bench_lmkan.py --grids 8 64 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import docblocks
import torch

from pinnkan.layers.jet import affine_input_jet
from pinnkan.layers.lmkan import LookupKANLayer

WIDTHS = [2, 32, 32, 1]
RAW = docblocks.ROOT / "docs" / "benchmarks" / "lmkan_step.json"


def build(grid: int, dtype: torch.dtype, device: str) -> list[LookupKANLayer]:
    """The [2, 32, 32, 1] stack at one grid size (same seed for every grid)."""
    gen = torch.Generator().manual_seed(0)
    return [
        LookupKANLayer(a, b, grid_size=grid, dtype=dtype, device=device, generator=gen)
        for a, b in zip(WIDTHS[:-1], WIDTHS[1:])
    ]


def step(layers: list[LookupKANLayer], x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """forward_jet + residual loss + backward; returns the loss."""
    for layer in layers:
        layer.A.grad = None
    jet = affine_input_jet(x, lo, hi)
    for layer in layers:
        jet = layer.forward_jet(jet)
    loss = ((jet.d2[0] + jet.d2[1] + jet.value) ** 2).mean()  # type: ignore[index]
    loss.backward()
    return loss.detach()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def table(data: dict[str, Any]) -> str:
    """The block: the setting, the table and the ratios, from the raw data alone."""
    a, prov = data["args"], data["provenance"]
    grids = [int(g) for g in data["per_round_ms"]]
    med = {g: statistics.median(data["per_round_ms"][str(g)]) for g in grids}
    base = med[grids[0]]
    lines = [
        f"lmKAN {WIDTHS}, batch {a['batch']}, {a['dtype']}, {a['device']}, torch "
        f"{prov['torch']}, {data['threads']} threads, {prov['machine']['processor']}; "
        f"{a['rounds']} interleaved rounds × {a['steps']} steps; commit "
        f"{docblocks.owner('hard_benchmarks').commit_label(prov)}, {prov['date'][:10]}",
        "",
        "| grid | parameters | ms/step (median) | min–max over rounds "
        f"| ratio to grid {grids[0]} |",
        "|---:|---:|---:|---:|---:|",
    ]
    for g in grids:
        ms = data["per_round_ms"][str(g)]
        lines.append(
            f"| {g} | {data['parameters'][str(g)]:,} | {med[g]:.2f} | "
            f"{min(ms):.2f}–{max(ms):.2f} | {med[g] / base:.2f} |"
        )
    last = grids[-1]
    growth = data["parameters"][str(last)] / data["parameters"][str(grids[0])]
    low = {g: min(data["per_round_ms"][str(g)]) for g in grids}
    ratios = [low[g] / low[grids[0]] for g in grids]
    lines += [
        "",
        f"From grid {grids[0]} to grid {last} the parameters grow {growth:.0f}× and the median "
        f"step time {med[last] / base:.2f}×; the fastest round of each grid (least touched by "
        f"the machine's drift) is {min(ratios):.2f}–{max(ratios):.2f}× grid {grids[0]}'s.",
    ]
    return "\n".join(lines)


def block(name: str, doc: Path) -> str:
    """The page's block from the committed raw data (scripts/docblocks.py)."""
    return table(json.loads(RAW.read_text(encoding="utf-8")))


def main() -> int:
    """Time the step at each grid size; write the raw data and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per grid per round")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="write the raw data here (JSON)")
    ap.add_argument("--tables", action="store_true", help="rewrite docs/lmkan.md's block")
    ap.add_argument("--check", action="store_true", help="exit 1 if the block differs")
    args = ap.parse_args()
    page = docblocks.ROOT / "docs" / "lmkan.md"
    done = docblocks.table_mode(args.tables, args.check, page, lambda: docblocks.regenerated(page))
    if done is not None:
        return done
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 2, generator=gen, dtype=dtype).to(args.device)
    lo = torch.zeros(2, dtype=dtype, device=args.device)
    hi = torch.ones(2, dtype=dtype, device=args.device)
    nets = {g: build(g, dtype, args.device) for g in args.grids}
    for layers in nets.values():  # warm-up: allocator, kernels
        for _ in range(3):
            step(layers, x, lo, hi)
    per_round: dict[int, list[float]] = {g: [] for g in args.grids}
    for r in range(args.rounds):
        order = args.grids[r % len(args.grids) :] + args.grids[: r % len(args.grids)]
        for g in order:
            times = []
            for _ in range(args.steps):
                sync(args.device)
                t0 = time.perf_counter()
                step(nets[g], x, lo, hi)
                sync(args.device)
                times.append(time.perf_counter() - t0)
            per_round[g].append(1e3 * statistics.median(times))
    hb = docblocks.owner("hard_benchmarks")  # provenance
    data = {
        "command": "python scripts/bench_lmkan.py " + " ".join(sys.argv[1:]),
        "provenance": hb.provenance(threads=torch.get_num_threads()),
        "threads": torch.get_num_threads(),
        "args": {k: getattr(args, k) for k in ("batch", "rounds", "steps", "dtype", "device")},
        "parameters": {str(g): sum(layer.A.numel() for layer in nets[g]) for g in args.grids},
        "per_round_ms": {str(g): per_round[g] for g in args.grids},
    }
    docblocks.write_raw(args.out, data)
    print(table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
