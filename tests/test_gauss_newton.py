"""optim.solve=cg: the matrix-free products equal those of the explicit Jacobian (every layer
kind, LoTRA factors, periodic pairs), conjugate gradients solve the damped system, the LM step
and its prediction match the Cholesky solve's, a run trains with it, and its memory estimate
holds no Gram matrix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pinnkan.adapters import AdapterConfig, apply
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.jacobian import chunks, residuals_and_jacobian, trainable_parameters
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run import runner
from pinnkan.train.config import TrainConfig
from pinnkan.train.gauss_newton import GaussNewtonProducts, conjugate_gradient
from pinnkan.train.levenberg_marquardt import LevenbergMarquardt, LMConfig
from pinnkan.train.memory import estimate_step
from tests.conftest import tiny_config

F64 = torch.float64


def _problem(family: str, kind: str, lotra: bool = False) -> tuple:
    pde = build_pde(family, {})
    gen = torch.Generator().manual_seed(0)
    model = KAN(
        [pde.dim, 5, 4, 1], list(pde.domain), kind=kind, dtype=F64, generator=gen,
        periodic=pde.periodic_axes,
    )  # fmt: skip
    if lotra:
        apply(model, AdapterConfig(name="lotra", cr=0.5, init="random"), gen)
    loss_fn = PinnLoss(pde)
    batch = loss_fn.sample(40, 12, gen, F64, torch.device("cpu"), quasi=True)
    return model, loss_fn, batch


@pytest.mark.parametrize(
    ("family", "kind", "lotra"),
    [
        ("elliptic", "chebyshev", False),
        ("elliptic", "bspline", False),
        ("elliptic", "rational", False),
        ("elliptic", "mlp", False),
        ("elliptic", "bspline", True),
        ("advection", "chebyshev", False),  # periodic pairs
        ("burgers", "chebyshev", False),  # nonlinear
    ],
)
def test_the_products_are_those_of_the_explicit_jacobian(
    family: str, kind: str, lotra: bool
) -> None:
    model, loss_fn, batch = _problem(family, kind, lotra)
    params = trainable_parameters(model)
    # the rows in the chunks' order (interior 0:16 with the conditions, then the rest)
    n = batch["interior"].shape[0]
    pieces = [residuals_and_jacobian(loss_fn, model, c, n) for c in chunks(batch, 16)]
    r, J = torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])
    gn = GaussNewtonProducts(loss_fn, model, params, batch, rows=16)  # several chunks
    v = torch.randn(J.shape[1], dtype=F64, generator=torch.Generator().manual_seed(3))
    u = torch.randn(J.shape[0], dtype=F64, generator=torch.Generator().manual_seed(4))
    scale = float(J.abs().max())
    torch.testing.assert_close(gn.r, r, rtol=1e-12, atol=1e-12 * float(r.abs().max()))
    torch.testing.assert_close(gn.times(v), J @ v, rtol=1e-10, atol=1e-12 * scale)
    torch.testing.assert_close(gn.transpose_times(u), J.T @ u, rtol=1e-10, atol=1e-12 * scale)
    torch.testing.assert_close(gn.grad, J.T @ r, rtol=1e-10, atol=1e-12 * scale)
    torch.testing.assert_close(gn.gram_times(v), J.T @ (J @ v), rtol=1e-10, atol=1e-11 * scale**2)
    torch.testing.assert_close(gn.column_norms2(), J.square().sum(0), rtol=1e-12, atol=0.0)


def test_conjugate_gradient_solves_a_symmetric_positive_definite_system() -> None:
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(30, 20, dtype=F64, generator=gen)
    a = m.T @ m + 0.1 * torch.eye(20, dtype=F64)
    b = torch.randn(20, dtype=F64, generator=gen)
    res = conjugate_gradient(lambda v: a @ v, b, tol=1e-12, max_iter=200)
    torch.testing.assert_close(res.x, torch.linalg.solve(a, b), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res.ax, a @ res.x, rtol=1e-8, atol=1e-8)
    assert 0 < res.iterations <= 200
    assert conjugate_gradient(lambda v: a @ v, b, tol=1e-12, max_iter=3).iterations == 3


@pytest.mark.parametrize("scaling", ["marquardt", "identity"])
def test_the_cg_step_and_prediction_match_the_cholesky_solve(scaling: str) -> None:
    model, loss_fn, batch = _problem("elliptic", "chebyshev")
    params = trainable_parameters(model)
    r, J = residuals_and_jacobian(loss_fn, model, batch)
    exact = LevenbergMarquardt(LMConfig(solve="primal", scaling=scaling, damping=1e-2))
    exact.set_normal(J.T @ J, J.T @ r)
    step, predicted = exact.propose()
    cg = LevenbergMarquardt(
        LMConfig(solve="cg", scaling=scaling, damping=1e-2, cg_tol=1e-13, cg_iters=2000)
    )
    gn = GaussNewtonProducts(loss_fn, model, params, batch, rows=1024)
    cg.set_products(gn.gram_times, gn.grad, gn.column_norms2())
    step_cg, predicted_cg = cg.propose()
    torch.testing.assert_close(step_cg, step, rtol=1e-6, atol=1e-8 * float(step.abs().max()))
    assert predicted_cg == pytest.approx(predicted, rel=1e-8)
    # a retry at larger damping solves again from the same products
    assert cg.judge(predicted_cg, -1.0) is False and cg.has_system
    exact.judge(predicted, -1.0)
    torch.testing.assert_close(cg.propose()[0], exact.propose()[0], rtol=1e-6, atol=1e-9)


def test_a_run_with_solve_cg_trains_like_the_cholesky_run(tmp_path: Path) -> None:
    errors = {}
    for solve in ("primal", "cg"):
        cfg = tiny_config(tmp_path, {"optim": {"name": "lm", "solve": solve}, "train.steps": 8})
        cfg["precision"] = "float64"
        cfg["model"] = {"name": "chebyshev", "hidden": [5]}
        res = runner.pretrain(cfg, tmp_path / solve)
        assert res.status == "ok"
        errors[solve] = res.metrics["rel_l2"]
        assert res.history["loss"][-1] < res.history["loss"][0]
    assert errors["cg"] == pytest.approx(errors["primal"], rel=0.05)


def test_the_memory_estimate_of_cg_holds_no_gram_matrix() -> None:
    pde = build_pde("elliptic", {})
    model = KAN([2, 64, 64, 1], list(pde.domain), kind="bspline", dtype=F64)
    primal = estimate_step(model, pde, TrainConfig(optimizer="lm", n_interior=50000))
    cg = estimate_step(
        model, pde, TrainConfig(optimizer="lm", n_interior=50000, lm=LMConfig(solve="cg"))
    )
    assert primal.sizes["Gram"] == primal.sizes["P"] and "Gram" not in cg.sizes
    gram = primal.sizes["P"] ** 2 * 8
    assert primal.total > gram and cg.total < gram / 4
