"""scripts/pdebench_benchmark.py: PDEBench-layout files from exact solutions (layout, initial
values, the Burgers reference), the times to the goal, and the page's table from its data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docblocks
import h5py
import numpy as np
import pytest


@pytest.fixture(scope="module")
def pb() -> Any:
    return docblocks.owner("pdebench_benchmark")  # as the docs check loads it


def test_initial_values_are_periodic_and_their_primitive_fits(pb: Any) -> None:
    values = pb.initial_values(8, seed=3)
    assert [v.wavenumbers.tolist() for v in values] == [
        v.wavenumbers.tolist() for v in pb.initial_values(8, seed=3)
    ]
    x, h = np.linspace(0.0, 1.0, 257), 1e-5
    for u0 in values:
        drawn = u0.wavenumbers[u0.wavenumbers > 0] / (2 * np.pi)
        assert 1 <= len(drawn) <= 2 and drawn.sum() in range(2, 9)  # two draws of 1..4
        assert u0(np.array(0.0)) == pytest.approx(u0(np.array(1.0)), abs=1e-12)
        slope = (u0.primitive(x + h) - u0.primitive(x - h)) / (2 * h)
        np.testing.assert_allclose(slope, u0.wave(x), atol=1e-6)
        np.testing.assert_allclose(u0(x), u0.mean + u0.wave(x), atol=1e-12)


def test_written_files_have_pdebench_layout(pb: Any, tmp_path: Path) -> None:
    values = pb.initial_values(2, seed=0)
    pb.write_file(tmp_path / "a.h5", "advection", values, nx=16, nt=5, t_end=2.0)
    pb.write_file(tmp_path / "b.h5", "burgers", values[:1], nx=16, nt=5, t_end=2.0)
    with h5py.File(tmp_path / "a.h5") as f:
        u, x, t = f["tensor"][()], f["x-coordinate"][()], f["t-coordinate"][()]
        assert f.attrs["beta"] == 0.1
    assert u.dtype == np.float32 and u.shape == (2, 5, 16)
    np.testing.assert_allclose(x, (np.arange(16) + 0.5) / 16)
    np.testing.assert_allclose(t, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])  # one t more than slices
    np.testing.assert_allclose(u[1, -1], values[1](x - 0.1 * 2.0), atol=1e-6)  # moved by βt
    with h5py.File(tmp_path / "b.h5") as f:
        b = f["tensor"][()]
        assert f.attrs["Nu"] == 0.01
    assert b.shape == (1, 5, 16)
    np.testing.assert_allclose(b[0, 0], values[0](x), atol=1e-6)


def test_times_to_goal_saving_and_table(pb: Any, tmp_path: Path) -> None:
    history = {"seconds": [1.0, 2.0, 3.0], "rel_l2": [1e-1, 5e-4, 1e-4]}
    assert pb.seconds_to(history, 1e-3) == 2.0 and pb.seconds_to(history, 1e-5) is None

    def member(sample: int, err: float, sec: float | None) -> dict[str, Any]:
        return {
            "sample": sample,
            "rel_l2": err,
            "nrmse": err,
            "brmse": err,
            "reached": err <= 1e-3,
            "seconds_to_goal": sec,
            "train_seconds": 10.0,
        }

    scratch = [member(1, 5e-4, 40.0), member(2, 2e-3, None)]
    lotra = [member(1, 8e-4, 10.0), member(2, 9e-4, 5.0)]
    assert pb.saving(lotra, scratch) == "4.00× (n=1)"
    runs = [
        {"problem": "advection", "strategy": "scratch", "members": scratch, "pretrain": None},
        {
            "problem": "advection",
            "strategy": "lotra",
            "members": lotra,
            "pretrain": member(0, 1e-4, 30.0),
        },
    ]
    lines = pb.table(runs).splitlines()
    assert lines[2].startswith("| advection | pretrain | 0 | 1.0e-04")
    assert "| advection | lotra | 1,2 |" in lines[3] and "2/2" in lines[3] and "4.00×" in lines[3]
    assert "1/2" in lines[4]
    assert "No measurements" in pb.table([])


def test_committed_page_matches_its_data(pb: Any) -> None:
    assert pb.DOC.read_text() == pb.regenerated(pb.DOC, pb.OUT)
    assert "| advection | beta = 0.1 | 0 | 1,2,3 | 0.001 |" in pb.settings([])
