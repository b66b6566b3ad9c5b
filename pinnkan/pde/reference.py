"""A reference solution read from a file (HDF5 or NPZ: 1-D axes plus a field on their grid),
interpolated multilinearly to any points of the domain; it replaces a family's `exact`.

Found by name, per coordinate c: the configured axis name, then `c`, `grid/c` (a pinnkan
results.h5) and `c-coordinate` (PDEBench); the field: the configured name, then `u`,
`fields/u_ref`, `tensor` (PDEBench: samples first, then t, x, ...; `sample` picks one). The
field's axis order is `order` when given, else the results.h5 `axes` attribute, else the one
order of the coordinates whose axis lengths match its shape. An axis one entry longer than
the field (PDEBench's t) drops its last.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from pinnkan.errors import PinnkanError
from pinnkan.results import read_axes

FIELD_NAMES = ("u", "fields/u_ref", "tensor")


@contextmanager
def _arrays(path: Path) -> Iterator[dict[str, Any]]:
    """The file's arrays by name ('a/b' for HDF5 groups), read lazily (a PDEBench file holds
    thousands of samples); one line when it is no such file."""
    if not path.is_file():
        raise PinnkanError(f"reference file not found: {path}")
    try:
        if path.suffix == ".npz":
            npz = np.load(path, allow_pickle=False)
            handle, found = npz, {k: _Lazy(npz, k) for k in npz.files}
        else:
            handle, found = h5py.File(path, "r"), {}
            handle.visititems(lambda name, obj: _dataset(found, name, obj))
    except (OSError, ValueError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise PinnkanError(f"cannot read reference file {path}: {why}") from None
    try:
        yield found
    finally:
        handle.close()


def _dataset(found: dict[str, Any], name: str, obj: Any) -> None:
    if isinstance(obj, h5py.Dataset):
        found[name] = obj


class _Lazy:
    """An NPZ member with the `ndim`, `shape` and indexing of an h5py dataset."""

    def __init__(self, npz: Any, key: str) -> None:
        self.npz, self.key, self._array = npz, key, None

    def __getitem__(self, index: Any) -> np.ndarray:
        if self._array is None:
            self._array = self.npz[self.key]
        return self._array[index]

    @property
    def shape(self) -> tuple[int, ...]:
        return self[()].shape

    @property
    def ndim(self) -> int:
        return len(self.shape)


class FileReference:
    """u on the file's grid; `__call__(x (B, D)) -> (B,)` by multilinear interpolation."""

    def __init__(
        self,
        path: str | Path,
        coords: Sequence[str],
        domain: Sequence[tuple[float, float]],
        field: str | None = None,
        axes: dict[str, str] | None = None,
        order: Sequence[str] | None = None,
        sample: int = 0,
    ) -> None:
        self.path = Path(path)
        where = f"reference file {self.path}"
        with _arrays(self.path) as data:

            def find(names: list[str], what: str) -> Any:
                for name in names:
                    if name in data:
                        return data[name]
                raise PinnkanError(f"{where} has no {what} (looked for {', '.join(names)})")

            axes = dict(axes or {})
            grid = {}
            for c in coords:
                names = [axes[c]] if c in axes else [c, f"grid/{c}", f"{c}-coordinate"]
                grid[c] = np.asarray(find(names, f"axis for {c}")[()], np.float64).reshape(-1)
            ds = find([field] if field else list(FIELD_NAMES), "field")
            if order is None and isinstance(ds, h5py.Dataset) and "axes" in ds.parent.attrs:
                order = read_axes(ds.parent.attrs["axes"])  # a pinnkan results.h5 says it
            d = len(coords)
            channel = ds.ndim == d + 1 and ds.shape[-1] == 1 or ds.ndim == d + 2
            if ds.ndim in (d + 1, d + 2) and not (ds.ndim == d + 1 and channel):
                if not 0 <= sample < ds.shape[0]:  # PDEBench: samples first
                    raise PinnkanError(f"{where}: sample {sample} of {ds.shape[0]} does not exist")
                u = np.asarray(ds[sample], np.float64)
            else:
                u = np.asarray(ds[()], np.float64)
        if channel and u.shape[-1] == 1:  # a trailing channel of one
            u = u[..., 0]
        order = list(order) if order else self._order(u.shape, grid, where)
        if sorted(order) != sorted(coords) or u.ndim != len(coords):
            raise PinnkanError(
                f"{where}: field shape {u.shape} does not match coordinates {list(coords)} "
                f"(order {order}); set pde.reference.order"
            )
        for axis, c in enumerate(order):
            if len(grid[c]) == u.shape[axis] + 1:
                grid[c] = grid[c][:-1]
            if len(grid[c]) != u.shape[axis] or np.any(np.diff(grid[c]) <= 0):
                raise PinnkanError(
                    f"{where}: axis {c} ({len(grid[c])} values) must increase and match the "
                    f"field's axis {axis} ({u.shape[axis]})"
                )
        for c, (lo, hi) in zip(coords, domain):
            a, b = grid[c][0], grid[c][-1]
            tol = 1e-9 * max(1.0, abs(hi - lo))
            if a > lo + tol or b < hi - tol:
                raise PinnkanError(
                    f"{where} covers {c} in [{a:g}, {b:g}], but the domain is [{lo:g}, {hi:g}]"
                )
        # to coordinate order
        self.u = np.ascontiguousarray(np.transpose(u, [order.index(c) for c in coords]))
        self.axes = [grid[c] for c in coords]

    @staticmethod
    def _order(shape: tuple[int, ...], grid: dict[str, np.ndarray], where: str) -> list[str]:
        """The one order of the coordinates whose axis lengths (or one more) fit `shape`."""
        fits = [
            list(p)
            for p in itertools.permutations(grid)
            if len(p) == len(shape) and all(len(grid[c]) in (n, n + 1) for c, n in zip(p, shape))
        ]
        if len(fits) != 1:
            lengths = {c: len(a) for c, a in grid.items()}
            raise PinnkanError(
                f"{where}: cannot tell the field's axis order from its shape {shape} and the "
                f"axes {lengths}; set pde.reference.order (e.g. [t, x])"
            )
        return fits[0]

    def __call__(self, x: Tensor) -> Tensor:
        pts = x.detach().cpu().double().numpy()
        idx, frac = [], []
        for k, axis in enumerate(self.axes):
            q = np.clip(pts[:, k], axis[0], axis[-1])
            i = np.clip(np.searchsorted(axis, q, side="right") - 1, 0, len(axis) - 2)
            idx.append(i)
            frac.append((q - axis[i]) / (axis[i + 1] - axis[i]))
        out = np.zeros(len(pts))
        for corner in itertools.product((0, 1), repeat=len(self.axes)):
            w = np.ones(len(pts))
            for k, c in enumerate(corner):
                w *= frac[k] if c else 1.0 - frac[k]
            out += w * self.u[tuple(i + c for i, c in zip(idx, corner))]
        return torch.from_numpy(out).to(dtype=x.dtype, device=x.device)
