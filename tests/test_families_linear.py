"""The Helmholtz and 2-D heat families: exact solutions, derivative engines (D = 3 for heat2d)
and a tiny CLI pretrain + LoTRA transfer for each."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pinnkan.errors import PinnkanError
from pinnkan.io.results import read_results
from pinnkan.pde import FAMILIES, build_pde
from tests.conftest import describe, run_pinnkan, tiny
from tests.test_pde import LINEAR_CASES as CASES  # their residual test is in test_pde
from tests.test_pde import exact_jet

AXES = {"helmholtz": ["x", "y"], "heat2d": ["x", "y", "t"]}


def test_registered() -> None:
    assert {"helmholtz", "heat2d"} <= set(FAMILIES)
    assert build_pde("heat2d", {}).dim == 3


@pytest.mark.parametrize(("name", "params"), CASES)
def test_exact_solution_satisfies_conditions(name: str, params: dict[str, float]) -> None:
    pde = build_pde(name, params)
    gen = torch.Generator().manual_seed(1)
    lo = torch.tensor([d[0] for d in pde.domain], dtype=torch.float64)
    hi = torch.tensor([d[1] for d in pde.domain], dtype=torch.float64)
    for cond in pde.conditions():
        x = cond.sample(64, gen, torch.float64)
        assert x.shape[1] == pde.dim
        assert ((x >= lo) & (x <= hi)).all(), cond.name
        # every point lies on a face of the box
        assert ((x == lo) | (x == hi)).any(dim=1).all(), cond.name
        assert cond.residual(x, exact_jet(pde, x)).abs().max() < 1e-12, cond.name
        if cond.name == "boundary":  # homogeneous Dirichlet data on the unit box
            assert pde.exact(x).abs().max() < 1e-12


def test_heat2d_conditions_cover_all_faces() -> None:
    pde = build_pde("heat2d", {})
    gen = torch.Generator().manual_seed(2)
    by_name = {c.name: c for c in pde.conditions()}
    assert set(by_name) == {"boundary", "initial"}
    xb = by_name["boundary"].sample(400, gen, torch.float64)
    for axis in (0, 1):
        for side in (0.0, 1.0):
            assert (xb[:, axis] == side).sum() >= 90
    assert (xb[:, 2] > 0).any()  # space faces at all times, not only t = 0
    xi = by_name["initial"].sample(64, gen, torch.float64)
    assert (xi[:, 2] == 0).all()


def test_helmholtz_members_differ_and_match_mode_formula() -> None:
    gen = torch.Generator().manual_seed(3)
    src, tgt = build_pde("helmholtz", {"k": 2.0}), build_pde("helmholtz", {"k": 3.0})
    x = src.sample_interior(200, gen, torch.float64)
    torch.testing.assert_close(src.forcing(x), tgt.forcing(x))  # same data ...
    diff = (tgt.exact(x) - src.exact(x)).norm() / src.exact(x).norm()
    assert diff > 0.2  # ... different solutions
    # at the centre only the (1,1) mode is non-zero: u* = 2π²/(2π² − k²)
    centre = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    lam = 2 * math.pi**2
    assert abs(tgt.exact(centre).item() - lam / (lam - 9.0)) < 1e-12


@pytest.mark.parametrize("k2_over_pi2", [2.0, 5.0, 8.0, 13.0])
def test_helmholtz_refuses_resonant_k(k2_over_pi2: float) -> None:
    with pytest.raises(PinnkanError, match="resonance"):
        build_pde("helmholtz", {"k": math.pi * math.sqrt(k2_over_pi2)})


def test_heat2d_refuses_nonpositive_nu() -> None:
    with pytest.raises(PinnkanError):
        build_pde("heat2d", {"nu": 0.0})


# engines agreeing on every family's residual (D = 2 and 3): tests/test_derivatives.py


@pytest.mark.parametrize(
    ("name", "engine"), [("helmholtz", "forward"), ("heat2d", "forward"), ("heat2d", "autograd")]
)
def test_tiny_pretrain_and_transfer(tmp_path: Path, name: str, engine: str) -> None:
    """CLI pretrain + LoTRA transfer (cr=0.25) finish and write 9^D fields on the family's axes,
    plots included; heat2d also with the autograd engine."""
    root = tmp_path / "outputs"
    pre, tr = tmp_path / "pre", tmp_path / "tr"
    extra = [f"pde={name}", f"train.derivatives={engine}"]
    proc = run_pinnkan(["pretrain", *extra, *tiny(root), f"hydra.run.dir={pre}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    proc = run_pinnkan(
        ["transfer", *extra, "cr=0.25", f"source={pre}", *tiny(root), f"hydra.run.dir={tr}"],
        tmp_path,
    )
    assert proc.returncode == 0, describe(proc)
    shape = (9,) * len(AXES[name])
    for stage, run_dir in (("pretrain", pre), ("transfer", tr)):
        res = read_results(run_dir / "results.h5")
        assert res["attrs"]["stage"] == stage and res["attrs"]["pde"] == name
        assert res["coords"] == AXES[name]
        for c in AXES[name]:
            np.testing.assert_allclose(res["grid"][c], np.linspace(0.0, 1.0, 9))
        for key in ("u_pred", "u_ref", "abs_error"):
            assert res["fields"][key].shape == shape, key
        assert math.isfinite(res["metrics"]["rel_l2"])
        assert res["metrics"]["steps"] == 3
        for png in ("fields.png", "training.png"):
            assert (run_dir / png).stat().st_size > 0
    params = read_results(tr / "results.h5")["attrs"]["pde_params"]
    assert params == ({"k": 3.0} if name == "helmholtz" else {"nu": 0.1})
    # the reference field is the closed form on the grid ('ij' order)
    res = read_results(tr / "results.h5")
    pde = build_pde(name, params)
    _, pts = pde.grid(9, torch.float64)
    np.testing.assert_allclose(res["fields"]["u_ref"].ravel(), pde.exact(pts).numpy(), atol=1e-6)
