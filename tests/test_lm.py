"""Levenberg–Marquardt: the structured Jacobian against torch.func.jacrev, the step, the two
solves, resume mid-run, and a small accuracy regression (a change that breaks training fails)."""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import pytest
import torch

from pinnkan.adapters import AdapterConfig, apply
from pinnkan.errors import PinnkanError
from pinnkan.network.evaluation import Evaluator
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.jacobian import residuals_and_jacobian, trainable_parameters
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run import runner
from pinnkan.train.config import TrainConfig
from pinnkan.train.levenberg_marquardt import LevenbergMarquardt, LMConfig, assign_flat, flat_view
from pinnkan.train.state import Interrupted, TrainState
from pinnkan.train.training import train
from tests.conftest import tiny_config

F64 = torch.float64
WEIGHTS = {"boundary": 10.0, "initial": 10.0}


def _problem(kind: str, pde_name: str, adapter: str | None, seed: int = 0, **options):
    """A tiny float64 network on a family member, a batch, and an attached adapter."""
    pde = build_pde(pde_name, {}, WEIGHTS)
    gen = torch.Generator().manual_seed(seed)
    model = KAN(
        [pde.dim, 5, 4, 1], list(pde.domain), kind=kind, dtype=F64, generator=gen, **options
    )
    loss = PinnLoss(pde)
    batch = loss.sample(11, 6, gen, F64, torch.device("cpu"), quasi=True)
    if adapter is not None:
        apply(model, AdapterConfig(name=adapter, cr=0.5), gen, lambda m: loss(m, batch))
        with torch.no_grad():  # G = 0 at init would hide the factors' columns
            for layer in model.layers:
                if layer.adapter is not None:
                    layer.adapter.G.normal_(generator=gen)
    return model, loss, batch


def _jacrev(model: KAN, loss: PinnLoss, batch: dict) -> torch.Tensor:
    """J by torch.func.jacrev over the trainable parameters (plain-op jet path)."""
    params = trainable_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    model.forward_jet = functools.partial(KAN.forward_jet, model, fused=False)  # type: ignore

    def r_of(*values: torch.Tensor) -> torch.Tensor:
        swapped = dict(zip(keys, values))
        with torch.nn.utils.stateless._reparametrize_module(model, swapped):
            return loss.residual_vector(model, batch)

    try:
        cols = torch.func.jacrev(r_of, argnums=tuple(range(len(params))))(
            *[p.detach() for p in params]
        )
    finally:
        del model.forward_jet
    n = cols[0].shape[0]
    return torch.cat([c.reshape(n, -1) for c in cols], dim=1)


CASES = [
    ("bspline", "elliptic", None),
    ("bspline", "wave", "lotra"),
    ("bspline", "advection", "full"),  # periodic pairs: rows that read two points
    ("bspline", "parabolic", "slim"),
    ("bspline", "elliptic", "scratch"),
    ("rational", "elliptic", "full"),  # denominators: forward-mode columns
    ("rational", "advection", "lotra"),
    ("mlp", "wave", "full"),  # biases
    ("lmkan", "parabolic", "lotra"),
    ("chebyshev", "elliptic", "lotra"),
]


@pytest.mark.parametrize(("kind", "pde_name", "adapter"), CASES)
def test_jacobian_matches_jacrev(kind: str, pde_name: str, adapter: str | None) -> None:
    model, loss, batch = _problem(kind, pde_name, adapter)
    r, J = residuals_and_jacobian(loss, model, batch)
    torch.testing.assert_close(r, loss.residual_vector(model, batch).detach(), rtol=1e-12, atol=0)
    ref = _jacrev(model, loss, batch)
    assert J.shape == ref.shape == (r.numel(), sum(p.numel() for p in trainable_parameters(model)))
    assert float((J - ref).norm() / ref.norm()) <= 1e-10


def test_residual_vector_is_the_loss() -> None:
    """r·r is the weighted PINN loss the Adam path minimises."""
    model, loss, batch = _problem("bspline", "wave", None)
    r = loss.residual_vector(model, batch)
    assert float(r @ r) == pytest.approx(float(loss(model, batch)), rel=1e-12)


def test_primal_and_kernel_solves_agree() -> None:
    g = torch.Generator().manual_seed(1)
    for n, p in ((30, 12), (12, 30)):
        J = torch.randn(n, p, generator=g, dtype=F64)
        J[:, 3] *= 1e-3  # badly scaled column: Marquardt scaling must handle it
        r = torch.randn(n, generator=g, dtype=F64)
        steps = []
        for solve in ("primal", "kernel"):
            lm = LevenbergMarquardt(LMConfig(damping=1e-2, solve=solve))
            step, predicted = lm.propose(r, J)
            steps.append(step)
            assert predicted == pytest.approx(float(r @ r - (r + J @ step).square().sum()))
        torch.testing.assert_close(steps[0], steps[1], rtol=1e-9, atol=1e-12)


def test_one_step_lowers_the_loss_and_damping_rules() -> None:
    """Rejected trials raise λ until a step lowers the loss (N = 15 < P = 306: kernel form)."""
    model, loss, batch = _problem("bspline", "elliptic", None)
    params = trainable_parameters(model)
    r, J = residuals_and_jacobian(loss, model, batch)
    start, theta = float(r @ r), flat_view(params)
    lm = LevenbergMarquardt(LMConfig(damping=1e-3))
    for _ in range(30):
        before = lm.damping
        step, predicted = lm.propose(r, J)
        assign_flat(params, theta + step)
        after = float(loss.residual_vector(model, batch).detach().square().sum())
        if lm.judge(predicted, start - after):
            break
        assert lm.damping > before  # a rejected step raises the damping
    else:
        pytest.fail("no step was accepted")
    assert after < start and predicted > 0
    assert lm.damping <= before * (1 + 1e-12) * 2  # an accepted step never raises it much


@pytest.mark.parametrize("rule", ["divide", "nielsen"])
def test_the_damping_rules(rule: str) -> None:
    """divide: an accepted step lowers λ by damping_down whatever its gain ratio ρ; nielsen:
    by max(1/3, 1 − (2ρ − 1)³), so hardly at all at ρ = 0.7. A rejection multiplies λ by ν,
    which doubles on each rejection in a row and is back at 2 after an accepted step."""
    lm = LevenbergMarquardt(LMConfig(damping=1.0, damping_rule=rule, damping_down=4.0))
    for rho in (0.1, 0.7, 1.0):
        before = lm.damping
        assert lm.judge(1.0, rho)
        nielsen = max(1 / 3, 1 - (2 * rho - 1) ** 3)
        assert lm.damping == pytest.approx(before * (nielsen if rule == "nielsen" else 0.25))
    before = lm.damping
    assert not lm.judge(1.0, -1.0) and not lm.judge(None, 1.0)
    assert lm.damping == pytest.approx(before * 2 * 4)  # × 2, then × 4
    assert lm.judge(1.0, 1.0) and lm.nu == 2.0


def _lm_config(steps: int, **lm: object) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        n_interior=64,
        n_boundary=16,
        eval_every=5,
        progress="none",
        optimizer="lm",
        lm=LMConfig(**lm),  # type: ignore[arg-type]
    )


def _setup(seed: int = 0):
    pde = build_pde("elliptic", {"mu": 1.0}, WEIGHTS)
    gen = torch.Generator().manual_seed(seed)
    model = KAN([2, 6, 1], list(pde.domain), dtype=F64, generator=gen, kind="bspline")
    _, pts = pde.grid(21, F64)
    return pde, gen, model, Evaluator(pts, pde.exact(pts))


def test_lm_accuracy_regression() -> None:
    """60 LM steps on a [2, 6, 1] KAN reach a rel. L2 that 60 Adam steps are far from."""
    pde, gen, model, ev = _setup()
    start = ev.rel_l2(model)
    hist = train(
        model,
        PinnLoss(pde),
        [{"params": list(model.parameters())}],
        _lm_config(60, resample_every=10),
        ev,
        gen,
    )
    assert start > 0.5
    assert hist.rel_l2[-1] < 2e-2, hist.rel_l2
    assert len(hist.heldout_loss) == len(hist.step)


def test_adam_accuracy_regression() -> None:
    pde, gen, model, ev = _setup()
    cfg = TrainConfig(
        steps=1000, n_interior=64, n_boundary=16, lr=3e-2, progress="none", optimizer="adam"
    )
    hist = train(
        model, PinnLoss(pde), [{"params": list(model.parameters()), "lr": 3e-2}], cfg, ev, gen
    )
    assert hist.rel_l2[-1] < 0.1, hist.rel_l2  # 0.065 when written


def test_resume_mid_lm_gives_the_uninterrupted_numbers() -> None:
    pde, gen, model, ev = _setup()
    cfg = _lm_config(30, resample_every=4)
    full = train(model, PinnLoss(pde), [{"params": list(model.parameters())}], cfg, ev, gen)

    pde, gen, model, ev = _setup()
    saved: list[TrainState] = []
    calls = iter(range(1000))

    def stop() -> int | None:
        return 2 if next(calls) == 12 else None  # a signal after step 13

    with pytest.raises(Interrupted):
        train(
            model,
            PinnLoss(pde),
            [{"params": list(model.parameters())}],
            cfg,
            ev,
            gen,
            checkpoint=lambda s: saved.append(copy.deepcopy(s)),
            stop=stop,
        )
    assert saved and saved[-1].step == 13
    pde, gen, model, ev = _setup(seed=5)  # another init: the state must restore everything
    resumed = train(
        model, PinnLoss(pde), [{"params": list(model.parameters())}], cfg, ev, gen, resume=saved[-1]
    )
    assert resumed.step == full.step
    assert resumed.loss == full.loss  # bit for bit
    assert resumed.rel_l2 == full.rel_l2


def test_damping_explosion_stops_cleanly() -> None:
    pde, gen, model, ev = _setup()
    cfg = _lm_config(500, damping_max=1e4, resample_every=0)
    hist = train(model, PinnLoss(pde), [{"params": list(model.parameters())}], cfg, ev, gen)
    assert hist.step[-1] < 500  # stopped by itself, with the last step recorded
    assert math.isfinite(hist.loss[-1])


def test_runner_lm_defaults_to_float64_and_records_it(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, {"optim": {"name": "lm"}, "precision": "auto", "train.steps": 4})
    res = runner.pretrain(cfg, tmp_path / "run")
    assert res.attrs["optimizer"] == "lm" and res.attrs["precision"] == "float64"
    assert "heldout_loss" in res.history
    adam = runner.pretrain(tiny_config(tmp_path, {"precision": "auto"}), tmp_path / "adam")
    assert adam.attrs["precision"] == "float32" and "heldout_loss" not in adam.history


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("optim.damping", -1.0, "optim.damping"),
        ("optim.scaling", "nope", "optim.scaling"),
        ("optim.damping_rule", "gain", "optim.damping_rule"),
        ("optim.damping_down", 1.0, "optim.damping_down"),
        ("optim.solve", "qr", "optim.solve"),
        ("optim.resample_every", -2, "optim.resample_every"),
        ("optim.name", "sgd", "optim"),
        ("train.max_seconds", -1, "train.max_seconds"),
    ],
)
def test_bad_lm_options_are_one_line_errors(tmp_path: Path, key: str, value, match: str) -> None:
    cfg = tiny_config(tmp_path, {"optim": {"name": "lm"}, key: value})
    with pytest.raises(PinnkanError, match=match):
        runner.pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_lm_transfer_with_lotra(tmp_path: Path) -> None:
    """An LM transfer runs every adapter from an LM pretrain; on its fixed point set the loss
    never rises (rejected steps are undone)."""
    src = tmp_path / "src"
    runner.pretrain(tiny_config(tmp_path, {"optim": {"name": "lm"}, "train.steps": 10}), src)
    for adapter in ("lotra", "full", "scratch", "slim"):
        cfg = tiny_config(
            tmp_path,
            {
                "stage": "transfer",
                "optim": {"name": "lm"},
                "pde.target": {"mu": 1.5},
                "source": str(src),
                "adapter": {"name": adapter},
                "cr": 0.5,
                "train.steps": 10,
            },
        )
        res = runner.transfer(cfg, tmp_path / adapter)
        loss = list(res.history["loss"])
        assert res.status == "ok" and loss[-1] < loss[0], (adapter, loss)
        assert all(b <= a for a, b in zip(loss, loss[1:])), (adapter, loss)


def test_adam_transfer_from_a_float64_lm_source_on_a_2pi_domain(tmp_path: Path) -> None:
    """Regression: a float32 network's domain (0, 2π) read back from float32 tensors did not
    equal a float64 source's, so `optim=adam` refused an `optim=lm` source on advection."""
    base = {"pde": {"name": "advection", "source": {}, "target": {"beta": 2.0}}}
    src = tmp_path / "src"
    lm = tiny_config(tmp_path, {**base, "optim": {"name": "lm"}, "precision": "auto"})
    runner.pretrain(lm, src)
    cfg = tiny_config(
        tmp_path,
        {**base, "stage": "transfer", "precision": "auto", "source": str(src), "cr": 0.5},
    )
    res = runner.transfer(cfg, tmp_path / "adam")
    assert res.status == "ok" and res.attrs["precision"] == "float32"
    from pinnkan.run.merge import merge_adapter

    merge_adapter(tmp_path / "adam")  # the base hash and spec still match
