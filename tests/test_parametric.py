"""A parametric PINN (`pde.parametric`): the family's parameter as an input. The parametric
member's residual, conditions and reference equal the member's at each point's value; the
network's jet is w.r.t. the coordinates only and, fixed at a value, equals the parametric
network there; a pretrain over a range, then a transfer that evaluates (`train.steps=0`) or
fine-tunes it at a target, with model and adapter files that rebuild it (merge); one line for
each misuse."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import MODEL_FILE
from pinnkan.io.results import RESULTS_FILE, read_results
from pinnkan.layers.jet import Jet
from pinnkan.network.derivatives import autograd_jet
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pde.base import PDEFamily
from pinnkan.pde.parametric import ParametricMember, parse_ranges
from pinnkan.run import runner
from pinnkan.run.merge import merge_adapter, model_from_file
from tests.conftest import describe, run_pinnkan, tiny, tiny_config

F64 = torch.float64
# family: (parameter, its range) — every family whose residual broadcasts per point
SWEEPS = {
    "elliptic": ("mu", (1.0, 2.0)),
    "parabolic": ("nu", (0.1, 0.4)),
    "advection": ("beta", (1.0, 5.0)),
    "wave": ("c", (1.0, 1.5)),
    "helmholtz": ("k", (2.0, 3.5)),
    "burgers": ("nu", (0.01, 0.05)),
}


def _random_jet(n_points: int, n_coords: int, gen: torch.Generator) -> Jet:
    value = torch.randn(n_points, 1, generator=gen, dtype=F64)
    d1 = torch.randn(n_coords, n_points, 1, generator=gen, dtype=F64)
    d2 = torch.randn(n_coords, n_points, 1, generator=gen, dtype=F64)
    return Jet(value, d1, d2)


def _row(jet: Jet, i: int) -> Jet:
    return Jet(jet.value[i : i + 1], jet.d1[:, i : i + 1], jet.d2[:, i : i + 1])


@pytest.mark.parametrize("family", list(SWEEPS))
def test_the_residual_and_conditions_are_the_members_at_each_points_value(family: str) -> None:
    param, (lo, hi) = SWEEPS[family]
    member = build_pde(family, {})
    pde = ParametricMember(member, {param: (lo, hi)})
    gen = torch.Generator().manual_seed(1)
    d = member.dim
    x = pde.sample_interior(7, gen, F64)
    assert x.shape == (7, d + 1) and bool(((x[:, d] >= lo) & (x[:, d] <= hi)).all())
    jet = _random_jet(7, d, gen)
    got = pde.residual(x, jet)
    for i in range(7):
        alone = build_pde(family, {param: float(x[i, d])})
        want = alone.residual(x[i : i + 1, :d], _row(jet, i))
        torch.testing.assert_close(got[i : i + 1], want, rtol=1e-12, atol=1e-12)
    for cond, plain in zip(pde.conditions(), member.conditions()):
        xc = cond.sample(8, gen, F64)
        assert xc.shape[1] == d + 1
        if cond.paired:  # both points of a pair are one member
            half = xc.shape[0] // 2
            assert torch.equal(xc[:half, d], xc[half:, d])
        jc = _random_jet(xc.shape[0], d, gen)
        got = cond.residual(xc, jc)
        if cond.paired:
            continue  # a pair's residual compares its halves: checked through the values above
        for i in range(xc.shape[0]):
            alone = build_pde(family, {param: float(xc[i, d])})
            own = next(c for c in alone.conditions() if c.name == plain.name)
            want = own.residual(xc[i : i + 1, :d], _row(jc, i))
            torch.testing.assert_close(got[i : i + 1], want, rtol=1e-12, atol=1e-12)


def test_the_reference_is_the_members_exact_solution_at_each_value() -> None:
    pde = ParametricMember(build_pde("elliptic", {}), {"mu": (1.0, 2.0)})
    axes, pts = pde.grid(5, F64)
    assert list(axes) == ["x", "y", "mu"] and pts.shape == (125, 3)
    got = pde.exact(pts)
    for mu in axes["mu"].tolist():
        rows = pts[:, 2] == mu
        want = build_pde("elliptic", {"mu": mu}).exact(pts[rows, :2])
        torch.testing.assert_close(got[rows], want, rtol=0, atol=0)


def _parametric_kan(periodic: tuple[int, ...] = ()) -> KAN:
    gen = torch.Generator().manual_seed(0)
    return KAN(
        [3, 5, 1], [(0.0, 1.0), (0.0, 2.0), (1.0, 2.0)], kind="chebyshev", dtype=F64,
        generator=gen, params=("mu",), periodic=periodic,
    )  # fmt: skip


@pytest.mark.parametrize("periodic", [(), (0,)])
def test_the_jet_is_wrt_the_coordinates_and_a_fixed_network_is_the_same_function(
    periodic: tuple[int, ...],
) -> None:
    model = _parametric_kan(periodic)
    x = torch.rand(6, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    x[:, 2] = 1.0 + x[:, 2]
    jet = model.forward_jet(x)
    assert jet.d1.shape == (2, 6, 1)  # two coordinates, no direction for mu
    auto = autograd_jet(model, x)
    torch.testing.assert_close(jet.d1, auto.d1)
    torch.testing.assert_close(jet.d2, auto.d2)
    # finite differences in x (the first coordinate)
    h = 1e-6
    step = torch.zeros_like(x)
    step[:, 0] = h
    fd = (model(x + step) - model(x - step))[:, 0] / (2 * h)
    torch.testing.assert_close(jet.d(0), fd, rtol=1e-6, atol=1e-7)
    mu = float(x[0, 2])
    same = x.clone()
    same[:, 2] = mu
    model.fix([mu])
    fixed = model.forward_jet(same[:, :2])
    model.fix(None)
    whole = model.forward_jet(same)
    torch.testing.assert_close(fixed.value, whole.value, rtol=0, atol=0)
    torch.testing.assert_close(fixed.d2, whole.d2, rtol=0, atol=0)


def test_a_fixed_network_rebuilds_from_its_spec() -> None:
    model = _parametric_kan()
    model.fix([1.25])
    spec = model.spec()
    assert spec["params"] == ["mu"] and spec["fixed"] == [1.25]
    again = KAN.from_spec(spec, dtype=F64)
    again.load_state_dict(model.state_dict())
    x = torch.rand(4, 2, dtype=F64)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def _pretrain(tmp_path: Path) -> Path:
    cfg = tiny_config(tmp_path, {"optim": {"name": "lm"}, "train.steps": 4})
    cfg["precision"] = "float64"
    cfg["model"] = {"name": "chebyshev", "hidden": [6]}
    cfg["pde"]["parametric"] = {"mu": [1.0, 2.0], "lam": None}
    res = runner.pretrain(cfg, tmp_path / "source")
    assert res.status == "ok" and res.attrs["parametric"] == '{"mu": [1.0, 2.0]}'
    return tmp_path / "source"


def test_a_transfer_with_no_steps_evaluates_the_parametric_network_at_the_target(
    tmp_path: Path,
) -> None:
    source = _pretrain(tmp_path)
    _, parametric = model_from_file(source / MODEL_FILE, F64)
    cfg = tiny_config(tmp_path, {"train.steps": 0, "source": str(source)})
    cfg |= {"stage": "transfer", "precision": "float64", "optim": {"name": "lm"}}
    cfg["pde"]["target"] = {"mu": 1.7}
    res = runner.transfer(cfg, tmp_path / "eval")
    assert res.attrs["stop_reason"] == "evaluated" and list(res.history["step"]) == [0]
    # the run's error is the parametric network's at mu = 1.7 on the run's grid
    target = build_pde("elliptic", {"mu": 1.7})
    _, pts = target.grid(9, F64)
    with_mu = torch.cat([pts, torch.full((len(pts), 1), 1.7, dtype=F64)], dim=1)
    pred = parametric(with_mu)[:, 0].detach()
    ref = target.exact(pts)
    want = float((pred - ref).norm() / ref.norm())
    assert math.isclose(res.metrics["rel_l2"], want, rel_tol=1e-9)
    # its model file is the network fixed at 1.7: a D-input network
    _, fixed = model_from_file(tmp_path / "eval" / MODEL_FILE, F64)
    torch.testing.assert_close(fixed(pts)[:, 0].detach(), pred, rtol=0, atol=0)


def test_a_lotra_transfer_from_a_parametric_source_merges_to_its_model_file(
    tmp_path: Path,
) -> None:
    source = _pretrain(tmp_path)
    cfg = tiny_config(tmp_path, {"train.steps": 3, "source": str(source)})
    cfg |= {"stage": "transfer", "precision": "float64", "optim": {"name": "lm"}}
    cfg["pde"]["target"] = {"mu": 1.4}
    res = runner.transfer(cfg, tmp_path / "lotra")
    assert res.status == "ok"
    meta, state = merge_adapter(tmp_path / "lotra" / "adapter.safetensors")
    assert meta["spec"]["fixed"] == [1.4]
    _, model = model_from_file(tmp_path / "lotra" / MODEL_FILE, F64)
    rebuilt = KAN.from_spec(meta["spec"], dtype=F64)
    rebuilt.load_state_dict(state)
    x = torch.rand(10, 2, dtype=F64)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=1e-12, atol=1e-12)
    assert read_results(tmp_path / "lotra" / RESULTS_FILE)["attrs"]["status"] == "ok"


def test_parse_ranges_refuses_in_one_line() -> None:
    member = build_pde("elliptic", {})
    assert parse_ranges({"mu": [1, 2]}, member) == {"mu": (1.0, 2.0)}
    for value, words in [
        ({"nu": [1, 2]}, "has no parameter 'nu'"),
        ({"mu": [2, 1]}, "must have lo < hi"),
        ({"mu": 3}, "must be [lo, hi]"),
        ({"mu": [-1, 2]}, "pde.parametric.mu[0]"),
    ]:
        with pytest.raises(PinnkanError, match=None) as err:
            parse_ranges(value, member)
        assert words in str(err.value) and "\n" not in str(err.value)


class _Scalar(PDEFamily):
    """A family whose residual needs a plain float parameter (math.sqrt)."""

    name = "scalar"
    coords = ("x", "y")
    domain = ((0.0, 1.0), (0.0, 1.0))
    defaults = {"a": 1.0}

    def residual(self, x: torch.Tensor, jet: Jet) -> torch.Tensor:
        return jet.dd(0) - math.sqrt(self.params["a"]) * jet.u

    def conditions(self) -> list:
        return []


def test_a_family_that_needs_float_parameters_is_refused_in_one_line() -> None:
    with pytest.raises(PinnkanError, match="do not take per-point values of a") as err:
        ParametricMember(_Scalar(), {"a": (1.0, 2.0)})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("stage", "extra", "words"),
    [
        ("pretrain", ["pde.parametric.nu=[1,2]"], "unknown setting pde.parametric.nu"),
        ("pretrain", ["pde.parametric.mu=[2,1]"], "must have lo < hi"),
        ("pretrain", ["pde=parabolic", "pde.parametric.nu=[0.1,0.4]", "train.causal=1"], "causal"),
        ("pretrain", ["train.steps=0"], "train.steps=0 must be an integer >= 1"),
        ("transfer", ["pde.parametric.mu=[1,2]", "adapter=scratch"], "drop pde.parametric"),
    ],
)
def test_misuse_is_one_line_and_a_nonzero_exit(
    tmp_path: Path, stage: str, extra: list[str], words: str
) -> None:
    proc = run_pinnkan([stage, *tiny(tmp_path), *extra], tmp_path)
    assert proc.returncode != 0, describe(proc)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0], describe(proc)
    assert not list(tmp_path.rglob(RESULTS_FILE))
