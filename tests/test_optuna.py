"""Optuna sweeps (optional extra): the CLI's check of hydra/sweeper=, and a tiny real study in
which diverged trials are reported to Optuna as failed while the study goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import describe, run_pinnkan, tiny
from omegaconf import OmegaConf

from pinnkan import cli
from pinnkan.run import sweep
from pinnkan.run.sweep import failures


# --- the CLI's checks, before Hydra ---------------------------------------------------------------
def test_missing_optuna_extra_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sweep, "find_spec", lambda name: None)
    assert cli.main(["transfer", "-m", "hydra/sweeper=optuna", "cr=0.5,0.25"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install -e ".[optuna]"' in err, err
    assert sweep.check_plugin("hydra/sweeper", "basic") is None  # Hydra's own: no extra
    assert cli.main(["transfer", "-m", "hydra/sweeper=nevergrad"]) == 2
    assert "unknown hydra/sweeper 'nevergrad'; choose one of: basic, optuna" in (
        capsys.readouterr().err
    )


def test_sweep_functions_are_checked_or_left_to_hydra() -> None:
    """choice(...)'s values are checked like a comma list; interval/range/tag go to Hydra."""
    assert sweep.sweep_values("0.5,0.25") == ["0.5", "0.25"]
    assert sweep.sweep_values("choice(0.5, 0.25)") == ["0.5", "0.25"]
    assert sweep.sweep_values("interval(0.1,0.5)") == []
    assert sweep.sweep_values("tag(log,interval(1e-6,1e-1))") == []
    assert cli.check_overrides("transfer", ["cr=choice(0.5,0.25)", "cr=interval(0.1,1)"]) is None
    problem = cli.check_overrides("transfer", ["cr=choice(0.5,2)"])
    assert problem is not None and "cr=2.0 is outside (0, 1]" in problem
    problem = cli.check_overrides("pretrain", ["optim=choice(lm,adamw)"])
    assert problem is not None and problem.startswith("unknown optim 'adamw'")


# --- a real study: 4 tiny pretrain trials, the 1e38 residual weight diverges --------------------
def test_optuna_study_marks_diverged_trials_failed_and_goes_on(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    study = tmp_path / "study"
    args = [
        "pretrain",
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.sampler.seed=0",  # trials 0, 2, 3 draw 1e38 (diverge), trial 1 draws 1
        "optim=adam",  # float32: the weighted loss overflows at the first step
        "pde.weights.residual=choice(1,1e38)",
        "optim.lr=tag(log,interval(1e-3,1e-1))",
        *tiny(tmp_path / "outputs"),
        f"hydra.sweep.dir={study}",
    ]
    proc = run_pinnkan(args, tmp_path, timeout=240)
    assert "Traceback" not in proc.stdout + proc.stderr, describe(proc)
    # the study completed: Optuna's summary with the best (good) trial
    result = OmegaConf.to_container(OmegaConf.load(study / "optimization_results.yaml"))
    assert result["name"] == "optuna", result
    assert result["best_params"]["pde.weights.residual"] == 1, result
    assert 1e-3 <= result["best_params"]["optim.lr"] <= 1e-1, result
    assert 0.0 < result["best_value"] < 10.0, result
    # Optuna was told FAIL for the diverged trials (run_stage returns None for them)
    assert "Failed experiment: Return value must be float-castable. Got 'None'." in proc.stdout
    jobs = sorted(p for p in study.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 4, describe(proc)
    bad = [p for p in jobs if "pde.weights.residual-1e+38" in p.name]
    good = [p for p in jobs if p not in bad]
    assert bad and good, [p.name for p in jobs]
    # pinnkan's own sweep summary: one line, exit status 1, failed.txt in each diverged job
    assert proc.returncode == 1, describe(proc)
    summary = [line for line in proc.stderr.splitlines() if "sweep job(s) failed" in line]
    assert len(summary) == 1, describe(proc)
    assert summary[0].startswith(f"pinnkan: error: {len(bad)} sweep job(s) failed (job ")
    assert "training diverged at step 1" in summary[0]
    assert sorted(d for d, _ in failures(study)) == bad
    assert all((p / "results.h5").is_file() for p in good + bad)  # diverged: status=diverged
