"""scripts/hard_benchmarks.py: its tables come back exactly from the raw JSONs, a hand-edited
block is caught by --check, and a run's results.h5 becomes its raw-data record."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, finished_pretrain

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "hard_benchmarks.py"


@pytest.fixture(scope="module")
def hb() -> Any:
    spec = importlib.util.spec_from_file_location("hard_benchmarks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(hb: Any, problem: str, seed: int, curve: list[float] | None) -> dict[str, Any]:
    """A raw-data record as run_all writes it; `curve` None: a run that failed."""
    rec: dict[str, Any] = {
        "schema": hb.SCHEMA,
        "problem": problem,
        "seed": seed,
        "command": f"python -m pinnkan.cli pretrain experiment={problem} seed={seed}",
        "returncode": 0 if curve else 1,
        "git_commit": "0123456789abcdef",
        "git_dirty": False,
        "machine": {"processor": "x86_64", "cpu_count": 2, "gpu": None},
        "threads": 2,
        "device_setting": "cpu",
    }
    if curve is None:
        rec["final"] = {"status": "failed"}
        rec["stderr_tail"] = "Traceback ...\nRuntimeError: out of luck"
        return rec
    rec["pde_params"] = {"nu": 0.0031830988618379067}
    rec["history"] = {"step": [1, 2, 3], "seconds": [1.0, 2.0, 3.0], "rel_l2": curve}
    rec["final"] = {
        "rel_l2": curve[-1],
        "n_trainable": 921,
        "train_seconds": 3.0 + seed,
        "status": "ok",
        "stop_reason": "max_seconds",
        "stop_reason_source": "inferred",
    }
    return rec


@pytest.fixture
def fixture_dir(hb: Any, tmp_path: Path) -> tuple[Path, Path, Path]:
    """Raw data (three Burgers seeds, one failed wave run) and a page with empty blocks."""
    out = tmp_path / "hard"
    out.mkdir()
    curves = {0: [0.5, 1e-3, 2e-3], 1: [0.5, 1e-3, 1e-3], 2: [0.5, 3e-4, 4e-3]}
    for seed, curve in curves.items():
        rec = _record(hb, "burgers_classic", seed, curve)
        (out / f"burgers_classic_seed{seed}.json").write_text(json.dumps(rec))
    (out / "wave_c2_seed0.json").write_text(json.dumps(_record(hb, "wave_c2", 0, None)))
    doc = tmp_path / "page.md"
    doc.write_text(
        f"# Page\n\n{hb.TABLE[0]}\n{hb.TABLE[1]}\n\ntext\n\n{hb.REFS[0]}\n{hb.REFS[1]}\n"
    )
    return out, doc, tmp_path / "img" / "curves.png"


def _args(out: Path, doc: Path, img: Path) -> list[str]:
    return ["--out", str(out), "--doc", str(doc), "--img", str(img)]


def test_tables_regenerate_exactly_what_they_wrote(hb: Any, fixture_dir: tuple) -> None:
    out, doc, img = fixture_dir
    assert hb.main(["--tables", *_args(out, doc, img)]) == 0
    text = doc.read_text()
    assert img.is_file()
    assert hb.regenerated(doc, out, img) == text
    assert hb.main(["--check", *_args(out, doc, img)]) == 0
    row = next(line for line in text.splitlines() if line.startswith("| burgers_classic |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # final rel. L2: median and range of 2e-3, 1e-3, 4e-3; the median misses the 1e-3 mark
    assert cells[3] == "2.00e-03 [1.00e-03–4.00e-03]"
    assert cells[4] == "6.70e-04" and cells[6] == "1.00e-03" and cells[7] == "no"
    assert cells[8] == "1.00e-03 [3.00e-04–1.00e-03]"  # best along the curve
    assert cells[9] == "4" and cells[10] == "921" and cells[11] == "max_seconds (inferred)"
    assert "| wave_c2 | – | 0 (1 failed) |" in text
    assert "wave_c2 seed 0: failed, exit 1: `RuntimeError: out of luck`" in text
    assert "| elliptic_floor | – | not run |" in text
    assert text.endswith(f"{hb.REFS[0]}\n{hb.REFS[1]}\n")  # no references.json: left alone


def test_check_exits_nonzero_on_a_hand_edited_block(hb: Any, fixture_dir: tuple) -> None:
    out, doc, img = fixture_dir
    hb.main(["--tables", *_args(out, doc, img)])
    doc.write_text(doc.read_text().replace("2.00e-03 [", "1.50e-03 [", 1))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", *_args(out, doc, img)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "differs" in proc.stdout


def test_references_block_is_regenerated_from_its_json(hb: Any, fixture_dir: tuple) -> None:
    out, doc, img = fixture_dir
    check = {"reference": "Burgers", "setting": "200 nodes", "against": "400 nodes"}
    data = {
        "git_commit": "abc",
        "date": "d",
        "checks": [{**check, "grid": "9×9", "max_abs_diff": 1e-15}],
    }
    (out / "references.json").write_text(json.dumps(data))
    hb.main(["--tables", *_args(out, doc, img)])
    assert "| Burgers | 200 nodes | 400 nodes | 9×9 | 1.00e-15 |" in doc.read_text()
    assert hb.main(["--check", *_args(out, doc, img)]) == 0


def test_command_omits_the_budget_without_seconds(hb: Any, tmp_path: Path) -> None:
    cmd = hb.command("wave_c2", 1, None, tmp_path, 2, None)
    assert "experiment=wave_c2" in cmd and "seed=1" in cmd and "threads=2" in cmd
    assert not any(c.startswith("train.max_seconds") for c in cmd)
    assert f"hydra.run.dir={tmp_path / 'wave_c2_1'}" in cmd
    raw = hb.command("wave_c2", 1, 5.0, tmp_path, 2, ["pde=wave", "pde.source.c=2"])
    assert "pde=wave" in raw and "train.max_seconds=5" in raw
    assert not any(c.startswith("experiment=") for c in raw)


def test_read_run_of_a_two_step_pretrain(hb: Any, tmp_path: Path) -> None:
    overrides = [o for o in TINY if not o.startswith("train.steps=")]
    run_dir = finished_pretrain(tmp_path, "pde=elliptic", "train.steps=2", *overrides)
    results = run_dir / "results.h5"
    rec = hb.run_record("elliptic_tiny", 0, ["pinnkan"], None, 1.5, 0, "", "", results, {})
    json.dumps(rec)  # plain JSON
    h, f = rec["history"], rec["final"]
    assert h["step"] == [1, 2]
    assert {"seconds", "loss", "rel_l2", "heldout_loss"} <= set(h)  # optim=lm: held-out loss
    assert len({len(v) for v in h.values()}) == 1
    assert f["rel_l2"] == pytest.approx(rec["metrics"]["rel_l2"])
    assert f["status"] == "ok" and f["steps_done"] == 2 and f["n_trainable"] > 0
    assert (f["stop_reason"], f["stop_reason_source"]) == ("steps", "recorded")  # results.h5
    assert rec["pde"] == "elliptic" and rec["pde_params"]["mu"] == 1.0
    assert "stderr_tail" not in rec
    failed = hb.run_record("x", 0, ["pinnkan"], 5.0, 1.0, 2, "out", "bad\n", tmp_path / "no", {})
    assert failed["final"] == {"status": "failed"} and failed["stderr_tail"] == "bad\n"


def test_the_committed_page_is_generated_from_the_committed_data() -> None:
    """docs/hard_benchmarks.md's table and references blocks equal what docs/hard/ regenerates
    (a number typed into a block by hand, or data changed without --tables, fails here)."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
