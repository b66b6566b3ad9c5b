"""Cost of one lmKAN training step against the grid size (issue 4: it must not grow).

A step is forward_jet of a [2, 32, 32, 1] stack of LookupKANLayer on B points of (0, 1)², a
Poisson-like residual loss mean((u_xx + u_yy + u)²), and backward. Grid sizes are timed in
interleaved rounds in one process (each round visits every grid size, in rotated order), so
drift of a shared machine hits them alike; the table gives the median over rounds of each
round's median ms/step and the ratio to the smallest grid.

    python scripts/bench_lmkan.py                      # grids 8 16 32, batch 1024, float32
    python scripts/bench_lmkan.py --grids 8 64 --device cuda
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from pinnkan.layers.jet import affine_input_jet
from pinnkan.layers.lmkan import LookupKANLayer

WIDTHS = [2, 32, 32, 1]


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


def main() -> None:
    """Time the step at each grid size and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per grid per round")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
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
    base = statistics.median(per_round[args.grids[0]])
    print(
        f"lmKAN {WIDTHS}, batch {args.batch}, {args.dtype}, {args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}; "
        f"{args.rounds} interleaved rounds × {args.steps} steps\n"
    )
    print(
        "| grid | parameters | ms/step (median) | min–max over rounds "
        f"| ratio to grid {args.grids[0]} |"
    )
    print("|---:|---:|---:|---:|---:|")
    for g in args.grids:
        ms = per_round[g]
        n_par = sum(layer.A.numel() for layer in nets[g])
        med = statistics.median(ms)
        print(f"| {g} | {n_par:,} | {med:.2f} | {min(ms):.2f}–{max(ms):.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
