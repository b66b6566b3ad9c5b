"""scripts/growth_study.py: the table shows each variant's training seconds where the runs had
the machine to themselves, and none where a second process shared the cores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docblocks


def _growth_study() -> Any:
    return docblocks.owner("growth_study")  # as the docs check loads it


def _run(seed: int, seconds: float) -> dict[str, Any]:
    return {
        "seed": seed,
        "rel_l2": 1e-4 * (seed + 1),
        "stop_reason": "tolerance",
        "steps_done": 90 + seed,
        "train_seconds": seconds,
        "n_trainable": 622,
        "n_full": 2760,
        "grown": [],
    }


def test_seconds_are_shown_only_for_a_quiet_study(tmp_path: Path) -> None:
    gs = _growth_study()
    path = tmp_path / "study.json"
    runs = {"fixed25": [_run(0, 3.6), _run(1, 4.7), _run(2, 3.9)]}
    path.write_text(json.dumps({"loaded": False, "runs": runs}))
    row = gs.table(path).splitlines()[2]
    assert "| 4 (4–5) | 622 |" in row and "1.0e-04–3.0e-04" in row
    assert "train s" in gs.table(path).splitlines()[0]
    path.write_text(json.dumps({"loaded": True, "runs": runs}))
    loaded = gs.table(path)
    assert "| – | 622 |" in loaded.splitlines()[2]
    assert "a second process shared the 2 cores" in loaded
