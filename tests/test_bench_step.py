"""scripts/bench_step.py: every variant builds and steps at a tiny shape, and its block renders
from raw data alone."""

from __future__ import annotations

import argparse
import importlib.util

import docblocks
import pytest
import torch


def bench():
    return docblocks.owner("bench_step")  # as the docs check loads it


@pytest.mark.parametrize("variant", ["forward", "unfused", "autograd", "effkan-ref", "floor"])
def test_every_variant_takes_a_step_at_a_tiny_shape(variant: str) -> None:
    """The benchmark had rotted twice unseen: KAN's default kind became Chebyshev (no grid_size)
    and autograd_jet came to need the network's n_coords."""
    step = bench().make_step(variant, [2, 4, 4, 1], 3, 16, torch.float64, torch.device("cpu"))
    step()


@pytest.mark.skipif(importlib.util.find_spec("kan") is None, reason="pykan not installed")
def test_pykan_variant_takes_a_step() -> None:
    bench().make_step("pykan", [2, 4, 4, 1], 3, 16, torch.float32, torch.device("cpu"))()


@pytest.mark.parametrize("adapter", ["lotra", "full"])
def test_transfer_step_runs(adapter: str) -> None:
    bench().transfer_step(adapter, [2, 4, 4, 1], 3, 16, torch.float64, torch.device("cpu"))()


def test_timings_go_to_raw_data_and_the_block_comes_from_it() -> None:
    b = bench()
    args = argparse.Namespace(
        widths=["16"], grids=[3], batches=[16], dtypes=["float64"], warmup=1, repeats=1,
        budget=0.1, memory="none", no_transfer=False, threads=1, section="t", device="cpu",
        no_malloc_tuning=True,
    )  # fmt: skip
    data = b.measure(args, ["forward", "floor"], malloc_tuned=False)
    (row,) = data["rows"]
    assert row["seconds"]["forward"] > 0 and row["seconds"]["floor"] > 0
    assert len(data["transfer"]) == 1 and data["provenance"]["git_commit"]
    text = b.table(data)
    ms = f"{1e3 * row['seconds']['forward']:.1f}"
    assert f"| [2, 16, 16, 1] | 3 | 16 | float64 | {ms} |" in text
    assert "forward engine takes" in text  # the summary is computed with the table
    row["seconds"]["floor"] = None  # a variant that failed at a shape shows a dash
    assert "| – |" in b.table(data)
