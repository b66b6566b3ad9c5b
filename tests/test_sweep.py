"""Sweeps: job directories named by overrides, failed jobs recorded, threads per job, launchers."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import pytest
from conftest import SourceRun, describe, run_pinnkan, tiny

from pinnkan import cli
from pinnkan.errors import PinnkanError
from pinnkan.run import sweep
from pinnkan.run.sweep import failures, joblib_workers, threads_for_job

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
SUBMITIT = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}


# --- threads per job ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n_jobs", "cores", "workers", "threads"),
    [(-1, 8, 8, 1), (2, 8, 2, 4), (3, 8, 3, 2), (-2, 8, 7, 1), (16, 8, 16, 1), (None, 4, 1, 4)],
)
def test_joblib_threads_share_the_cores(
    n_jobs: int, cores: int, workers: int, threads: int
) -> None:
    assert joblib_workers(n_jobs, cores) == workers
    assert threads_for_job("auto", {**JOBLIB, "n_jobs": n_jobs}, cores) == threads


def test_threads_outside_joblib() -> None:
    """auto leaves torch's default alone outside a parallel launcher; submitit uses its cpus."""
    assert threads_for_job("auto", None, 8) is None
    assert threads_for_job("auto", {"_target_": "hydra._internal.BasicLauncher"}, 8) is None
    assert threads_for_job("auto", {**SUBMITIT, "cpus_per_task": 4}, 8) == 4
    assert threads_for_job("auto", {**SUBMITIT, "cpus_per_task": None}, 8) == 1
    assert threads_for_job(3, {**JOBLIB, "n_jobs": -1}, 8) == 3  # an explicit count wins


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5, True])
def test_bad_threads_is_a_user_error(bad: object) -> None:
    with pytest.raises(PinnkanError, match="threads="):
        threads_for_job(bad, None, 8)


# --- launcher extras ----------------------------------------------------------------------------
def test_missing_launcher_extra_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sweep, "find_spec", lambda name: None)
    for launcher in ("joblib", "submitit_local"):
        assert cli.main(["transfer", "-m", f"hydra/launcher={launcher}", "cr=0.5,0.25"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and 'pip install -e ".[sweep]"' in err, err
    assert cli.main(["transfer", "-m", "hydra/launcher=ray"]) == 2
    assert "unknown hydra/launcher 'ray'" in capsys.readouterr().err


# --- a real sweep: one good job, one diverged -----------------------------------------------------
@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory, source_run: SourceRun) -> Path:
    """`transfer -m adapter=full pde.weights.residual=1,1e38`: job 0 finishes, job 1 diverges
    (its float32 loss overflows to inf at the first step)."""
    base = tmp_path_factory.mktemp("sweep")
    root = base / "outputs"
    args = [
        "transfer",
        "-m",
        "adapter=full",
        "optim=adam",  # float32: the weighted loss overflows (float64 LM would not)
        "pde.weights.residual=1,1e38",
        *tiny(root),
        f"source={source_run.run_dir}",
        "hydra.sweep.dir=" + str(base / "sweep"),
    ]
    proc = run_pinnkan(args, base, timeout=240)
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, describe(proc)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pinnkan: error: 1 sweep job(s) failed (job 1: training diverged")
    return base / "sweep"


def test_job_dirs_are_named_by_their_overrides(sweep_dir: Path) -> None:
    names = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(names) == 2, names
    assert names[0].startswith("0_") and "pde.weights.residual-1+" in names[0], names
    assert names[1].startswith("1_") and "pde.weights.residual-1e+38+" in names[1], names
    for name in names:  # noisy or path-valued keys are left out
        assert "adapter-full" in name and "source" not in name and "outputs_root" not in name


def test_long_job_names_are_shortened_and_stay_distinct() -> None:
    """Many overrides made `<num>_<overrides>` longer than a file name may be (an OSError
    traceback); past 200 bytes the name keeps its head and gets a hash of the whole."""
    long = "+".join(f"adapter.multipliers.U{i}-{i}.0" for i in range(30))
    a, b = sweep.job_dirname(0, long), sweep.job_dirname(0, long + "+seed-1")
    assert len(a.encode()) <= 200 and len(b.encode()) <= 200 and a != b
    assert a.startswith("0_adapter.multipliers.U0-0.0+")
    assert sweep.job_dirname(3, "cr-0.25") == "3_cr-0.25"  # short names unchanged


def test_sweep_with_many_overrides_runs(tmp_path: Path) -> None:
    """A real multirun whose job names would exceed the limit runs and writes its results."""
    many = [f"adapter.multipliers.{c}={v}" for c in ("G", "U1", "U2", "U3") for v in ("1.0",)]
    args = [
        "transfer", "-m", "adapter=slim", "cr=0.5,0.25", "adapter.lr_strategy=uniform", *many,
        "model.hidden=[4,4]", "optim=adam", "optim.lr=0.001", "optim.lr_decay=0.5",
        *tiny(tmp_path / "outputs"), f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]  # fmt: skip
    proc = run_pinnkan(args, tmp_path, timeout=240)
    assert proc.returncode == 0, describe(proc)
    jobs = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]
    assert len(jobs) == 2 and all((p / "results.h5").is_file() for p in jobs)
    assert all("+~" in p.name and len(p.name) <= 200 for p in jobs)


def test_failed_job_recorded_and_the_other_survives(sweep_dir: Path) -> None:
    good, bad = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit())
    with h5py.File(good / "results.h5", "r") as f:
        assert f.attrs["status"] == "ok"
        assert "diagnostics" in f  # full fine-tuning: ΔA diagnostics at the end of transfer
    assert (good / "diagnostics.png").is_file() and not (good / sweep.FAILED_FILE).exists()
    with h5py.File(bad / "results.h5", "r") as f:
        assert f.attrs["status"] == "diverged"
    assert [(d.name, m.split(" (")[0]) for d, m in failures(sweep_dir)] == [
        (bad.name, "training diverged at step 1")  # the loss is inf from the start
    ]


def test_report_on_the_sweep(sweep_dir: Path, tmp_path: Path) -> None:
    proc = run_pinnkan(["report", str(sweep_dir), "--out", str(tmp_path)], tmp_path)
    assert proc.returncode == 0, describe(proc)
    with open(tmp_path / "report.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["status"] for r in rows) == ["diverged", "ok"]
    assert all(r["adapter"] == "full" for r in rows)
    diverged = next(r for r in rows if r["status"] == "diverged")
    assert diverged["rel_l2"] == "" and "diverged" in diverged["note"]
    assert (tmp_path / "diagnostics.csv").is_file()
    assert "hosvd_err@0.5" in proc.stdout


# --- optional launchers (2 tiny jobs each) -------------------------------------------------------
@pytest.mark.parametrize(
    ("launcher", "plugin"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher"),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher"),
    ],
)
def test_launcher_runs_two_jobs(
    launcher: str, plugin: str, tmp_path: Path, source_run: SourceRun
) -> None:
    pytest.importorskip(plugin)
    sweep_path = tmp_path / "sweep"
    args = [
        "transfer",
        "-m",
        f"hydra/launcher={launcher}",
        "cr=0.5",
        "pde.target.mu=1.5,nan",
        *tiny(tmp_path / "outputs"),
        f"source={source_run.run_dir}",
        f"hydra.sweep.dir={sweep_path}",
    ]
    proc = run_pinnkan(args, tmp_path, timeout=300)
    assert proc.returncode == 1, describe(proc)  # the nan target fails, in another process
    assert "1 sweep job(s) failed (job 1: pde parameter mu=nan" in proc.stderr, describe(proc)
    found = list(sweep_path.glob("*/results.h5"))
    assert [p.parent.name.split("_")[0] for p in found] == ["0"], describe(proc)
    log = next(found[0].parent.glob("*.log")).read_text()
    assert "torch threads: 1 (" in log  # all cores split between parallel jobs (2 cores: 1 each)
