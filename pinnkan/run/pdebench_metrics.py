"""PDEBench's error metrics of a time-dependent field (Takamoto et al. 2022; `metric_func` in
pdebench/models/metrics.py), for one sample and one channel: each is computed per time slice
and averaged over the slices after the first (PDEBench's `initial_step` = 1: the initial
condition the problem is given).

- nRMSE: RMSE of the slice over the RMS of the reference slice;
- boundary RMSE: RMS of the error over the points of the spatial grid's faces (in 1-D its two
  end points; in 2-D the four edges, each edge's points once per edge, as PDEBench counts).
"""

from __future__ import annotations

import numpy as np

SKIP_SLICES = 1  # PDEBench's initial_step


def _slices(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Error and reference with time (the last axis) first, the first slice dropped."""
    err = np.asarray(pred, np.float64) - np.asarray(ref, np.float64)
    ref = np.asarray(ref, np.float64)
    assert err.shape == ref.shape and err.ndim >= 2, (err.shape, ref.shape)
    return np.moveaxis(err, -1, 0)[SKIP_SLICES:], np.moveaxis(ref, -1, 0)[SKIP_SLICES:]


def nrmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """mean over t of ‖pred − ref‖ / ‖ref‖ over the spatial points of slice t; fields on a
    grid with time the last axis (NaN with a single slice)."""
    err, ref = _slices(pred, ref)
    if not len(err):
        return float("nan")
    space = tuple(range(1, err.ndim))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sqrt((err**2).mean(axis=space)) / np.sqrt((ref**2).mean(axis=space))
    return float(ratio.mean())


def boundary_rmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """mean over t of the RMS error over the spatial faces of slice t (as `nrmse`)."""
    err, _ = _slices(pred, ref)
    if not len(err):
        return float("nan")
    total, count = np.zeros(len(err)), 0
    for axis in range(1, err.ndim):
        for end in (0, -1):
            face = np.take(err, end, axis=axis).reshape(len(err), -1)
            total += (face**2).sum(axis=1)
            count += face.shape[1]
    return float(np.sqrt(total / count).mean())
