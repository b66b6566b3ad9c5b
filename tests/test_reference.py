"""Reference solutions from files (pinnkan/pde/reference.py): NPZ and HDF5 layouts (pinnkan's
own results.h5, PDEBench-style samples-first tensors), multilinear interpolation, and one-line
errors for a file that does not fit the domain."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pinnkan.errors import PinnkanError
from pinnkan.pde import build_pde
from pinnkan.pde.config import member_from_config
from pinnkan.pde.reference import FileReference
from pinnkan.run import runner
from tests.conftest import tiny_config


def smooth(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.sin(np.pi * x) * np.exp(-t) + 0.3 * x * t


def points(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_npz_in_coordinate_order_interpolates_to_second_order(tmp_path: Path) -> None:
    errors = []
    for n in (41, 81):
        x, t = np.linspace(0, 1, n), np.linspace(0, 1, n + 10)
        np.savez(tmp_path / "u.npz", x=x, t=t, u=smooth(*np.meshgrid(x, t, indexing="ij")))
        ref = FileReference(tmp_path / "u.npz", ("x", "t"), ((0, 1), (0, 1)))
        p = points(2000)
        errors.append(
            float((ref(p) - torch.from_numpy(smooth(p[:, 0].numpy(), p[:, 1].numpy()))).abs().max())
        )
        node = torch.tensor([[x[3], t[5]]], dtype=torch.float64)
        assert float(ref(node)) == pytest.approx(smooth(x[3], t[5]), abs=1e-14)
    assert errors[1] < errors[0] / 3.5 and errors[1] < 2e-4  # O(h^2)


def test_pdebench_style_file_samples_first_and_t_first(tmp_path: Path) -> None:
    x, t = np.linspace(0, 1, 65), np.linspace(0, 1, 51)
    u = smooth(*np.meshgrid(x, t, indexing="ij")).T  # (nt, nx): t first
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["x-coordinate"], f["t-coordinate"] = x, np.append(t, 1.02)  # one t more
        f["tensor"] = np.stack([0 * u, u, 2 * u])
    ref = FileReference(tmp_path / "b.h5", ("x", "t"), ((0, 1), (0, 1)), sample=2)
    p = points(500, 1)
    want = 2 * smooth(p[:, 0].numpy(), p[:, 1].numpy())
    assert np.abs(ref(p).numpy() - want).max() < 2e-3


def test_a_results_file_of_another_run_is_a_reference(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, {"pde.target": {"mu": 1.5}})
    runner.pretrain(cfg, tmp_path / "run")
    ref = FileReference(tmp_path / "run" / "results.h5", ("x", "y"), ((0, 1), (0, 1)))
    exact = build_pde("elliptic", {"mu": 1.0}).exact
    with h5py.File(tmp_path / "run" / "results.h5") as f:
        grid = np.stack(np.meshgrid(f["grid/x"][()], f["grid/y"][()], indexing="ij"), -1)
    nodes = torch.from_numpy(grid.reshape(-1, 2).astype(np.float64))
    assert torch.allclose(ref(nodes), exact(nodes).double(), atol=1e-6)  # float32 run


def test_square_grid_needs_an_order(tmp_path: Path) -> None:
    x = np.linspace(0, 1, 21)
    u = smooth(*np.meshgrid(x, x, indexing="ij")).T  # stored (t, x)
    np.savez(tmp_path / "sq.npz", x=x, t=x, u=u)
    with pytest.raises(PinnkanError, match=r"set pde\.reference\.order"):
        FileReference(tmp_path / "sq.npz", ("x", "t"), ((0, 1), (0, 1)))
    ref = FileReference(tmp_path / "sq.npz", ("x", "t"), ((0, 1), (0, 1)), order=["t", "x"])
    node = torch.tensor([[x[2], x[7]]], dtype=torch.float64)
    assert float(ref(node)) == pytest.approx(smooth(x[2], x[7]), abs=1e-14)


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (  # more than one cell (0.125) short of x = 1
            lambda p: np.savez(
                p, x=np.linspace(0, 0.5, 5), t=np.linspace(0, 1, 6), u=np.zeros((5, 6))
            ),
            {},
            r"covers x in \[0, 0.5\], more than one cell short",
        ),
        (lambda p: np.savez(p, x=np.linspace(0, 1, 5), u=np.zeros((5, 6))), {}, "no axis for t"),
        (
            lambda p: np.savez(
                p, x=np.linspace(0, 1, 5), t=np.linspace(0, 1, 6), v=np.zeros((5, 6))
            ),
            {},
            "no field",
        ),
        (
            lambda p: np.savez(
                p, x=np.linspace(0, 1, 5), t=np.linspace(0, 1, 6), u=np.zeros((3, 5, 6))
            ),
            {"sample": 3},
            "sample 3 of 3",
        ),
        (
            lambda p: np.savez(
                p, x=np.linspace(0, 1, 5), t=np.linspace(0, 1, 6), u=np.zeros((4, 7))
            ),
            {},
            "cannot tell",
        ),
        (lambda p: p.write_text("not an array file"), {}, "cannot read reference file"),
    ],
    ids=["short-axis", "no-axis", "no-field", "bad-sample", "shape", "garbage"],
)
def test_a_file_that_does_not_fit_is_one_line(
    tmp_path: Path, make, kwargs: dict, match: str
) -> None:
    path = tmp_path / "r.npz"
    make(path)
    with pytest.raises(PinnkanError, match=match) as info:
        FileReference(path, ("x", "t"), ((0, 1), (0, 1)), **kwargs)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_transfer_against_a_file_reference(tmp_path: Path) -> None:
    """The target's reference from a file: interpolated to the closed form's O(h²) between its
    points; a run scores at the file's own points, so a file on the closed form's evaluation
    grid gives its rel. L2 (up to the boundary values the run trains on, read from the coarse
    file); the source keeps its closed form."""
    target = build_pde("elliptic", {"mu": 1.5})
    x, y = np.linspace(0, 1, 201), np.linspace(0, 1, 161)
    grid = np.stack(np.meshgrid(x, y, indexing="ij"), -1).reshape(-1, 2)
    u = target.exact(torch.from_numpy(grid)).numpy().reshape(len(x), len(y))
    np.savez(tmp_path / "mu15.npz", x=x, y=y, u=u)
    member = member_from_config(
        {
            "name": "elliptic",
            "target": {"mu": 1.5},
            "reference": {"target": str(tmp_path / "mu15.npz")},
        },
        "target",
    )
    p = points(1000, 2)
    assert torch.allclose(member.exact(p), target.exact(p), atol=5e-4)  # linear interpolation
    assert member.residual.__func__ is target.residual.__func__  # the same operator
    cfg = tiny_config(tmp_path, {"pde.target": {"mu": 1.5}})  # eval.n = 9
    x9 = np.linspace(0, 1, 9)
    grid9 = torch.from_numpy(np.stack(np.meshgrid(x9, x9, indexing="ij"), -1).reshape(-1, 2))
    np.savez(tmp_path / "mu15_9.npz", x=x9, y=x9, u=target.exact(grid9).numpy().reshape(9, 9))
    runner.pretrain(cfg, tmp_path / "src")
    common = {**cfg, "stage": "transfer", "source": str(tmp_path / "src"), "cr": 0.5}
    closed = runner.transfer(common, tmp_path / "a")
    on_grid = {"target": str(tmp_path / "mu15_9.npz"), "order": ["x", "y"]}
    from_file = runner.transfer(
        {**common, "pde": {**cfg["pde"], "reference": on_grid}}, tmp_path / "b"
    )
    assert from_file.metrics["rel_l2"] == pytest.approx(closed.metrics["rel_l2"], rel=1e-3)
    fine = {"target": str(tmp_path / "mu15.npz")}
    on_fine = runner.transfer({**common, "pde": {**cfg["pde"], "reference": fine}}, tmp_path / "c")
    assert on_fine.grid["x"].shape == (201,) and on_fine.u_ref.shape == (201, 161)
