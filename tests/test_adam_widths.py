"""scripts/adam_widths.py: the search runs each width's lr grid at its calibrated steps, goes one
lr past an edge where the best sits there, runs the seeds at the held-out seed's best, and the
tables mark the best and name a lower side only where the seeds' ranges are apart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import docblocks
import pytest


def _aw() -> Any:
    return docblocks.owner("adam_widths")  # as the docs check loads it


def _fake(errors: dict[tuple[int, float], float], log: list[tuple[str, int]]) -> Any:
    """A Runner: Adam's error from (width, lr), None (diverged) where absent; LM at 1e-5."""
    aw = _aw()

    def run(model: str, seed: int) -> dict[str, Any]:
        log.append((model, seed))
        s = aw.settings(model)
        if s.get("train.steps") == str(aw.CALIBRATE_STEPS):
            return {"steps_done": 10 * aw.width(model)}
        err = errors.get((aw.width(model), float(s["optim.lr"]))) if aw.is_adam(model) else 1e-5
        return {"model": model, "seed": seed, "rel_l2": err, "steps_done": 1}

    return run


def test_search_extends_an_edge_and_seeds_run_at_the_best() -> None:
    aw = _aw()
    errors = {(10, 0.003): 5e-3, (10, 0.01): 4e-3, (10, 0.03): 6e-3}  # best inside: no extension
    errors |= {(20, 0.003): 3e-3, (20, 0.01): 2e-3, (20, 0.03): 4e-3}
    errors |= {(40, 0.003): 2e-3, (40, 0.01): 1e-3, (40, 0.03): 5e-4, (40, 0.1): 4e-4}
    errors |= {(80, 0.003): 9e-4, (80, 0.01): 1e-3}  # 0.03 diverged; best at the low edge
    log: list[tuple[str, int]] = []
    aw.study(["chebyshev"], 30.0, _fake(errors, log))
    held_out = [aw.settings(m) for m, s in log if s == aw.SEARCH_SEED]
    lrs = {
        w: [
            float(s["optim.lr"])
            for s in held_out
            if s["model.hidden"] == f"[{w},{w}]" and "optim.lr" in s
        ]
        for w in (10, 20, 40, 80)
    }
    assert lrs == {
        10: [0.003, 0.01, 0.03],
        20: [0.003, 0.01, 0.03],
        40: [0.003, 0.01, 0.03, 0.1, 0.3],  # 0.3 diverged: 0.1 is no longer at the edge
        80: [0.003, 0.01, 0.03, 0.001],
    }
    steps = {s["model.hidden"]: s["train.steps"] for s in held_out if "optim.lr" in s}
    assert steps == {
        "[10,10]": "100",
        "[20,20]": "200",
        "[40,40]": "400",
        "[80,80]": "800",
    }  # each its own
    seeded = [(m, s) for m, s in log if s != aw.SEARCH_SEED]
    best = aw.adam_model("chebyshev", 40, 30.0, 400, 0.1)
    assert seeded == [(m, s) for s in (0, 1, 2) for m in (best, aw.lm_model("chebyshev", 30.0))]


def test_a_best_at_the_narrowest_width_searches_half_of_it() -> None:
    aw = _aw()
    errors = {
        (w, lr): w * 1e-4 * (2 if lr != 0.01 else 1)
        for w in (2, 5, 10, 20, 40, 80)
        for lr in (0.003, 0.01, 0.03)
    }  # narrower is better, down to MIN_WIDTH
    log: list[tuple[str, int]] = []
    aw.study(["chebyshev"], 30.0, _fake(errors, log))
    widths = list(dict.fromkeys(aw.width(m) for m, s in log if s == aw.SEARCH_SEED))
    assert widths == [10, 20, 40, 80, 5, 2]  # 2 // 2 is below MIN_WIDTH
    assert {aw.width(m) for m, s in log if s == 0 and aw.is_adam(m)} == {2}


def test_a_diverged_run_ranks_last() -> None:
    aw = _aw()
    runs = [
        {"model": aw.adam_model("mlp", 50, 30.0, 9, lr), "seed": 99, "rel_l2": err}
        for lr, err in ((0.003, 0.5), (0.01, None), (0.03, math.nan))
    ]
    assert aw.settings(aw.best(runs, "mlp")["model"])["optim.lr"] == "0.003"


def _rec(model: str, seed: int, err: float | None, n: int = 2760) -> dict[str, Any]:
    return {
        "model": model,
        "seed": seed,
        "rel_l2": err,
        "train_seconds": 10.0 + seed,
        "steps_done": 100,
        "stop_reason": "steps" if "adam" in model else "tolerance",
        "n_total": n,
        "date": "2026-12-06T12:00:00+00:00",
        "git_commit": "0123456789abcdef",
        "git_dirty": False,
        "machine": {"processor": "x86_64", "cpu_count": 2},
    }


def test_tables_mark_the_best_and_verdicts(tmp_path: Path) -> None:
    aw = _aw()
    a = [aw.adam_model("chebyshev", w, 30.0, 100, lr) for w in (20, 40) for lr in (0.01, 0.03)]
    a.append(aw.adam_model("chebyshev", 3, 30.0, 100, 0.01))  # a width below WIDTHS' grid
    runs = [_rec(m, 99, e) for m, e in zip(a, (3e-3, 2e-3, 1e-3, None, 8e-3))]
    runs[0]["steps_done"] = 90  # stopped by the time cap before its calibrated steps
    calibration = aw.adam_model("chebyshev", 20, 30.0, aw.CALIBRATE_STEPS, None)
    runs.append(_rec(calibration, 99, 4e-3))
    runs += [_rec(a[2], s, 1e-3 * (s + 1)) for s in (0, 1, 2)]
    runs += [_rec(a[1], s, 1e-9) for s in (0, 1, 2)]  # seeds of a superseded best: not shown
    runs += [_rec(aw.lm_model("chebyshev", 30.0), s, 1e-5 * (s + 1)) for s in (0, 1, 2)]
    path = tmp_path / "adam_widths.json"
    path.write_text(json.dumps({"schema": 1, "runs": runs}))
    text = aw.table(path)
    assert "| chebyshev | [40,40] | 2760 | 100 (100–100) | **1.0e-03** | diverged | – |" in text
    assert "| chebyshev | [20,20] | 2760 | 100 (90–100) | 3.0e-03 | 2.0e-03 | 4.0e-03 |" in text
    assert text.index("| [3,3] |") < text.index("| [20,20] |") < text.index("| [40,40] |")
    row = next(line for line in text.splitlines() if "2760 parameters |" in line)
    assert "2.0e-05 [1.0e-05–3.0e-05]" in row and "[40,40] (2760), 0.01, 100" in row
    assert row.endswith("| 100× | LM |")
    runs[-1]["rel_l2"] = 5e-3  # an LM seed above Adam's lowest: the ranges overlap
    path.write_text(json.dumps({"schema": 1, "runs": runs}))
    assert aw.table(path).splitlines()[-3].endswith("| overlap |")


def test_runner_keeps_a_diverged_run_and_stops_on_a_failure(tmp_path: Path, monkeypatch) -> None:
    import h5py

    aw, hb = _aw(), docblocks.owner("hard_benchmarks")
    model = aw.adam_model("chebyshev", 20, 30.0, 100, 0.1)
    where = docblocks.owner("e2e_table").run_dir(tmp_path, model, "elliptic", 0, "pretrain")

    def diverges(cmd: list[str], env: dict[str, str], timeout: float | None) -> tuple:
        where.mkdir(parents=True)
        with h5py.File(where / "results.h5", "w") as f:
            f.attrs["status"] = "diverged"
            f.create_group("metrics").attrs.update(
                {"train_seconds": 3.0, "diverged_at_step": 42, "n_total": 2760}
            )
        return 1, "", "diverged"

    monkeypatch.setattr(hb, "run_child", diverges)
    out = tmp_path / "raw.json"
    rec = aw.runner(out, tmp_path)(model, 0)
    assert (rec["status"], rec["rel_l2"], rec["steps_done"]) == ("diverged", None, 42)
    assert json.loads(out.read_text())["runs"][0]["model"] == model  # written at once
    monkeypatch.setattr(hb, "run_child", lambda *a: (2, "", "bad override"))
    with pytest.raises(SystemExit, match="bad override"):
        aw.runner(out, tmp_path)(aw.lm_model("mlp", 30.0), 1)  # rc 2, no results.h5
    with h5py.File(where / "results.h5", "w") as f:  # an earlier attempt's finished run
        f.attrs["status"] = "ok"
    with pytest.raises(SystemExit, match="bad override"):  # is not this failed run's result
        aw.runner(tmp_path / "other.json", tmp_path)(model, 0)


def test_tables_from_other_data_leave_the_page_alone(tmp_path: Path, capsys) -> None:
    aw = _aw()
    before = aw.PAGE.read_text()
    with pytest.raises(SystemExit, match="no raw data yet"):
        aw.main(["--tables", "--out", str(tmp_path / "missing.json")])
    runs = [_rec(aw.adam_model("mlp", 50, 30.0, 100, 0.01), 99, 1e-3)]
    (tmp_path / "trial.json").write_text(json.dumps({"schema": 1, "runs": runs}))
    aw.main(["--tables", "--out", str(tmp_path / "trial.json")])
    assert "| mlp | [50,50] | 2760 | 100 (100–100) | **1.0e-03** | – |" in capsys.readouterr().out
    assert aw.PAGE.read_text() == before
