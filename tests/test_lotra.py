"""LoTRA: the Tucker update, its ranks and parameter count, its initialisation, and the
per-component learning rates reaching the optimizer."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pinnkan.adapters import AdapterConfig, apply, count_parameters, param_groups
from pinnkan.adapters.tucker import (
    TuckerUpdate,
    leading_subspace,
    ranks_from_cr,
    tucker_param_count,
    tucker_product,
    unfold,
)
from pinnkan.errors import PinnkanError
from pinnkan.network.evaluation import Evaluator
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.loss import PinnLoss
from pinnkan.train.config import TrainConfig
from pinnkan.train.training import train

DT = torch.float64
EVERYWHERE = ["lotra"] * 3  # Tucker updates on every layer of _kan's three (not the default)


def _kan(hidden: list[int] | None = None) -> KAN:
    gen = torch.Generator().manual_seed(0)
    return KAN(
        [2, *(hidden or [6, 5]), 1],
        [(0.0, 1.0), (0.0, 1.0)],
        grid_size=4,
        dtype=DT,
        generator=gen,
        kind="bspline",
    )


def test_tucker_product_equals_the_definition() -> None:
    gen = torch.Generator().manual_seed(0)
    G = torch.randn(2, 3, 2, generator=gen, dtype=DT)
    U1, U2, U3 = (torch.randn(n, r, generator=gen, dtype=DT) for n, r in ((4, 2), (5, 3), (6, 2)))
    got = tucker_product(G, U1, U2, U3)
    want = torch.zeros(4, 5, 6, dtype=DT)
    for i, j, k in itertools.product(range(4), range(5), range(6)):
        for a, b, c in itertools.product(range(2), range(3), range(2)):
            want[i, j, k] += G[a, b, c] * U1[i, a] * U2[j, b] * U3[k, c]
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    ("shape", "cr", "ranks"),
    [
        ((2, 16, 9), 0.25, (1, 4, 3)),
        ((16, 16, 9), 0.25, (4, 4, 3)),
        ((16, 1, 9), 0.5, (8, 1, 5)),
        ((30, 10, 9), 0.1, (3, 1, 1)),
        ((7, 7, 7), 1.0, (7, 7, 7)),
    ],
)
def test_ranks_from_cr(shape: tuple, cr: float, ranks: tuple) -> None:
    assert ranks_from_cr(shape, cr) == ranks


@pytest.mark.parametrize("cr", [0.0, -0.5, 1.01, 2.0])
def test_cr_outside_unit_interval_is_refused(cr: float) -> None:
    with pytest.raises(PinnkanError, match=r"outside \(0, 1\]"):
        ranks_from_cr((4, 4, 4), cr)


@pytest.mark.parametrize("cr", [1.0, 0.5, 0.25, 0.125])
def test_trainable_count_matches_formula(cr: float) -> None:
    model = _kan([16, 16])
    shapes = [tuple(layer.A.shape) for layer in model.layers]
    gen = torch.Generator().manual_seed(1)
    apply(model, AdapterConfig(name="lotra", cr=cr, init="random", layers=EVERYWHERE), gen)
    want = 0
    for s in shapes:
        r1, r2, r3 = (max(1, math.ceil(cr * d)) for d in s)
        want += r1 * r2 * r3 + s[0] * r1 + s[1] * r2 + s[2] * r3
        assert (
            tucker_param_count(s, (r1, r2, r3)) == r1 * r2 * r3 + s[0] * r1 + s[1] * r2 + s[2] * r3
        )
    trainable, total = count_parameters(model)
    assert trainable == want
    assert total == want + sum(math.prod(s) for s in shapes)
    assert all(not layer.A.requires_grad for layer in model.layers)


def test_update_is_zero_at_initialisation_and_function_unchanged() -> None:
    model = _kan()
    x = torch.rand(50, 2, dtype=DT, generator=torch.Generator().manual_seed(2))
    before = model(x).detach()
    pde = build_pde("elliptic", {"mu": 2.0})
    loss = PinnLoss(pde)
    gen = torch.Generator().manual_seed(3)
    batch = loss.sample(64, 16, gen, DT, torch.device("cpu"))
    for init in ("grad", "random", "hosvd"):
        m = _kan()
        apply(
            m,
            AdapterConfig(name="lotra", cr=0.5, init=init, layers=EVERYWHERE),
            gen,
            lambda mm: loss(mm, batch),
        )
        for layer in m.layers:
            assert layer.adapter.G.abs().max() == 0
            assert layer.adapter.delta().abs().max() == 0
            assert layer.adapter.U1.abs().max() > 0 and layer.adapter.U3.abs().max() > 0
        torch.testing.assert_close(m(x), before, rtol=0, atol=0)


def test_u2_spans_top_mode2_subspace_of_the_gradient() -> None:
    model = _kan([8, 8])
    pde = build_pde("elliptic", {"mu": 2.0})
    loss = PinnLoss(pde)
    gen = torch.Generator().manual_seed(4)
    batch = loss.sample(128, 32, gen, DT, torch.device("cpu"))
    grads = torch.autograd.grad(loss(model, batch), [layer.A for layer in model.layers])
    apply(
        model,
        AdapterConfig(name="lotra", cr=0.25, init="grad", layers=EVERYWHERE),
        gen,
        lambda m: loss(m, batch),
    )
    for layer, g in zip(model.layers, grads):
        U2 = layer.adapter.U2.detach()
        r2 = U2.shape[1]
        torch.testing.assert_close(U2.T @ U2, torch.eye(r2, dtype=DT))
        u, s, _ = torch.linalg.svd(unfold(g, 1), full_matrices=False)
        if r2 < len(s):
            assert s[r2 - 1] > s[r2] * (1 + 1e-6), "test needs a gap after the top-r2 values"
        top = u[:, :r2]
        # same subspace: projector difference is zero
        torch.testing.assert_close(U2 @ U2.T, top @ top.T, atol=1e-10, rtol=0)
        # and a random direction is *not* in it (the check can fail)
        if r2 < U2.shape[0]:
            v = torch.randn(U2.shape[0], dtype=DT, generator=gen)
            assert (v - U2 @ (U2.T @ v)).norm() > 1e-3


def test_hosvd_init_uses_all_three_modes() -> None:
    gen = torch.Generator().manual_seed(5)
    grad = torch.randn(6, 5, 9, generator=gen, dtype=DT)
    upd = TuckerUpdate((6, 5, 9), (2, 3, 4), dtype=DT)
    upd.initialise("hosvd", gen, grad)
    for m, U in enumerate((upd.U1, upd.U2, upd.U3)):
        top = leading_subspace(grad, m, U.shape[1])
        torch.testing.assert_close(U @ U.T, top @ top.T, atol=1e-10, rtol=0)


def _groups_by_name(groups: list[dict]) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in groups}


def test_theory_and_uniform_learning_rates() -> None:
    model = _kan([16, 16])
    gen = torch.Generator().manual_seed(6)
    cfg = AdapterConfig(
        name="lotra",
        cr=0.25,
        init="random",
        multipliers={"G": 2.0, "U1": 3.0, "U2": 0.5, "U3": 4.0},
        layers=EVERYWHERE,
    )
    apply(model, cfg, gen)
    lrs = _groups_by_name(param_groups(model, cfg, lr=0.1))
    for idx, layer in enumerate(model.layers):
        n_in, _, n_d = layer.A.shape
        assert lrs[f"layer{idx}.G"] == pytest.approx(0.2)
        assert lrs[f"layer{idx}.U1"] == pytest.approx(0.3 / n_in)
        assert lrs[f"layer{idx}.U2"] == pytest.approx(0.05)
        assert lrs[f"layer{idx}.U3"] == pytest.approx(0.4 / n_d)
    cfg.lr_strategy = "uniform"
    lrs = _groups_by_name(param_groups(model, cfg, lr=0.1))
    assert lrs["layer1.U1"] == pytest.approx(0.3) and lrs["layer1.U3"] == pytest.approx(0.4)
    assert len(lrs) == 4 * len(model.layers)  # one group per component per layer


def test_per_component_learning_rates_reach_the_optimizer() -> None:
    """Adam's first step moves each entry by exactly its group's lr (|m̂/√v̂| = 1)."""
    model = _kan([6, 5])
    pde = build_pde("elliptic", {"mu": 2.0})
    gen = torch.Generator().manual_seed(7)
    ones = dict.fromkeys(("G", "U1", "U2", "U3"), 1.0)  # the theory's rates, c = 1
    cfg = AdapterConfig(name="lotra", cr=0.5, init="random", multipliers=ones, layers=EVERYWHERE)
    apply(model, cfg, gen)
    for layer in model.layers:  # non-zero core so that every factor gets a gradient
        torch.nn.init.normal_(layer.adapter.G, std=0.1, generator=gen)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    lr = 1e-3
    groups = param_groups(model, cfg, lr)
    tc = TrainConfig(
        steps=1,
        lr=lr,
        lr_decay=1.0,
        n_interior=32,
        n_boundary=8,
        eval_every=1,
        progress="none",
        optimizer="adam",
    )
    _, pts = pde.grid(5, DT)
    train(model, PinnLoss(pde), groups, tc, Evaluator(pts, pde.exact(pts)), gen)
    for idx, layer in enumerate(model.layers):
        n_in, _, n_d = layer.A.shape
        want = {"G": lr, "U1": lr / n_in, "U2": lr, "U3": lr / n_d}
        for comp, step in want.items():
            name = f"layers.{idx}.adapter.{comp}"
            moved = (dict(model.named_parameters())[name].detach() - before[name]).abs().max()
            assert moved == pytest.approx(step, rel=1e-3), name


def test_per_layer_modes_and_full_and_slim() -> None:
    model = _kan([6, 5])
    gen = torch.Generator().manual_seed(8)
    apply(
        model,
        AdapterConfig(name="lotra", cr=0.5, init="random", layers=["full", "lotra", "frozen"]),
        gen,
    )
    assert model.layers[0].A.requires_grad and model.layers[0].adapter is None
    assert model.layers[1].adapter is not None and not model.layers[1].A.requires_grad
    assert model.layers[2].adapter is None and not model.layers[2].A.requires_grad

    full = _kan([6, 5])
    apply(full, AdapterConfig(name="full"), gen)
    assert count_parameters(full)[0] == sum(layer.A.numel() for layer in full.layers)

    slim = _kan([6, 5])
    apply(slim, AdapterConfig(name="slim", cr=0.5), gen)
    for layer in slim.layers:
        assert layer.A.abs().max() == 0 and not layer.A.requires_grad
        assert layer.adapter.delta().abs().max() > 0  # random core: a usable start


def test_lotra_trains_the_thin_edge_layers_in_full_by_default() -> None:
    """Default per-layer modes: the input and output layers in full, the hidden ones in Tucker
    form; two layers, and slim: Tucker everywhere (an explicit list: the test above)."""
    gen = torch.Generator().manual_seed(3)
    model = apply(_kan([6, 5]), AdapterConfig(name="lotra", cr=0.5, init="random"), gen)
    assert [layer.adapter is None for layer in model.layers] == [True, False, True]
    assert model.layers[0].A.requires_grad and model.layers[2].A.requires_grad
    assert not model.layers[1].A.requires_grad
    two = apply(_kan([6]), AdapterConfig(name="lotra", cr=0.5, init="random"), gen)
    assert all(layer.adapter is not None for layer in two.layers)
    slim = apply(_kan([6, 5]), AdapterConfig(name="slim", cr=0.5), gen)
    assert all(layer.adapter is not None for layer in slim.layers)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"name": "lora"}, "unknown adapter"),
        ({"init": "svd"}, "unknown LoTRA init"),
        ({"lr_strategy": "fast"}, "lr strategy"),
        ({"multipliers": {"U4": 1.0}}, "multiplier"),
        ({"multipliers": {"G": 0.0}}, r"^multipliers\.G=0\.0 must be .*\(0, 10000\]"),
        ({"layers": ["lotra"]}, r"^layers=\['lotra'\] must list 3 modes"),
        ({"cr": 0.0}, "outside"),
    ],
)
def test_bad_adapter_config_is_a_user_error(kw: dict, match: str) -> None:
    with pytest.raises(PinnkanError, match=match):
        AdapterConfig(**kw).validate(n_layers=3)


def test_gradient_descent_takes_each_component_at_its_rate() -> None:
    """optim=gd (the theory's own setting): one plain step from the same state and batch moves
    each factor by lr_component · gradient, so theory / uniform moves are 1/n_in for U1,
    1/n_d for U3 and 1 for G and U2."""
    pde = build_pde("elliptic", {"mu": 2.0})
    moves = {}
    for strategy in ("theory", "uniform"):
        model = _kan([6, 5])
        gen = torch.Generator().manual_seed(7)
        cfg = AdapterConfig(
            name="lotra", cr=0.5, init="random", lr_strategy=strategy, layers=EVERYWHERE
        )
        apply(model, cfg, gen)
        for layer in model.layers:  # non-zero core so that every factor gets a gradient
            torch.nn.init.normal_(layer.adapter.G, std=0.1, generator=gen)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        tc = TrainConfig(
            steps=1, lr=1e-3, lr_decay=1.0, n_interior=32, n_boundary=8, eval_every=1,
            progress="none", optimizer="gd",
        )  # fmt: skip
        _, pts = pde.grid(5, DT)
        groups = param_groups(model, cfg, tc.lr)
        train(model, PinnLoss(pde), groups, tc, Evaluator(pts, pde.exact(pts)), gen)
        moves[strategy] = {
            n: p.detach() - before[n] for n, p in model.named_parameters() if n in before
        }
    for idx, layer in enumerate(model.layers):
        n_in, _, n_d = layer.A.shape
        for comp, ratio in {"G": 1.0, "U1": 1 / n_in, "U2": 1.0, "U3": 1 / n_d}.items():
            name = f"layers.{idx}.adapter.{comp}"
            assert moves["uniform"][name].abs().max() > 0, name
            torch.testing.assert_close(moves["theory"][name], ratio * moves["uniform"][name])
