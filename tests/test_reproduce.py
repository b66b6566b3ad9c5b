"""scripts/reproduce.py: a run's record survives the raw data's JSON unchanged, the tables read
it and not results.h5, and the ΔA low-rank data the page shows is computed from the update."""

from __future__ import annotations

import json
import math
from typing import Any

import docblocks
import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def rp() -> Any:
    return docblocks.owner("reproduce")  # as the docs check loads it


def _full_run(rp: Any, seed: int, err: float, update: dict | None) -> Any:
    return rp.Result(
        name=str(seed),
        group=("elliptic", "lm", rp.KEY["full fine-tuning"]),
        cfg={"seed": seed, "pde": {"name": "elliptic", "target": {"mu": 1.1}}},
        status="ok",
        rel_l2=err,
        n_trainable=2760,
        steps=42,
        stop_reason="tolerance",
        train_seconds=3.5,
        seconds=np.array([0.0, 1.0]),
        at_step=np.array([0.0, 5.0]),
        curve=np.array([1.0, err]),
        update=update,
    )


def test_a_record_survives_json(rp: Any) -> None:
    r = _full_run(rp, 0, 1.5e-5, {"shape": [20, 20, 6], "norm_ratio": 0.5})
    back = rp.Result.from_record(json.loads(json.dumps(r.record())))
    for k in ("name", "group", "cfg", "status", "rel_l2", "n_trainable", "steps", "update"):
        assert getattr(back, k) == getattr(r, k), k
    assert np.array_equal(back.curve, r.curve) and np.array_equal(back.at_step, r.at_step)
    assert back.target == 1.1


def test_a_failed_run_keeps_its_nan(rp: Any) -> None:
    r = _full_run(rp, 1, math.nan, None)
    back = rp.Result.from_record(json.loads(json.dumps(r.record()).replace("NaN", "null")))
    assert math.isnan(back.rel_l2)


def test_the_low_rank_data_is_that_of_the_update(rp: Any, tmp_path: Any) -> None:
    """update_data's truncation errors equal a direct HOSVD of the stored ΔA, and the table
    prints them per target."""
    import h5py

    gen = torch.Generator().manual_seed(0)
    a_pt = torch.randn(20, 20, 6, generator=gen, dtype=torch.float64)
    delta = 0.1 * torch.randn(20, 20, 6, generator=gen, dtype=torch.float64)
    path = tmp_path / "results.h5"
    with h5py.File(path, "w") as f:
        for i, shape in ((0, (2, 20, 6)), (2, (20, 1, 6))):
            g = f.create_group(f"model/layer_{i}")
            g["A_pretrained"], g["delta"] = np.zeros(shape), np.zeros(shape)
        g = f.create_group("model/layer_1")
        g["A_pretrained"], g["delta"] = a_pt.numpy(), delta.numpy()
    up = rp.update_data(path)
    ranks = rp.ranks_from_cr((20, 20, 6), 0.5)
    assert up["hosvd"]["0.5"]["delta"] == pytest.approx(rp.hosvd_rel_error(delta, ranks))
    assert up["norm_ratio"] == pytest.approx(float(delta.norm() / a_pt.norm()))
    assert up["shape"] == [20, 20, 6]
    runs = [_full_run(rp, s, 1e-5, up) for s in (0, 1, 2)]
    row = next(line for line in rp.lowrank_table(runs) if line.startswith("| elliptic mu = 1.1"))
    assert f"{up['hosvd']['0.5']['delta']:.2f}" in row
    assert rp.hidden_shape(runs) == "20×20×6"


def test_the_strategy_table_takes_the_rate_with_the_lowest_median_over_seeds(rp: Any) -> None:
    """Not the single best run: η 0.01 has the best seed, η 0.03 the lowest median; a diverged
    run counts as the worst (and is counted in the cell)."""

    def run(lr: float, seed: int, err: float) -> Any:
        return rp.Result(
            name=f"{lr}_{seed}",
            group=("lr_strategies", "w20_adam_0"),
            cfg={"seed": seed, "optim": {"lr": lr}},
            status="ok" if math.isfinite(err) else "diverged",
            rel_l2=err,
            n_trainable=509,
            steps=500,
            stop_reason="steps",
            train_seconds=1.0,
        )

    runs = [run(0.01, 0, 0.05), run(0.01, 1, 0.4), run(0.01, 2, math.nan)]
    runs += [run(0.03, s, e) for s, e in enumerate((0.1, 0.12, 0.2))]
    table = rp.strategy_table(runs)
    cells = [c.strip() for c in table[2].strip("|").split(" | ")]  # strategy, GD, Adam
    assert cells[1] == "–"  # no GD runs
    assert cells[2] == "1.2e-01 (1.0e-01–2.0e-01) (η 0.03); 1/6 runs diverged"
    assert rp.strategy_seeds(runs) == [0, 1, 2]


def _rec(group: tuple[str, ...], name: str, **cfg: Any) -> dict[str, Any]:
    return {"group": list(group), "name": name, "cfg": cfg, "rel_l2": 1e-4}


def _prov(commit: str) -> dict[str, Any]:
    return {"git_commit": commit * 40, "date": "2026-12-05T00:00:00+00:00"}


def test_a_merge_replaces_whole_sweeps_and_says_where_the_kept_ones_ran(rp: Any) -> None:
    """A sweep run again replaces every old run of it (not run by run); kept sweeps keep the
    commit they ran at, through a second merge too."""
    old = {
        "provenance": _prov("a"),
        "runs": [
            _rec(("elliptic", "lm", "lotra_cr_0.5"), "0"),
            _rec(("elliptic", "lm", "lotra_cr_0.5"), "1"),  # no new run has this name
            _rec(("elliptic", "lm", "full_fine_tuning"), "0"),
        ],
    }
    new = [_rec(("elliptic", "lm", "lotra_cr_0.5"), "0")]
    merged = rp.merge(new, old)
    assert [r["group"][2] for r in merged["runs"]] == ["full_fine_tuning"]
    assert merged["earlier"] == [
        {"provenance": _prov("a"), "sweeps": [["elliptic", "lm", "full_fine_tuning"]]}
    ]
    again = rp.merge(
        [_rec(("wave", "lm", "scratch"), "0")],
        {**merged, "runs": new + merged["runs"], "provenance": _prov("b")},
    )
    assert {e["provenance"]["git_commit"][0]: e["sweeps"] for e in again["earlier"]} == {
        "a": [["elliptic", "lm", "full_fine_tuning"]],
        "b": [["elliptic", "lm", "lotra_cr_0.5"]],
    }
    data = {
        "provenance": _prov("c"),
        "runs": [_rec(("wave", "lm", "scratch"), "0")] + again["runs"],
        "earlier": again["earlier"],
    }
    line = rp.provenance_line(data)
    assert "1 runs written at commit ccccccc" in line
    assert "1 kept from the data written at commit aaaaaaa" in line and "bbbbbbb" in line


def test_the_block_refuses_a_grid_sweep_not_at_its_searched_damping(rp: Any) -> None:
    """A merged raw data whose search was re-run (1e-7 now wins) but whose grid sweep was kept
    from the old search (1e-3) must not make a table."""

    def run(group: tuple[str, ...], damping: float, err: float) -> Any:
        return rp.Result(
            name=f"{damping}",
            group=group,
            cfg={"seed": 0, "optim": {"damping": damping}, "pde": {"target": {"mu": 1.5}}},
            status="ok",
            rel_l2=err,
            n_trainable=2760,
        )

    key = rp.KEY["full fine-tuning"]
    search = [run(("elliptic", "search_lm", key), d, e) for d, e in ((1e-7, 1e-5), (1e-3, 1e-4))]
    assert rp.unsearched([*search, run(("elliptic", "lm", key), 1e-7, 1e-5)]) == []
    stale = rp.unsearched([*search, run(("elliptic", "lm", key), 1e-3, 1e-5)])
    assert stale == [f"elliptic/lm/{key} ran at [0.001], searched 1e-07"]
    with pytest.raises(SystemExit, match="not at the searched setting"):
        rp.body([*search, run(("elliptic", "lm", key), 1e-3, 1e-5)])


def test_only_selects_sweeps_by_their_path_below_the_root(rp: Any, tmp_path: Any) -> None:
    import re

    rp.ONLY[:] = [re.compile(r"/lm/lotra"), re.compile(r"^lr_strategies/")]
    try:
        assert rp.wanted(tmp_path, tmp_path / "wave" / "lm" / "lotra_cr_0.5")
        assert rp.wanted(tmp_path, tmp_path / "lr_strategies" / "w20_gd_0")
        assert not rp.wanted(tmp_path, tmp_path / "wave" / "lm" / "scratch")
        assert not rp.wanted(tmp_path, tmp_path / "wave" / "adam" / "lotra_cr_0.5")
        rp.multirun("transfer", tmp_path / "wave" / "lm" / "scratch", [], 1, tmp_path)
        assert not (tmp_path / "wave").exists()  # left out: nothing ran, no .done marker
    finally:
        rp.ONLY.clear()
    assert rp.wanted(tmp_path, tmp_path / "wave" / "lm" / "scratch")


def test_the_ratio_table_divides_medians_and_counts_targets_apart(rp: Any) -> None:
    """LoTRA cr 0.5 against full fine-tuning on elliptic: 10× on mu 1.1 with the seeds apart,
    2× on mu 1.5 with them overlapping; the range is over targets, the count over targets."""

    def run(key: str, mu: float, seed: int, err: float) -> Any:
        return rp.Result(
            name=f"{key}{mu}{seed}",
            group=("elliptic", "lm", key),
            cfg={"seed": seed, "pde": {"name": "elliptic", "target": {"mu": mu}}},
            status="ok",
            rel_l2=err,
            n_trainable=1,
        )

    full, lotra = rp.KEY["full fine-tuning"], rp.KEY["LoTRA cr 0.5"]
    runs = [run(full, 1.1, s, e) for s, e in enumerate((1e-5, 2e-5, 3e-5))]
    runs += [run(lotra, 1.1, s, e) for s, e in enumerate((1e-4, 2e-4, 5e-4))]
    runs += [run(full, 1.5, s, e) for s, e in enumerate((1e-5, 2e-5, 8e-5))]
    runs += [run(lotra, 1.5, s, e) for s, e in enumerate((3e-5, 4e-5, 9e-5))]
    table = rp.ratio_table(runs)
    row = next(line for line in table if line.startswith("| LoTRA cr 0.5 |"))
    assert row.split(" | ")[1] == "2–10× (1/2 worse)"
    assert next(x for x in table if x.startswith("| scratch |")).split(" | ")[1] == "–"
    assert rp._times(186.4) == "190" and rp._times(0.853) == "0.85"
