"""A trained solution as an object: `load` returns a run's network as a torch module of physical
coordinates, `Solution` checks points against its domain and evaluates u (and its derivatives)
at them; `pinnkan predict` (`predict_to_file`) writes them for a user's points."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from pinnkan.adapters.files import adapter_file
from pinnkan.common.atomic import atomic_replace
from pinnkan.common.dtypes import PRECISIONS
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import model_file
from pinnkan.network.derivatives import compute_jet
from pinnkan.network.evaluation import EVAL_CHUNK, predict
from pinnkan.network.kan import KAN
from pinnkan.pde import FAMILIES, current_name
from pinnkan.run.merge import base_with_adapter, model_from_file
from pinnkan.version import __version__

# a point this far outside the domain (relative to its width) is still inside: round-off of a
# grid written in another precision
DOMAIN_SLACK = 1e-9


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A `dtype` argument as a torch dtype (None stays None: the run's own precision)."""
    if isinstance(dtype, str):
        if dtype not in PRECISIONS:
            raise PinnkanError(f"dtype={dtype!r}; choose float32 or float64")
        return PRECISIONS[dtype]
    return dtype


def load(path: Path | str, *, adapter: bool = False, dtype: torch.dtype | str | None = None) -> KAN:
    """The trained network of a run directory or a pinnkan model file (pretrain, transfer,
    merge), as a torch module: `model(x)` takes points (N, d) in physical coordinates and
    returns u (N, 1). A transfer's model file is its merged network; `adapter=True` rebuilds
    the run's base with its adapter attached instead (LoTRA: A frozen plus the Tucker update).
    `dtype` defaults to the precision the run trained in."""
    return Solution.load(path, adapter=adapter, dtype=dtype).model


@dataclass
class Solution:
    """A loaded network with what it was trained on: the family (`pde`), its coordinate names
    and the box the network is defined on."""

    model: KAN
    meta: dict[str, Any]
    path: Path

    @classmethod
    def load(
        cls, path: Path | str, *, adapter: bool = False, dtype: torch.dtype | str | None = None
    ) -> Solution:
        """See `load`."""
        path = Path(path)
        if not path.exists():
            raise PinnkanError(f"{path} does not exist (give a run directory or a model file)")
        if adapter:
            return cls._with_adapter(path, dtype)
        file = model_file(path)
        meta, model = model_from_file(file, _as_dtype(dtype))
        return cls(_frozen(model), meta, file)

    @classmethod
    def _with_adapter(cls, path: Path, dtype: torch.dtype | str | None) -> Solution:
        found = adapter_file(path)
        if not found.is_file():
            raise PinnkanError(
                f"{path} has no adapter file (a pretrain, scratch or full fine-tuning run holds "
                "the whole network: load it without adapter=True)"
            )
        upd, _, model = base_with_adapter(found)  # in the adapter's own precision
        if dtype is not None:
            model = model.to(_as_dtype(dtype))
        return cls(_frozen(model), upd.meta, found)

    @property
    def coords(self) -> list[str]:
        """The names of the input columns: the family's coordinates, then any parameter inputs
        of a parametric network that is not fixed at one member."""
        family = FAMILIES.get(current_name(str(self.meta.get("pde"))))
        n = self.model.n_coords
        names = list(family.coords) if family is not None else [f"x{k}" for k in range(n)]
        return names[:n] + (list(self.model.params) if self.model.fixed is None else [])

    @property
    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of each input column (the network's own normalisation box)."""
        lo = self.model.lo.detach().cpu().numpy()
        hi = self.model.hi.detach().cpu().numpy()
        d = len(self.coords)
        return lo[:d], hi[:d]

    def check_points(self, points: np.ndarray) -> np.ndarray:
        """Points as an (N, d) float array; a wrong shape or a point outside the box is one
        line that says which."""
        d = len(self.coords)
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim == 1 and d == 1:
            pts = pts[:, None]
        if pts.ndim != 2 or pts.shape[1] != d:
            raise PinnkanError(
                f"points of shape {tuple(pts.shape)}, but this network takes (N, {d}) points: "
                f"columns {', '.join(self.coords)}"
            )
        if not np.isfinite(pts).all():
            raise PinnkanError("points hold NaN or infinite values")
        lo, hi = self.box
        slack = DOMAIN_SLACK * (hi - lo)
        bad = np.nonzero(((pts < lo - slack) | (pts > hi + slack)).any(axis=1))[0]
        if bad.size:
            box = ", ".join(f"{c} in [{a:g}, {b:g}]" for c, a, b in zip(self.coords, lo, hi))
            raise PinnkanError(
                f"{bad.size} of {len(pts)} points lie outside the domain ({box}); the first is "
                f"row {bad[0]}: {pts[bad[0]].tolist()}"
            )
        return pts

    def u(self, points: np.ndarray) -> np.ndarray:
        """u at `points` (N, d) -> (N,)."""
        return self._u(self.check_points(points))

    def derivatives(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """u, ∂u/∂c and ∂²u/∂c² for each coordinate c at `points` (N, d), exact (the forward
        jet engine that the residuals use), as arrays of shape (N,) keyed u, u_c, u_cc."""
        return self._derivatives(self.check_points(points))

    def _u(self, pts: np.ndarray) -> np.ndarray:
        """`u` at points that passed `check_points`."""
        return predict(self.model, self._tensor(pts)).cpu().numpy()

    def _derivatives(self, pts: np.ndarray) -> dict[str, np.ndarray]:
        """`derivatives` at points that passed `check_points`."""
        x = self._tensor(pts)
        names = self.coords[: self.model.n_coords]
        out: dict[str, list[np.ndarray]] = {"u": []}
        for c in names:
            out[f"u_{c}"], out[f"u_{c}{c}"] = [], []
        for chunk in x.split(EVAL_CHUNK):
            with torch.no_grad():
                jet = compute_jet(self.model, chunk, "forward")
            out["u"].append(jet.u.cpu().numpy())
            for k, c in enumerate(names):
                out[f"u_{c}"].append(jet.d(k).cpu().numpy())
                out[f"u_{c}{c}"].append(jet.dd(k).cpu().numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    def _tensor(self, points: np.ndarray) -> Tensor:
        return torch.as_tensor(points, dtype=self.model.lo.dtype, device=self.model.lo.device)


def _frozen(model: KAN) -> KAN:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def read_points(path: Path, key: str | None = None) -> np.ndarray:
    """The points array of an NPZ or HDF5 file: `key`, else the array named `points`, else the
    file's only array."""
    path = Path(path)
    if not path.is_file():
        raise PinnkanError(f"points file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return _pick(path, {k: f[k] for k in f.files}, key)
    if path.suffix in (".h5", ".hdf5"):
        with h5py.File(path, "r") as f:
            arrays: dict[str, Any] = {}
            f.visititems(
                lambda n, o: arrays.setdefault(n, o) if isinstance(o, h5py.Dataset) else None
            )
            found = _pick(path, arrays, key)
            return np.asarray(found[()])
    raise PinnkanError(f"points file {path}: give an .npz or .h5 file")


def _pick(path: Path, arrays: dict[str, Any], key: str | None) -> Any:
    if key is not None:
        if key not in arrays:
            raise PinnkanError(f"points file {path} has no array {key!r} (it has {sorted(arrays)})")
        return arrays[key]
    if "points" in arrays:
        return arrays["points"]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise PinnkanError(
        f"points file {path} holds {sorted(arrays) or 'no arrays'}: name the one to use "
        "with --key (or call it `points`)"
    )


def predict_to_file(
    run: Path | str,
    points: Path | str,
    out: Path | str,
    *,
    derivatives: bool = False,
    adapter: bool = False,
    key: str | None = None,
) -> Path:
    """Evaluate the network of `run` at the points of an NPZ/HDF5 file and write an HDF5 file:
    `points`, `u` (and u_c, u_cc per coordinate with `derivatives`), with the run, the model
    file and the column names as attributes. Written atomically."""
    sol = Solution.load(run, adapter=adapter)
    pts = sol.check_points(read_points(Path(points), key))
    fields = sol._derivatives(pts) if derivatives else {"u": sol._u(pts)}
    out = Path(out)
    with atomic_replace(out) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("points", data=pts)
        for name, values in fields.items():
            f.create_dataset(name, data=values)
        f.attrs["run"] = str(run)
        f.attrs["model_file"] = str(sol.path)
        f.attrs["columns"] = json.dumps(sol.coords)
        f.attrs["pde"] = str(sol.meta.get("pde"))
        f.attrs["pinnkan_version"] = __version__
    return out
