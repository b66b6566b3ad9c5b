"""Closed-form B-spline + SiLU basis: values, first and second derivatives are exact."""

from __future__ import annotations

import pytest
import torch

from pinnkan.layers import BSplineBasis


def _points() -> torch.Tensor:
    # covers the whole extended grid, the outside, and every knot exactly
    x = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
    knots = torch.arange(-8, 9, dtype=torch.float64) * 0.4 - 0.0
    return torch.cat([x, knots]).unsqueeze(-1)  # (N, 1)


@pytest.mark.parametrize("grid", [1, 3, 5, 10])
def test_derivatives_match_autograd(grid: int) -> None:
    basis = BSplineBasis(grid)
    x = _points().requires_grad_(True)
    phi, d1, d2 = basis(x)
    for k in range(basis.n_basis):
        (g,) = torch.autograd.grad(phi[:, 0, k].sum(), x, create_graph=True, retain_graph=True)
        (gg,) = torch.autograd.grad(g.sum(), x, retain_graph=True)
        torch.testing.assert_close(g[:, 0], d1[:, 0, k], atol=1e-12, rtol=1e-12)
        # the second derivative of a cubic spline jumps at knots: compare away from them
        s = (x[:, 0].detach() - basis.first_knot) / basis.h
        away = (s - s.round()).abs() > 1e-6
        torch.testing.assert_close(gg[away, 0], d2[away, 0, k], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("grid", [3, 5])
def test_derivatives_match_finite_differences(grid: int) -> None:
    basis = BSplineBasis(grid, (-1.0, 1.0))
    x = torch.linspace(-2.5, 2.5, 397, dtype=torch.float64).unsqueeze(-1)
    eps = 1e-5
    phi, d1, d2 = basis(x)
    p_plus, p_minus = basis(x + eps)[0], basis(x - eps)[0]
    torch.testing.assert_close((p_plus - p_minus) / (2 * eps), d1, atol=1e-8, rtol=1e-6)
    d1p, d1m = basis(x + eps)[1], basis(x - eps)[1]
    # d2 is continuous but d3 jumps at knots, so the FD error there is O(eps / h³)
    torch.testing.assert_close((d1p - d1m) / (2 * eps), d2, atol=2e-4, rtol=1e-5)
    fd2 = (p_plus - 2 * phi + p_minus) / eps**2
    torch.testing.assert_close(fd2, d2, atol=2e-4, rtol=1e-3)


def test_partition_of_unity_and_support() -> None:
    basis = BSplineBasis(5)
    x = torch.linspace(-1.0, 1.0, 201, dtype=torch.float64).unsqueeze(-1)
    phi = basis.values(x)[..., : basis.n_splines]
    torch.testing.assert_close(phi.sum(-1), torch.ones_like(phi.sum(-1)))
    assert (phi >= 0).all()
    far = torch.tensor([[-5.0], [5.0]], dtype=torch.float64)
    spl, d1, d2 = (t[..., : basis.n_splines] for t in basis(far))
    assert spl.abs().max() == 0 and d1.abs().max() == 0 and d2.abs().max() == 0


def test_values_equal_full_evaluation() -> None:
    basis = BSplineBasis(7, (-2.0, 1.0))
    x = torch.randn(64, 3, dtype=torch.float64) * 2
    torch.testing.assert_close(basis.values(x), basis(x)[0])


def test_jet_features_are_the_chain_rule() -> None:
    basis = BSplineBasis(5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    dx = torch.randn(2, 32, 4, generator=gen, dtype=torch.float64)
    ddx = torch.randn(2, 32, 4, generator=gen, dtype=torch.float64)
    phi, d1, d2 = basis(x)
    feats = basis.jet_features(x, dx, ddx)
    assert feats.shape == (5, 32, 4, basis.n_basis)
    torch.testing.assert_close(feats[0], phi)
    for k in range(2):
        torch.testing.assert_close(feats[1 + k], d1 * dx[k].unsqueeze(-1))
        want = d2 * dx[k].unsqueeze(-1) ** 2 + d1 * ddx[k].unsqueeze(-1)
        torch.testing.assert_close(feats[3 + k], want)


def test_float32_close_to_float64() -> None:
    basis = BSplineBasis(5)
    x = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64).unsqueeze(-1)
    for a, b in zip(basis(x), basis(x.float())):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b.double(), a, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["bspline", "lmkan"])
def test_non_finite_inputs_give_nan_not_an_index_error(kind: str) -> None:
    """A diverging run feeds NaN / inf into the grid lookup: the features must come out NaN
    (so the divergence guard reports it) instead of a scatter / gather index error."""
    from pinnkan.network.kan import KAN

    model = KAN([2, 3, 1], [(0.0, 1.0), (0.0, 1.0)], kind=kind, dtype=torch.float64)
    for layer in model.layers:
        torch.nn.init.constant_(layer.A, float("nan"))
    x = torch.tensor([[0.5, 0.5], [float("inf"), 0.2]], dtype=torch.float64)
    assert torch.isnan(model(x)).all()
    for fused in (True, False):
        assert torch.isnan(model.forward_jet(x, fused).value).all()
