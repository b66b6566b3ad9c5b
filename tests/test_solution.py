"""The solution as an object: `pinnkan.load` and `pinnkan predict` give each run's own u_pred on
its grid (pretrain, LoTRA, full, scratch, merged), exact derivatives, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import pinnkan
from pinnkan.errors import PinnkanError
from pinnkan.io.results import read_results
from pinnkan.run import runner
from pinnkan.run.merge import merge_to_file
from pinnkan.run.solution import Solution
from tests.conftest import describe, lm_transfer_config, run_pinnkan


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny float64 LM pretrain and a transfer from it with each adapter, plus a merge."""
    base = tmp_path_factory.mktemp("solution")
    cfg = lm_transfer_config(base)
    out = {"pretrain": base / "source"}
    for adapter in ("lotra", "full", "scratch"):
        run_cfg = {**cfg, "pde": {**cfg["pde"], "target": {"mu": 1.3}}}
        run_cfg["adapter"] = {"name": adapter}
        result = runner.transfer(run_cfg, base / adapter)
        assert result.status == "ok"
        out[adapter] = base / adapter
    out["merged"] = merge_to_file(base / "lotra", out=base / "merged.safetensors")
    return out


def grid_points(results: dict) -> np.ndarray:
    """The evaluation grid of a results.h5 as (N, d) points in u_pred's (C) order."""
    axes = np.meshgrid(*(results["grid"][c] for c in results["coords"]), indexing="ij")
    return np.stack([a.ravel() for a in axes], axis=1)


def own_results(runs: dict[str, Path], name: str) -> dict:
    return read_results((runs["lotra"] if name == "merged" else runs[name]) / "results.h5")


@pytest.mark.parametrize("name", ["pretrain", "lotra", "full", "scratch", "merged"])
def test_load_gives_the_runs_own_prediction(runs: dict[str, Path], name: str) -> None:
    res = own_results(runs, name)
    model = pinnkan.load(runs[name])
    assert isinstance(model, torch.nn.Module) and model.lo.dtype == torch.float64
    x = torch.as_tensor(grid_points(res))
    with torch.no_grad():
        u = model(x)[:, 0].numpy().reshape(res["fields"]["u_pred"].shape)
    np.testing.assert_allclose(u, res["fields"]["u_pred"], rtol=0, atol=1e-12)


def test_a_lotra_run_loads_as_its_base_with_the_adapter(runs: dict[str, Path]) -> None:
    res = own_results(runs, "lotra")
    model = pinnkan.load(runs["lotra"], adapter=True)
    assert any(layer.adapter is not None for layer in model.layers)
    with torch.no_grad():
        u = model(torch.as_tensor(grid_points(res)))[:, 0].numpy()
    np.testing.assert_allclose(u, res["fields"]["u_pred"].ravel(), rtol=0, atol=1e-12)
    with pytest.raises(PinnkanError, match="no adapter file"):
        pinnkan.load(runs["full"], adapter=True)


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_predict_writes_u_and_exact_derivatives(
    runs: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    res = own_results(runs, "full")
    pts = grid_points(res)
    points = tmp_path / f"pts{suffix}"
    if suffix == ".npz":
        np.savez(points, points=pts)
    else:
        with h5py.File(points, "w") as f:
            f.create_dataset("xy", data=pts)  # the only array: no name needed
    out = tmp_path / "u.h5"
    proc = run_pinnkan(
        ["predict", str(runs["full"]), "--points", str(points), "--out", str(out), "--derivatives"],
        tmp_path,
    )
    assert proc.returncode == 0, describe(proc)
    with h5py.File(out, "r") as f:
        u, u_x, u_yy = f["u"][()], f["u_x"][()], f["u_yy"][()]
        assert f.attrs["columns"] == '["x", "y"]'
    np.testing.assert_allclose(u, res["fields"]["u_pred"].ravel(), rtol=0, atol=1e-12)
    # the derivatives against central differences of the network itself
    sol = Solution.load(runs["full"])
    inner = pts[((pts > 0.1) & (pts < 0.9)).all(axis=1)][:20]
    h = 1e-4
    dx, dy = np.array([h, 0.0]), np.array([0.0, h])
    fd_x = (sol.u(inner + dx) - sol.u(inner - dx)) / (2 * h)
    fd_yy = (sol.u(inner + dy) - 2 * sol.u(inner) + sol.u(inner - dy)) / h**2
    jet = sol.derivatives(inner)
    np.testing.assert_allclose(jet["u_x"], fd_x, atol=1e-6)
    np.testing.assert_allclose(jet["u_yy"], fd_yy, atol=1e-4)
    assert u_x.shape == u_yy.shape == u.shape


def test_bad_points_are_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    sol = Solution.load(runs["pretrain"])
    with pytest.raises(PinnkanError, match=r"shape \(4, 3\).*\(N, 2\)"):
        sol.u(np.zeros((4, 3)))
    with pytest.raises(PinnkanError, match="1 of 2 points lie outside the domain.*row 1"):
        sol.u(np.array([[0.0, 0.0], [0.0, 5.0]]))
    points = tmp_path / "two.npz"
    np.savez(points, a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    out = tmp_path / "u.h5"
    proc = run_pinnkan(["predict", str(runs["pretrain"]), "--points", str(points)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--key" in proc.stderr
    assert not out.exists() and not (tmp_path / "predictions.h5").exists()
    proc = run_pinnkan(["predict", str(tmp_path / "nowhere"), "--points", str(points)], tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_a_base_recorded_relative_to_another_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transfer run from a relative `source=` records its base relative to its working
    directory; loading with the adapter (and merging) from elsewhere still finds it."""
    monkeypatch.chdir(tmp_path)
    cfg = lm_transfer_config(Path("."))  # source=source (relative)
    cfg["pde"] = {**cfg["pde"], "target": {"mu": 1.3}}
    assert runner.transfer(cfg, Path("run")).status == "ok"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = read_results(tmp_path / "run" / "results.h5")
    model = pinnkan.load(tmp_path / "run", adapter=True)
    with torch.no_grad():
        u = model(torch.as_tensor(grid_points(res)))[:, 0].numpy()
    np.testing.assert_allclose(u, res["fields"]["u_pred"].ravel(), rtol=0, atol=1e-12)
    assert merge_to_file(tmp_path / "run", out=elsewhere / "m.safetensors").is_file()
