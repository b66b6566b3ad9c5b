"""Faults at the edges (issue 15): writes that fail (full disk, size limit, a file in the way),
every command fed an empty, truncated or foreign file, and two runs on one run directory.

Each CLI case asserts the exit status, a single `pinnkan: error:` line without traceback, and
what is (not) left on disk. Full disks are real where possible: a file-size limit
(RLIMIT_FSIZE, any Linux) and, when this user may mount one, a small tmpfs.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from pinnkan import cli
from pinnkan.common.atomic import WriteFailed
from pinnkan.io.checkpoint import (
    MODEL_FILE,
    MODEL_FORMAT,
    STATE_FILE,
    load_checkpoint,
    save_checkpoint,
)
from pinnkan.io.results import RESULTS_FILE, read_results
from pinnkan.run.lock import LOCK_FILE, RunDirBusy, acquire, locked_while_running, release
from pinnkan.run.merge import MERGED_FILE
from pinnkan.train.state import load_train_state
from tests.conftest import SourceRun, describe, finished_pretrain, run_pinnkan, start_pinnkan, tiny

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux faults")

# a few-second Adam run that checkpoints every 10 steps
QUICK = [
    "optim=adam",
    "train.steps=30",
    "train.checkpoint_every=10",
    "train.n_interior=32",
    "train.n_boundary=8",
    "eval.n=9",
    "model.hidden=[4]",
    "train.progress=none",
]


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The process failed with status 2 and exactly one `pinnkan: error:` line on stderr."""
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pinnkan: error: "), describe(proc)
    for needle in needles:
        assert needle in lines[0], describe(proc)
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic writes left in `folder` (there must be none)."""
    return sorted(p.name for p in folder.rglob(".*.tmp-*"))


def limit_file_size(nbytes: int) -> Callable[[], None]:
    """A preexec_fn: writes past `nbytes` per file fail with EFBIG ("File too large")."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


@contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """The same limit in this process, for the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at `path` (skips the test where this user may not mount one)."""
    path.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mount.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write a file into `folder` until its disk is full."""
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


# --- writes that fail ----------------------------------------------------------------------------
def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / MODEL_FILE
    save_checkpoint(path, MODEL_FORMAT, {"v": 1}, {"w": torch.zeros(4)})
    before = path.read_bytes()
    with file_size_limit(20000), pytest.raises(WriteFailed) as info:
        save_checkpoint(path, MODEL_FORMAT, {"v": 2}, {"w": torch.zeros(100000)})
    msg = str(info.value)
    assert msg.startswith(f"cannot write {path}: File too large") and "\n" not in msg
    assert path.read_bytes() == before and load_checkpoint(path, MODEL_FORMAT)[0]["v"] == 1
    assert leftovers(tmp_path) == []


def test_h5py_and_png_write_failures_are_one_line(tmp_path: Path) -> None:
    """h5py and matplotlib wrap the OS error in their own text; the line names the OS error."""
    import h5py
    from matplotlib.figure import Figure

    from pinnkan.common.atomic import atomic_replace
    from pinnkan.io.plots import save_png

    with file_size_limit(20000):
        with pytest.raises(WriteFailed, match="File too large$"):
            with atomic_replace(tmp_path / "x.h5") as tmp, h5py.File(tmp, "w") as f:
                f["x"] = np.zeros(100000)
        fig = Figure(figsize=(8, 8))
        fig.add_subplot().imshow(np.random.default_rng(0).random((300, 300)))
        with pytest.raises(WriteFailed, match="File too large"):
            save_png(fig, tmp_path / "fields.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_run_whose_disk_fills_keeps_its_checkpoint_and_resumes(tmp_path: Path) -> None:
    """The plots (the first file past 20 kB) cannot be written: one line naming the file and
    the intact checkpoint; no results.h5, no temporaries; a resume without the limit ends ok."""
    run_dir = tmp_path / "run"
    args = ["pretrain", *QUICK, f"outputs_root={tmp_path}", f"hydra.run.dir={run_dir}"]
    proc = run_pinnkan(args, tmp_path, preexec_fn=limit_file_size(20000))
    line = one_error_line(proc, "cannot write", "File too large", "step 30", "resume=")
    assert ".png" in line
    assert not (run_dir / RESULTS_FILE).exists() and leftovers(run_dir) == []
    assert load_train_state(run_dir / STATE_FILE)[1].step == 30
    proc = run_pinnkan(["pretrain", f"resume={run_dir}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert read_results(run_dir / RESULTS_FILE)["attrs"]["status"] == "ok"


def test_a_run_that_cannot_write_its_first_checkpoint_leaves_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "out" / "run"
    args = ["pretrain", *QUICK, f"outputs_root={tmp_path}", f"hydra.run.dir={run_dir}"]
    proc = run_pinnkan(args, tmp_path, preexec_fn=limit_file_size(8000))
    one_error_line(proc, f"cannot write {run_dir / STATE_FILE}", "no checkpoint was written")
    assert not (tmp_path / "out").exists()  # the refused run's directory is gone again


def test_a_disk_that_is_full_at_the_start_refuses_the_run(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        proc = run_pinnkan(["pretrain", *QUICK, f"outputs_root={disk}"], tmp_path)
        one_error_line(proc, "is full", "MB free")
        assert list(disk.iterdir()) == []


def test_a_disk_that_fills_mid_run_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    """A real ENOSPC: another writer fills the disk while the run trains."""
    with tmpfs(tmp_path / "disk", "16m") as disk:
        run_dir = disk / "run"
        args = ["pretrain", *QUICK, "train.steps=100000", "train.checkpoint_every=5"]
        proc = start_pinnkan([*args, f"outputs_root={disk}", f"hydra.run.dir={run_dir}"], disk)
        deadline = time.monotonic() + 60
        while not (run_dir / STATE_FILE).exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        filler = fill(disk)
        out, err = proc.communicate(timeout=60)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        one_error_line(done, "No space left on device", "last complete checkpoint", "resume=")
        assert leftovers(run_dir) == [] and not (run_dir / RESULTS_FILE).exists()
        step = load_train_state(run_dir / STATE_FILE)[1].step
        assert step >= 5
        filler.unlink()


def test_report_and_merge_outputs_that_cannot_be_written(
    tmp_path: Path, source_run: SourceRun, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert cli.main(["report", str(source_run.run_dir), "--out", str(blocker / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the report" in err[0] and "is a file" in err[0]
    transfer = _transfer_run(tmp_path, source_run)
    assert cli.main(["merge", str(transfer), "--out", str(blocker / "m.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pinnkan: error: cannot write {blocker}")
    assert blocker.read_text() == "x"


# --- every command fed a broken file -------------------------------------------------------------
def _transfer_run(tmp_path: Path, source_run: SourceRun) -> Path:
    """A finished LoTRA transfer from `source_run` in tmp_path/transfer."""
    transfer = tmp_path / "transfer"
    proc = run_pinnkan(
        ["transfer", *tiny(source_run.outputs_root), f"source={source_run.run_dir}"]
        + [f"hydra.run.dir={transfer}"],
        tmp_path,
    )
    assert proc.returncode == 0, describe(proc)
    return transfer


def _broken(kind: str, good: Path, folder: Path) -> Path:
    """A file where a pinnkan file is expected: empty, truncated, text, HDF5, other pinnkan."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.safetensors"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "text":
        path.write_text("hello, not a model\n")
    elif kind == "hdf5":
        shutil.copy(good.parent / RESULTS_FILE, path)
    else:  # a torch file of another program
        torch.save({"weights": torch.zeros(3)}, path)
    return path


REASONS = {
    "empty": "is empty (0 bytes)",
    "truncated": "truncated or damaged",
    "text": "not a pinnkan file",
    "hdf5": "HDF5 file",
    "foreign": "a torch file of another program",
}


@pytest.mark.parametrize("kind", list(REASONS))
def test_transfer_source_that_is_no_model(tmp_path: Path, source_run: SourceRun, kind: str) -> None:
    bad = _broken(kind, source_run.run_dir / MODEL_FILE, tmp_path / "files")
    root = tmp_path / "outputs"
    proc = run_pinnkan(["transfer", *tiny(root), f"source={bad}"], tmp_path)
    one_error_line(proc, str(bad), REASONS[kind])
    assert not root.exists()  # the refused run left no directory behind


@pytest.mark.parametrize("kind", list(REASONS))
def test_merge_fed_broken_files(
    tmp_path: Path, source_run: SourceRun, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _broken(kind, source_run.run_dir / MODEL_FILE, tmp_path)
    for args in ([str(bad)], [str(bad), "--out", str(tmp_path / "m.safetensors")]):
        assert cli.main(["merge", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(bad) in err[0] and REASONS[kind] in err[0], err
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / MERGED_FILE).exists()


def test_merge_onto_a_broken_base(
    tmp_path: Path, source_run: SourceRun, capsys: pytest.CaptureFixture[str]
) -> None:
    transfer = _transfer_run(tmp_path, source_run)
    for kind, reason in REASONS.items():
        bad = _broken(kind, source_run.run_dir / MODEL_FILE, tmp_path / "files")
        assert cli.main(["merge", str(transfer), "--base", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(bad) in err[0] and reason in err[0], err
    assert not (transfer / MERGED_FILE).exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "foreign"])
def test_report_fed_a_broken_results_file(
    tmp_path: Path, source_run: SourceRun, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Named on the command line: one line, nothing written. Found in a sweep: its row says
    what is wrong with it, the other runs are reported."""
    good = source_run.run_dir / RESULTS_FILE
    run = tmp_path / "sweep" / "0"
    run.mkdir(parents=True)
    bad = run / RESULTS_FILE
    if kind == "truncated":
        bad.write_bytes(good.read_bytes()[:1000])
    elif kind == "foreign":
        import h5py

        with h5py.File(bad, "w") as f:
            f["x"] = np.zeros(3)
    else:
        shutil.copy(_broken(kind, source_run.run_dir / MODEL_FILE, tmp_path / "f"), bad)
    assert cli.main(["report", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0], err
    assert not (run / "report.csv").exists()
    shutil.copytree(source_run.run_dir, tmp_path / "sweep" / "1")
    assert cli.main(["report", str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable" in out and "1 ok" in out
    note = [ln for ln in out.splitlines() if ln.strip().startswith("0:")]
    want = {"empty": "empty", "truncated": "truncated", "text": "not an HDF5", "foreign": "no "}
    assert len(note) == 1 and want[kind] in note[0], out


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with no results.h5, as a run killed mid-training leaves it."""
    run_dir = finished_pretrain(tmp_path_factory.mktemp("killed"), *QUICK)
    (run_dir / RESULTS_FILE).unlink()
    return run_dir


@pytest.mark.parametrize("kind", list(REASONS))
def test_resume_from_a_broken_checkpoint(
    tmp_path: Path, killed_run: Path, source_run: SourceRun, kind: str
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(killed_run, run_dir)
    bad = _broken(kind, source_run.run_dir / MODEL_FILE, tmp_path / "files")
    shutil.copy(bad, run_dir / STATE_FILE)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    proc = run_pinnkan(["pretrain", f"resume={run_dir}"], tmp_path)
    one_error_line(proc, str(run_dir / STATE_FILE), REASONS[kind])
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before  # nothing rewritten, nothing removed


@pytest.mark.parametrize("content", ["", "a: [1,\n", "a: 1\n", "- 3\n"])
def test_resume_with_a_broken_overrides_file(
    tmp_path: Path, killed_run: Path, content: str
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(killed_run, run_dir)
    (run_dir / ".hydra" / "overrides.yaml").write_text(content)
    proc = run_pinnkan(["pretrain", f"resume={run_dir}"], tmp_path)
    one_error_line(proc, "overrides.yaml is damaged")


# --- two runs on one run directory ---------------------------------------------------------------
HOLDER = """
import sys, time
from pinnkan.run.lock import acquire
acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


@contextmanager
def held_by_other_process(run_dir: Path) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_lock_is_exclusive_reentrant_and_removed_on_release(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with held_by_other_process(run_dir) as holder:
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid} "):
            acquire(run_dir)
    # the holder was killed: its lock file stays, names it, and is taken over
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == holder.pid
    with locked_while_running(run_dir):
        acquire(run_dir)
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
        with locked_while_running(run_dir):  # the same process again: fine, still held after
            acquire(run_dir)
        assert (run_dir / LOCK_FILE).exists()
    assert not (run_dir / LOCK_FILE).exists()
    release(run_dir)  # not held: no-op


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_run_dir_in_use_is_refused_before_anything_is_written(
    tmp_path: Path, sweep: bool
) -> None:
    run_dir = tmp_path / "busy"
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    with held_by_other_process(run_dir) as holder:
        args = ["pretrain", *(["-m"] if sweep else []), *QUICK, f"outputs_root={tmp_path}"]
        proc = run_pinnkan([*args, f"{key}={run_dir}"], tmp_path)
        one_error_line(proc, str(run_dir), "in use by another pinnkan run", f"pid {holder.pid}")
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]


def test_a_second_run_cannot_touch_a_training_run_and_a_killed_one_is_taken_over(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    first = start_pinnkan(
        ["pretrain", *QUICK, "train.steps=100000", f"outputs_root={tmp_path}"]
        + [f"hydra.run.dir={run_dir}"],
        tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / STATE_FILE).exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        hydra_files = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
        for args in (
            ["pretrain", "seed=7", "train.steps=1", f"hydra.run.dir={run_dir}"],
            ["pretrain", f"resume={run_dir}"],
        ):
            proc = run_pinnkan(args, tmp_path)
            one_error_line(proc, "in use by another pinnkan run", f"pid {first.pid} ")
        assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == hydra_files
        assert first.poll() is None  # the first run trains on, untouched
    finally:
        first.kill()
        first.wait()
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == first.pid  # stale now
    proc = run_pinnkan(["pretrain", *QUICK, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "stale lock" in proc.stdout + proc.stderr and f"pid {first.pid} " in proc.stdout
    assert not (run_dir / LOCK_FILE).exists()
    assert read_results(run_dir / RESULTS_FILE)["attrs"]["status"] == "ok"


# --- memory --------------------------------------------------------------------------------------
CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:127] . DefaultCPUAllocator: can't allocate memory: you "
    "tried to allocate 8000000000 bytes. Error code 12 (Cannot allocate memory)"
)


@pytest.mark.parametrize("optim", ["adam", "lm"])
def test_a_step_out_of_memory_is_one_line_with_a_checkpoint_that_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optim: str
) -> None:
    """The allocator fails in step 13 (after the step-10 checkpoint): the state before step 13
    is checkpointed, and a resume from it ends with the numbers of an uninterrupted run."""
    from pinnkan.errors import PinnkanError
    from pinnkan.run import runner
    from pinnkan.train import first_order
    from pinnkan.train.levenberg_marquardt import LevenbergMarquardt
    from tests.conftest import tiny_config

    changes = {"train.steps": 20, "train.eval_every": 5, "train.checkpoint_every": 5}
    own = {"lr": 0.01} if optim == "adam" else {"resample_every": 3}  # each optimizer's own
    changes["optim"] = {"name": optim, **own}
    cfg = tiny_config(tmp_path, changes)
    reference = runner.pretrain(cfg, tmp_path / "reference")

    # called once per step, inside the step
    owner, name = (
        (first_order, "loss_and_backward") if optim == "adam" else (LevenbergMarquardt, "propose")
    )
    real, calls = getattr(owner, name), {"n": 0}

    def starved(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:
            raise RuntimeError(CPU_OOM)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, starved)
    run_dir = tmp_path / "run"
    with pytest.raises(PinnkanError) as info:
        runner.pretrain(cfg, run_dir)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("out of memory at step 13 (DefaultCPUAllocator")
    assert "checkpoint at step 12" in msg and f"resume={run_dir}" in msg
    monkeypatch.undo()
    assert load_train_state(run_dir / STATE_FILE)[1].step == 12
    resumed = runner.pretrain({**cfg, "resume": str(run_dir)}, run_dir)
    assert resumed.metrics["rel_l2"] == reference.metrics["rel_l2"]
    assert list(resumed.history["loss"]) == list(reference.history["loss"])


@pytest.mark.parametrize("stage", ["pretrain", "transfer"])
def test_a_config_that_cannot_fit_is_refused_before_training(
    tmp_path: Path, source_run: SourceRun, stage: str
) -> None:
    """A whole Jacobian of 10^8 rows (optim.solve=kernel; the default P x P form holds one
    chunk of it) needs terabytes: refused in one line naming N, P and the estimate, before
    any point is sampled (fast) and without a run directory."""
    root = tmp_path / "outputs"
    args = [
        stage,
        "train.n_interior=100000000",
        f"outputs_root={root}",
        "model.hidden=[4]",
        "model=bspline",
    ]
    args.append("optim.solve=kernel")
    if stage == "transfer":
        args.append(f"source={source_run.run_dir}")
    t0 = time.monotonic()
    proc = run_pinnkan(args, tmp_path)
    line = one_error_line(proc, "a training step needs about", "N=1000", "TB", "available on cpu")
    assert "train.check_memory=false" in line and time.monotonic() - t0 < 60
    assert not root.exists()


AS_LIMIT = """
import resource, sys
import torch
from pinnkan import cli
vm = next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status") if ln.startswith("VmSize"))
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (vm + int(1.5e9), hard))
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("check", [True, False], ids=["estimate", "genuine"])
def test_an_address_space_limit_is_seen_and_a_genuine_oom_is_one_line(
    tmp_path: Path, check: bool
) -> None:
    """1.5 GB of address space left: the estimate (about 6.5 GB) is refused; with the check
    off, the allocator's own failure in step 1 ends the same way, without a traceback. The
    Gram matrix alone (3.9 GB for P = 22 032) is beyond the limit; a config near it (the
    B-spline [32,32], 1.6 GB since the in-place factor) can pass step 1 on some hosts and fail
    later, as it did in CI."""
    args = ["pretrain", "train.n_interior=40000", "model=bspline", "model.hidden=[48,48]"]
    args += ["train.progress=none"]
    args += [f"outputs_root={tmp_path / 'o'}", f"train.check_memory={str(check).lower()}"]
    proc = subprocess.run(
        [sys.executable, "-c", AS_LIMIT, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        one_error_line(proc, "a training step needs about", "GB is available on cpu")
    else:
        one_error_line(proc, "out of memory at step 1 (DefaultCPUAllocator", "no checkpoint")
    assert not (tmp_path / "o").exists()
