"""Each PDE family's exact solution satisfies its residual and its conditions."""

from __future__ import annotations

import pytest
import torch

from pinnkan.errors import PinnkanError
from pinnkan.layers.jet import Jet
from pinnkan.pde import FAMILIES, build_pde

CASES = [
    ("elliptic", {"lam": 0.0, "mu": 1.0}),
    ("elliptic", {"lam": 10.0, "mu": 2.0}),
    ("parabolic", {"nu": 0.1}),
    ("parabolic", {"nu": 0.2}),
    ("advection", {"beta": 1.0}),
    ("advection", {"beta": 5.0}),
    ("wave", {"c": 1.0}),
    ("wave", {"c": 2.0}),
]
# Helmholtz and 2-D heat (tests/test_families_linear.py checks their conditions further)
LINEAR_CASES = [
    ("helmholtz", {"k": 2.0}),
    ("helmholtz", {"k": 3.0}),
    ("helmholtz", {"k": 6.0}),  # above the first eigenvalue: indefinite but not resonant
    ("heat2d", {"nu": 0.05}),
    ("heat2d", {"nu": 0.1}),
]


def exact_jet(pde, x: torch.Tensor) -> Jet:
    """u*, ∂u*/∂x_k and ∂²u*/∂x_k² (every k < D) by autograd of the closed form."""
    x = x.detach().requires_grad_(True)
    u = pde.exact(x)
    (g,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    d2 = [
        torch.autograd.grad(g[:, k].sum(), x, retain_graph=True)[0][:, k] for k in range(x.shape[1])
    ]
    return Jet(u[:, None].detach(), g.T[:, :, None].detach(), torch.stack(d2)[:, :, None])


def check_exact_solves_residual(pde) -> None:
    """The exact solution makes the residual vanish to rounding, and a perturbed one does not
    (the residual really tests something)."""
    gen = torch.Generator().manual_seed(0)
    x = pde.sample_interior(500, gen, torch.float64)
    jet = exact_jet(pde, x)
    scale = 1.0 + jet.d2.abs().max()
    assert pde.residual(x, jet).abs().max() / scale < 1e-13
    o1 = torch.linspace(0.01, 0.02, pde.dim, dtype=x.dtype)[:, None, None]
    o2 = torch.linspace(0.03, 0.01, pde.dim, dtype=x.dtype)[:, None, None]
    wrong = Jet(jet.value + 0.01, jet.d1 + o1, jet.d2 + o2)
    assert pde.residual(x, wrong).abs().min() > 1e-3


@pytest.mark.parametrize(("name", "params"), CASES + LINEAR_CASES)
def test_exact_solution_satisfies_residual(name: str, params: dict[str, float]) -> None:
    check_exact_solves_residual(build_pde(name, params))


@pytest.mark.parametrize(("name", "params"), CASES)
def test_exact_solution_satisfies_conditions(name: str, params: dict[str, float]) -> None:
    pde = build_pde(name, params)
    gen = torch.Generator().manual_seed(1)
    for cond in pde.conditions():
        x = cond.sample(64, gen, torch.float64)
        lo = torch.tensor([d[0] for d in pde.domain], dtype=x.dtype)
        hi = torch.tensor([d[1] for d in pde.domain], dtype=x.dtype)
        assert ((x >= lo) & (x <= hi)).all(), cond.name
        res = cond.residual(x, exact_jet(pde, x))
        assert res.abs().max() < 1e-12, cond.name


def test_families_registered() -> None:
    assert set(FAMILIES) == {
        "elliptic",
        "parabolic",
        "advection",
        "wave",
        "helmholtz",
        "heat2d",
        "burgers",
        "allen_cahn",
    }


def test_grid_is_ij_ordered() -> None:
    pde = build_pde("parabolic", {})
    axes, pts = pde.grid(5, torch.float64)
    assert list(axes) == ["x", "t"]
    torch.testing.assert_close(pts.reshape(5, 5, 2)[:, 0, 0], axes["x"])
    torch.testing.assert_close(pts.reshape(5, 5, 2)[0, :, 1], axes["t"])


def test_bad_parameters_are_user_errors() -> None:
    with pytest.raises(PinnkanError, match="unknown pde"):
        build_pde("maxwell", {})
    with pytest.raises(PinnkanError, match="unknown parameter"):
        build_pde("parabolic", {"mu": 1.0})
    with pytest.raises(PinnkanError, match="finite"):
        build_pde("wave", {"c": float("nan")})
