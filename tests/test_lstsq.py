"""adapter=lstsq: the last layer from one least-squares solve equals a direct solve on a
Jacobian built by autograd, is a minimum of the loss, refuses nonlinear families, and runs as
a transfer stage (results, adapter file, merge)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from pinnkan.adapters import AdapterConfig, apply, read_adapter
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import MODEL_FILE, MODEL_FORMAT, load_checkpoint
from pinnkan.io.results import RESULTS_FILE, read_results
from pinnkan.network.kan import KAN
from pinnkan.pde import FAMILIES, build_pde
from pinnkan.pde.base import PDEFamily
from pinnkan.pinn.jacobian import residuals, residuals_and_jacobian
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run import runner
from pinnkan.run.merge import merge_adapter
from pinnkan.train import lstsq
from pinnkan.train.levenberg_marquardt import LevenbergMarquardt, LMConfig, assign_flat, flat_view
from tests.conftest import SourceRun, describe, run_pinnkan, tiny, tiny_config

F64 = torch.float64


def _problem(
    pde_name: str, kind: str, options: dict | None = None, seed: int = 0
) -> tuple[KAN, PinnLoss, dict[str, Tensor], PDEFamily]:
    """A [dim, 4, 1] network of `kind` (with `options`) prepared for lstsq on the family's
    target, and one Sobol batch of 64 interior / 16 boundary points."""
    family = FAMILIES[pde_name]
    pde = build_pde(pde_name, {**family.defaults, **family.target_params})
    gen = torch.Generator().manual_seed(seed)
    model = KAN(
        [pde.dim, 4, 1], list(pde.domain), kind=kind, dtype=F64, generator=gen,
        periodic=pde.periodic_axes, **(options or {}),
    )  # fmt: skip
    apply(model, AdapterConfig(name="lstsq"), gen)
    loss_fn = PinnLoss(pde)
    batch = loss_fn.sample(64, 16, gen, F64, torch.device("cpu"), quasi=True)
    return model, loss_fn, batch, pde


def _solved(model: nn.Module) -> dict[str, Tensor]:
    """The last layer's trainable tensors by state-dict name."""
    last = len(model.layers) - 1
    return {
        f"layers.{last}.{n}": p.detach().clone()
        for n, p in model.layers[last].named_parameters()
        if p.requires_grad
    }


def direct_solve(
    model: KAN, loss_fn: PinnLoss, batch: dict[str, Tensor]
) -> tuple[dict[str, Tensor], int]:
    """The last layer's least-squares coefficients from J = ∂r/∂θ by autograd through the
    loss's own residual vector (its forward engine, not `pinnkan.pinn.jacobian`) and
    torch.linalg.lstsq (gelsd: SVD, minimum norm), and J's rank."""
    start = _solved(model)
    names = list(start)

    class Residuals(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self) -> Tensor:
            return loss_fn.residual_vector(self.model, batch)

    wrapper = Residuals()

    def r_of(*values: Tensor) -> Tensor:
        swapped = {f"model.{n}": v for n, v in zip(names, values)}
        return torch.func.functional_call(wrapper, swapped, ())

    values = tuple(start.values())
    r0 = r_of(*values).detach()
    # reverse mode row by row: the fused B-spline jet is an autograd.Function without the
    # setup_context that torch.func.jacrev would need
    cols = torch.autograd.functional.jacobian(r_of, values)
    J = torch.cat([c.reshape(r0.numel(), -1) for c in cols], dim=1)
    sol = torch.linalg.lstsq(J, -r0.unsqueeze(1), driver="gelsd")
    delta, out, i = sol.solution[:, 0], {}, 0
    for n, v in start.items():
        out[n] = v + delta[i : i + v.numel()].view_as(v)
        i += v.numel()
    return out, int(sol.rank)


# Two solvers agree on the coefficients to about cond(J) · eps: these tiny networks keep J's
# condition (over its numerical rank) at 1e3 to 1e5, so 1e-10 holds; a rank-deficient J
# (B-spline / Chebyshev bases no hidden value reaches) also checks the minimum-norm choice.
CASES = [
    ("elliptic", "bspline", {"grid_size": 3}),  # rank-deficient
    ("advection", "chebyshev", {"degree": 3}),  # periodic pairs: rows that read two points
    ("wave", "chebyshev", {"degree": 3}),  # a condition on u_t
    ("parabolic", "mlp", {}),  # a bias in the last layer
    ("heat2d", "rational", {}),  # the denominators stay frozen
]


@pytest.mark.parametrize(("pde_name", "kind", "options"), CASES)
def test_solve_equals_direct_lstsq_on_autograd_jacobian(
    pde_name: str, kind: str, options: dict
) -> None:
    model, loss_fn, batch, _ = _problem(pde_name, kind, options)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k not in _solved(model)}
    want, rank = direct_solve(model, loss_fn, batch)
    solve = lstsq.solve_last_layer(loss_fn, model, batch)
    got = _solved(model)
    assert sorted(got) == sorted(want)
    if kind == "mlp":
        assert any(k.endswith(".bias") for k in got)
    assert solve.rank == rank and solve.columns == sum(v.numel() for v in got.values())
    for name, value in got.items():
        scale = float(want[name].abs().max()) + 1.0
        torch.testing.assert_close(value, want[name], rtol=0.0, atol=1e-10 * scale)
    for key, value in model.state_dict().items():  # nothing else moved
        if key in frozen:
            assert torch.equal(value, frozen[key]), key
    assert solve.loss_after < solve.loss_before


def test_ill_conditioned_default_network_reaches_the_same_fit() -> None:
    """The default B-spline layer (grid 5) gives cond(J) ≈ 3e7 over its rank and coefficients
    of ~1e5: the solutions agree to ~cond · eps, the fitted residuals to rounding at the size
    of the terms J θ (eps · ‖J‖ ‖θ‖), the losses to 1e-9."""
    model, loss_fn, batch, _ = _problem("elliptic", "bspline")
    want, _ = direct_solve(model, loss_fn, batch)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name, value in want.items():
            reference.get_parameter(name).copy_(value)
    lstsq.solve_last_layer(loss_fn, model, batch)
    r_got, (r_want, J) = (
        residuals(loss_fn, model, batch),
        residuals_and_jacobian(loss_fn, reference, batch),
    )
    theta = flat_view([reference.get_parameter(n) for n in want])
    terms = float(torch.linalg.matrix_norm(J, 2) * theta.norm())
    assert float((r_got - r_want).norm()) <= 1e-13 * terms
    assert float(r_got @ r_got) == pytest.approx(float(r_want @ r_want), rel=1e-9)
    for name, value in _solved(model).items():
        scale = float(want[name].abs().max())
        torch.testing.assert_close(value, want[name], rtol=0.0, atol=1e-6 * scale)


@pytest.mark.parametrize(("pde_name", "kind", "options"), CASES[:3])
def test_after_the_solve_no_gauss_newton_step_lowers_the_loss(
    pde_name: str, kind: str, options: dict
) -> None:
    model, loss_fn, batch, _ = _problem(pde_name, kind, options, seed=1)
    solve = lstsq.solve_last_layer(loss_fn, model, batch)
    r, J = residuals_and_jacobian(loss_fn, model, batch)
    assert float(r @ r) == pytest.approx(solve.loss_after, rel=1e-12)
    # the gradient Jᵀr vanishes at the minimum, to rounding
    assert float((J.T @ r).norm()) <= 1e-9 * float(torch.linalg.matrix_norm(J, 2) * r.norm())
    params = [p for p in model.parameters() if p.requires_grad]
    theta = flat_view(params)
    for damping in (1e-12, 1e-6, 1e-2):
        lm = LevenbergMarquardt(LMConfig(damping=damping))
        lm.set_jacobian(r, J)
        proposal = lm.propose()
        assert proposal is not None
        assign_flat(params, theta + proposal[0])
        trial = residuals(loss_fn, model, batch)
        assert float(trial @ trial) >= solve.loss_after * (1 - 1e-10)
        assign_flat(params, theta)


def test_linear_families_and_user_default() -> None:
    linear = {n for n, f in FAMILIES.items() if f.linear}
    assert linear == {"elliptic", "parabolic", "advection", "wave", "helmholtz", "heat2d"}

    class UserFamily(PDEFamily):
        name = "user"

    assert UserFamily.linear is False


def test_refuses_a_nonlinear_family(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, {"stage": "transfer", "pde": {"name": "burgers"}})
    cfg["adapter"] = {"name": "lstsq"}
    with pytest.raises(PinnkanError, match="adapter=lstsq needs a linear PDE family") as err:
        runner.transfer(cfg, tmp_path / "run")
    assert "pde=burgers" in str(err.value) and "elliptic" in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_transfer_solves_on_its_own_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage's last layer is the direct solve on the points it drew (a grid-3 network,
    cond(J) ~1e5, so 1e-10 holds); the other layers are the source's; float64 under
    precision=auto with optim=adam; one history entry."""
    root = tmp_path / "outputs"
    src = root / "pretrain" / "elliptic" / "src"
    runner.pretrain(tiny_config(root), src)  # float32, a [2, 4, 1] grid-3 KAN, 3 Adam steps
    seen = {}
    solve = lstsq.solve_last_layer

    def spy(loss_fn: PinnLoss, model: KAN, batch: dict[str, Tensor]) -> lstsq.LstsqSolve:
        seen["want"], _ = direct_solve(copy.deepcopy(model), loss_fn, batch)
        return solve(loss_fn, model, batch)

    monkeypatch.setattr(lstsq, "solve_last_layer", spy)
    cfg = tiny_config(root, {"stage": "transfer", "precision": "auto", "source": str(src)})
    cfg["adapter"] = {"name": "lstsq"}
    res = runner.transfer(cfg, tmp_path / "run")
    _, state = load_checkpoint(tmp_path / "run" / MODEL_FILE, MODEL_FORMAT)
    _, source = load_checkpoint(src / MODEL_FILE, MODEL_FORMAT)
    got, want = state["layers.1.A"], seen["want"]["layers.1.A"]
    assert got.dtype == F64 and set(seen["want"]) == {"layers.1.A"}
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10 * float(want.abs().max() + 1))
    assert torch.equal(state["layers.0.A"], source["layers.0.A"].to(F64))
    assert res.attrs["stop_reason"] == "solved" and res.attrs["optimizer"] == "lstsq"
    assert res.metrics["steps"] == 1 and res.metrics["steps_done"] == 1
    assert len(res.history["loss"]) == 1
    assert res.history["loss"][0] < res.history["loss_before"][0]


def test_transfer_command(source_run: SourceRun, tmp_path: Path) -> None:
    """`pinnkan transfer adapter=lstsq`: results.h5, plots, an adapter file with the last
    layer alone, which `pinnkan merge`'s code turns back into the run's model."""
    run_dir = tmp_path / "run"
    args = ["transfer", "adapter=lstsq", *tiny(tmp_path / "outputs"), f"hydra.run.dir={run_dir}"]
    proc = run_pinnkan([*args, f"source={source_run.run_dir}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    for name in (RESULTS_FILE, MODEL_FILE, "adapter.safetensors", "fields.png", "training.png"):
        assert (run_dir / name).is_file(), name
    res = read_results(run_dir / RESULTS_FILE)
    attrs, hist = res["attrs"], res["history"]
    assert attrs["status"] == "ok" and attrs["adapter"] == "lstsq"
    assert attrs["stop_reason"] == "solved" and attrs["precision"] == "float64"
    assert list(hist["step"]) == [1] and hist["loss"][0] < hist["loss_before"][0]
    assert res["metrics"]["rel_l2"] > 0.0
    adapter = read_adapter(run_dir)
    assert sorted(adapter.tensors) == ["layers.1.A"] and adapter.meta["adapter"] == "lstsq"
    _, merged = merge_adapter(run_dir)
    _, want = load_checkpoint(run_dir / MODEL_FILE, MODEL_FORMAT)
    assert sorted(merged) == sorted(want)
    for key, value in want.items():
        assert torch.equal(merged[key], value), key
