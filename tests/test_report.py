"""`pinnkan report` on synthetic results.h5 files: table, statuses, CSV/HDF5, plots, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pinnkan import cli
from pinnkan.io.results import RunResult, write_results
from pinnkan.report import run_report
from pinnkan.report.collect import COLUMNS, collect
from pinnkan.run.sweep import mark_failed

SHAPES = [(2, 4, 9), (4, 1, 9)]  # a [2, 4, 1] KAN with grid_size 5


def _config(adapter: str, cr: float, seed: int, mu: float) -> str:
    return (
        f"stage: transfer\nseed: {seed}\ncr: {cr}\npde: {{name: elliptic, target: {{mu: {mu}}}}}\n"
        f"adapter: {{name: {adapter}, init: grad, lr_strategy: theory}}\n"
    )


def write_run(
    run_dir: Path,
    adapter: str = "lotra",
    cr: float = 0.5,
    seed: int = 0,
    mu: float = 1.5,
    rel_l2: float = 0.1,
    status: str = "ok",
) -> Path:
    """A transfer run's results.h5 written by pinnkan's own writer (tiny fields)."""
    run_dir.mkdir(parents=True)
    axis = np.linspace(0, 1, 3)
    ok = status != "diverged"
    g = np.random.default_rng(seed)
    lotra = None
    if adapter == "lotra":
        lotra = {
            i: {
                "G": np.zeros([max(1, int(np.ceil(cr * n))) for n in s]),
                "U1": np.zeros((s[0], 1)),
                "U2": np.zeros((s[1], 1)),
                "U3": np.zeros((s[2], 1)),
            }
            for i, s in enumerate(SHAPES)
        }
    metrics = {"n_trainable": 100 if adapter == "lotra" else 108, "n_total": 108, "steps": 5}
    if ok:
        metrics.update(rel_l2=rel_l2, max_abs_error=2 * rel_l2, train_seconds=0.5)
    result = RunResult(
        stage="transfer",
        pde="elliptic",
        pde_params={"lam": 0.0, "mu": mu},
        seed=seed,
        config_yaml=_config(adapter, cr, seed, mu),
        coords=["x", "y"],
        grid={"x": axis, "y": axis},
        u_pred=np.zeros((3, 3)) if ok else None,
        u_ref=np.ones((3, 3)) if ok else None,
        metrics=metrics,
        history={
            "step": np.array([0, 5]),
            "seconds": np.array([0.0, 0.5]),
            "loss": np.array([1.0, 0.5]),
            "rel_l2": np.array([1.0, rel_l2]),
        },
        status=status,
        lotra=lotra,
        model_tensors={
            i: {"A_pretrained": g.normal(size=s), "delta": g.normal(size=s)}
            for i, s in enumerate(SHAPES)
        }
        if adapter != "scratch"
        else None,
        attrs={"adapter": adapter, "cr": cr},
    )
    write_results(run_dir / "results.h5", result)
    return run_dir


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    """A fake multirun: LoTRA at two cr × two seeds, full, scratch, a diverged job, a job that
    crashed before writing (.hydra, no results.h5) and an unreadable results.h5."""
    root = tmp_path / "sweep"
    n = 0
    for cr, errs in ((0.5, (0.1, 0.2)), (0.25, (0.3, 0.4))):
        for seed, err in enumerate(errs):
            write_run(root / f"{n}_cr-{cr}+seed-{seed}", cr=cr, seed=seed, rel_l2=err)
            n += 1
    write_run(root / "4_adapter-full", adapter="full", rel_l2=0.05)
    write_run(root / "5_adapter-scratch", adapter="scratch", rel_l2=0.5)
    write_run(root / "6_lr-1e15", status="diverged")
    crashed = root / "7_pde.target.mu-nan"
    (crashed / ".hydra").mkdir(parents=True)
    (crashed / ".hydra" / "config.yaml").write_text(_config("lotra", 0.5, 0, float("nan")))
    mark_failed(crashed, "pde parameter mu=nan must be a finite number > 0")
    broken = root / "8_broken"
    broken.mkdir()
    (broken / "results.h5").write_bytes(b"not an HDF5 file at all")
    return root


def test_rows_and_statuses(sweep: Path) -> None:
    rows = {Path(r.row["run"]).name: r.row for r in collect([sweep])}
    assert len(rows) == 9
    assert rows["0_cr-0.5+seed-0"]["ranks"] == "1x2x5;2x1x5"
    assert rows["0_cr-0.5+seed-0"]["cr"] == 0.5 and rows["0_cr-0.5+seed-0"]["init"] == "grad"
    assert rows["3_cr-0.25+seed-1"]["seed"] == 1 and rows["3_cr-0.25+seed-1"]["rel_l2"] == 0.4
    assert rows["4_adapter-full"]["adapter"] == "full" and np.isnan(rows["4_adapter-full"]["cr"])
    assert rows["6_lr-1e15"]["status"] == "diverged" and np.isnan(rows["6_lr-1e15"]["rel_l2"])
    missing = rows["7_pde.target.mu-nan"]
    assert missing["status"] == "missing" and "mu=nan" in missing["note"]
    assert missing["adapter"] == "lotra" and missing["pde"] == "elliptic"  # from .hydra config
    assert rows["8_broken"]["status"] == "unreadable"
    assert json.loads(rows["0_cr-0.5+seed-0"]["target"]) == {"lam": 0.0, "mu": 1.5}


def test_outputs(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    text = io.StringIO()
    run_report([sweep], out, stream=text)
    for name in (
        "report.csv",
        "report.h5",
        "error_vs_cr.png",
        "error_vs_params.png",
        "curves.png",
        "diagnostics.csv",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with open(out / "report.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(COLUMNS) and len(rows) == 9
    with h5py.File(out / "report.h5", "r") as f:  # plain h5py, no pinnkan needed
        assert json.loads(f.attrs["columns"]) == list(COLUMNS)
        assert f["table/rel_l2"].shape == (9,) and f["table/seed"].dtype == np.int64
        statuses = sorted(s.decode() for s in f["table/status"][()])
    assert statuses == ["diverged", "missing", "ok", "ok", "ok", "ok", "ok", "ok", "unreadable"]
    printed = text.getvalue()
    assert printed.splitlines()[0].split()[:3] == ["run", "stage", "pde"]
    assert "9 runs (1 diverged, 1 missing, 6 ok, 1 unreadable)" in printed
    # the full fine-tuning run got its ΔA diagnostics written into its own results.h5
    with h5py.File(sweep / "4_adapter-full" / "results.h5", "r") as f:
        assert "diagnostics/layer_0/hosvd_rel_error" in f
    assert (sweep / "4_adapter-full" / "diagnostics.png").is_file()


def test_nothing_found_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pinnkan: error: no results.h5"), err
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_dirs_as_arguments(sweep: Path, tmp_path: Path) -> None:
    """Single run directories (and a results.h5 file) can be listed instead of a sweep."""
    args = ["report", str(sweep / "4_adapter-full"), str(sweep / "0_cr-0.5+seed-0" / "results.h5")]
    assert cli.main([*args, "--out", str(tmp_path / "r")]) == 0
    with open(tmp_path / "r" / "report.csv", encoding="utf-8") as fh:
        assert sorted(r["adapter"] for r in csv.DictReader(fh)) == ["full", "lotra"]


def test_lotra_runs_with_other_lr_constants_are_their_own_series(tmp_path: Path) -> None:
    """Runs that differ only in adapter.multipliers used to be averaged into one plotted point."""
    from pinnkan.report.plots import _series_label

    write_run(tmp_path / "a", rel_l2=0.1)
    write_run(tmp_path / "b", rel_l2=0.3)
    results = tmp_path / "b" / "results.h5"
    with h5py.File(results, "r+") as f:
        cfg = f.attrs["config"].replace(
            "lr_strategy: theory", "lr_strategy: theory, multipliers: {U1: 1, U3: 9}"
        )
        f.attrs["config"] = cfg
    runs = collect([tmp_path])
    mult = {r.path.name: r.row["multipliers"] for r in runs}
    assert mult == {"a": "", "b": "1/1/1/9"}
    assert len({_series_label(r.row) for r in runs}) == 2


def test_runs_under_either_name_of_a_family_are_one_family(tmp_path: Path) -> None:
    """Advection runs written before the rename (pde hyperbolic), after it (advection) and one
    that crashed before writing (its .hydra config says hyperbolic) are one family, one panel."""
    from pinnkan.report.plots import _groups

    for run, name in (("old", "hyperbolic"), ("new", "advection")):
        write_run(tmp_path / run)
        with h5py.File(tmp_path / run / "results.h5", "r+") as f:
            f.attrs["pde"] = name
            f.attrs["config"] = f.attrs["config"].replace("name: elliptic", f"name: {name}")
    crashed = tmp_path / "crashed"
    (crashed / ".hydra").mkdir(parents=True)
    config = _config("lotra", 0.5, 0, 1.5).replace("name: elliptic", "name: hyperbolic")
    (crashed / ".hydra" / "config.yaml").write_text(config)
    runs = collect([tmp_path])
    assert {r.path.name: r.row["pde"] for r in runs} == dict.fromkeys(
        ("old", "new", "crashed"), "advection"
    )
    assert [(pde, len(members)) for (pde, _), members in _groups(runs).items()] == [
        ("advection", 2)
    ]
