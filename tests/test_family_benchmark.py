"""scripts/family_benchmark.py and scripts/tolerance_calibration.py: the tables come from the
raw JSONs (the committed pages match their data), savings are computed per seed from totals
that include the pretrain, and the tolerance table reads the first crossing of each tol."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from pinnkan.train.lm_loop import TRANSFER_DAMPING

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fb() -> Any:
    return _load("family_benchmark")


def _rec(strategy: str, seed: int, seconds: list[float], errors: list[float], pre: float | None):
    members = [
        {"train_seconds": s, "rel_l2": e, "reached": e <= 1e-4, "bytes_stored": 100}
        | {"layer_modes": ["full", "lotra", "full"]}  # LoTRA's default since the edge-layer change
        for s, e in zip(seconds, errors)
    ]
    return {
        "family": "elliptic",
        "strategy": strategy,
        "seed": seed,
        "damping_rule": "nielsen",
        "transfer_damping": TRANSFER_DAMPING,
        "wall_seconds": sum(seconds) + 5,
        "pretrain": None if pre is None else {"train_seconds": pre, "wall_seconds": pre + 1},
        "members": members,
    }


def test_targets_are_ten_steps_to_the_end_of_the_range(fb: Any) -> None:
    assert fb.targets("elliptic") == [round(1 + 0.1 * k, 10) for k in range(1, 11)]
    assert fb.targets("wave")[-1] == 1.5


def test_saving_counts_the_pretrain_and_is_per_seed(fb: Any) -> None:
    runs = [
        _rec("scratch", 0, [10.0] * 10, [5e-5] * 10, None),
        _rec("nearest", 0, [1.0] * 10, [5e-5] * 9 + [2e-4], 10.0),
    ]
    t = fb.totals(runs[1])
    assert t["train"] == 20.0 and t["reached"] == 9 and t["worst"] == 2e-4
    runs[0]["members"][0]["rel_l2"] = 1e-4  # scratch's worst: nearest's is within 2x of it
    table = fb.table(runs)
    row = next(line for line in table.splitlines() if "| nearest |" in line)
    assert "9/10" in row and "5.00×" in row  # 100 s against 10 + 10 s


def test_no_saving_for_a_strategy_that_ends_at_far_larger_errors(fb: Any) -> None:
    runs = [
        _rec("scratch", 0, [10.0] * 10, [5e-5] * 10, None),
        _rec("lstsq", 0, [0.1] * 10, [5e-5] * 9 + [1.1e-4], 5.0),
    ]
    row = next(line for line in fb.table(runs).splitlines() if "| lstsq |" in line)
    assert "- (errors above scratch's)" in row and "×" not in row


def test_committed_family_page_matches_its_data(fb: Any) -> None:
    if not fb.DOC.is_file() or not list(fb.OUT.glob("*.json")):
        pytest.skip("no family benchmark data committed")
    assert fb.DOC.read_text() == fb.regenerated(fb.DOC, fb.OUT)


def test_tolerance_table_reads_the_first_crossing() -> None:
    tc = _load("tolerance_calibration")
    rec = {
        "history": {"step": [10, 20, 30], "seconds": [1.0, 2.0, 3.0], "rel_l2": [1e-2, 1e-4, 1e-5]},
        "relative_heldout": [1e-5, 1e-7, 1e-9],
    }
    assert tc.stop_at(rec, 1e-6) == (1e-4, 2.0, 20)
    assert tc.stop_at(rec, 1e-10) is None


def test_committed_tolerance_page_matches_its_data() -> None:
    tc = _load("tolerance_calibration")
    if not list(tc.OUT.glob("*.json")):
        pytest.skip("no calibration data committed")
    text = tc.DOC.read_text()
    i, j = text.index(tc.TABLE[0]) + len(tc.TABLE[0]), text.index(tc.TABLE[1])
    assert text[i:j] == "\n" + tc.table(tc.OUT) + "\n"


def test_runs_at_another_tolerance_are_compared_among_themselves(fb: Any) -> None:
    """`--tol` runs get rows of their own; their saving is against scratch at that tolerance."""
    runs = [
        _rec("scratch", 0, [10.0] * 10, [5e-5] * 10, None),
        _rec("nearest", 0, [1.0] * 10, [5e-5] * 10, 10.0),
        {**_rec("scratch", 0, [4.0] * 10, [5e-5] * 10, None), "tol": 1e-5},
        {**_rec("nearest", 0, [1.0] * 10, [5e-5] * 10, 10.0), "tol": 1e-5},
    ]
    rows = [line for line in fb.table(runs).splitlines() if "| nearest |" in line]
    assert len(rows) == 2
    assert rows[0].startswith("| elliptic |") and "5.00×" in rows[0]  # 100 s / 20 s
    assert rows[1].startswith("| elliptic, train.tol 1e-05 |") and "2.00×" in rows[1]  # 40 / 20
    assert fb.tol_label(None) == "" and fb.tol_label(1e-5) == "_tol1e-05"


def test_runs_at_another_transfer_damping_are_compared_among_themselves(fb: Any) -> None:
    """Records without `transfer_damping` ran at 1e-3 (both stages' one damping before it
    became per stage); rows at another damping than today's are rows of their own, their
    saving against scratch at the same damping; --damping names the files apart."""
    today = fb.default_transfer_damping()
    new = [_rec("scratch", 0, [10.0] * 10, [5e-5] * 10, None)]
    new.append(_rec("nearest", 0, [1.0] * 10, [5e-5] * 10, 10.0))
    old = [_rec("scratch", 0, [4.0] * 10, [5e-5] * 10, None)]
    old.append(_rec("nearest", 0, [1.0] * 10, [5e-5] * 10, 10.0))
    for r in old:
        del r["transfer_damping"]
    rows = [line for line in fb.table(old + new).splitlines() if "| nearest |" in line]
    assert today != fb.DAMPING_BEFORE and len(rows) == 2
    assert rows[0].startswith("| elliptic |") and "5.00×" in rows[0]  # 100 s / 20 s
    assert rows[1].startswith("| elliptic, transfer damping 0.001 |") and "2.00×" in rows[1]
    assert fb.damping_label() == ""
    fb.DAMPING[:] = [1e-5]
    try:
        assert fb.damping_label() == "_damping1e-05"
    finally:
        fb.DAMPING[:] = []


def test_lotra_runs_with_tucker_on_every_layer_are_rows_of_their_own(fb: Any) -> None:
    """A LoTRA record without `layer_modes` (measured before the edge layers trained in full
    by default) or with Tucker updates on every layer is not the default adapter's row."""
    old = _rec("nearest", 0, [3.0] * 10, [5e-5] * 10, 10.0)
    for m in old["members"]:
        del m["layer_modes"]
    runs = [_rec("scratch", 0, [10.0] * 10, [5e-5] * 10, None), old]
    runs.append(_rec("nearest", 0, [1.0] * 10, [5e-5] * 10, 10.0))
    table = fb.table(runs)
    assert "5.00×" in next(line for line in table.splitlines() if "| nearest |" in line)
    every = next(
        line for line in table.splitlines() if "| nearest, Tucker on every layer |" in line
    )
    assert "2.50×" in every  # 100 s / 40 s
    assert fb.strategy_label(_rec("full_nearest", 0, [1.0], [5e-5], None)) == "full_nearest"


def test_runs_under_another_damping_rule_are_compared_among_themselves(fb: Any) -> None:
    """Records without `damping_rule` ran under Nielsen's rule (the default, recorded since
    the option exists); records under another rule are rows of their own, their saving
    against scratch under the same rule."""
    old = [_rec("scratch", 0, [10.0] * 10, [5e-5] * 10, None)]
    old.append(_rec("nearest", 0, [1.0] * 10, [5e-5] * 10, 10.0))
    for r in old:
        del r["damping_rule"]
    divide = [_rec("scratch", 0, [4.0] * 10, [5e-5] * 10, None)]
    divide.append(_rec("nearest", 0, [1.0] * 10, [5e-5] * 10, 10.0))
    for r in divide:
        r["damping_rule"] = "divide"
    rows = [line for line in fb.table(divide + old).splitlines() if "| nearest |" in line]
    assert fb.default_damping_rule() == "nielsen" and len(rows) == 2
    assert rows[0].startswith("| elliptic |") and "5.00×" in rows[0]  # 100 s / 20 s
    assert rows[1].startswith("| elliptic, optim.damping_rule=divide |") and "2.00×" in rows[1]
    fb.EXTRA[:] = ["optim.damping_rule=divide"]
    try:
        assert fb.damping_rule_of_run() == "divide"
    finally:
        fb.EXTRA[:] = []
    assert fb.damping_rule_of_run() == "nielsen"


def test_e2e_rows_of_lotra_with_tucker_on_every_layer_are_their_own(tmp_path: Path) -> None:
    """scripts/e2e_table.py: a LoTRA run recorded without `layer_modes` (before the edge layers
    trained in full by default) or with Tucker on every layer gets a row of its own."""
    import sys

    sys.path.insert(0, str(SCRIPTS))  # e2e_table imports docblocks beside it
    try:
        e2e = _load("e2e_table")
    finally:
        sys.path.remove(str(SCRIPTS))
    default = {"run": "lotra cr=0.5", "layer_modes": ["full", "lotra", "full"]}
    assert e2e.run_label(default) == "lotra cr=0.5"
    assert e2e.run_label({"run": "lotra cr=0.5"}) == "lotra cr=0.5 (Tucker on every layer)"
    assert e2e.run_label({**default, "layer_modes": ["lotra"] * 3}).endswith("every layer)")
    assert e2e.run_label({"run": "full"}) == "full"


def test_e2e_run_folders_are_values_hydra_accepts(tmp_path: Path) -> None:
    """A model with a list setting (`chebyshev+model.hidden=[40,40]`) once put brackets into
    hydra.run.dir, which Hydra's override grammar refused before the run started."""
    import sys

    sys.path.insert(0, str(SCRIPTS))
    try:
        e2e = _load("e2e_table")
    finally:
        sys.path.remove(str(SCRIPTS))
    where = e2e.run_dir(tmp_path, "chebyshev+model.hidden=[40,40]", "elliptic", 0, "lotra cr=0.5")
    assert not set("[],= +") & set(where.relative_to(tmp_path).as_posix())
    assert where.parts[-4:] == ("chebyshev_model.hidden40-40", "elliptic", "s0", "lotra_cr0.5")


def test_a_strategy_is_compared_with_the_scratch_run_measured_nearest_in_time(fb: Any) -> None:
    """With scratch measured on two days, each record's saving is against its seed's scratch
    of the nearer day (the machine's speed drifts); the scratch row shows the newest."""

    def on(day: str, rec: dict) -> dict:
        return {**rec, "date": f"2026-12-0{day}T12:00:00+00:00"}

    runs = [
        on("5", _rec("scratch", 0, [10.0] * 10, [5e-5] * 10, None)),  # a slower day: 100 s
        on("6", _rec("scratch", 0, [6.0] * 10, [5e-5] * 10, None)),  # 60 s
        on("5", _rec("full_nearest", 0, [1.0] * 10, [5e-5] * 10, 10.0)),  # 20 s
        on("6", _rec("nearest", 0, [1.0] * 10, [5e-5] * 10, 10.0)),  # 20 s
    ]
    rows = {line.split(" | ")[1]: line for line in fb.table(runs).splitlines()[2:]}
    assert "5.00×" in rows["full_nearest"] and "3.00×" in rows["nearest"]
    assert "| 0 |" in rows["scratch"] and "| 60 |" in rows["scratch"]
    # measured again the next day: the row shows the newer record alone, against that day's
    runs.append(on("6", _rec("full_nearest", 0, [0.5] * 10, [5e-5] * 10, 10.0)))  # 15 s
    rows = {line.split(" | ")[1]: line for line in fb.table(runs).splitlines()[2:]}
    assert "| 0 |" in rows["full_nearest"] and "4.00× (4.00–4.00)" in rows["full_nearest"]


def _e2e() -> Any:
    import sys

    sys.path.insert(0, str(SCRIPTS))  # e2e_table imports docblocks beside it
    try:
        return _load("e2e_table")
    finally:
        sys.path.remove(str(SCRIPTS))


def test_e2e_compare_names_a_side_only_where_the_seed_ranges_are_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Block e2e-<name>.compare sets the JSON's two `compare` models side by side: the lower
    error or seconds named only where the seeds' ranges do not overlap, rows only where both
    sides hold the same seeds, ratios of the medians."""
    import json

    e2e = _e2e()

    def rec(model: str, run: str, seed: int, err: float, sec: float) -> dict:
        return {
            "model": model,
            "pde": "elliptic",
            "run": run,
            "seed": seed,
            "rel_l2": err,
            "train_seconds": sec,
            "steps_done": 10 + seed,
            "layer_modes": ["full", "lotra", "full"],
        }

    runs = [
        *(rec("a", "pretrain", s, 1e-5 * (s + 1), 10.0 + s) for s in range(3)),
        *(rec("b", "pretrain", s, 1e-4 * (s + 1), 11.0 + s) for s in range(3)),
        *(rec("a", "lotra cr=0.5", s, 1e-3, 5.0) for s in range(3)),
        *(rec("b", "lotra cr=0.5", s, 1e-3, 5.0) for s in range(2)),  # seed 2 missing
    ]
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"schema": 1, "runs": runs, "compare": ["a", "b"]}))
    rows = [r for r in e2e.compare(path).splitlines() if r.startswith("| elliptic")]
    assert len(rows) == 1  # the LoTRA run lacks seed 2 on side B: not like against like
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[3:7] == ["2.0e-05 [1.0e-05–3.0e-05]", "2.0e-04 [1.0e-04–3.0e-04]", "A", "10×"]
    assert cells[9] == "overlap" and cells[11] == "11 / 11"
    monkeypatch.setattr(e2e, "OUT", tmp_path)
    assert e2e.block("e2e-study.compare", tmp_path) == e2e.compare(path)
    path.write_text(json.dumps({"schema": 1, "runs": runs}))
    with pytest.raises(SystemExit, match="compare"):
        e2e.compare(path)
    # --compare records the pair in the JSON, and refuses a model the study never ran
    with pytest.raises(SystemExit, match="no runs of c"):
        e2e.main(["--name", "study", "--out", str(tmp_path), "--compare", "a", "c"])
    with pytest.raises(SystemExit, match="no such study"):
        e2e.main(["--name", "other", "--out", str(tmp_path), "--compare", "a", "b"])
    assert e2e.main(["--name", "study", "--out", str(tmp_path), "--compare", "b", "a"]) == 0
    assert json.loads(path.read_text())["compare"] == ["b", "a"]
