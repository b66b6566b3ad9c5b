"""The ParaView sidecar of a results.h5: ``results.xdmf``, XDMF 3 XML that points into the .h5.

It shows ``u_pred``, ``u_ref`` and ``abs_error`` as point data on the evaluation grid; when a
coordinate is named ``t`` the grid is a Temporal collection, one grid per ``grid/t`` value, whose
fields are HDF5 hyperslabs ``[..., k, ...]`` of the stored arrays (``t`` may be any axis),
declared with the topology's Dimensions (the count-1 time axis dropped; Xdmf2 needs that).

Index order. XDMF lists ``Dimensions`` slowest first and ParaView's X is the fastest (last)
index. Our fields are C-ordered with axis ``i`` = ``coords[i]``, so for (x, y) the *last* axis is
y. A 2DRectMesh referencing ``grid/x``/``grid/y`` therefore cannot show such a field
un-transposed: VX would have to be ``grid/y``. So:

- 1 spatial coordinate (e.g. (x, t)): a ``2DRectMesh`` of thickness 1, ``Dimensions="1 n_x"``,
  geometry ``VXVY`` = (``results.h5:/grid/x``, inline ``0``); nothing to transpose.
- 2 or 3 spatial coordinates: a ``2DSMesh``/``3DSMesh`` with ``Dimensions`` = the field's own
  shape (slowest first, exactly as stored) and explicit ``XY``/``XYZ`` point coordinates, inline
  in the XML (meshgrid, ``indexing="ij"``, of the 1-D axes), so every value sits at its true
  (x, y[, z]) and X is the first spatial coordinate. The sidecar grows with the grid
  (about 50 bytes per point and time step).

A diverged run (empty ``fields`` group) gets no sidecar: :func:`write_xdmf` returns None and
removes a stale one.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np

from pinnkan.common.atomic import atomic_replace
from pinnkan.io.axes import read_axes

XDMF_FILE = "results.xdmf"
FIELDS = ("u_pred", "u_ref", "abs_error")
TIME = "t"


def _dims(shape: tuple[int, ...]) -> str:
    return " ".join(str(int(n)) for n in shape)


def _number(ds: h5py.Dataset) -> dict[str, str]:
    kind = "Float" if ds.dtype.kind == "f" else ("Int" if ds.dtype.kind == "i" else "UInt")
    return {"NumberType": kind, "Precision": str(ds.dtype.itemsize)}


def _h5_item(parent: ET.Element, ds: h5py.Dataset, h5_ref: str) -> ET.Element:
    item = ET.SubElement(
        parent, "DataItem", Format="HDF", Dimensions=_dims(ds.shape), **_number(ds)
    )
    item.text = f"{h5_ref}:{ds.name}"
    return item


def _xml_item(parent: ET.Element, values: np.ndarray, fmt: str = "{:.17g}") -> ET.Element:
    """Inline data, one row of the last axis per line."""
    values = np.asarray(values)
    kind = "Float" if values.dtype.kind == "f" else "Int"
    item = ET.SubElement(
        parent,
        "DataItem",
        Format="XML",
        Dimensions=_dims(values.shape),
        NumberType=kind,
        Precision="8" if kind == "Float" else "4",
    )
    rows = values.reshape(-1, values.shape[-1] if values.ndim else 1)
    item.text = "\n".join(" ".join(fmt.format(v) for v in row) for row in rows)
    return item


def _mesh(grid: ET.Element, axes: list[np.ndarray], ds: list[h5py.Dataset], h5_ref: str) -> None:
    """Topology and geometry of the spatial grid (see the module docstring for the choice)."""
    if len(axes) == 1:
        ET.SubElement(grid, "Topology", TopologyType="2DRectMesh", Dimensions=f"1 {len(axes[0])}")
        geo = ET.SubElement(grid, "Geometry", GeometryType="VXVY")
        _h5_item(geo, ds[0], h5_ref)
        _xml_item(geo, np.zeros(1))
        return
    if len(axes) > 3:
        raise ValueError(f"XDMF holds at most 3 spatial coordinates, got {len(axes)}")
    shape = tuple(len(a) for a in axes)
    kind = f"{len(axes)}DSMesh"
    ET.SubElement(grid, "Topology", TopologyType=kind, Dimensions=_dims(shape))
    geo = ET.SubElement(grid, "Geometry", GeometryType="XY" if len(axes) == 2 else "XYZ")
    mesh = np.meshgrid(*axes, indexing="ij")  # each (n_c0, n_c1[, n_c2])
    points = np.stack([m.reshape(-1) for m in mesh], axis=1).astype(np.float64)  # (n_pts, d)
    _xml_item(geo, points)


def _attribute(grid: ET.Element, ds: h5py.Dataset, h5_ref: str, t_axis: int | None, k: int):
    """Node data ``ds``, or its hyperslab at time index ``k`` along axis ``t_axis``."""
    attr = ET.SubElement(
        grid, "Attribute", Name=ds.name.rsplit("/", 1)[-1], AttributeType="Scalar", Center="Node"
    )
    if t_axis is None:
        _h5_item(attr, ds, h5_ref)
        return
    start = [0] * ds.ndim
    start[t_axis] = k
    count = list(ds.shape)
    count[t_axis] = 1
    # declared like the topology (Xdmf2 maps data dims onto it): time axis dropped, 1-D as (1, n)
    space = [n for i, n in enumerate(count) if i != t_axis]
    space = [1, *space] if len(space) == 1 else space
    slab = ET.SubElement(attr, "DataItem", ItemType="HyperSlab", Dimensions=_dims(space))
    _xml_item(slab, np.array([start, [1] * ds.ndim, count], dtype=np.int64), fmt="{}")
    _h5_item(slab, ds, h5_ref)


def write_xdmf(h5_path: Path, xdmf_path: Path | None = None) -> Path | None:
    """Write the XDMF 3 sidecar of ``h5_path`` (default: ``results.xdmf`` beside it), atomically.

    Returns its path, or None for a run without fields (diverged), where a stale sidecar at that
    path is removed instead. The .h5 is referenced relative to the sidecar's directory.
    """
    h5_path = Path(h5_path)
    xdmf_path = Path(xdmf_path) if xdmf_path is not None else h5_path.parent / XDMF_FILE
    h5_ref = os.path.relpath(h5_path.resolve(), xdmf_path.resolve().parent)
    with h5py.File(h5_path, "r") as f:
        fields = f["fields"]
        present = [name for name in FIELDS if name in fields]  # no reference: u_pred only
        if "u_pred" not in present:
            xdmf_path.unlink(missing_ok=True)
            return None
        coords = read_axes(fields.attrs["axes"])
        t_axis = coords.index(TIME) if TIME in coords else None
        space = [c for c in coords if c != TIME]
        space_ds = [f["grid"][c] for c in space]
        axes = [ds[()] for ds in space_ds]  # each (n_c,)
        root = ET.Element("Xdmf", Version="3.0")
        domain = ET.SubElement(root, "Domain")  # one Grid only: meshio reads no more
        info = {k: str(f.attrs.get(k, "")) for k in ("stage", "pde", "status")}
        name = f"{info['pde']} ({info['stage']})"
        if t_axis is None:
            top = ET.SubElement(domain, "Grid", Name=name, GridType="Uniform")
            grids = [(top, 0)]
        else:
            top = ET.SubElement(
                domain, "Grid", Name=name, GridType="Collection", CollectionType="Temporal"
            )
            times = f["grid"][TIME][()]  # (n_t,)
            grids = []
            for k, t in enumerate(times):
                grid = ET.SubElement(top, "Grid", Name=f"t={t:.6g}", GridType="Uniform")
                ET.SubElement(grid, "Time", Value=f"{float(t):.17g}")
                grids.append((grid, k))
        for key, value in info.items():
            top.insert(0, ET.Element("Information", Name=key, Value=value))
        for grid, k in grids:
            _mesh(grid, axes, space_ds, h5_ref)
            for field in present:
                _attribute(grid, fields[field], h5_ref, t_axis, k)
    ET.indent(root)
    text = '<?xml version="1.0" ?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    with atomic_replace(xdmf_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return xdmf_path
