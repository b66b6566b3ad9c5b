"""A member posed from a PDEBench-layout file's sample (`pde.reference.initial`,
pinnkan/pde/from_file.py): initial value from the first slice, periodic x, parameters from the
file's attributes, the file's own points for the errors, one-line errors where the file, the
family and the options disagree, and a transfer across samples that records them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import MODEL_FORMAT, load_checkpoint
from pinnkan.layers.jet import Jet
from pinnkan.pde.config import member_from_config
from pinnkan.pde.reference import FileReference, file_sha256
from pinnkan.report.collect import read_run
from pinnkan.run import runner
from pinnkan.run.merge import merge_adapter
from pinnkan.run.setup import periodic_axes
from tests.conftest import describe, run_pinnkan, tiny, tiny_config

NX, NT = 32, 11  # cell centres on (0, 1); NT slices on [0, 2], NT + 1 t values as PDEBench


def pdebench_file(
    path: Path, attrs: dict[str, Any] | None = None, samples: int = 3, t_axis: bool = True
) -> Path:
    """Samples u = a sin(2πk(x − 0.1 t) + φ) in PDEBench's layout (float32, t first)."""
    x = (np.arange(NX) + 0.5) / NX
    t = np.arange(NT + 1) * (2.0 / (NT - 1))
    X, T = np.meshgrid(x, t[:NT])
    rng = np.random.default_rng(0)
    u = [
        rng.uniform(0.5, 1) * np.sin(2 * np.pi * k * (X - 0.1 * T) + rng.uniform(0, 6))
        for k in rng.integers(1, 3, samples)
    ]
    with h5py.File(path, "w") as f:
        f["tensor"] = np.stack(u).astype(np.float32)
        f["x-coordinate"] = x.astype(np.float32)
        if t_axis:
            f["t-coordinate"] = t.astype(np.float32)
        for k, v in (attrs if attrs is not None else {"beta": np.float32(0.1)}).items():
            f.attrs[k] = v
    return path


def posed(path: Path, name: str = "advection", which: str = "source", **more: Any) -> Any:
    """The member posed from `path` as the CLI's config builds it (family parameters filled)."""
    from pinnkan.run.config import RunConfig

    pde = RunConfig.from_dict({"pde": {"name": name}}).pde
    reference = {which: str(path), "initial": True, **more.pop("reference", {})}
    cfg = {"name": name, "source": pde.source, "target": pde.target, "reference": reference}
    return member_from_config({**cfg, **more}, which)


def initial_value(member: Any, x: torch.Tensor) -> torch.Tensor:
    """What the member's initial condition asks u to be at x (its residual where u = 0)."""
    cond = next(c for c in member.conditions() if c.name == "initial")
    return -cond.residual(x, Jet(torch.zeros(len(x), 1, dtype=x.dtype)))


def test_initial_value_domain_and_parameter_come_from_the_file(tmp_path: Path) -> None:
    path = pdebench_file(tmp_path / "adv.h5")
    member = posed(path, reference={"sample": 2})
    assert member.params == {"beta": 0.1}  # float32 attribute, read as 0.1; not the default 1
    assert member.domain == ((0.0, 1.0), (0.0, 2.0))  # cell edges; t's last value dropped
    with h5py.File(path) as f:
        x, first = f["x-coordinate"][()].astype(np.float64), f["tensor"][2, 0]
    at = torch.from_numpy(np.stack([x, np.zeros_like(x)], 1))
    np.testing.assert_allclose(initial_value(member, at).numpy(), first, rtol=0, atol=1e-7)
    assert [c.name for c in member.conditions()] == ["boundary", "initial"]


def test_periodic_in_x_and_wrapped_between_the_last_and_first_cell(tmp_path: Path) -> None:
    path = pdebench_file(tmp_path / "b.h5", {"Nu": 0.01})
    member = posed(path, "burgers", reference={"sample": 1})
    assert member.params["nu"] == pytest.approx(0.01 / math.pi)  # PDEBench's ν = Nu / π
    assert periodic_axes("auto", member) == (0,)  # the network embeds x periodically
    assert [c.name for c in member.conditions()] == ["boundary", "boundary_dx", "initial"]
    with h5py.File(path) as f:
        first = f["tensor"][1, 0].astype(np.float64)
    edges = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    # x = 0 lies half way between the last cell centre (−dx/2, one period back) and the first
    np.testing.assert_allclose(initial_value(member, edges).numpy(), 0.5 * (first[0] + first[-1]))


def test_an_agreeing_value_is_accepted_and_a_file_without_the_attribute_keeps_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = pdebench_file(tmp_path / "adv.h5")
    assert posed(path, source={"beta": 0.1}).params == {"beta": 0.1}
    bare = pdebench_file(tmp_path / "bare.h5", attrs={})
    assert posed(bare, source={"beta": 0.3}).params == {"beta": 0.3}
    assert "has no attribute beta" in caplog.text


def _no_time(path: Path) -> Path:
    return pdebench_file(path, t_axis=False)


@pytest.mark.parametrize(
    ("make", "changes", "match"),
    [
        (
            pdebench_file,
            {"pde.source": {"beta": 0.4}},
            r"pde.source.beta=0.4 contradicts .*beta=0.1",
        ),
        (pdebench_file, {"pde.reference.sample": 3}, "sample 3 of 3 does not exist"),
        (_no_time, {}, "has no axis for t"),
        (pdebench_file, {"pde.name": "parabolic"}, "pde=parabolic cannot be"),
        (pdebench_file, {"pde.reference.source": None}, r"pass pde.reference.source=FILE"),
    ],
    ids=["contradicts", "sample", "no-time-axis", "family", "no-file"],
)
def test_each_disagreement_is_one_line_before_anything_is_written(
    tmp_path: Path, make: Any, changes: dict[str, Any], match: str
) -> None:
    path = make(tmp_path / "f.h5")
    reference = {"source": str(path), "initial": True}
    cfg = tiny_config(tmp_path, {"pde": {"name": "advection", "reference": reference}})
    for key, value in changes.items():
        node, last = cfg, key.split(".")
        for part in last[:-1]:
            node = node[part]
        node[last[-1]] = value
    with pytest.raises(PinnkanError, match=match) as info:
        runner.pretrain(cfg, tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "results.h5").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["pde.source.beta=0.4"], "contradicts"),
        (["pde=elliptic"], "pde=elliptic cannot be"),
    ],
)
def test_cli_refuses_in_one_line_and_leaves_no_run(tmp_path: Path, args: list[str], match: str):
    path = pdebench_file(tmp_path / "adv.h5")
    run_dir = tmp_path / "out" / "run"
    proc = run_pinnkan(
        [
            "pretrain",
            "pde=advection",
            f"pde.reference.source={path}",
            "pde.reference.initial=true",
            *args,
            *tiny(tmp_path / "out"),
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    assert proc.returncode == 2, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pinnkan: error:") and match in lines[0]
    assert not run_dir.exists(), describe(proc)


def test_cell_centres_are_accepted_and_errors_use_the_file_points(tmp_path: Path) -> None:
    path = pdebench_file(tmp_path / "adv.h5")
    ref = FileReference(path, ("x", "t"), ((0.0, 1.0), (0.0, 2.0)), sample=1)
    assert ref.axes[0][0] == pytest.approx(0.5 / NX)  # half a cell in: accepted
    reference = {"source": str(path), "initial": True, "sample": 1}
    cfg = tiny_config(tmp_path, {"pde": {"name": "advection", "reference": reference}})
    result = runner.pretrain(cfg, tmp_path / "run")
    with h5py.File(path) as f:
        x, u = f["x-coordinate"][()], f["tensor"][1]
    np.testing.assert_allclose(result.grid["x"], x, rtol=0, atol=1e-7)  # not eval.n's 9 points
    assert result.grid["t"].shape == (NT,)
    np.testing.assert_allclose(result.u_ref, u.T, rtol=0, atol=1e-6)
    assert {"nrmse", "brmse"} <= set(result.metrics)
    assert result.attrs["reference_sample"] == 1 and result.attrs["reference_initial"]
    assert result.attrs["reference_sha256"] == file_sha256(path)


def test_transfer_across_samples_records_them_and_merges(tmp_path: Path) -> None:
    path = pdebench_file(tmp_path / "adv.h5")

    def cfg(which: str, sample: int, **more: Any) -> dict[str, Any]:
        reference = {which: str(path), "initial": True, "sample": sample}
        return tiny_config(tmp_path, {"pde": {"name": "advection", "reference": reference}, **more})

    runner.pretrain(cfg("source", 0), tmp_path / "src")
    meta = load_checkpoint(tmp_path / "src" / "model.safetensors", MODEL_FORMAT)[0]
    assert meta["reference"]["sample"] == 0 and meta["spec"]["periodic"] == [0]
    more = {"stage": "transfer", "source": str(tmp_path / "src")}
    result = runner.transfer(cfg("target", 2, **more), tmp_path / "dst")
    assert result.attrs["reference_sample"] == 2
    source = json.loads(result.attrs["source_reference"])
    assert source["sample"] == 0 and source["sha256"] == file_sha256(path)
    merged_meta, merged = merge_adapter(tmp_path / "dst" / "adapter.safetensors")
    own = load_checkpoint(tmp_path / "dst" / "model.safetensors", MODEL_FORMAT)[1]
    assert merged_meta["reference"]["sample"] == 2
    for key, value in own.items():
        torch.testing.assert_close(merged[key], value, rtol=1e-6, atol=1e-7)
    row = read_run(tmp_path / "dst").row
    assert json.loads(row["target"]) == {"beta": 0.1, "sample": 2}
    assert row["nrmse"] == pytest.approx(result.metrics["nrmse"])


def test_cli_sweep_over_samples(tmp_path: Path) -> None:
    """`-m pde.reference.sample=1,2`: one transfer job per sample of the file."""
    path = pdebench_file(tmp_path / "adv.h5")
    src = tmp_path / "src"  # in this process, with the settings of TINY
    reference = {"source": str(path), "initial": True}
    train = {"steps": 3, "n_interior": 64, "n_boundary": 16, "eval_every": 1, "progress": "none"}
    runner.pretrain(
        {
            "pde": {"name": "advection", "reference": reference},
            "model": {"name": "bspline", "hidden": [4]},
            "train": train,
            "eval": {"n": 9},
        },
        src,
    )
    common = ["pde=advection", "pde.reference.initial=true", *tiny(tmp_path / "out")]
    sweep = tmp_path / "sweep"
    proc = run_pinnkan(
        [
            "transfer",
            "-m",
            *common,
            f"pde.reference.target={path}",
            "pde.reference.sample=1,2",
            f"source={src}",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, describe(proc)
    rows = [read_run(d).row for d in sorted(sweep.glob("[0-9]_*"))]
    assert [json.loads(r["target"])["sample"] for r in rows] == [1, 2]
    assert all(r["status"] == "ok" for r in rows)
