"""A reference solution read from a file (HDF5 or NPZ: 1-D axes plus a field on their grid),
interpolated multilinearly to any points of the domain; it replaces a family's `exact`.

Found by name, per coordinate c: the configured axis name, then `c`, `grid/c` (a pinnkan
results.h5) and `c-coordinate` (PDEBench); the field: the configured name, then `u`,
`fields/u_ref`, `tensor` (PDEBench: samples first, then t, x, ...; `sample` picks one). The
field's axis order is `order` when given, else the results.h5 `axes` attribute, else the one
order of the coordinates whose axis lengths match its shape. An axis one entry longer than
the field (PDEBench's t) drops its last, as PDEBench's own PINN loader does.

The grid may stop short of the domain's edges by up to one cell (PDEBench stores cell
centres); along a periodic axis the interpolation wraps around the period, elsewhere it holds
the edge value. Without a given domain the box is the file's own: half a cell beyond the first
and last point of each spatial axis (cell centres), from the first to the last slice in t.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from pinnkan.errors import PinnkanError
from pinnkan.io.axes import read_axes

FIELD_NAMES = ("u", "fields/u_ref", "tensor")
TIME = "t"  # the coordinate whose file axis holds instants, not cells


@contextmanager
def _arrays(path: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The file's arrays by name ('a/b' for HDF5 groups), read lazily (a PDEBench file holds
    thousands of samples), and its attributes (HDF5: the root's; NPZ: its 0-d arrays); one line
    when it is no such file."""
    if not path.is_file():
        raise PinnkanError(f"reference file not found: {path}")
    try:
        if path.suffix == ".npz":
            npz = np.load(path, allow_pickle=False)
            handle, found = npz, {k: _Lazy(npz, k) for k in npz.files}
            attrs = {k: a[()] for k, a in found.items() if a.ndim == 0}
        else:
            handle, found = h5py.File(path, "r"), {}
            handle.visititems(lambda name, obj: _dataset(found, name, obj))
            attrs = dict(handle.attrs)
    except (OSError, ValueError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise PinnkanError(f"cannot read reference file {path}: {why}") from None
    try:
        yield found, attrs
    finally:
        handle.close()


def file_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes, computed once per process while its size and mtime stay
    (a PDEBench file is gigabytes; the runs of one sweep process share the hash)."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256(str(p), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


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
    """u on the file's grid; `__call__(x (B, D)) -> (B,)` by multilinear interpolation.

    `domain` None: the file's own box (module docstring); `periodic_axes`: the coordinates
    along which u repeats over the domain's length. `attrs` holds the file's attributes,
    `axes` / `u` its grid and field in coordinate order."""

    def __init__(
        self,
        path: str | Path,
        coords: Sequence[str],
        domain: Sequence[tuple[float, float]] | None = None,
        field: str | None = None,
        axes: dict[str, str] | None = None,
        order: Sequence[str] | None = None,
        sample: int = 0,
        periodic_axes: Sequence[int] = (),
    ) -> None:
        self.path = Path(path)
        where = f"reference file {self.path}"
        with _arrays(self.path) as (data, attrs):

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
            self.n_samples = None  # a file of one field
            if ds.ndim in (d + 1, d + 2) and not (ds.ndim == d + 1 and channel):
                self.n_samples = ds.shape[0]  # PDEBench: samples first
                if not 0 <= sample < ds.shape[0]:
                    raise PinnkanError(f"{where}: sample {sample} of {ds.shape[0]} does not exist")
                u = np.asarray(ds[sample], np.float64)
            elif sample != 0:
                raise PinnkanError(
                    f"{where} holds one field of shape {ds.shape}, no samples: sample {sample} "
                    "does not exist (pde.reference.sample=0)"
                )
            else:
                u = np.asarray(ds[()], np.float64)
            self.attrs = attrs
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
            if len(grid[c]) != u.shape[axis] or len(grid[c]) < 2 or np.any(np.diff(grid[c]) <= 0):
                raise PinnkanError(
                    f"{where}: axis {c} ({len(grid[c])} values) must increase, hold two or "
                    f"more and match the field's axis {axis} ({u.shape[axis]})"
                )
        # to coordinate order
        self.u = np.ascontiguousarray(np.transpose(u, [order.index(c) for c in coords]))
        self.axes = [grid[c] for c in coords]
        self.coords = list(coords)
        self.domain = tuple(domain) if domain is not None else self._own_box()
        for c, a, (lo, hi) in zip(coords, self.axes, self.domain):
            tol = 1e-9 * max(1.0, abs(hi - lo))
            if a[0] > lo + (a[1] - a[0]) + tol or a[-1] < hi - (a[-1] - a[-2]) - tol:
                raise PinnkanError(
                    f"{where} covers {c} in [{a[0]:g}, {a[-1]:g}], more than one cell short of "
                    f"the domain [{lo:g}, {hi:g}]; set pde.domain to the range the file covers"
                )
        self._wrapped = self._wrap(periodic_axes)

    def _own_box(self) -> tuple[tuple[float, float], ...]:
        """The file's box: cell edges half a cell beyond the first and last centre in space,
        the first and last slice in t (each snapped to 7 digits: float32 coordinates)."""
        box = []
        for c, a in zip(self.coords, self.axes):
            lo, hi = (
                (a[0], a[-1]) if c == TIME else (1.5 * a[0] - 0.5 * a[1], 1.5 * a[-1] - 0.5 * a[-2])
            )
            box.append(tuple(_snap(v, hi - lo) for v in (lo, hi)))
        return tuple(box)  # type: ignore[return-value]

    def _wrap(self, periodic_axes: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        """Axes and field to interpolate on: along a periodic axis, closed by the first point
        one period on (unless the file already holds it)."""
        axes, u = list(self.axes), self.u
        self.periods = {}
        for k in periodic_axes:
            lo, hi = self.domain[k]
            period, a = hi - lo, axes[k]
            self.periods[k] = period
            if a[-1] - a[0] < period * (1.0 - 1e-12):
                axes[k] = np.append(a, a[0] + period)
                u = np.concatenate([u, np.take(u, [0], axis=k)], axis=k)
        return axes, u

    def grid(self, dtype: torch.dtype) -> tuple[dict[str, Tensor], Tensor]:
        """The file's own points inside the domain: 1-D axes and the points (n, D), 'ij'
        order; what a run's errors are computed on."""
        axes = {}
        for c, a, (lo, hi) in zip(self.coords, self.axes, self.domain):
            tol = 1e-9 * max(1.0, abs(hi - lo))
            axes[c] = torch.as_tensor(a[(a >= lo - tol) & (a <= hi + tol)], dtype=dtype)
        mesh = torch.meshgrid(*axes.values(), indexing="ij")
        return axes, torch.stack([m.reshape(-1) for m in mesh], dim=1)

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
        axes, u = self._wrapped
        idx, frac = [], []
        for k, axis in enumerate(axes):
            q = pts[:, k]
            if k in self.periods:  # into [first point, first point + period)
                q = axis[0] + np.mod(q - axis[0], self.periods[k])
            q = np.clip(q, axis[0], axis[-1])
            i = np.clip(np.searchsorted(axis, q, side="right") - 1, 0, len(axis) - 2)
            idx.append(i)
            frac.append((q - axis[i]) / (axis[i + 1] - axis[i]))
        out = np.zeros(len(pts))
        for corner in itertools.product((0, 1), repeat=len(axes)):
            w = np.ones(len(pts))
            for k, c in enumerate(corner):
                w *= frac[k] if c else 1.0 - frac[k]
            out += w * u[tuple(i + c for i, c in zip(idx, corner))]
        return torch.from_numpy(out).to(dtype=x.dtype, device=x.device)


def _snap(value: float, scale: float) -> float:
    """`value` rounded to 7 significant digits when that moves it by under 1e-6 of `scale`
    (0.99951171875 + 0.00048828125 stays 1; float32's 1.9999999 becomes 2)."""
    short = float(f"{value:.7g}")
    return short if abs(short - value) <= 1e-6 * abs(scale) else float(value)
