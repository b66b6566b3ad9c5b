"""Property: every invalid config value gives one clean line naming its field, and every valid
one runs a 2-step job (hypothesis draws the values, for every field)."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinnkan.errors import PinnkanError
from pinnkan.io.results import RunResult
from pinnkan.run import runner
from tests.conftest import set_path, tiny_config

junk = st.sampled_from(["abc", True, None, [1], {"a": 1}])
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


def ints(lo: int, hi: int):
    return st.integers(lo, hi)


def bad_ints(lo: int, null_ok: bool = False):
    return st.one_of(
        st.integers(max_value=lo - 1),
        st.floats(0.1, 50).filter(lambda v: not v.is_integer()),
        non_finite,
        junk.filter(lambda v: v is not None) if null_ok else junk,
    )


def floats(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False)


def bad_positive():
    return st.one_of(st.floats(max_value=0.0, allow_nan=False), non_finite, junk)


# field path -> (valid values, invalid values, the word the error line must name)
FIELDS: dict[str, tuple[Any, Any, str]] = {
    # null is valid: the optimizer's default for the stage (optim.steps)
    "train.steps": (ints(1, 2), bad_ints(1, null_ok=True), "train.steps"),
    "train.n_interior": (ints(1, 40), bad_ints(1), "train.n_interior"),
    "train.n_boundary": (ints(1, 20), bad_ints(1), "train.n_boundary"),
    "train.eval_every": (ints(1, 5), bad_ints(1), "train.eval_every"),
    "train.log_every": (ints(1, 5), bad_ints(1), "train.log_every"),
    "train.checkpoint_every": (ints(0, 3), bad_ints(0), "train.checkpoint_every"),
    "train.derivatives": (
        st.sampled_from(["forward", "autograd"]),
        st.one_of(st.text(max_size=5), junk),
        "train.derivatives",
    ),
    # elliptic has no time axis: only causal=0 runs there (test_causal runs the others)
    "train.causal": (
        st.just(0.0),
        st.one_of(st.floats(max_value=-1e-3), non_finite, junk),
        "train.causal",
    ),
    "train.causal_slices": (ints(1, 64), bad_ints(1), "train.causal_slices"),
    "optim.lr": (floats(1e-5, 0.1), bad_positive(), "optim.lr"),
    "optim.lr_decay": (
        floats(0.01, 1.0),
        st.one_of(st.floats(1.0001, 10), st.floats(max_value=0.0), non_finite, junk),
        "optim.lr_decay",
    ),
    "optim.lbfgs_steps": (ints(0, 2), bad_ints(0), "optim.lbfgs_steps"),
    "model.grid_size": (ints(1, 6), bad_ints(1), "model.grid_size"),
    "model.hidden": (
        st.lists(ints(1, 4), min_size=1, max_size=2),
        st.one_of(
            st.just([]),
            st.lists(st.integers(max_value=0), min_size=1, max_size=2),
            st.just([2.5]),
            st.just("abc"),
        ),
        "model.hidden",
    ),
    "model.spline_scale": (floats(0.01, 1.0), bad_positive(), "model.spline_scale"),
    "model.grid_range": (
        st.tuples(floats(-3, 0), floats(0.1, 3)).map(list),
        st.one_of(st.just([1.0, 0.0]), st.just([0.5, 0.5]), st.just([math.nan, 1.0])),
        "model.grid_range",
    ),
    "eval.n": (ints(2, 10), bad_ints(2, null_ok=True), "eval.n"),  # null: the family's grid
    "seed": (ints(0, 10_000), bad_ints(0), "seed"),
    "precision": (
        st.sampled_from(["float32", "float64"]),
        st.one_of(st.just("float16"), junk),
        "precision",
    ),
    "pde.source.mu": (floats(0.1, 3.0), bad_positive(), "mu"),
    "pde.source.lam": (floats(0.0, 10.0), st.one_of(non_finite, junk), "lam"),
    "pde.weights.boundary": (
        floats(0.0, 100.0),
        st.one_of(st.floats(max_value=-1e-3), non_finite, junk),
        "pde.weights.boundary",
    ),
}


def _pretrain(tmp: str, field: str, value: Any) -> RunResult:
    """A 2-step pretrain with one field set to `value` (a fresh copy: runs may normalise it)."""
    changes = {"train.steps": 2, "model.hidden": [3], "train.n_interior": 16, "eval.n": 5}
    cfg = tiny_config(Path(tmp), {**changes, "pde.source.lam": 0.0})
    set_path(cfg, field, copy.deepcopy(value))
    return runner.pretrain(cfg, Path(tmp) / "run")


@pytest.mark.parametrize("field", sorted(FIELDS))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_invalid_value_fails_with_one_line_naming_its_field(field: str, data) -> None:
    _, bad, name = FIELDS[field]
    value = data.draw(bad, label=field)
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(PinnkanError) as info:
            _pretrain(tmp, field, value)
        msg = str(info.value)
        assert name in msg and "\n" not in msg, msg
        assert not (Path(tmp) / "run" / "results.h5").exists()


@pytest.mark.parametrize("field", sorted(FIELDS))
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_value_runs_a_two_step_job(field: str, data) -> None:
    good, _, _ = FIELDS[field]
    value = data.draw(good, label=field)
    with tempfile.TemporaryDirectory() as tmp:
        result = _pretrain(tmp, field, value)
        assert result.status == "ok" and math.isfinite(result.metrics["rel_l2"])


@pytest.mark.parametrize(("field", "value"), [("optim.lr", 1e38), ("optim.lr", 11.0)])
def test_huge_learning_rate_is_refused_before_training(field: str, value: float) -> None:
    """1e38 used to overflow inside Adam with a traceback instead of a one-line error."""
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(PinnkanError, match=r"optim\.lr") as info:
            _pretrain(tmp, field, value)
        assert "\n" not in str(info.value)
