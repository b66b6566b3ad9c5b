"""Shared helpers for the CLI tests: run `pinnkan` in a subprocess, tiny overrides, one source."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pinnkan.run.config import set_dotted as set_path  # tests import it from here

# Overrides that make one run take a few seconds: 3 Adam steps on a [dim, 4, 1] B-spline KAN
# (the kind the CLI tests count coefficients of), 9x9 grid.
TINY: list[str] = [
    "model=bspline",
    "train.steps=3",
    "train.n_interior=64",
    "train.n_boundary=16",
    "train.eval_every=1",
    "eval.n=9",
    "model.hidden=[4]",
]


def tiny_config(outputs_root: Path, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A plain config dict for the Hydra-free `runner` stages: a few Adam steps of a small
    elliptic KAN; `changes` maps dotted paths (e.g. "train.steps") to values."""
    cfg: dict[str, Any] = {
        "seed": 0,
        "precision": "float32",
        "device": "cpu",
        "outputs_root": str(outputs_root),
        "pde": {"name": "elliptic", "source": {"mu": 1.0}, "weights": {}},
        "model": {"name": "bspline", "hidden": [4], "grid_size": 3},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {
            "steps": 3,
            "n_interior": 32,
            "n_boundary": 8,
            "eval_every": 1,
            "progress": "none",
        },
        "eval": {"n": 9},
    }
    for path, value in (changes or {}).items():
        set_path(cfg, path, value)
    return cfg


def lm_transfer_config(tmp_path: Path) -> dict[str, Any]:
    """The config of a transfer from a tiny float64 LM pretrain run in tmp_path/source."""
    from pinnkan.run import runner  # the stages, only for the tests that train

    cfg = tiny_config(tmp_path, {"optim": {"name": "lm"}, "train.steps": 6})
    cfg["precision"] = "float64"
    runner.pretrain(cfg, tmp_path / "source")
    return {**cfg, "train": dict(cfg["train"]), "source": str(tmp_path / "source")}


def finished_pretrain(base: Path, *args: str) -> Path:
    """`pinnkan pretrain <args>` writing into base/run (outputs under base), which must finish."""
    run_dir = base / "run"
    proc = run_pinnkan(
        ["pretrain", *args, f"outputs_root={base}", f"hydra.run.dir={run_dir}"], base
    )
    assert proc.returncode == 0, describe(proc)
    return run_dir


def tiny(outputs_root: Path, *extra: str) -> list[str]:
    """TINY plus an explicit `outputs_root=` and any extra overrides."""
    return [*TINY, f"outputs_root={outputs_root}", *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TORCH_NUM_THREADS="1",
        MPLBACKEND="Agg",
    )
    return env


def start_pinnkan(args: list[str], cwd: Path) -> subprocess.Popen:
    """Start `python -m pinnkan.cli *args` without waiting (for tests that signal it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pinnkan.cli", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_pinnkan(
    args: list[str],
    cwd: Path,
    timeout: float = 120,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """Run `python -m pinnkan.cli *args` in `cwd` with one thread; capture text output.
    `preexec_fn` runs in the child before pinnkan (e.g. to set resource limits)."""
    return subprocess.run(
        [sys.executable, "-m", "pinnkan.cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=preexec_fn,
    )


def describe(proc: subprocess.CompletedProcess) -> str:
    """Exit code and output of a finished call, for assertion messages."""
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


@dataclass(frozen=True)
class SourceRun:
    """A finished tiny elliptic pretrain run (`run_dir`) under its own `outputs_root`."""

    run_dir: Path
    outputs_root: Path


@pytest.fixture(scope="session")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> SourceRun:
    """Pretrain one tiny elliptic source once per session; share it, never write into it."""
    base = tmp_path_factory.mktemp("source")
    root = base / "outputs"
    run_dir = root / "pretrain" / "elliptic" / "src"
    proc = run_pinnkan(
        ["pretrain", "pde=elliptic", *tiny(root), f"hydra.run.dir={run_dir}"], cwd=base
    )
    assert proc.returncode == 0, describe(proc)
    assert (run_dir / "model.safetensors").is_file(), describe(proc)
    assert (run_dir / "results.h5").is_file(), describe(proc)
    return SourceRun(run_dir=run_dir, outputs_root=root)
