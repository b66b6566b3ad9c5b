"""The one definition of the ``results.h5`` layout (METHOD.md section 4): write it, read it back.

Layout (every string is a plain ``str`` attribute, so plain h5py reads the file without pinnkan):

- root attributes: ``pinnkan_version``, ``stage``, ``pde``, ``pde_params`` (JSON object string),
  ``seed``, ``config`` (resolved YAML), ``error_metric`` (:data:`ERROR_METRIC`), ``status``
  (:data:`STATUSES`: ``ok``, ``interrupted`` or ``diverged``), ``machine`` (JSON object: platform,
  CPU model, SIMD level, ``MKL_ENABLE_INSTRUCTIONS``, torch, threads, GPU; seeded runs reproduce
  on one machine, not across CPUs: :mod:`pinnkan.common.machine`), plus any extra entries of
  :attr:`RunResult.attrs` (e.g. ``adapter``, ``cr``);
- ``grid/<coord>``: 1-D axis of the evaluation grid for each coordinate;
- ``fields/u_pred``, ``fields/u_ref``, ``fields/abs_error``: arrays on that grid, axis ``i`` is
  coordinate ``coords[i]``; the ``fields`` group attribute ``axes`` is the coordinate names in
  axis order, an HDF5 array of variable-length UTF-8 strings (plain h5py:
  ``list(f["fields"].attrs["axes"]) == ["x", "t"]``; files written before pinnkan stored it as a
  JSON list string, ``'["x", "t"]'``, which :func:`read_results` still reads); a ``diverged``
  run has an empty ``fields`` group and no ``rel_l2``/``max_abs_error`` metrics, but
  ``diverged_at_step``; a run without a reference (root attribute ``reference`` = ``none``)
  has ``u_pred`` only and no error metrics;
- ``metrics``: group whose attributes are the scalar metrics (``rel_l2``, ``max_abs_error``,
  ``n_trainable``, ``n_total``, ``train_seconds``, ``steps``, plus extras such as the held-out
  losses ``loss`` (weighted total) and ``loss_<group>`` (mean squared residual of the PDE and
  of each condition));
- ``history/<key>``: equal-length 1-D datasets ``step``, ``seconds``, ``loss``, ``rel_l2``;
- transfer runs only: ``lotra/layer_<l>/{G,U1,U2,U3}`` and ``model/layer_<l>/{A_pretrained,delta}``.

Beside it, :func:`write_results` writes the ParaView sidecar ``results.xdmf``
(:mod:`pinnkan.io.xdmf`), except for a ``diverged`` run, which has no fields to show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pinnkan.common.atomic import atomic_replace
from pinnkan.common.machine import machine_info
from pinnkan.io.axes import read_axes
from pinnkan.io.xdmf import write_xdmf
from pinnkan.version import __version__

RESULTS_FILE = "results.h5"

ERROR_METRIC = (
    "rel_l2 = ||u_pred - u_ref||_2 / ||u_ref||_2 over all points of the evaluation grid; "
    "max_abs_error = max |u_pred - u_ref| over the grid; with a t coordinate, PDEBench's "
    "nrmse (per time slice RMSE / RMS of u_ref) and brmse (per slice RMSE over the spatial "
    "faces), averaged over the slices after the first"
)

REQUIRED_METRICS = ("rel_l2", "max_abs_error", "n_trainable", "n_total", "train_seconds", "steps")
REQUIRED_HISTORY = ("step", "seconds", "loss", "rel_l2")
# ok: finished; interrupted: stopped by a signal, fields and metrics of the model at that step;
# diverged: non-finite loss, no fields and no error metrics (nothing to mistake for a result)
STATUSES = ("ok", "interrupted", "diverged")
MODEL_KEYS = ("A_pretrained", "delta")
RESERVED_ATTRS = (
    "pinnkan_version",
    "stage",
    "pde",
    "pde_params",
    "seed",
    "config",
    "error_metric",
    "status",
    "machine",
)


@dataclass
class RunResult:
    """Everything one run stores in ``results.h5``; built by a stage, consumed by the writer."""

    stage: str
    pde: str
    pde_params: dict[str, float]
    seed: int
    config_yaml: str
    coords: list[str]  # coordinate names in axis order, e.g. ["x", "y"] or ["x", "t"]
    grid: dict[str, np.ndarray]  # coord -> 1-D axis, shape (n_coord,)
    u_pred: np.ndarray | None  # shape tuple(len(grid[c]) for c in coords); None: no fields
    u_ref: np.ndarray | None  # same shape as u_pred
    metrics: dict[str, float | int]  # REQUIRED_METRICS plus any extras
    history: dict[str, np.ndarray]  # REQUIRED_HISTORY (plus extras), each shape (n_samples,)
    status: str = "ok"  # ok | interrupted | diverged (STATUSES)
    lotra: dict[int, dict[str, np.ndarray]] | None = None  # layer -> {"G","U1","U2","U3"}
    # layer -> {"A_pretrained", "delta"}; delta shape (n_in, n_out, n_d)
    model_tensors: dict[int, dict[str, np.ndarray]] | None = None
    attrs: dict[str, str | int | float] = field(default_factory=dict)  # extra root attributes


def relative_l2(u_pred: np.ndarray, u_ref: np.ndarray) -> float:
    """Relative L2 error ||u_pred - u_ref||_2 / ||u_ref||_2 over all grid points (ERROR_METRIC)."""
    diff = np.asarray(u_pred, dtype=np.float64) - np.asarray(u_ref, dtype=np.float64)
    return float(np.linalg.norm(diff.ravel()) / np.linalg.norm(np.asarray(u_ref, np.float64)))


def max_abs_error(u_pred: np.ndarray, u_ref: np.ndarray) -> float:
    """Maximum pointwise absolute error max |u_pred - u_ref| over the grid (ERROR_METRIC)."""
    diff = np.asarray(u_pred, dtype=np.float64) - np.asarray(u_ref, dtype=np.float64)
    return float(np.max(np.abs(diff)))


def _validate(result: RunResult) -> None:
    """Check shapes and required keys up front, so a malformed result fails before any I/O."""
    missing = [c for c in result.coords if c not in result.grid]
    if missing:
        raise ValueError(f"grid lacks axes for coords {missing}")
    if result.status not in STATUSES:
        raise ValueError(f"status {result.status!r} is not one of {STATUSES}")
    has_fields = result.u_pred is not None
    if result.status == "diverged" and has_fields:
        raise ValueError("a diverged run writes no fields")
    if result.status != "diverged" and not has_fields:
        raise ValueError(f"a run with status {result.status!r} needs u_pred")
    shape = tuple(len(np.asarray(result.grid[c]).reshape(-1)) for c in result.coords)
    if has_fields:
        for name, arr in (("u_pred", result.u_pred), ("u_ref", result.u_ref)):
            if arr is not None and np.shape(arr) != shape:
                raise ValueError(f"{name} has shape {np.shape(arr)}, grid implies {shape}")
    required = ("n_trainable", "n_total", "steps")
    if result.u_ref is not None:  # error metrics need a reference
        required = REQUIRED_METRICS
    lacking = [k for k in required if k not in result.metrics]
    if lacking:
        raise ValueError(f"metrics lack {lacking}")
    lacking = [k for k in REQUIRED_HISTORY if k not in result.history]
    if lacking:
        raise ValueError(f"history lacks {lacking}")
    lengths = {k: len(np.asarray(v).reshape(-1)) for k, v in result.history.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"history entries differ in length: {lengths}")
    clash = [k for k in result.attrs if k in RESERVED_ATTRS]
    if clash:
        raise ValueError(f"extra attrs would overwrite reserved root attributes {clash}")


def _write_layers(
    parent: h5py.Group, layers: dict[int, dict[str, np.ndarray]], keys: tuple[str, ...] = ()
) -> None:
    """Write ``layer_<l>/<key>`` datasets for each layer index into ``parent``: `keys`, each
    required, or every tensor a layer has when none are named."""
    for layer, tensors in sorted(layers.items()):
        missing = [k for k in keys if k not in tensors]
        if missing:
            raise ValueError(f"{parent.name}/layer_{layer} lacks {missing}")
        grp = parent.create_group(f"layer_{int(layer)}")
        for key in keys or tuple(tensors):
            grp.create_dataset(key, data=np.asarray(tensors[key]))


def _write_file(f: h5py.File, result: RunResult) -> None:
    """Fill an open, empty HDF5 file with the layout described in the module docstring."""
    f.attrs["pinnkan_version"] = str(__version__)
    f.attrs["stage"] = str(result.stage)
    f.attrs["pde"] = str(result.pde)
    f.attrs["pde_params"] = json.dumps(dict(result.pde_params), default=_py)
    f.attrs["seed"] = int(result.seed)
    f.attrs["config"] = str(result.config_yaml)
    f.attrs["error_metric"] = ERROR_METRIC
    f.attrs["status"] = str(result.status)
    f.attrs["machine"] = json.dumps(machine_info())
    for key, value in result.attrs.items():
        f.attrs[key] = value

    grid = f.create_group("grid")
    for c in result.coords:
        grid.create_dataset(c, data=np.asarray(result.grid[c]).reshape(-1))  # (n_c,)

    fields = f.create_group("fields")
    fields.attrs.create("axes", [str(c) for c in result.coords], dtype=h5py.string_dtype())
    if result.u_pred is not None:
        u_pred = np.asarray(result.u_pred)  # (n_c0, n_c1, ...)
        fields.create_dataset("u_pred", data=u_pred)
    if result.u_pred is not None and result.u_ref is not None:
        u_ref = np.asarray(result.u_ref)  # (n_c0, n_c1, ...)
        fields.create_dataset("u_ref", data=u_ref)
        fields.create_dataset("abs_error", data=np.abs(u_pred - u_ref))

    metrics = f.create_group("metrics")
    for key, value in result.metrics.items():
        metrics.attrs[key] = value

    history = f.create_group("history")
    for key, value in result.history.items():
        history.create_dataset(key, data=np.asarray(value).reshape(-1))  # (n_samples,)

    if result.lotra is not None:
        _write_layers(f.create_group("lotra"), result.lotra)  # the adapter's factors
    if result.model_tensors is not None:
        _write_layers(f.create_group("model"), result.model_tensors, MODEL_KEYS)


def write_results(path: Path, result: RunResult) -> None:
    """Write ``result`` to ``path`` atomically, so readers never see a half-written results.h5.

    The file is built as ``.<name>.tmp-<pid>`` in the same directory and moved onto ``path`` with
    ``os.replace`` only once complete; on any error the temporary file is deleted and ``path`` is
    left as it was. Then the ParaView sidecar ``results.xdmf`` is written beside it (also
    atomically; none for a diverged run, see :func:`pinnkan.io.xdmf.write_xdmf`); if that fails,
    the error propagates and results.h5 is already complete.
    """
    path = Path(path)
    _validate(result)
    with atomic_replace(path) as tmp, h5py.File(tmp, "w") as f:
        _write_file(f, result)

    write_xdmf(path)


def _py(value: Any) -> Any:
    """Turn an h5py attribute value (numpy scalar, bytes) into a plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_py(v) for v in value.tolist()] if value.dtype.kind in "OS" else value
    return value


def _read_layers(f: h5py.File, name: str) -> dict[int, dict[str, np.ndarray]]:
    """Read ``<name>/layer_<l>/*`` into {l: {key: array}}; empty when the group is absent."""
    if name not in f:
        return {}
    out: dict[int, dict[str, np.ndarray]] = {}
    for gname, grp in f[name].items():
        layer = int(gname.removeprefix("layer_"))
        out[layer] = {key: ds[()] for key, ds in grp.items()}
    return dict(sorted(out.items()))


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def results_problem(path: Path) -> str | None:
    """What is wrong with a file expected to be a pinnkan results.h5 (None: it opens and has
    pinnkan's root attributes)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(len(HDF5_SIGNATURE))
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if size == 0:
        return "the file is empty (0 bytes)"
    if head != HDF5_SIGNATURE:
        return f"not an HDF5 file ({size} bytes)"
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("stage", "pde", "pinnkan_version") if k not in f.attrs]
    except OSError as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"truncated or damaged HDF5 file ({size} bytes; {why})"
    if missing:
        return f"an HDF5 file of another program (no {', '.join(missing)} attribute)"
    return None


def root_attrs(results: Path) -> dict[str, Any]:
    """The root attributes of a results.h5 ({} when it is missing or unreadable)."""
    try:
        with h5py.File(results, "r") as f:
            return dict(f.attrs)
    except OSError:
        return {}


def finished(results: Path) -> bool:
    """Whether the run of this results.h5 finished (status ok)."""
    return root_attrs(results).get("status") == "ok"


def read_results(path: Path) -> dict[str, Any]:
    """Read a results.h5 into plain dicts/arrays, for tests and the report command."""
    with h5py.File(Path(path), "r") as f:
        attrs = {k: _py(v) for k, v in f.attrs.items()}
        if "pde_params" in attrs:
            attrs["pde_params"] = json.loads(attrs["pde_params"])
        coords = read_axes(f["fields"].attrs["axes"])
        return {
            "attrs": attrs,
            "coords": coords,
            "grid": {c: f["grid"][c][()] for c in coords},
            "fields": {k: ds[()] for k, ds in f["fields"].items()},
            "metrics": {k: _py(v) for k, v in f["metrics"].attrs.items()},
            "history": {k: ds[()] for k, ds in f["history"].items()},
            "lotra": _read_layers(f, "lotra"),
            "model": _read_layers(f, "model"),
        }
