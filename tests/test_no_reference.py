"""A PDE without a reference solution (no `exact`): runs train and finish with status ok,
report their held-out residual and condition losses instead of errors, and write u_pred only
(results.h5, results.xdmf, fields.png, `pinnkan report`)."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import pytest
import torch

from pinnkan import cli
from pinnkan.io.results import RESULTS_FILE, read_results
from pinnkan.pde.base import PI, Condition, PDEFamily, dirichlet_box, edge_points
from pinnkan.run import runner
from tests.conftest import tiny_config


class HeatWithoutReference(PDEFamily):
    """u_t = nu u_xx, u = 0 at x = 0, 1, u(x, 0) = sin(pi x): no `exact` given."""

    name = "heat_noref"
    coords = ("x", "t")
    domain = ((0.0, 1.0), (0.0, 1.0))
    defaults = {"nu": 0.1}

    def residual(self, x: torch.Tensor, jet) -> torch.Tensor:
        return jet.d(1) - self.params["nu"] * jet.dd(0)

    def conditions(self) -> list[Condition]:
        return [
            Condition("boundary", dirichlet_box(self, (0,)), lambda x, jet: jet.u, 10.0),
            Condition(
                "initial",
                lambda n, gen, dtype: edge_points(self, n, gen, dtype, axis=1, side=0),
                lambda x, jet: jet.u - torch.sin(PI * x[:, 0]),
                10.0,
            ),
        ]


def test_a_run_without_reference_reports_losses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not HeatWithoutReference().has_reference
    pde = {"_target_": f"{__name__}.HeatWithoutReference", "name": "heat_noref"}
    cfg = tiny_config(tmp_path, {"pde": {**pde, "source": {"nu": 0.1}}, "train.steps": 10})
    run = tmp_path / "run"
    result = runner.pretrain(cfg, run)
    m = result.metrics
    assert result.status == "ok" and "rel_l2" not in m and "max_abs_error" not in m
    assert {"loss", "loss_residual", "loss_boundary", "loss_initial"} <= set(m)
    assert all(math.isfinite(m[k]) and m[k] >= 0 for k in ("loss_residual", "loss_initial"))
    assert m["loss"] == pytest.approx(
        m["loss_residual"] + 10 * m["loss_boundary"] + 10 * m["loss_initial"]
    )
    res = read_results(run / RESULTS_FILE)
    assert res["attrs"]["reference"] == "none" and set(res["fields"]) == {"u_pred"}
    assert all(math.isnan(v) for v in res["history"]["rel_l2"])
    assert (run / "fields.png").is_file()
    xdmf = (run / "results.xdmf").read_text()
    assert "u_pred" in xdmf and "u_ref" not in xdmf
    with h5py.File(run / RESULTS_FILE) as f:
        assert "u_ref" not in f["fields"]
    assert cli.main(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    assert "no reference: held-out loss" in capsys.readouterr().out


def test_runs_with_a_reference_report_the_losses_too(tmp_path: Path) -> None:
    result = runner.pretrain(tiny_config(tmp_path), tmp_path / "run")
    m = result.metrics
    assert "rel_l2" in m and m["loss"] > 0 and "loss_boundary" in m
    assert read_results(tmp_path / "run" / RESULTS_FILE)["attrs"]["reference"] == "family"
