"""The nonlinear families burgers and allen_cahn: their numerically computed references solve
the PDE, the residuals from a network's jet match plain autograd, and the CLI runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pinnkan.network.derivatives import compute_jet
from pinnkan.network.kan import KAN
from pinnkan.pde import FAMILIES, build_pde
from pinnkan.pde import allen_cahn as ac
from pinnkan.pde.burgers import Burgers, cole_hopf, cole_hopf_periodic
from pinnkan.pinn.jacobian import residuals_and_jacobian
from tests.conftest import describe, run_pinnkan, tiny
from tests.test_lm import _jacrev, _problem

PI = np.pi
BURGERS_NU = (Burgers.defaults["nu"], Burgers.target_params["nu"])  # 0.1/π, (0.2/3)/π
AC_EPS = (ac.AllenCahn.defaults["eps"], ac.AllenCahn.target_params["eps"])  # source / target


# --- Burgers: Cole–Hopf against an independent finite-difference solve -----------------------
def burgers_fd(nu: float, n: int, times: tuple[float, ...]) -> tuple[np.ndarray, dict]:
    """Method of lines, 2nd-order central differences on n intervals, classical RK4."""
    x = np.linspace(-1.0, 1.0, n + 1)
    h = 2.0 / n
    u = -np.sin(PI * x)
    u[0] = u[-1] = 0.0
    dt = min(0.5 * h * h / nu, 0.2 * h)  # inside RK4's stability region for both terms

    def f(u: np.ndarray) -> np.ndarray:
        r = np.zeros_like(u)
        r[1:-1] = nu * (u[2:] - 2.0 * u[1:-1] + u[:-2]) / h**2 - u[1:-1] * (u[2:] - u[:-2]) / (
            2.0 * h
        )
        return r

    out, t = {}, 0.0
    for t_out in times:
        steps = int(np.ceil((t_out - t) / dt))
        d = (t_out - t) / steps
        for _ in range(steps):
            k1 = f(u)
            k2 = f(u + d / 2 * k1)
            k3 = f(u + d / 2 * k2)
            k4 = f(u + d * k3)
            u = u + d / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[t_out], t = u.copy(), t_out
    return x, out


@pytest.mark.parametrize("nu", BURGERS_NU)
def test_burgers_reference_matches_finite_differences(nu: float) -> None:
    times = (0.25, 0.5, 1.0)
    x, coarse = burgers_fd(nu, 400, times)
    xf, fine = burgers_fd(nu, 800, times)
    for t in times:
        ref = cole_hopf(x, np.full_like(x, t), nu)
        fd = fine[t][::2]
        err_fine = np.abs(fd - ref).max()
        # second order: halving h divides the error by ~4, and Richardson extrapolation
        # (4 fine − coarse) / 3 removes the h² term, leaving a much smaller error
        err_coarse = np.abs(coarse[t] - ref).max()
        extrap = (4.0 * fd - coarse[t]) / 3.0
        assert err_fine < 1e-3, (t, err_fine)
        assert 3.0 < err_coarse / err_fine < 5.0, (t, err_coarse, err_fine)
        assert np.abs(extrap - ref).max() < 5e-6, (t, np.abs(extrap - ref).max())


def central_differences(u, xs: np.ndarray, ts: np.ndarray, h: float = 1e-3) -> tuple:  # noqa: ANN001
    """u, u_t, u_x and u_xx of u(x, t) at (xs, ts) by 4th-order central differences."""

    def d1(fp, fm, fp2, fm2):  # noqa: ANN001, ANN202
        return (8.0 * (fp - fm) - (fp2 - fm2)) / (12.0 * h)

    u0 = u(xs, ts)
    ut = d1(u(xs, ts + h), u(xs, ts - h), u(xs, ts + 2 * h), u(xs, ts - 2 * h))
    up, um, up2, um2 = u(xs + h, ts), u(xs - h, ts), u(xs + 2 * h, ts), u(xs - 2 * h, ts)
    uxx = (-(up2 + um2) + 16.0 * (up + um) - 30.0 * u0) / (12.0 * h * h)
    return u0, ut, d1(up, um, up2, um2), uxx


@pytest.mark.parametrize("nu", BURGERS_NU)
def test_burgers_reference_residual_and_conditions(nu: float) -> None:
    rng = np.random.default_rng(0)
    xs, ts = rng.uniform(-0.95, 0.95, 400), rng.uniform(0.05, 0.95, 400)

    def u(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cole_hopf(a, b, nu)

    u0, ut, ux, uxx = central_differences(u, xs, ts)
    res = ut + u0 * ux - nu * uxx
    scale = max(np.abs(ut).max(), np.abs(u0 * ux).max(), np.abs(nu * uxx).max())
    assert scale > 1.0
    assert np.abs(res).max() / scale < 1e-6
    # boundary and initial data hold to rounding
    tb = rng.uniform(0.0, 1.0, 50)
    assert np.abs(u(np.full(50, -1.0), tb)).max() < 1e-14
    assert np.abs(u(np.full(50, 1.0), tb)).max() < 1e-14
    x0 = rng.uniform(-1.0, 1.0, 50)
    np.testing.assert_allclose(u(x0, np.zeros(50)), -np.sin(PI * x0), atol=1e-15)
    np.testing.assert_allclose(u(x0, np.full(50, 1e-12)), -np.sin(PI * x0), atol=1e-10)


def test_burgers_reference_is_finite_for_small_viscosity() -> None:
    """The classic ν = 0.01/π (exponents up to 1/(2πν) = 50): no overflow, converged quadrature."""
    x = np.linspace(-1.0, 1.0, 201)
    t = np.full_like(x, 1.0)
    a, b = cole_hopf(x, t, 0.01 / PI, nodes=100), cole_hopf(x, t, 0.01 / PI, nodes=200)
    assert np.isfinite(b).all()
    assert np.abs(a - b).max() < 1e-12
    assert np.abs(np.diff(b) / np.diff(x)).max() > 50.0  # the near-shock is there


# --- Allen–Cahn: self-convergence and finite-difference residual -----------------------------
@pytest.mark.parametrize("eps", AC_EPS)
def test_allen_cahn_reference_self_convergence(eps: float) -> None:
    x = np.linspace(-1.0, 1.0, 41)
    t = np.linspace(0.0, 1.0, 41)
    xx, tt = (a.ravel() for a in np.meshgrid(x, t, indexing="ij"))
    ref = ac.reference(xx, tt, eps)
    # an independent solve with half the modes and twice the time step
    coef, save = ac.solve(eps, modes=ac.MODES // 2, step=2 * ac.STEP)
    half = np.where(tt <= 0.0, ac.initial(xx), ac.evaluate(coef, save, xx, tt, ac.MODES // 2))
    assert np.abs(half - ref).max() < 1e-6
    assert np.abs(ref).max() > 0.9  # the interfaces have formed: not a trivial comparison


@pytest.mark.parametrize("eps", AC_EPS)
def test_allen_cahn_reference_residual_and_conditions(eps: float) -> None:
    rng = np.random.default_rng(1)
    xs, ts = rng.uniform(-1.0, 1.0, 400), rng.uniform(0.05, 0.95, 400)
    h = 1e-3

    def u(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ac.reference(a, b, eps)

    u0, ut, _, uxx = central_differences(u, xs, ts, h)  # periodic: the stencil may cross ±1
    react = ac.REACTION * (u0 - u0**3)
    res = ut - eps * uxx - react
    scale = max(np.abs(ut).max(), np.abs(eps * uxx).max(), np.abs(react).max())
    assert scale > 1.0
    assert np.abs(res).max() / scale < 1e-6
    # periodic in u and u_x, initial data exact at t = 0
    tb = rng.uniform(0.01, 1.0, 50)
    left, right = u(np.full(50, -1.0), tb), u(np.full(50, 1.0), tb)
    np.testing.assert_allclose(left, right, atol=1e-12)
    dl = (u(np.full(50, -1.0 + h), tb) - u(np.full(50, -1.0 - h), tb)) / (2 * h)
    dr = (u(np.full(50, 1.0 + h), tb) - u(np.full(50, 1.0 - h), tb)) / (2 * h)
    np.testing.assert_allclose(dl, dr, atol=1e-9)
    x0 = rng.uniform(-1.0, 1.0, 50)
    np.testing.assert_allclose(u(x0, np.zeros(50)), x0**2 * np.cos(PI * x0), atol=1e-15)


@pytest.mark.parametrize("name", ["burgers", "allen_cahn"])
def test_exact_keeps_dtype_and_device(name: str) -> None:
    pde = build_pde(name, {})
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = pde.sample_interior(20, gen, dtype)
        u = pde.exact(x)
        assert u.shape == (20,) and u.dtype == dtype and torch.isfinite(u).all()
        x_grad = x.clone().requires_grad_(True)  # a tensor that needs grad is fine too
        torch.testing.assert_close(pde.exact(x_grad), u)


# --- network jets: the nonlinear residuals against plain autograd ----------------------------
def _kan(pde) -> KAN:  # noqa: ANN001
    gen = torch.Generator().manual_seed(0)
    return KAN(
        [2, 6, 5, 1], list(pde.domain), grid_size=4, spline_scale=1.0, dtype=torch.float64,
        generator=gen, kind="bspline",
    )  # fmt: skip


def _autograd_derivatives(model: KAN, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """u, u_x, u_t, u_xx by plain torch.autograd on the network output."""
    x = x.detach().requires_grad_(True)
    u = model(x)[:, 0]
    (g,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (gx,) = torch.autograd.grad(g[:, 0].sum(), x)
    return u.detach(), g[:, 0].detach(), g[:, 1].detach(), gx[:, 0]


@pytest.mark.parametrize("engine", ["forward", "autograd"])
@pytest.mark.parametrize("name", ["burgers", "allen_cahn"])
def test_residual_from_jet_matches_autograd(name: str, engine: str) -> None:
    pde = build_pde(name, {})
    model = _kan(pde)
    gen = torch.Generator().manual_seed(2)
    x = pde.sample_interior(60, gen, torch.float64)
    u, ux, ut, uxx = _autograd_derivatives(model, x)
    if name == "burgers":
        want = ut + u * ux - pde.params["nu"] * uxx
    else:
        want = ut - pde.params["eps"] * uxx - 5.0 * (u - u**3)
    got = pde.residual(x, compute_jet(model, x, engine)).detach()
    assert want.abs().max() > 1.0  # the comparison is not between zeros
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # the conditions too (the periodic pair compares u and u_x at x = −1 against x = 1)
    for cond in pde.conditions():
        xc = cond.sample(32, gen, torch.float64)
        uc, uxc, _, _ = _autograd_derivatives(model, xc)
        jet = compute_jet(model, xc, engine)
        got = cond.residual(xc, jet).detach()
        half = xc.shape[0] // 2
        if cond.name == "boundary" and name == "burgers":
            want = uc
        elif cond.name == "boundary":
            want = uc[:half] - uc[half:]
        elif cond.name == "boundary_dx":
            want = uxc[:half] - uxc[half:]
        else:
            x0 = xc[:, 0]
            ic = -torch.sin(PI * x0) if name == "burgers" else x0**2 * torch.cos(PI * x0)
            want = uc - ic
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("adapter", [None, "lotra"])
@pytest.mark.parametrize("name", ["burgers", "allen_cahn"])
def test_lm_jacobian_matches_jacrev(name: str, adapter: str | None) -> None:
    """LM's structured Jacobian holds for residuals nonlinear in the jet (u·u_x, u³) and for
    the periodic pairs on u_x (rows that read two points' derivatives)."""
    model, loss, batch = _problem("bspline", name, adapter)
    r, J = residuals_and_jacobian(loss, model, batch)
    ref = _jacrev(model, loss, batch)
    assert J.shape == ref.shape
    assert float((J - ref).norm() / ref.norm()) <= 1e-10


def test_periodic_pairs_share_times() -> None:
    pde = build_pde("allen_cahn", {})
    x = pde.conditions()[0].sample(64, torch.Generator().manual_seed(0), torch.float64)
    assert x.shape == (64, 2)
    torch.testing.assert_close(x[:32, 1], x[32:, 1])
    assert (x[:32, 0] == -1.0).all() and (x[32:, 0] == 1.0).all()


def test_registered() -> None:
    assert {"burgers", "allen_cahn"} <= set(FAMILIES)


# --- CLI: a tiny pretrain and LoTRA transfer per family ---------------------------------------
@pytest.mark.parametrize("name", ["burgers", "allen_cahn"])
def test_cli_pretrain_and_transfer(name: str, tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    pre, tr = tmp_path / "pre", tmp_path / "tr"
    proc = run_pinnkan(["pretrain", f"pde={name}", *tiny(root), f"hydra.run.dir={pre}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert (pre / "results.h5").is_file(), describe(proc)
    args = ["transfer", f"pde={name}", "cr=0.25", f"source={pre}", *tiny(root)]
    proc = run_pinnkan([*args, f"hydra.run.dir={tr}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert (tr / "results.h5").is_file(), describe(proc)


def test_periodic_cole_hopf_matches_the_family_reference() -> None:
    """`cole_hopf_periodic` (trapezoid in z, any periodic initial value) on the family's own
    −sin(πx), period 2, to rounding; a mean velocity only carries the solution along."""
    x = np.linspace(-1.0, 1.0, 81)
    for nu, t in ((0.1 / PI, 0.7), (0.01 / PI, 1.0)):
        ts = np.full_like(x, t)
        want = cole_hopf(x, ts, nu)
        got = cole_hopf_periodic(
            x, ts, nu, lambda y: -np.sin(PI * y), lambda y: np.cos(PI * y) / PI, period=2.0
        )
        assert np.abs(got - want).max() < 1e-12
        moved = cole_hopf_periodic(
            x + 0.3 * t, ts, nu, lambda y: -np.sin(PI * y), lambda y: np.cos(PI * y) / PI, 0.3, 2.0
        )
        assert np.abs(moved - 0.3 - want).max() < 1e-12
