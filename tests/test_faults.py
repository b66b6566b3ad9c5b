"""Runs that survive faults: real `pinnkan pretrain` processes killed (SIGKILL, SIGINT, SIGTERM)
mid-training and mid-write, then resumed and compared with an uninterrupted run; a NaN loss."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from pinnkan.common.atomic import unwritable_dir
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import STATE_FILE
from pinnkan.io.results import RESULTS_FILE, read_results
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run import runner
from pinnkan.train.state import load_train_state
from tests.conftest import describe, finished_pretrain, run_pinnkan, start_pinnkan, tiny_config

# long enough to be caught mid-training (a few ms per step), checkpoints often
SETTINGS = {
    "pde": "elliptic",
    "train.steps": "500",
    "train.n_interior": "32",
    "train.n_boundary": "8",
    "train.eval_every": "50",
    "train.checkpoint_every": "20",
    "eval.n": "9",
    "model.hidden": "[4]",
    "train.progress": "none",
}


def overrides(**changes: str) -> list[str]:
    return [f"{k}={v}" for k, v in {**SETTINGS, **changes}.items()]


LONG = overrides()


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else -1


def _wait_for(path: Path, proc: subprocess.Popen, newer_than: int = -1, timeout: float = 60.0):
    """Until `proc` (still running) writes `path` anew: its training loop is under way."""
    end = time.monotonic() + timeout
    while _mtime(path) <= newer_than:
        assert proc.poll() is None, f"finished before {path.name} appeared: {proc.communicate()}"
        assert time.monotonic() < end, f"{path} was not written"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run every resumed one is compared with."""
    run_dir = finished_pretrain(tmp_path_factory.mktemp("reference"), *LONG)
    assert not (run_dir / STATE_FILE).exists()  # a finished run keeps no resumable state
    return read_results(run_dir / RESULTS_FILE)


def _same_numbers(got: dict, want: dict) -> None:
    assert got["attrs"]["status"] == "ok"
    for key in ("rel_l2", "max_abs_error"):
        assert got["metrics"][key] == pytest.approx(want["metrics"][key], rel=1e-9, abs=0)
    assert list(got["history"]["step"]) == list(want["history"]["step"])
    assert got["history"]["loss"] == pytest.approx(want["history"]["loss"], rel=1e-9)


def test_sigkill_mid_training_then_resume_matches(tmp_path: Path, reference: dict) -> None:
    run_dir = tmp_path / "run"
    args = ["pretrain", *LONG, f"outputs_root={tmp_path}", f"hydra.run.dir={run_dir}"]
    proc = start_pinnkan(args, tmp_path)
    _wait_for(run_dir / STATE_FILE, proc)
    time.sleep(0.3)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / RESULTS_FILE).exists()
    meta, state = load_train_state(run_dir / STATE_FILE)  # whole and loadable
    assert 0 < state.step < 500
    done = run_pinnkan(["pretrain", f"resume={run_dir}"], tmp_path)
    assert done.returncode == 0, describe(done)
    assert f"resuming {run_dir}" in done.stderr + done.stdout
    _same_numbers(read_results(run_dir / RESULTS_FILE), reference)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_marks_interrupted_and_resumes(
    tmp_path: Path, reference: dict, sig: int, code: int
) -> None:
    run_dir = tmp_path / "run"
    args = ["pretrain", *LONG, f"outputs_root={tmp_path}", f"hydra.run.dir={run_dir}"]
    proc = start_pinnkan(args, tmp_path)
    _wait_for(run_dir / STATE_FILE, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "resume=" in err and "Traceback" not in err
    partial = read_results(run_dir / RESULTS_FILE)
    assert partial["attrs"]["status"] == "interrupted"
    steps_done = partial["metrics"]["steps_done"]
    assert 0 < steps_done < 500
    assert torch.isfinite(torch.as_tensor(partial["fields"]["u_pred"])).all()
    _, state = load_train_state(run_dir / STATE_FILE)
    assert state.step == steps_done  # the checkpoint is of the step the signal ended
    done = run_pinnkan(["pretrain", f"resume={run_dir}"], tmp_path)
    assert done.returncode == 0, describe(done)
    _same_numbers(read_results(run_dir / RESULTS_FILE), reference)


def test_sigkill_during_checkpoint_writes_never_corrupts(tmp_path: Path) -> None:
    """Checkpoints every step, killed three times at different moments: each time the
    checkpoint on disk loads, and the run still finishes with the reference numbers."""
    every_step = overrides(**{"train.checkpoint_every": "1", "train.steps": "300"})
    ref_dir = tmp_path / "ref"
    ref = run_pinnkan(
        ["pretrain", *every_step, f"outputs_root={tmp_path}", f"hydra.run.dir={ref_dir}"], tmp_path
    )
    assert ref.returncode == 0, describe(ref)
    run_dir = tmp_path / "run"
    args = ["pretrain", *every_step, f"outputs_root={tmp_path}", f"hydra.run.dir={run_dir}"]
    steps = []
    for delay in (0.05, 0.13, 0.29):
        before = _mtime(run_dir / STATE_FILE)
        proc = start_pinnkan(args, tmp_path)
        _wait_for(run_dir / STATE_FILE, proc, newer_than=before)
        time.sleep(delay)
        proc.kill()
        proc.communicate()
        _, state = load_train_state(run_dir / STATE_FILE)
        steps.append(state.step)
        args = ["pretrain", f"resume={run_dir}"]
    assert steps == sorted(steps) and steps[0] > 0
    done = run_pinnkan(args, tmp_path)
    assert done.returncode == 0, describe(done)
    assert not list(run_dir.glob(".*.tmp-*"))  # leftovers of killed writes are cleaned up
    _same_numbers(read_results(run_dir / RESULTS_FILE), read_results(ref_dir / RESULTS_FILE))


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from pathlib import Path
    from pinnkan.io.results import RunResult, write_results
    path = Path(sys.argv[1])
    n = 0
    while True:
        n += 1
        u = np.full((300, 300), float(n))
        write_results(path, RunResult(
            stage="pretrain", pde="elliptic", pde_params={"mu": 1.0}, seed=0, config_yaml="",
            coords=["x", "y"], grid={"x": np.zeros(300), "y": np.zeros(300)},
            u_pred=u, u_ref=u, history={k: np.zeros(3) for k in ("step", "seconds", "loss",
            "rel_l2")}, metrics={"rel_l2": 0.0, "max_abs_error": 0.0, "n_trainable": 1,
            "n_total": 1, "train_seconds": 0.0, "steps": n}))
        print(n, flush=True)
    """
)


def test_sigkill_mid_results_write_leaves_the_last_complete_file(tmp_path: Path) -> None:
    """A process rewriting results.h5 in a loop, killed at arbitrary moments: the file on disk
    is always a complete earlier version, never a torn one."""
    path = tmp_path / RESULTS_FILE
    for delay in (0.9, 1.3, 1.7):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        while not path.exists():
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        time.sleep(delay)
        proc.kill()
        out, _ = proc.communicate()
        written = [int(line) for line in out.split()]
        res = read_results(path)
        n = res["metrics"]["steps"]
        assert (res["fields"]["u_pred"] == float(n)).all()
        assert not written or n >= written[-1]  # at least the last one it reported done


def _tiny_cfg(tmp: Path) -> dict:
    every5 = {"train.steps": 30, "train.eval_every": 5, "train.checkpoint_every": 5}
    return tiny_config(tmp, {**every5, "pde.weights.boundary": 10.0})


def test_nan_loss_stops_with_diverged_status_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = PinnLoss.__call__
    calls = {"n": 0}

    def poisoned(self, model, batch):
        calls["n"] += 1
        loss = real(self, model, batch)
        return loss * float("nan") if calls["n"] == 13 else loss

    monkeypatch.setattr(PinnLoss, "__call__", poisoned)
    run_dir = tmp_path / "run"
    with pytest.raises(PinnkanError) as info:
        runner.pretrain(_tiny_cfg(tmp_path), run_dir)
    msg = str(info.value)
    assert "diverged at step 13" in msg and "optim.lr" in msg and "float64" in msg
    assert "last good checkpoint: step 10" in msg and "\n" not in msg
    res = read_results(run_dir / RESULTS_FILE)
    assert res["attrs"]["status"] == "diverged"
    assert res["fields"] == {}  # no NaN field written as a result
    assert "rel_l2" not in res["metrics"] and res["metrics"]["diverged_at_step"] == 13
    _, state = load_train_state(run_dir / STATE_FILE)
    assert state.step == 10
    assert all(torch.isfinite(t).all() for t in state.model.values() if t.is_floating_point())
    assert not (run_dir / "model.safetensors").exists()


def test_a_last_step_that_blows_up_the_network_is_diverged_not_ok(tmp_path: Path) -> None:
    """The loss is checked before each step, so the last step's blow-up used to escape: the
    run finished with status ok and rel. L2 nan. Plain gradient descent at lr 1 on a loss
    weighted 1e20 sends the float32 network to inf in one step."""
    cfg = tiny_config(
        tmp_path,
        {"optim": {"name": "gd", "lr": 1.0}, "train.steps": 1, "pde.weights.residual": 1e20},
    )
    with pytest.raises(PinnkanError, match=r"diverged at step 1 \(loss=nan\); lower optim\.lr"):
        runner.pretrain(cfg, tmp_path / "run")
    res = read_results(tmp_path / "run" / RESULTS_FILE)
    assert res["attrs"]["status"] == "diverged" and "rel_l2" not in res["metrics"]
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_resume_refuses_a_changed_config_and_a_finished_run(tmp_path: Path) -> None:
    cfg = _tiny_cfg(tmp_path)
    run_dir = tmp_path / "run"
    runner.pretrain(cfg, run_dir)
    with pytest.raises(PinnkanError, match="already finished"):
        runner.pretrain({**cfg, "resume": str(run_dir)}, run_dir)
    other = tmp_path / "other"
    with pytest.raises(PinnkanError, match="no checkpoint"):
        runner.pretrain({**cfg, "resume": str(other)}, other)


def test_cli_resume_errors_are_one_line(tmp_path: Path) -> None:
    proc = run_pinnkan(["pretrain", f"resume={tmp_path / 'nowhere'}"], tmp_path)
    assert proc.returncode == 2 and "not a pinnkan run directory" in proc.stderr
    proc = run_pinnkan(["pretrain", f"resume={tmp_path}", "seed=3"], tmp_path)
    assert proc.returncode == 2 and "takes no other overrides" in proc.stderr


# --- output directories that cannot be made ------------------------------------------------------
@pytest.mark.parametrize(
    "override", ["hydra.run.dir={f}/run", "outputs_root={f}", "hydra.sweep.dir={f}/sweep"]
)
def test_an_output_dir_that_cannot_be_created_is_one_line(tmp_path: Path, override: str) -> None:
    """A run directory below a file used to end in Hydra's NotADirectoryError traceback."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    args = ["pretrain", override.format(f=blocker), "train.steps=1"]
    if "sweep" in override:
        args.insert(1, "-m")
    proc = run_pinnkan(args, tmp_path)
    assert proc.returncode == 2, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, describe(proc)
    assert lines[0].startswith("pinnkan: error: cannot create ") and "is a file" in lines[0]
    assert blocker.read_text() == "not a directory"


def test_the_default_outputs_dir_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "outputs").write_text("a file where the runs would go")
    proc = run_pinnkan(["pretrain", "train.steps=1"], tmp_path)
    assert proc.returncode == 2, describe(proc)
    assert proc.stderr.strip() == (
        f"pinnkan: error: cannot create the runs' directory outputs/: {tmp_path / 'outputs'} "
        "is a file, not a directory; pass outputs_root="
    )


def test_unwritable_dir_names_the_blocking_ancestor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert unwritable_dir(tmp_path / "new" / "deeper") is None
    monkeypatch.setattr("os.access", lambda path, mode: False)  # as a non-root user on 0o555
    assert unwritable_dir(tmp_path / "new") == f"{tmp_path} is not writable"
