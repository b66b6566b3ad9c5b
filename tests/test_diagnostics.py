"""ΔA diagnostics: singular values and truncated-HOSVD error against a tensor of known rank."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pinnkan.adapters.tucker import tucker_product
from pinnkan.io.results import RunResult, read_results, write_results
from pinnkan.run.diagnostics import (
    diagnose_run,
    hosvd_rel_error,
    layer_diagnostics,
    normalised_singular_values,
    read_diagnostics,
)

SHAPE = (5, 6, 4)
# (2, 3, 1) cannot be a multilinear rank: a mode's rank is at most the product of the other
# two (r2 <= r1 * r3 = 2); (2, 3, 2) is the nearest one that exists
RANK = (2, 3, 2)


def known_rank(
    shape: tuple[int, int, int] = SHAPE, ranks: tuple[int, int, int] = RANK
) -> torch.Tensor:
    """G ×1 U1 ×2 U2 ×3 U3 with Gaussian factors: multilinear rank exactly `ranks` (a.s.)."""
    g = torch.Generator().manual_seed(0)
    G = torch.randn(*ranks, generator=g, dtype=torch.float64)
    U = [torch.randn(n, r, generator=g, dtype=torch.float64) for n, r in zip(shape, ranks)]
    return tucker_product(G, *U)


def test_singular_values_vanish_beyond_the_rank() -> None:
    """σ_i/σ_1 of mode m is 1 at i=1 and ~0 past the mode's rank."""
    for sv, r in zip(normalised_singular_values(known_rank()), RANK):
        assert sv[0] == pytest.approx(1.0)
        assert np.all(sv[1:r] > 1e-6)
        assert np.all(sv[r:] < 1e-12)


@pytest.mark.parametrize("ranks", [(2, 3, 2), (3, 3, 2), (2, 4, 3), (5, 6, 4)])
def test_hosvd_is_exact_at_or_above_the_rank(ranks: tuple[int, int, int]) -> None:
    assert hosvd_rel_error(known_rank(), ranks) < 1e-12


@pytest.mark.parametrize("ranks", [(1, 3, 2), (2, 2, 2), (2, 3, 1), (1, 1, 1)])
def test_hosvd_loses_below_the_rank(ranks: tuple[int, int, int]) -> None:
    assert hosvd_rel_error(known_rank(), ranks) > 1e-3


def test_layer_diagnostics_use_the_ranks_of_each_cr() -> None:
    """cr=1 keeps every mode whole (error 0); cr=0.125 gives ranks (1,1,1) (error > 0)."""
    d = layer_diagnostics(torch.randn(*SHAPE).numpy(), known_rank().numpy())
    assert d.crs == [1.0, 0.5, 0.25, 0.125]
    assert d.ranks == [(5, 6, 4), (3, 3, 2), (2, 2, 1), (1, 1, 1)]
    assert d.hosvd_rel_error[0] < 1e-12 and d.hosvd_rel_error[1] < 1e-12
    assert d.hosvd_rel_error[2] > 1e-3 and d.hosvd_rel_error[3] >= d.hosvd_rel_error[2]
    assert [len(s) for s in d.pretrained_sv] == [5, 6, 4]


def test_zero_update_gives_zeros_not_nan() -> None:
    d = layer_diagnostics(np.ones(SHAPE), np.zeros(SHAPE))
    assert all(np.all(s == 0) for s in d.delta_sv)
    assert d.hosvd_rel_error == [0.0] * 4


def _synthetic_transfer(run_dir: Path) -> Path:
    """A results.h5 of a 'full' transfer whose layer-0 ΔA has multilinear rank RANK."""
    run_dir.mkdir(parents=True)
    axis = np.linspace(0, 1, 3)
    field = np.zeros((3, 3))
    hist = {k: np.arange(2.0) for k in ("step", "seconds", "loss", "rel_l2")}
    g = np.random.default_rng(0)
    result = RunResult(
        stage="transfer",
        pde="elliptic",
        pde_params={"mu": 1.5},
        seed=0,
        config_yaml="stage: transfer\nadapter: {name: full}\n",
        coords=["x", "y"],
        grid={"x": axis, "y": axis},
        u_pred=field,
        u_ref=field + 1,
        metrics={
            "rel_l2": 1.0,
            "max_abs_error": 1.0,
            "n_trainable": 1,
            "n_total": 1,
            "train_seconds": 0.1,
            "steps": 2,
        },
        history=hist,
        model_tensors={
            0: {"A_pretrained": g.normal(size=SHAPE), "delta": known_rank().numpy()},
            1: {"A_pretrained": g.normal(size=(6, 1, 4)), "delta": g.normal(size=(6, 1, 4))},
        },
        attrs={"adapter": "full"},
    )
    write_results(run_dir / "results.h5", result)
    return run_dir


def test_diagnose_run_writes_group_and_png(tmp_path: Path) -> None:
    run = _synthetic_transfer(tmp_path / "run")
    layers = diagnose_run(run)
    assert (run / "diagnostics.png").is_file()
    assert set(layers) == {0, 1}
    with h5py.File(run / "results.h5", "r") as f:  # plain h5py: the documented layout
        g = f["diagnostics/layer_0"]
        assert json.loads(f["diagnostics"].attrs["crs"]) == [1.0, 0.5, 0.25, 0.125]
        assert g["hosvd_ranks"].shape == (4, 3)
        assert g["hosvd_rel_error"][1] < 1e-12
        assert np.all(g["delta_sv_mode2"][3:] < 1e-12)
        assert len(g["A_pretrained_sv_mode3"]) == 4
    back = read_diagnostics(run / "results.h5")
    assert back[0].shape == SHAPE and back[1].shape == (6, 1, 4)
    assert back[0].hosvd_rel_error == pytest.approx(layers[0].hosvd_rel_error)
    assert read_results(run / "results.h5")["metrics"]["rel_l2"] == 1.0  # the rest intact
    assert not list(run.glob(".results.h5*"))  # no temporary left behind
