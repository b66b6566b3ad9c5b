"""The network's input derivatives: forward jet engine vs nested autograd vs finite differences."""

from __future__ import annotations

import pytest
import torch

from pinnkan.adapters import AdapterConfig, apply
from pinnkan.network.derivatives import compute_jet
from pinnkan.network.kan import KAN
from pinnkan.pde import FAMILIES, build_pde

DOMAIN = [(0.0, 1.0), (-1.0, 3.0)]


def _model(dtype: torch.dtype = torch.float64, widths: list[int] | None = None) -> KAN:
    gen = torch.Generator().manual_seed(0)
    # spline_scale=1 gives rough, strongly curved functions: a harder test than the default
    return KAN(
        widths or [2, 6, 5, 1],
        DOMAIN,
        grid_size=4,
        spline_scale=1.0,
        dtype=dtype,
        generator=gen,
        kind="bspline",
    )


def _points(n: int = 40, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(n, 2, generator=gen, dtype=dtype)
    return torch.stack([u[:, 0], -1.0 + 4.0 * u[:, 1]], dim=1)


def test_forward_engine_matches_autograd() -> None:
    model, x = _model(), _points()
    fwd, ag = compute_jet(model, x, "forward"), compute_jet(model, x, "autograd")
    torch.testing.assert_close(fwd.value, ag.value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fwd.d1, ag.d1, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fwd.d2, ag.d2, rtol=1e-10, atol=1e-9)
    assert ag.d2.abs().max() > 1.0  # the comparison is not between zeros


def test_forward_engine_matches_finite_differences() -> None:
    model, x = _model(), _points()
    jet = compute_jet(model, x, "forward")
    eps = 1e-5
    for k in range(2):
        e = torch.zeros(2, dtype=x.dtype)
        e[k] = eps
        with torch.no_grad():
            up, mid, dn = model(x + e)[:, 0], model(x)[:, 0], model(x - e)[:, 0]
        torch.testing.assert_close(jet.d(k).detach(), (up - dn) / (2 * eps), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(
            jet.dd(k).detach(), (up - 2 * mid + dn) / eps**2, rtol=1e-3, atol=2e-3
        )


def test_engines_agree_with_lotra_adapter() -> None:
    model, x = _model(), _points()
    gen = torch.Generator().manual_seed(5)
    every = ["lotra"] * len(model.layers)  # Tucker on every layer, edges too (not the default)
    apply(model, AdapterConfig(name="lotra", cr=0.5, init="random", layers=every), gen)
    for layer in model.layers:  # a non-zero update, so ΔA really takes part
        torch.nn.init.normal_(layer.adapter.G, generator=gen)
    fwd, ag = compute_jet(model, x, "forward"), compute_jet(model, x, "autograd")
    torch.testing.assert_close(fwd.d2, ag.d2, rtol=1e-10, atol=1e-9)


def test_parameter_gradients_agree_between_engines() -> None:
    x = _points()
    grads = []
    for engine in ("forward", "autograd"):
        model = _model()
        jet = compute_jet(model, x, engine)
        (jet.dd(0) + jet.dd(1) + jet.d(0)).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("engine", ["forward", "autograd"])
def test_float32_runs_and_is_close(engine: str) -> None:
    m64 = _model(torch.float64)
    m32 = _model(torch.float64).to(torch.float32)
    x = _points()
    j64, j32 = compute_jet(m64, x, engine), compute_jet(m32, x.float(), engine)
    assert j32.d2.dtype == torch.float32
    scale = j64.d2.abs().max()
    assert (j32.d2.double() - j64.d2).abs().max() / scale < 1e-4


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match="derivative engine"):
        compute_jet(_model(), _points(), "symbolic")


@pytest.mark.parametrize("adapter", ["lotra", "full", "scratch", "slim"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_residuals_agree_between_engines(family: str, adapter: str) -> None:
    """Every PDE family's residual and its parameter gradient, under every adapter, are the
    same (1e-10 relative, float64) whichever engine produced the jet."""
    pde = build_pde(family, {})
    gen = torch.Generator().manual_seed(11)
    x = pde.sample_interior(64, gen, torch.float64)
    out = []
    for engine in ("forward", "autograd"):
        g = torch.Generator().manual_seed(2)
        model = KAN(
            [pde.dim, 5, 4, 1],
            list(pde.domain),
            grid_size=4,
            spline_scale=1.0,
            dtype=torch.float64,
            generator=g,
            kind="bspline",
        )
        apply(model, AdapterConfig(name=adapter, cr=0.5, init="random"), g)
        for layer in model.layers:
            if layer.adapter is not None:  # a non-zero update, so ΔA really takes part
                torch.nn.init.normal_(layer.adapter.G, generator=g)
        jet = compute_jet(model, x, engine)
        assert jet.d1.shape == (pde.dim, 64, 1) and jet.d2.shape == (pde.dim, 64, 1)
        res = pde.residual(x, jet)
        res.square().mean().backward()
        grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        out.append((jet.d2.detach(), res.detach(), torch.cat(grads)))
    (d2_fwd, r_fwd, g_fwd), (d2_ag, r_ag, g_ag) = out
    torch.testing.assert_close(d2_fwd, d2_ag, rtol=1e-10, atol=1e-9)
    scale = r_ag.abs().max()
    assert scale > 1e-3  # not a comparison of zeros
    torch.testing.assert_close(r_fwd / scale, r_ag / scale, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_fwd, g_ag, rtol=1e-9, atol=1e-9 * g_ag.abs().max().item())


def test_a_mixed_second_derivative_is_refused_not_zero() -> None:
    """The jets carry ∂²/∂x_k² only: u_xy is a clear error, the diagonal is dd."""
    from pinnkan.errors import PinnkanError
    from pinnkan.layers.jet import Jet

    d2 = torch.arange(6.0).reshape(2, 3, 1)
    jet = Jet(torch.zeros(3, 1), torch.zeros(2, 3, 1), d2)
    assert torch.equal(jet.dxy(1, 1), d2[1, :, 0])
    with pytest.raises(PinnkanError, match="mixed derivative d2u/dx0dx1"):
        jet.dxy(0, 1)
