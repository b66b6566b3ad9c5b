"""The exact periodic input embedding (`model.periodic`, `KAN(periodic=...)`): u and its
derivatives exactly periodic for every layer kind, the jet against nested autograd and finite
differences, the Jacobian against jacrev, the spec in files (and old files without it), LoTRA
on the wider first layer, and the CLI setting."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from pinnkan.adapters import AdapterConfig, apply, load_adapter, save_adapter
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import MODEL_FORMAT, load_checkpoint, save_checkpoint
from pinnkan.layers.jet import Jet
from pinnkan.network.derivatives import autograd_jet
from pinnkan.network.kan import KAN, LAYER_KINDS, spec_differences
from pinnkan.pde import FAMILIES, build_pde
from pinnkan.pinn.jacobian import residuals_and_jacobian, trainable_parameters
from pinnkan.run import runner
from pinnkan.run.merge import model_from_file
from pinnkan.run.setup import periodic_axes
from pinnkan.run.sources import check_compatible
from tests.conftest import describe, run_pinnkan, tiny, tiny_config
from tests.test_lm import _jacrev, _problem

F64 = torch.float64
KINDS = list(LAYER_KINDS)
BOX = [(0.0, 2.0 * math.pi), (-1.0, 3.0), (0.0, 1.0)]


def _net(kind: str, periodic: tuple[int, ...] = (0,), dim: int = 2, seed: int = 0) -> KAN:
    gen = torch.Generator().manual_seed(seed)
    return KAN([dim, 5, 4, 1], BOX[:dim], kind=kind, dtype=F64, generator=gen, periodic=periodic)


def _points(n: int, dim: int, seed: int = 1) -> torch.Tensor:
    unit = torch.rand(n, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    lo, hi = (torch.tensor([b[i] for b in BOX[:dim]], dtype=F64) for i in (0, 1))
    return lo + unit * (hi - lo)


def _faces(x: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    low, high = x.clone(), x.clone()
    low[:, axis], high[:, axis] = BOX[axis][0], BOX[axis][1]
    return low, high


def _assert_jets_equal(a: Jet, b: Jet, atol: float) -> None:
    for got, want in ((a.value, b.value), (a.d1, b.d1), (a.d2, b.d2)):
        torch.testing.assert_close(got, want, rtol=0, atol=atol)


@pytest.mark.parametrize("kind", KINDS)
def test_u_and_its_derivatives_are_exactly_periodic(kind: str) -> None:
    model = _net(kind)
    assert model.layers[0].n_in == 3  # cos x, sin x, t
    low, high = _faces(_points(16, 2), 0)
    for jet_of in (model.forward_jet, lambda x: autograd_jet(model, x)):
        _assert_jets_equal(jet_of(low), jet_of(high), atol=1e-14)
    torch.testing.assert_close(model(low), model(high), rtol=0, atol=1e-14)
    # and periodic over whole periods, not only face to face
    x = _points(16, 2)
    shifted = x + torch.tensor([2.0 * (BOX[0][1] - BOX[0][0]), 0.0], dtype=F64)
    _assert_jets_equal(model.forward_jet(x), model.forward_jet(shifted), atol=1e-12)


def test_two_periodic_axes_in_3d() -> None:
    model = _net("bspline", periodic=(0, 1), dim=3)
    assert model.layers[0].n_in == 5 and model.spec()["periodic"] == [0, 1]
    x = _points(12, 3)
    for axis in (0, 1):
        low, high = _faces(x, axis)
        _assert_jets_equal(model.forward_jet(low), model.forward_jet(high), atol=1e-14)
    _assert_jets_equal(model.forward_jet(x), autograd_jet(model, x), atol=1e-11)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_jet_matches_autograd_and_finite_differences(kind: str) -> None:
    model = _net(kind)
    x = _points(24, 2)
    h = 1e-4
    x[:4, 0] = BOX[0][0] + 0.5 * h * torch.arange(1, 5, dtype=F64)  # stencils across the seam
    jet = model.forward_jet(x)
    _assert_jets_equal(jet, autograd_jet(model, x), atol=1e-11)
    with torch.no_grad():
        for k in range(2):
            e = torch.zeros(2, dtype=F64)
            e[k] = h
            up, mid, down = model(x + e)[:, 0], model(x)[:, 0], model(x - e)[:, 0]
            torch.testing.assert_close(jet.d(k), (up - down) / (2 * h), rtol=1e-5, atol=1e-6)
            e *= 10.0  # a wider stencil for the second derivative (rounding / h²)
            up, down = model(x + e)[:, 0], model(x - e)[:, 0]
            fd2 = (up - 2.0 * mid + down) / (10.0 * h) ** 2
            torch.testing.assert_close(jet.dd(k), fd2, rtol=1e-3, atol=1e-3)


def test_input_jet_is_the_embedding_with_its_exact_derivatives() -> None:
    model = _net("mlp")
    x = _points(5, 2)
    omega = 2.0 * math.pi / (BOX[0][1] - BOX[0][0])
    theta = omega * x[:, 0]
    jet = model.input_jet(x)
    torch.testing.assert_close(jet.value, model.normalise(x), rtol=0, atol=0)
    want = torch.stack([theta.cos(), theta.sin(), (x[:, 1] + 1.0) / 2.0 - 1.0], dim=1)
    torch.testing.assert_close(jet.value, want)
    assert jet.d1 is not None and jet.d2 is not None
    slope = omega * torch.stack([-theta.sin(), theta.cos()], dim=1)
    torch.testing.assert_close(jet.d1[0, :, :2], slope)
    torch.testing.assert_close(jet.d2[0, :, :2], -(omega**2) * want[:, :2])
    torch.testing.assert_close(jet.d1[1], torch.tensor([0.0, 0.0, 0.5], dtype=F64).expand(5, 3))
    assert not jet.d1[0, :, 2].any() and not jet.d1[1, :, :2].any() and not jet.d2[1].any()
    value_only = model.input_jet(x, derivatives=False)
    assert value_only.d1 is not None and value_only.d1.shape == (0, 5, 3)


JACOBIAN_CASES = [
    ("bspline", "advection", None),
    ("bspline", "allen_cahn", "lotra"),  # nonlinear; the periodic slope condition too
    ("rational", "advection", "full"),  # denominators: forward-mode columns
    ("mlp", "allen_cahn", "full"),
    ("lmkan", "advection", "lotra"),
    ("chebyshev", "advection", "slim"),
]


@pytest.mark.parametrize(("kind", "pde_name", "adapter"), JACOBIAN_CASES)
def test_jacobian_matches_jacrev(kind: str, pde_name: str, adapter: str | None) -> None:
    model, loss, batch = _problem(kind, pde_name, adapter, periodic=(0,))
    assert model.periodic == (0,)
    r, J = residuals_and_jacobian(loss, model, batch)
    # the periodic rows are zero up to rounding (identical rows of a matmul may round apart)
    want = loss.residual_vector(model, batch).detach()
    torch.testing.assert_close(r, want, rtol=1e-12, atol=1e-13 * float(want.abs().max()))
    ref = _jacrev(model, loss, batch)
    assert J.shape == ref.shape == (r.numel(), sum(p.numel() for p in trainable_parameters(model)))
    assert float((J - ref).norm() / ref.norm()) <= 1e-10


def test_families_declare_their_periodic_axes() -> None:
    periodic = {name: cls.periodic_axes for name, cls in FAMILIES.items() if cls.periodic_axes}
    assert periodic == {"advection": (0,), "allen_cahn": (0,)}
    advection, elliptic = build_pde("advection"), build_pde("elliptic")
    for value in ("auto", True, "true"):
        assert periodic_axes(value, advection) == (0,)
    assert periodic_axes(False, advection) == periodic_axes("false", advection) == ()
    assert periodic_axes("auto", elliptic) == ()
    with pytest.raises(PinnkanError, match="pde=elliptic has no periodic axes"):
        periodic_axes(True, elliptic)
    for bad in ("maybe", 1, None, [0]):
        with pytest.raises(PinnkanError, match="model.periodic=.*choose one of: auto, true"):
            periodic_axes(bad, advection)
    with pytest.raises(PinnkanError, match="distinct axes among 0..1"):
        _net("bspline", periodic=(2,))


def _save_model(path: Path, model: KAN, spec: dict | None = None) -> Path:
    meta = {"pde": "advection", "pde_params": {"beta": 1.0}, "spec": spec or model.spec()}
    save_checkpoint(path, MODEL_FORMAT, meta, model.base_state())
    return path


def test_spec_round_trip_and_refusals(tmp_path: Path) -> None:
    model, x = _net("rational"), _points(8, 2)
    meta, loaded = model_from_file(_save_model(tmp_path / "p.safetensors", model), F64)
    assert meta["spec"]["periodic"] == [0] and loaded.periodic == (0,)
    assert loaded.spec() == model.spec()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)

    plain = _net("rational", periodic=())
    assert plain.spec()["periodic"] == []
    # a mismatch is seen whichever side is the file's, with or without the key
    old = {k: v for k, v in plain.spec().items() if k != "periodic"}
    assert spec_differences(model.spec(), plain.spec()) == ["periodic"]
    assert spec_differences(plain.spec(), model.spec()) == ["periodic"]
    assert (
        spec_differences(old, model.spec()) == spec_differences(model.spec(), old) == ["periodic"]
    )
    assert spec_differences(old, plain.spec()) == spec_differences(plain.spec(), old) == []
    meta = {"pde": "advection", "spec": model.spec()}
    # a transfer adapts the source's network (pinnkan.run.runner): the difference is reported
    assert check_compatible(meta, Path("src"), build_pde("advection"), plain) == ["periodic"]
    pde = build_pde("advection")
    assert check_compatible({**meta, "spec": old}, Path("src"), pde, model) == ["periodic"]


def test_a_file_written_before_the_key_loads_as_not_periodic(tmp_path: Path) -> None:
    plain, x = _net("bspline", periodic=()), _points(8, 2)
    old = {k: v for k, v in plain.spec().items() if k != "periodic"}
    path = _save_model(tmp_path / "old.safetensors", plain, old)
    meta, loaded = model_from_file(path, F64)
    assert "periodic" not in load_checkpoint(path, MODEL_FORMAT)[0]["spec"]
    assert loaded.periodic == () and loaded.layers[0].n_in == 2
    torch.testing.assert_close(loaded(x), plain(x), rtol=0, atol=0)
    check_compatible(meta, path, build_pde("advection"), plain)  # an old source still fits


def test_lotra_on_a_periodic_network(tmp_path: Path) -> None:
    base = _net("bspline")
    model = apply(
        copy.deepcopy(base),
        # the input layer in Tucker form too (by default it trains in full)
        AdapterConfig(name="lotra", cr=0.5, init="random", layers=["lotra"] * len(base.layers)),
        torch.Generator().manual_seed(1),
    )
    first = model.layers[0].adapter
    assert first is not None and first.U1.shape[0] == 3  # the wider input mode
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    low, high = _faces(_points(10, 2), 0)
    _assert_jets_equal(model.forward_jet(low), model.forward_jet(high), atol=1e-14)
    path = tmp_path / "adapter.safetensors"
    save_adapter(model, path, {"pde": "advection", "adapter": "lotra", "cr": 0.5})
    loaded, x = copy.deepcopy(base), _points(10, 2)
    load_adapter(loaded, path)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    with pytest.raises(PinnkanError, match="trained on a network"):
        load_adapter(_net("bspline", periodic=()), path)


def test_runner_pretrain_and_lotra_transfer_on_advection(tmp_path: Path) -> None:
    """The default (auto) embeds x for advection; a LoTRA transfer finds the periodic source."""
    changes = {"pde": {"name": "advection", "source": {}, "target": {"beta": 2.0}}}
    src = tmp_path / "src"
    runner.pretrain(tiny_config(tmp_path, changes), src)
    assert load_checkpoint(src / "model.safetensors", MODEL_FORMAT)[0]["spec"]["periodic"] == [0]
    cfg = tiny_config(tmp_path, {**changes, "stage": "transfer", "source": str(src)})
    assert runner.transfer(cfg, tmp_path / "dst").status == "ok"
    _, merged = model_from_file(tmp_path / "dst" / "model.safetensors", F64)
    assert merged.periodic == (0,)
    plain = tiny_config(tmp_path, {**changes, "stage": "transfer", "source": str(src)})
    plain["model"]["periodic"] = False  # the source's network wins: periodic all the same
    runner.transfer(plain, tmp_path / "dst2")
    _, adapted = model_from_file(tmp_path / "dst2" / "model.safetensors", F64)
    assert adapted.periodic == (0,)


@pytest.mark.parametrize(("value", "axes"), [("false", []), ("true", [0]), ("auto", [0])])
def test_cli_setting(tmp_path: Path, value: str, axes: list[int]) -> None:
    run_dir = tmp_path / "run"
    args = ["pretrain", "pde=advection", *tiny(tmp_path), f"model.periodic={value}"]
    proc = run_pinnkan([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    meta = load_checkpoint(run_dir / "model.safetensors", MODEL_FORMAT)[0]
    assert meta["spec"]["periodic"] == axes, json.dumps(meta["spec"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pde=advection", "model.periodic=maybe"], "model.periodic='maybe'; choose one of"),
        (["pde=elliptic", "model.periodic=true"], "pde=elliptic has no periodic axes"),
    ],
)
def test_cli_bad_setting_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_pinnkan(["pretrain", *args, *tiny(tmp_path)], tmp_path)
    assert proc.returncode != 0, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], describe(proc)
