"""Seeded runs repeat exactly (same config, seed and machine -> same numbers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pinnkan.io.results import read_results
from pinnkan.run import runner


def _cfg(tmp: Path, seed: int = 0, adapter: str = "lotra") -> dict:
    return {
        "seed": seed,
        "precision": "float64",
        "device": "cpu",
        "outputs_root": str(tmp / "out"),
        "pde": {
            "name": "parabolic",
            "source": {"nu": 0.1},
            "target": {"nu": 0.2},
            "weights": {"boundary": 10.0, "initial": 10.0},
        },
        "model": {"name": "bspline", "hidden": [5, 4], "grid_size": 4},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {
            "steps": 6,
            "n_interior": 64,
            "n_boundary": 16,
            "eval_every": 2,
            "progress": "none",
        },
        "eval": {"n": 9},
        "cr": 0.5,
        "adapter": {"name": adapter},
    }


def test_pretrain_and_transfer_repeat_exactly(tmp_path: Path) -> None:
    runs = []
    for rep in range(2):
        cfg = _cfg(tmp_path)
        pre = tmp_path / f"pre{rep}"
        runner.pretrain(cfg, pre)
        cfg["source"] = str(pre)
        runner.transfer(cfg, tmp_path / f"tr{rep}")
        runs.append(
            (read_results(pre / "results.h5"), read_results(tmp_path / f"tr{rep}" / "results.h5"))
        )
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a["fields"]["u_pred"], b["fields"]["u_pred"])
        np.testing.assert_array_equal(a["history"]["loss"], b["history"]["loss"])
        for layer, tensors in a["lotra"].items():
            for name, arr in tensors.items():
                np.testing.assert_array_equal(arr, b["lotra"][layer][name])


def test_different_seed_gives_different_numbers(tmp_path: Path) -> None:
    a = runner.pretrain(_cfg(tmp_path, seed=0), tmp_path / "a")
    b = runner.pretrain(_cfg(tmp_path, seed=1), tmp_path / "b")
    assert not np.array_equal(a.u_pred, b.u_pred)
