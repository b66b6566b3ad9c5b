"""The `model=` layer kinds (rational, chebyshev, mlp next to bspline): exact basis derivatives,
forward engine vs autograd through whole networks, the rational init's variance, LoTRA on each
kind, and the extra parameters (denominators, biases) through apply / checkpoints / merge."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from pinnkan.adapters import AdapterConfig, apply, count_parameters, param_groups
from pinnkan.adapters.tucker import tucker_param_count
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import MODEL_FILE, MODEL_FORMAT, load_checkpoint
from pinnkan.io.results import RunResult
from pinnkan.layers import ActivationBasis, ChebyshevBasis, RationalBasis, layer_extra_parameters
from pinnkan.layers.rational import _least_squares, fitted_rational, rational
from pinnkan.network.derivatives import compute_jet
from pinnkan.network.kan import KAN, LAYER_KINDS
from pinnkan.pde import build_pde
from pinnkan.run import runner
from pinnkan.run.merge import merge_adapter
from pinnkan.run.sources import check_compatible
from tests.conftest import describe, run_pinnkan, tiny, tiny_config

DT = torch.float64
DOMAIN = [(0.0, 1.0), (-1.0, 3.0)]
KINDS = {  # kind, options: every new kind, and rational's second denominator form
    "rational": ("rational", {}),
    "rational-kinked": ("rational", {"denominator": "kinked"}),
    "rational-gelu": ("rational", {"init_activation": "gelu", "groups": 1}),
    "chebyshev": ("chebyshev", {"degree": 4}),
    "mlp": ("mlp", {}),
    "lmkan": ("lmkan", {"grid_size": 3}),
}


def _model(name: str, dtype: torch.dtype = DT, widths: list[int] | None = None) -> KAN:
    kind, options = KINDS[name]
    gen = torch.Generator().manual_seed(0)
    return KAN(widths or [2, 6, 5, 1], DOMAIN, kind=kind, dtype=dtype, generator=gen, **options)


def _roughen(model: KAN, seed: int = 1) -> None:
    """Make every parameter non-trivial (random denominators and biases, larger A)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.layers:
            layer.A.mul_(2.0)
            for p in layer_extra_parameters(layer):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _points(n: int = 30) -> torch.Tensor:
    u = torch.rand(n, 2, generator=torch.Generator().manual_seed(3), dtype=DT)
    return torch.stack([u[:, 0], -1.0 + 4.0 * u[:, 1]], dim=1)


# --- bases against finite differences ---------------------------------------------------------
def _bases() -> dict[str, object]:
    b = torch.tensor([0.4, -0.3, 0.2, 0.05], dtype=DT)
    return {
        "rational-smooth": RationalBasis(1, 1, b, form="smooth", eps=1e-2),
        "rational-smooth-small-eps": RationalBasis(1, 1, b, form="smooth", eps=1e-4),
        "rational-kinked": RationalBasis(1, 1, b, form="kinked"),
        "chebyshev": ChebyshevBasis(7),
        "tanh": ActivationBasis("tanh"),
        "identity": ActivationBasis("identity"),
    }


@pytest.mark.parametrize("name", list(_bases()))
def test_basis_derivatives_match_finite_differences(name: str) -> None:
    basis = _bases()[name]
    x = torch.linspace(-3.0, 3.0, 241, dtype=DT).unsqueeze(-1)  # (N, 1)
    if name == "rational-kinked":
        # |b1 x| and |b3 x³| kink at x = 0 only (Q' jumps there): FD is valid away from it
        x = x[x[:, 0].abs() > 1e-3]
    eps = 1e-5
    with torch.no_grad():
        phi, d1, d2 = basis.derivatives(x)
        torch.testing.assert_close(basis.values(x), phi, rtol=0, atol=0)
        p_hi, p_lo = basis.values(x + eps), basis.values(x - eps)
        d1_hi, d1_lo = basis.derivatives(x + eps)[1], basis.derivatives(x - eps)[1]
    torch.testing.assert_close((p_hi - p_lo) / (2 * eps), d1, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close((d1_hi - d1_lo) / (2 * eps), d2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((p_hi - 2 * phi + p_lo) / eps**2, d2, rtol=1e-3, atol=2e-3)
    assert d2.abs().max() > 0.1 or name == "identity"  # not a comparison of zeros


def test_smooth_denominator_is_twice_differentiable_at_zero_and_kinked_is_not() -> None:
    b = torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=DT)
    x = torch.tensor([[-1e-7], [1e-7]], dtype=DT)
    with torch.no_grad():
        smooth = RationalBasis(1, 1, b, form="smooth", eps=1e-2).derivatives(x)
        kinked = RationalBasis(1, 1, b, form="kinked").derivatives(x)
    # b_0 = 1/Q with Q = 1 + s(b1 x / 3): Q' is continuous in the smooth form and jumps by
    # 2·b1/3 in the kinked one
    assert abs(float(smooth[1][0, 0, 0] - smooth[1][1, 0, 0])) < 1e-6
    assert abs(float(kinked[1][0, 0, 0] - kinked[1][1, 0, 0])) == pytest.approx(1 / 3, rel=1e-5)
    # s''(0) = 1/√ε: the smooth form's curvature at the former kink is finite, b1²/(9√ε)
    assert float(smooth[2][0, 0, 0]) == pytest.approx(-(0.5**2) / 9 * 10.0, rel=1e-4)


def test_chebyshev_recurrence_equals_cosine_form() -> None:
    x = torch.linspace(-4.0, 4.0, 101, dtype=DT).unsqueeze(-1)
    phi = ChebyshevBasis(6).values(x)[:, 0]  # (N, 7)
    theta = torch.acos(torch.tanh(x))  # only here, as the independent reference
    want = torch.cos(torch.arange(7, dtype=DT) * theta)
    torch.testing.assert_close(phi, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["silu", "gelu"])
@pytest.mark.parametrize("form", ["smooth", "kinked"])
def test_rational_fit_approximates_the_activation(activation: str, form: str) -> None:
    a, b, m2 = fitted_rational(activation, form, 1e-2 if form == "smooth" else 0.0)
    x = torch.linspace(-3.0, 3.0, 601, dtype=DT)
    fit = rational(x, torch.tensor(a, dtype=DT), torch.tensor(b, dtype=DT), form, 1e-2)
    act = torch.nn.functional.silu if activation == "silu" else torch.nn.functional.gelu
    assert (fit - act(x)).abs().max() < 1e-2
    assert min(b) > -1e-12 or form == "smooth"  # kinked: c_m = |b_m| >= 0
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=DT)
    assert m2 == pytest.approx(float(act(z).square().mean()), rel=2e-2)


def test_rational_fit_does_not_depend_on_memory_alignment() -> None:
    """The fit's least-squares solve gives the same bits wherever its arrays lie: MKL's default
    driver (gelsy) did not, so a rational model's seeded runs differed between processes."""
    gen = torch.Generator().manual_seed(0)
    lhs, rhs = (
        torch.randn(601, 10, generator=gen, dtype=DT),
        torch.randn(601, generator=gen, dtype=DT),
    )

    def at_offset(t: torch.Tensor, off: int) -> torch.Tensor:
        buf = torch.empty(t.numel() + off, dtype=t.dtype)  # shifted by `off` elements
        out = buf[off:].view(t.shape)
        out.copy_(t)
        return out

    sols = [_least_squares(at_offset(lhs, k), at_offset(rhs, k)) for k in range(8)]
    assert all(torch.equal(sols[0], s) for s in sols[1:])


# --- whole networks ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(KINDS))
def test_forward_engine_matches_autograd(name: str) -> None:
    model, x = _model(name), _points()
    _roughen(model)
    fwd, ag = compute_jet(model, x, "forward"), compute_jet(model, x, "autograd")
    torch.testing.assert_close(fwd.value, ag.value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fwd.d1, ag.d1, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fwd.d2, ag.d2, rtol=1e-10, atol=1e-10)
    assert ag.d2.abs().max() > 0.1  # the comparison is not between zeros


@pytest.mark.parametrize("name", list(KINDS))
def test_parameter_gradients_agree_between_engines(name: str) -> None:
    x, grads = _points(), []
    for engine in ("forward", "autograd"):
        model = _model(name)
        _roughen(model)
        jet = compute_jet(model, x, engine)
        (jet.dd(0) + jet.dd(1) + jet.d(0) + jet.u).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["rational", "chebyshev", "mlp"])
def test_float32_is_close_to_float64(name: str) -> None:
    m64, m32 = _model(name), _model(name).to(torch.float32)
    x = _points()
    j64, j32 = compute_jet(m64, x, "forward"), compute_jet(m32, x.float(), "forward")
    assert j32.d2.dtype == torch.float32
    scale = j64.d2.abs().max()
    assert (j32.d2.double() - j64.d2).abs().max() < 1e-4 * scale


@pytest.mark.parametrize("activation", ["identity", "silu", "gelu"])
@pytest.mark.parametrize("form", ["smooth", "kinked"])
def test_rational_init_preserves_variance_through_four_layers(activation: str, form: str) -> None:
    gen = torch.Generator().manual_seed(0)
    model = KAN(
        [64] * 5,
        [(-1.0, 1.0)] * 64,
        kind="rational",
        dtype=DT,
        generator=gen,
        denominator=form,
        init_activation=activation,
    )
    h = torch.randn(4096, 64, generator=gen, dtype=DT)
    with torch.no_grad():
        for layer in model.layers:  # straight through the layers: inputs N(0, 1)
            h = layer(h)
            assert 0.5 < float(h.var()) < 2.0, float(h.var())


# --- LoTRA and extra parameters ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["rational", "chebyshev", "mlp", "lmkan"])
def test_lotra_starts_at_zero_and_is_the_tucker_product(name: str) -> None:
    model, x = _model(name), _points()
    before = model(x).detach()
    gen = torch.Generator().manual_seed(4)
    every = ["lotra"] * len(model.layers)  # Tucker on every layer, edges too (not the default)
    apply(model, AdapterConfig(name="lotra", cr=0.5, init="random", layers=every), gen)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)  # G = 0: function unchanged
    for layer in model.layers:
        upd = layer.adapter
        assert upd.delta().abs().max() == 0
        assert not layer.A.requires_grad
        assert all(not p.requires_grad for p in layer_extra_parameters(layer))
        torch.nn.init.normal_(upd.G, generator=gen)
        n1, n2, n3 = layer.A.shape
        want = torch.zeros(n1, n2, n3, dtype=DT)  # ΔA by its definition, term by term
        for a in range(upd.G.shape[0]):
            for b in range(upd.G.shape[1]):
                for c in range(upd.G.shape[2]):
                    outer = upd.U1[:, a, None, None] * upd.U2[None, :, b, None]
                    want += upd.G[a, b, c] * outer * upd.U3[None, None, :, c]
        torch.testing.assert_close(upd.delta(), want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.coefficients(), layer.A + want, rtol=1e-12, atol=1e-12)
    trainable, _ = count_parameters(model)
    assert trainable == sum(
        tucker_param_count(layer.adapter.shape, layer.adapter.ranks) for layer in model.layers
    )


@pytest.mark.parametrize("name", ["rational", "mlp"])
def test_extra_parameters_trainable_under_full_and_frozen_layers(name: str) -> None:
    full = _model(name)
    n_extra = sum(p.numel() for layer in full.layers for p in layer_extra_parameters(layer))
    assert n_extra > 0
    apply(full, AdapterConfig(name="full"), torch.Generator().manual_seed(0))
    assert count_parameters(full)[0] == sum(p.numel() for p in full.parameters())
    names = {g["name"] for g in param_groups(full, AdapterConfig(name="full"), 0.1)}
    assert {f"layer{i}.extra" for i in range(3)} <= names

    mixed = _model(name)
    cfg = AdapterConfig(name="lotra", cr=0.5, init="random", layers=["full", "lotra", "frozen"])
    apply(mixed, cfg, torch.Generator().manual_seed(0))
    flags = [[p.requires_grad for p in layer_extra_parameters(layer)] for layer in mixed.layers]
    assert all(flags[0]) and not any(flags[1]) and not any(flags[2])
    assert {g["name"] for g in param_groups(mixed, cfg, 0.1)} >= {"layer0.A", "layer0.extra"}


def test_mlp_lotra_is_a_low_rank_matrix_update() -> None:
    model = _model("mlp", widths=[2, 16, 16, 1])
    apply(model, AdapterConfig(name="lotra", cr=0.25, init="random"), torch.Generator())
    upd = model.layers[1].adapter
    assert upd.ranks == (4, 4, 1) and upd.shape == (16, 16, 1)
    torch.nn.init.normal_(upd.G, generator=torch.Generator().manual_seed(0))
    assert torch.linalg.matrix_rank(upd.delta()[..., 0]) <= 4


def test_spec_names_the_kind_and_its_architecture_options() -> None:
    spec = _model("rational").spec()
    assert spec["kind"] == "rational" and spec["denominator"] == "smooth"
    assert "init_activation" not in spec  # only shapes the initialisation
    assert _model("chebyshev").spec()["degree"] == 4
    assert set(LAYER_KINDS) >= {"bspline", "rational", "chebyshev", "mlp"}


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ({"name": "chebyshev", "degree": 0}, r"model\.degree=0 must be an integer in \[1, 64\]"),
        ({"name": "rational", "denominator": "abs"}, r"model\.denominator='abs'; choose one of"),
        ({"name": "rational", "eps": -1.0}, r"model\.eps=-1\.0 must be"),
        ({"name": "rational", "groups": 0}, r"model\.groups=0"),
        ({"name": "mlp", "grid_size": 3}, r"model\.grid_size is not an option of model=mlp"),
    ],
)
def test_bad_model_options_are_one_line_errors(tmp_path: Path, model: dict, match: str) -> None:
    cfg = tiny_config(tmp_path)
    cfg["model"] = {**model, "hidden": [3]}
    with pytest.raises(PinnkanError, match=match):
        runner.pretrain(cfg, tmp_path / "run")


# --- end to end -------------------------------------------------------------------------------
def _check_merge(src: Path, dst: Path, kind: str) -> None:
    """merge rebuilds the transfer's model.pt; layer 1 was trained in full, extras included."""
    _, merged = merge_adapter(dst)
    _, want = load_checkpoint(dst / MODEL_FILE, MODEL_FORMAT)
    assert set(merged) == set(want)
    for key in want:
        torch.testing.assert_close(merged[key], want[key], rtol=0, atol=1e-6)
    _, base = load_checkpoint(src / MODEL_FILE, MODEL_FORMAT)
    extra = [k for k in want if k.startswith("layers.1.") and not k.endswith(".A")]
    assert all(not torch.equal(want[k], base[k]) for k in extra)  # trained in full
    if kind in ("rational", "mlp"):  # denominators, biases; chebyshev and lmkan have only A
        assert extra


@pytest.mark.parametrize("kind", ["rational", "chebyshev", "mlp"])
def test_pretrain_transfer_and_merge(kind: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    runner.pretrain(tiny_config(tmp_path, {"model": {"name": kind, "hidden": [4]}}), src)
    cfg = tiny_config(tmp_path, {"model": {"name": kind, "hidden": [4]}, "cr": 0.25})
    cfg.update(source=str(src), adapter={"name": "lotra", "layers": ["lotra", "full"]})
    cfg["pde"]["target"] = {"mu": 1.5}
    runner.transfer(cfg, dst)
    _check_merge(src, dst, kind)


def test_pretrain_and_transfer_cli(tmp_path: Path) -> None:
    """The whole CLI path for a kind wired in last (lmkan); the others run in-process above."""
    root = tmp_path / "outputs"
    src, dst = root / "src", root / "dst"
    proc = run_pinnkan(["pretrain", "model=lmkan", *tiny(root), f"hydra.run.dir={src}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    args = ["transfer", "model=lmkan", "cr=0.25", "adapter.layers=[lotra,full]"]
    proc = run_pinnkan([*args, *tiny(root), f"source={src}", f"hydra.run.dir={dst}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    _check_merge(src, dst, "lmkan")


def _transfer_of(tmp_path: Path, source: Path, model: dict, name: str) -> RunResult:
    cfg = tiny_config(tmp_path, {"model": model})
    cfg.update(source=str(source), adapter={"name": "lotra"})
    cfg["pde"]["target"] = {"mu": 1.5}
    return runner.transfer(cfg, tmp_path / name)


def test_a_transfer_adapts_the_source_network_whatever_the_model_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A source of another kind or shape than the run's model settings (an MLP source under the
    Chebyshev default) is adapted as it is: the same run, to the bit, as with matching model
    settings, and the log names the overrides that build the source's network."""
    mlp = {"name": "mlp", "hidden": [4]}
    runner.pretrain(tiny_config(tmp_path, {"model": mlp}), tmp_path / "src")
    matching = _transfer_of(tmp_path, tmp_path / "src", mlp, "matching")
    with caplog.at_level("INFO", logger="pinnkan"):
        other = _transfer_of(tmp_path, tmp_path / "src", {"name": "chebyshev"}, "other")
    assert "holds a model=mlp model.hidden=[4] network, not this run's model=chebyshev" in (
        caplog.text
    )
    assert other.attrs["model"] == "mlp" and other.attrs["widths"] == "[2, 4, 1]"
    assert other.metrics["rel_l2"] == matching.metrics["rel_l2"]
    assert other.metrics["n_trainable"] == matching.metrics["n_trainable"]
    # another grid of the same kind, too (the tiny configs' B-spline [4] at grid_size 3)
    runner.pretrain(tiny_config(tmp_path), tmp_path / "bsrc")
    grid = _transfer_of(tmp_path, tmp_path / "bsrc", {"name": "bspline", "hidden": [4]}, "grid")
    assert grid.attrs["model"] == "bspline" and grid.attrs["widths"] == "[2, 4, 1]"


def test_a_source_on_another_domain_is_refused(tmp_path: Path) -> None:
    pde = build_pde("elliptic")
    model = KAN([2, 3, 1], list(pde.domain), kind="bspline")
    meta = {"pde": "elliptic", "spec": {**model.spec(), "domain": [[0.0, 2.0], [0.0, 1.0]]}}
    with pytest.raises(PinnkanError, match=re.escape("on the domain [[0.0, 2.0], [0.0, 1.0]]")):
        check_compatible(meta, tmp_path / "m", pde, model)
    assert check_compatible({**meta, "spec": model.spec()}, tmp_path / "m", pde, model) == []


def test_a_spec_written_with_the_older_basis_key_still_builds_and_matches() -> None:
    """Files written before the spec named the kind `kind` called it `basis`: such a spec
    builds the same network and matches a current one."""
    from pinnkan.network.kan import spec_differences

    model = KAN([2, 4, 1], [(0.0, 1.0), (0.0, 1.0)], kind="rational", generator=torch.Generator())
    old = {("basis" if k == "kind" else k): v for k, v in model.spec().items()}
    assert "kind" not in old
    again = KAN.from_spec(old, generator=torch.Generator())
    assert again.kind == "rational" and again.spec() == model.spec()
    assert spec_differences(model.spec(), old) == [] and spec_differences(old, model.spec()) == []
