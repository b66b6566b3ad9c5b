"""Tests for the results.h5 layout (METHOD.md section 4), its atomic writer, and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import pinnkan
from pinnkan.common.atomic import WriteFailed
from pinnkan.io import results as results_mod
from pinnkan.io.plots import plot_run
from pinnkan.io.results import (
    ERROR_METRIC,
    RunResult,
    max_abs_error,
    read_results,
    relative_l2,
    write_results,
)

NX, NT = 7, 5
N_IN, N_OUT, N_D, RANK = 2, 3, 4, 2


def make_result(transfer: bool = False, n_hist: int = 4) -> RunResult:
    """A small synthetic run on an (x, t) grid; with LoTRA/model tensors when ``transfer``."""
    x = np.linspace(0.0, 1.0, NX)  # (NX,)
    t = np.linspace(0.0, 1.0, NT)  # (NT,)
    u_ref = np.sin(np.pi * x)[:, None] * np.exp(-t)[None, :]  # (NX, NT)
    u_pred = u_ref + 0.01 * np.cos(x)[:, None]  # (NX, NT)
    lotra = model = None
    if transfer:
        rng = np.random.default_rng(0)
        lotra = {
            layer: {
                "G": rng.normal(size=(RANK, RANK, RANK)),
                "U1": rng.normal(size=(N_IN, RANK)),
                "U2": rng.normal(size=(N_OUT, RANK)),
                "U3": rng.normal(size=(N_D, RANK)),
            }
            for layer in (0, 1)
        }
        model = {
            layer: {
                "A_pretrained": rng.normal(size=(N_IN, N_OUT, N_D)),
                "delta": rng.normal(size=(N_IN, N_OUT, N_D)),
            }
            for layer in (0, 1)
        }
    return RunResult(
        stage="transfer" if transfer else "pretrain",
        pde="parabolic",
        pde_params={"nu": 0.1},
        seed=3,
        config_yaml="pde:\n  name: parabolic\n  nu: 0.1\n",
        coords=["x", "t"],
        grid={"x": x, "t": t},
        u_pred=u_pred,
        u_ref=u_ref,
        metrics={
            "rel_l2": relative_l2(u_pred, u_ref),
            "max_abs_error": max_abs_error(u_pred, u_ref),
            "n_trainable": 24,
            "n_total": 120,
            "train_seconds": 1.5,
            "steps": 300,
        },
        history={
            "step": np.arange(n_hist) * 100,
            "seconds": np.linspace(0.0, 1.5, n_hist),
            "loss": np.logspace(0, -3, n_hist),
            "rel_l2": np.logspace(-1, -2, n_hist),
        },
        lotra=lotra,
        model_tensors=model,
        attrs={"adapter": "lotra", "cr": 0.2} if transfer else {},
    )


def dir_names(path: Path) -> list[str]:
    """All entry names in a directory, hidden temp files included."""
    return sorted(p.name for p in path.iterdir())


@pytest.mark.parametrize("transfer", [False, True])
def test_layout_with_plain_h5py(tmp_path: Path, transfer: bool) -> None:
    """Every item of METHOD.md section 4 is present, named and shaped as specified."""
    res = make_result(transfer)
    path = tmp_path / "results.h5"
    write_results(path, res)
    assert dir_names(tmp_path) == ["results.h5", "results.xdmf"]  # the ParaView sidecar
    with h5py.File(path, "r") as f:
        a = f.attrs
        for key in (
            "pinnkan_version",
            "stage",
            "pde",
            "pde_params",
            "seed",
            "config",
            "error_metric",
            "status",
        ):
            assert key in a, key
        assert a["pinnkan_version"] == pinnkan.__version__
        assert a["stage"] == res.stage
        assert a["pde"] == "parabolic"
        assert json.loads(a["pde_params"]) == {"nu": 0.1}
        assert int(a["seed"]) == 3
        assert a["config"] == res.config_yaml
        assert a["error_metric"] == ERROR_METRIC
        assert a["status"] == "ok"
        for s in ("stage", "pde", "pde_params", "config", "error_metric", "status", "machine"):
            assert isinstance(a[s], str), s
        machine = json.loads(a["machine"])  # what the run's last bits depend on
        assert machine["torch"] == torch.__version__
        assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert machine["threads"] == torch.get_num_threads()
        assert {"platform", "cpu", "mkl_instructions", "python", "gpu"} <= set(machine)

        assert set(f["grid"].keys()) == {"x", "t"}
        np.testing.assert_array_equal(f["grid/x"][()], res.grid["x"])
        np.testing.assert_array_equal(f["grid/t"][()], res.grid["t"])

        assert set(f["fields"].keys()) == {"u_pred", "u_ref", "abs_error"}
        assert list(f["fields"].attrs["axes"]) == ["x", "t"]  # a string array
        for name in ("u_pred", "u_ref", "abs_error"):
            assert f["fields"][name].shape == (NX, NT)
        np.testing.assert_allclose(f["fields/abs_error"][()], np.abs(res.u_pred - res.u_ref))

        m = f["metrics"].attrs
        for key in ("rel_l2", "max_abs_error", "n_trainable", "n_total", "train_seconds", "steps"):
            assert key in m, key
        assert m["rel_l2"] == pytest.approx(res.metrics["rel_l2"])
        assert int(m["steps"]) == 300

        assert set(f["history"].keys()) == {"step", "seconds", "loss", "rel_l2"}
        assert {f["history"][k].shape for k in f["history"]} == {(4,)}

        if transfer:
            assert a["adapter"] == "lotra"
            assert a["cr"] == pytest.approx(0.2)
            assert set(f["lotra"].keys()) == {"layer_0", "layer_1"}
            assert set(f["model"].keys()) == {"layer_0", "layer_1"}
            for layer in ("layer_0", "layer_1"):
                assert set(f["lotra"][layer].keys()) == {"G", "U1", "U2", "U3"}
                assert f["lotra"][layer]["G"].shape == (RANK, RANK, RANK)
                assert f["lotra"][layer]["U1"].shape == (N_IN, RANK)
                assert f["lotra"][layer]["U2"].shape == (N_OUT, RANK)
                assert f["lotra"][layer]["U3"].shape == (N_D, RANK)
                assert set(f["model"][layer].keys()) == {"A_pretrained", "delta"}
                assert f["model"][layer]["delta"].shape == (N_IN, N_OUT, N_D)
                assert f["model"][layer]["A_pretrained"].shape == (N_IN, N_OUT, N_D)
        else:
            assert "lotra" not in f
            assert "model" not in f


@pytest.mark.parametrize("transfer", [False, True])
def test_read_results_round_trip(tmp_path: Path, transfer: bool) -> None:
    """read_results returns plain Python/numpy values equal to what was written."""
    res = make_result(transfer)
    path = tmp_path / "results.h5"
    write_results(path, res)
    out = read_results(path)
    assert out["coords"] == ["x", "t"]
    assert isinstance(out["coords"], list)
    assert out["attrs"]["pde_params"] == {"nu": 0.1}
    assert out["attrs"]["seed"] == 3 and isinstance(out["attrs"]["seed"], int)
    assert out["attrs"]["error_metric"] == ERROR_METRIC
    np.testing.assert_array_equal(out["fields"]["u_pred"], res.u_pred)
    np.testing.assert_array_equal(out["fields"]["u_ref"], res.u_ref)
    for key, value in res.metrics.items():
        assert out["metrics"][key] == pytest.approx(value)
    for key, value in res.history.items():
        np.testing.assert_array_equal(out["history"][key], value)
    for c in res.coords:
        np.testing.assert_array_equal(out["grid"][c], res.grid[c])
    if transfer:
        assert out["attrs"]["adapter"] == "lotra"
        assert sorted(out["lotra"]) == [0, 1]
        for layer in (0, 1):
            for key in ("G", "U1", "U2", "U3"):
                np.testing.assert_array_equal(out["lotra"][layer][key], res.lotra[layer][key])
            for key in ("A_pretrained", "delta"):
                np.testing.assert_array_equal(
                    out["model"][layer][key], res.model_tensors[layer][key]
                )
    else:
        assert out["lotra"] == {} and out["model"] == {}


def test_error_formulas_known_example() -> None:
    """rel_l2 = ||diff|| / ||ref|| and max_abs_error = max |diff| on a hand-computed case."""
    u_ref = np.array([[3.0, 0.0], [0.0, 4.0]])  # ||u_ref|| = 5
    u_pred = np.array([[3.0, 1.0], [0.0, 4.0]])  # diff has one entry 1
    assert relative_l2(u_pred, u_ref) == pytest.approx(0.2)
    assert max_abs_error(u_pred, u_ref) == pytest.approx(1.0)
    assert relative_l2(u_ref, u_ref) == 0.0
    assert relative_l2(2 * u_ref, u_ref) == pytest.approx(1.0)


def _unstorable(res: RunResult) -> RunResult:
    """Make the u_pred field an object array, which h5py cannot store (fails mid-write)."""
    bad = np.empty(res.u_ref.shape, dtype=object)  # (NX, NT) of Python objects
    bad[...] = object()
    res.u_pred = bad
    return res


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    """A write that fails halfway creates neither results.h5 nor a leftover temp file."""
    path = tmp_path / "results.h5"
    with pytest.raises(TypeError):
        write_results(path, _unstorable(make_result()))
    assert dir_names(tmp_path) == []


def test_failed_write_keeps_older_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed rewrite leaves an existing results.h5 byte-for-byte untouched."""
    path = tmp_path / "results.h5"
    write_results(path, make_result())
    before = path.read_bytes()

    with pytest.raises(TypeError):
        write_results(path, _unstorable(make_result(transfer=True)))
    assert dir_names(tmp_path) == ["results.h5", "results.xdmf"]
    assert path.read_bytes() == before

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    # Fail after root attrs, grid, fields, metrics and history are already in the temp file.
    monkeypatch.setattr(results_mod, "_write_layers", boom)
    with pytest.raises(WriteFailed, match=r"cannot write .*results\.h5: disk full"):
        write_results(path, make_result(transfer=True))
    assert dir_names(tmp_path) == ["results.h5", "results.xdmf"]
    assert path.read_bytes() == before
    assert read_results(path)["attrs"]["stage"] == "pretrain"


def test_invalid_result_rejected_before_io(tmp_path: Path) -> None:
    """Shape mismatches and ragged history are refused without touching the directory."""
    path = tmp_path / "results.h5"
    res = make_result()
    res.u_pred = res.u_pred.T  # (NT, NX): wrong axis order
    with pytest.raises(ValueError, match="u_pred"):
        write_results(path, res)
    res = make_result()
    res.history["loss"] = res.history["loss"][:-1]
    with pytest.raises(ValueError, match="history"):
        write_results(path, res)
    res = make_result()
    res.attrs = {"stage": "oops"}
    with pytest.raises(ValueError, match="reserved"):
        write_results(path, res)
    assert dir_names(tmp_path) == []


@pytest.mark.parametrize("n_hist", [4, 1])
def test_plot_run_writes_pngs(tmp_path: Path, n_hist: int) -> None:
    """plot_run writes non-empty fields.png and training.png, also for a 1-point history."""
    paths = plot_run(tmp_path, make_result(transfer=True, n_hist=n_hist))
    assert [p.name for p in paths] == ["fields.png", "training.png"]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 1000


def test_plot_run_tolerates_nans(tmp_path: Path) -> None:
    """NaN/zero entries in the history (e.g. a diverged run) still give both plots."""
    res = make_result()
    res.history["loss"] = np.array([1.0, np.nan, np.inf, 0.0])
    res.history["rel_l2"] = np.full(4, np.nan)
    res.status = "diverged"
    paths = plot_run(tmp_path / "run", res)
    assert all(p.stat().st_size > 0 for p in paths)
