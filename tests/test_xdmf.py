"""The ParaView sidecar results.xdmf (pinnkan.io.xdmf) and the string-array ``axes`` attribute.

The XDMF is interpreted here independently of the writer, following the XDMF rules (Dimensions
slowest first; a RectMesh point index is ix + nx * (iy + ny * iz) with X from VX; an SMesh point
is a row of its XY/XYZ geometry; a HyperSlab is start/stride/count rows over its source), and
every value is compared with the analytic field at the point's coordinates and time: a
transposed or mis-sliced declaration fails.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

from pinnkan.io.results import RunResult, max_abs_error, read_results, relative_l2, write_results
from pinnkan.io.xdmf import write_xdmf

SIZES = {"x": 7, "y": 4, "z": 3, "t": 5}  # all different, so a swapped axis changes a shape
CASES = [("x", "y"), ("x", "t"), ("x", "y", "t")]


def exact(**c: np.ndarray) -> np.ndarray:
    """A field that is neither symmetric nor separable in its coordinates."""
    x, y, t = c["x"], c.get("y", 0.0), c.get("t", 0.0)
    return np.sin(3 * x + 0.5) * (1 + 2 * y) + np.cos(2 * y - x) * np.exp(-t) + 0.3 * t * x


def make_grid_result(coords: tuple[str, ...], status: str = "ok") -> RunResult:
    """A synthetic run on a tensor grid over ``coords`` (axis i = coords[i])."""
    grid = {c: np.linspace(0.1 * i, 1.0 + i, SIZES[c]) for i, c in enumerate(coords)}
    mesh = np.meshgrid(*(grid[c] for c in coords), indexing="ij")  # each (n_c0, n_c1, ...)
    u_ref = exact(**dict(zip(coords, mesh)))
    u_pred = u_ref + 0.01 * mesh[0]
    fields = status != "diverged"
    metrics = {"n_trainable": 2, "n_total": 3, "train_seconds": 0.5, "steps": 10}
    if fields:
        metrics.update(
            rel_l2=relative_l2(u_pred, u_ref), max_abs_error=max_abs_error(u_pred, u_ref)
        )
    return RunResult(
        stage="pretrain",
        pde="elliptic" if "t" not in coords else "parabolic",
        pde_params={},
        seed=0,
        config_yaml="",
        coords=list(coords),
        grid=grid,
        u_pred=u_pred if fields else None,
        u_ref=u_ref if fields else None,
        metrics=metrics,
        history={k: np.arange(3.0) for k in ("step", "seconds", "loss", "rel_l2")},
        status=status,
    )


def item_values(item: ET.Element, base: Path, seen: list[str]) -> np.ndarray:
    """Evaluate a DataItem; check each HDF reference exists with the declared shape."""
    dims = tuple(int(n) for n in item.get("Dimensions").split())
    if item.get("ItemType") == "HyperSlab":
        params, source = list(item)
        start, stride, count = item_values(params, base, seen).astype(int)
        src = item_values(source, base, seen)
        assert np.all(start + stride * (count - 1) < src.shape), "hyperslab out of bounds"
        index = tuple(slice(a, a + s * n, s) for a, s, n in zip(start, stride, count))
        out = src[index]
        assert out.shape == tuple(count)
        # declared as the topology: the time axis (count 1) dropped, a C-order reshape
        assert [n for n in dims if n != 1] == [n for n in count if n != 1]
        return out.reshape(dims)
    text = item.text.strip()
    if item.get("Format") == "HDF":
        file, dataset = text.split(":", 1)
        with h5py.File(base / file, "r") as f:
            assert dataset in f, f"{text} does not exist"
            ds = f[dataset]
            assert ds.shape == dims, f"{text}: shape {ds.shape}, declared {dims}"
            assert ds.dtype.itemsize == int(item.get("Precision"))
            seen.append(dataset)
            return ds[()]
    assert item.get("Format") == "XML"
    return np.array(text.split(), dtype=float).reshape(dims)


def grid_points(grid: ET.Element, base: Path, seen: list[str]) -> np.ndarray:
    """Point coordinates (n_points, 3) in XDMF point order."""
    topo, geo = grid.find("Topology"), grid.find("Geometry")
    dims = [int(n) for n in topo.get("Dimensions").split()]
    kind, gtype = topo.get("TopologyType"), geo.get("GeometryType")
    arrays = [item_values(i, base, seen) for i in geo.findall("DataItem")]
    if kind.endswith("RectMesh"):
        assert gtype == ("VXVY" if kind == "2DRectMesh" else "VXVYVZ")
        assert [len(a) for a in arrays] == dims[::-1]  # X has the fastest (last) dimension
        mesh = np.meshgrid(*arrays[::-1], indexing="ij")  # slowest first
        pts = np.stack([m.reshape(-1) for m in mesh[::-1]], axis=1)
    else:
        assert kind in ("2DSMesh", "3DSMesh") and gtype == ("XY" if kind == "2DSMesh" else "XYZ")
        assert len(dims) == int(kind[0])
        (pts,) = arrays
        assert pts.shape == (int(np.prod(dims)), len(dims))
    return np.hstack([pts, np.zeros((len(pts), 3 - pts.shape[1]))])


def uniform_grids(xdmf: Path, coords: tuple[str, ...]) -> list[ET.Element]:
    root = ET.parse(xdmf).getroot()
    assert root.tag == "Xdmf" and root.get("Version", "").startswith("3")
    (top,) = root.find("Domain").findall("Grid")
    if "t" not in coords:
        assert top.get("GridType") == "Uniform"
        return [top]
    assert top.get("GridType") == "Collection" and top.get("CollectionType") == "Temporal"
    return top.findall("Grid")


@pytest.mark.parametrize("coords", CASES, ids=["-".join(c) for c in CASES])
def test_sidecar_matches_fields(tmp_path: Path, coords: tuple[str, ...]) -> None:
    res = make_grid_result(coords)
    h5 = tmp_path / "results.h5"
    write_results(h5, res)
    xdmf = tmp_path / "results.xdmf"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.h5", "results.xdmf"]
    space = [c for c in coords if c != "t"]
    grids = uniform_grids(xdmf, coords)
    times = res.grid["t"] if "t" in coords else [0.0]
    assert len(grids) == len(times)
    seen: list[str] = []
    for k, grid in enumerate(grids):
        if "t" in coords:
            assert float(grid.find("Time").get("Value")) == pytest.approx(times[k], abs=0)
        pts = grid_points(grid, tmp_path, seen)
        assert len(pts) == np.prod([SIZES[c] for c in space])
        point_coords = dict(zip(space, pts.T))  # X = first spatial coordinate, ...
        assert not pts[:, len(space) :].any()
        attrs = {a.get("Name"): a for a in grid.findall("Attribute")}
        assert sorted(attrs) == ["abs_error", "u_pred", "u_ref"]
        for name, attr in attrs.items():
            assert attr.get("Center") == "Node"
            (item,) = attr.findall("DataItem")
            values = item_values(item, tmp_path, seen).reshape(-1)  # XDMF point order
            assert values.shape == (len(pts),)
            u_ref = exact(**point_coords, t=np.full(len(pts), times[k]))
            if name == "u_ref":
                np.testing.assert_allclose(values, u_ref, rtol=1e-12, atol=1e-12)
            elif name == "u_pred":
                np.testing.assert_allclose(values, u_ref + 0.01 * point_coords["x"], atol=1e-12)
            else:
                np.testing.assert_allclose(values, 0.01 * np.abs(point_coords["x"]), atol=1e-12)
    assert {"/fields/u_pred", "/fields/u_ref", "/fields/abs_error"} <= set(seen)


def test_diverged_run_gets_no_sidecar(tmp_path: Path) -> None:
    h5 = tmp_path / "results.h5"
    write_results(h5, make_grid_result(("x", "t")))
    assert (tmp_path / "results.xdmf").exists()
    write_results(h5, make_grid_result(("x", "t"), status="diverged"))  # rerun over it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.h5"]
    assert write_xdmf(h5) is None


def test_sidecar_elsewhere_references_h5_relatively(tmp_path: Path) -> None:
    h5 = tmp_path / "run" / "results.h5"
    h5.parent.mkdir()
    write_results(h5, make_grid_result(("x", "y")))
    (tmp_path / "views").mkdir()
    out = write_xdmf(h5, tmp_path / "views" / "run.xdmf")
    assert out == tmp_path / "views" / "run.xdmf"
    text = out.read_text()
    assert "../run/results.h5:/fields/u_pred" in text and str(tmp_path) not in text


def test_axes_is_a_string_array_and_old_json_still_reads(tmp_path: Path) -> None:
    h5 = tmp_path / "results.h5"
    write_results(h5, make_grid_result(("x", "t")))
    with h5py.File(h5, "r") as f:
        axes = list(f["fields"].attrs["axes"])
        assert axes == ["x", "t"] and all(type(a) is str for a in axes)
    with h5py.File(h5, "r+") as f:  # the layout before: a JSON list string
        f["fields"].attrs["axes"] = json.dumps(["x", "t"])
    assert read_results(h5)["coords"] == ["x", "t"]
    (tmp_path / "results.xdmf").unlink()
    assert write_xdmf(h5) == tmp_path / "results.xdmf"


def test_vtk_xdmf_reader_places_values(tmp_path: Path) -> None:
    """VTK's (ParaView's legacy "XDMF Reader") reading of the sidecar, where vtk is installed:
    every point value equals the exact field at that point's coordinates and time. (meshio is
    no use here: its XDMF reader needs an explicit connectivity, no SMesh/RectMesh, and one
    Grid without Temporal collection.)"""
    xdmf2 = pytest.importorskip("vtkmodules.vtkIOXdmf2")
    from vtkmodules.util.numpy_support import vtk_to_numpy

    for coords in CASES:
        run = tmp_path / "-".join(coords)
        run.mkdir()
        res = make_grid_result(coords)
        write_results(run / "results.h5", res)
        reader = xdmf2.vtkXdmfReader()
        reader.SetFileName(str(run / "results.xdmf"))
        reader.UpdateInformation()
        info = reader.GetOutputInformation(0)
        key = reader.GetExecutive().TIME_STEPS()
        times = list(info.Get(key)) if info.Has(key) else [0.0]
        assert len(times) == len(res.grid.get("t", [0.0]))
        for t in times:
            reader.UpdateTimeStep(t)
            data = reader.GetOutputDataObject(0)
            pts = np.array([data.GetPoint(i) for i in range(data.GetNumberOfPoints())])
            space = [c for c in coords if c != "t"]
            u = vtk_to_numpy(data.GetPointData().GetArray("u_ref"))
            expect = exact(**dict(zip(space, pts.T)), t=np.full(len(pts), t))
            np.testing.assert_allclose(u, expect, atol=1e-12)
