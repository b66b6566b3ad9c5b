"""PDEBench's nRMSE and boundary RMSE (pinnkan/run/pdebench_metrics.py) against direct loops over
the time slices, in 1-D and 2-D, as PDEBench's `metric_func` defines them."""

from __future__ import annotations

import numpy as np
import pytest

from pinnkan.run.pdebench_metrics import boundary_rmse, nrmse


def test_one_dimension_against_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 7))  # (x, t)
    pred = ref + 0.01 * rng.normal(size=ref.shape)
    want_n, want_b = [], []
    for t in range(1, 7):  # the first slice is the given initial value
        e, r = pred[:, t] - ref[:, t], ref[:, t]
        want_n.append(np.sqrt(np.mean(e**2)) / np.sqrt(np.mean(r**2)))
        want_b.append(np.sqrt((e[0] ** 2 + e[-1] ** 2) / 2.0))
    assert nrmse(pred, ref) == pytest.approx(np.mean(want_n), rel=1e-12)
    assert boundary_rmse(pred, ref) == pytest.approx(np.mean(want_b), rel=1e-12)


def test_two_dimensions_count_each_edge_as_pdebench() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(6, 5, 4))  # (x, y, t)
    pred = ref + rng.normal(size=ref.shape)
    want = []
    for t in range(1, 4):
        e = pred[..., t] - ref[..., t]
        edges = (
            (e[0] ** 2).sum() + (e[-1] ** 2).sum() + (e[:, 0] ** 2).sum() + (e[:, -1] ** 2).sum()
        )
        want.append(np.sqrt(edges / (2 * 6 + 2 * 5)))
    assert boundary_rmse(pred, ref) == pytest.approx(np.mean(want), rel=1e-12)


def test_exact_prediction_and_a_single_slice() -> None:
    ref = np.ones((8, 3))
    assert nrmse(ref, ref) == 0.0 and boundary_rmse(ref, ref) == 0.0
    assert np.isnan(nrmse(ref[:, :1], ref[:, :1]))
