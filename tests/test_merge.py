"""Adapter files know their base: `pinnkan merge` rebuilds the transfer's model exactly on the
recorded base and refuses any other base in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pinnkan.adapters import ADAPTER_FILE
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import MODEL_FILE, MODEL_FORMAT, load_checkpoint
from pinnkan.run import runner
from pinnkan.run.merge import merge_adapter
from tests.conftest import SourceRun, describe, run_pinnkan, tiny, tiny_config


@pytest.fixture(scope="module")
def lotra_run(source_run: SourceRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("lotra")
    run_dir = base / "run"
    proc = run_pinnkan(
        [
            "transfer",
            *tiny(source_run.outputs_root),
            f"source={source_run.run_dir}",
            "adapter.layers=[lotra,full]",
            "optim=adam",  # every step moves the weights (3 LM trials may all be rejected)
            f"hydra.run.dir={run_dir}",
        ],
        base,
    )
    assert proc.returncode == 0, describe(proc)
    return run_dir


def test_merge_on_the_recorded_base_gives_the_transfer_model(lotra_run: Path) -> None:
    _, merged = merge_adapter(lotra_run)
    _, want = load_checkpoint(lotra_run / MODEL_FILE, MODEL_FORMAT)
    assert set(merged) == set(want)
    for key in want:
        torch.testing.assert_close(merged[key], want[key], rtol=0, atol=1e-6)
    # layer 1 was fine-tuned in full: it must come from the adapter file, not the base
    _, base = load_checkpoint(Path(_base_of(lotra_run)), MODEL_FORMAT)
    assert not torch.equal(merged["layers.1.A"], base["layers.1.A"])


def _base_of(run: Path) -> str:
    meta, _ = load_checkpoint(run / ADAPTER_FILE, "pinnkan-adapter/1")
    return meta["base_source"]


def _pretrain(run_dir: Path, pde: str = "elliptic", seed: int = 0, hidden: int = 4) -> Path:
    """A tiny pretrain run in-process with the network spec of the CLI's tiny runs."""
    changes = {"seed": seed, "pde.name": pde, "pde.source": {}, "model.hidden": [hidden]}
    cfg = tiny_config(run_dir.parent, {**changes, "model.grid_size": 5, "train.n_interior": 64})
    runner.pretrain(cfg, run_dir)
    return run_dir


def test_merge_refuses_another_base(lotra_run: Path, tmp_path: Path) -> None:
    with pytest.raises(PinnkanError, match="different base model"):
        merge_adapter(lotra_run, _pretrain(tmp_path / "other", seed=7))
    with pytest.raises(PinnkanError, match="trained on a network"):
        merge_adapter(lotra_run, _pretrain(tmp_path / "wide", hidden=5))
    with pytest.raises(PinnkanError, match="belongs to pde=elliptic"):
        merge_adapter(lotra_run, _pretrain(tmp_path / "parabolic", pde="parabolic"))


def test_merge_command(lotra_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged.safetensors"
    proc = run_pinnkan(["merge", str(lotra_run), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, describe(proc)
    meta, _ = load_checkpoint(out, MODEL_FORMAT)
    assert meta["stage"] == "merge" and meta["pde"] == "elliptic"
    proc = run_pinnkan(["merge", str(lotra_run), "--base", str(tmp_path / "missing")], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("pinnkan: error:") and "Traceback" not in proc.stderr
