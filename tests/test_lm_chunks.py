"""The LM system built in chunks of points (JᵀJ and Jᵀr accumulated, never all of J) and the
residual-based adaptive sampler (optim.sampling=rad)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from pinnkan.errors import PinnkanError
from pinnkan.network.evaluation import Evaluator
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.jacobian import chunked_loss, chunks, normal_equations, residuals_and_jacobian
from pinnkan.pinn.loss import PinnLoss
from pinnkan.pinn.sampling import draw_by_residual, pde_residual
from pinnkan.run import runner
from pinnkan.train.config import TrainConfig
from pinnkan.train.levenberg_marquardt import LevenbergMarquardt, LMConfig
from pinnkan.train.state import Interrupted, TrainState
from pinnkan.train.training import train
from tests.conftest import tiny_config
from tests.test_lm import _problem

F64 = torch.float64


@pytest.mark.parametrize(
    ("kind", "pde_name", "adapter"),
    [
        ("bspline", "elliptic", None),
        ("bspline", "advection", "lotra"),  # periodic pairs stay whole in the first chunk
        ("rational", "burgers", None),  # denominators: forward-mode columns per chunk
        ("mlp", "wave", "full"),
    ],
)
def test_chunked_gram_equals_the_one_shot_gram(kind: str, pde_name: str, adapter) -> None:
    model, loss, batch = _problem(kind, pde_name, adapter)
    r, J = residuals_and_jacobian(loss, model, batch)
    for rows in (1, 3, 4, 11, 100):
        total, gram, grad = normal_equations(loss, model, batch, rows)
        torch.testing.assert_close(gram, J.T @ J, rtol=1e-12, atol=1e-14 * float(J.norm()) ** 2)
        torch.testing.assert_close(grad, J.T @ r, rtol=1e-12, atol=1e-14 * float(J.norm() ** 2))
        assert total == pytest.approx(float(r @ r), rel=1e-13)
        assert chunked_loss(loss, model, batch, rows) == total  # same pieces, same sum


def test_chunks_cover_every_point_once() -> None:
    _, loss, batch = _problem("bspline", "advection", None)
    pieces = list(chunks(batch, 4))
    n = batch["interior"].shape[0]
    assert len(pieces) == -(-n // 4)
    torch.testing.assert_close(torch.cat([p["interior"] for p in pieces]), batch["interior"])
    assert all(set(p) == {"interior"} for p in pieces[1:])
    assert set(pieces[0]) == set(batch)
    model = _problem("bspline", "advection", None)[0]
    assert loss.n_rows(batch) == residuals_and_jacobian(loss, model, batch)[0].numel()


def test_normal_and_jacobian_systems_give_the_same_step() -> None:
    g = torch.Generator().manual_seed(3)
    J = torch.randn(40, 9, generator=g, dtype=F64)
    J[:, 2] *= 1e-4
    r = torch.randn(40, generator=g, dtype=F64)
    a, b = LevenbergMarquardt(LMConfig(damping=1e-2)), LevenbergMarquardt(LMConfig(damping=1e-2))
    a.set_jacobian(r, J)
    b.set_normal(J.T @ J, J.T @ r)
    (sa, pa), (sb, pb) = a.propose(), b.propose()
    torch.testing.assert_close(sa, sb, rtol=1e-10, atol=1e-14)
    assert pa == pytest.approx(pb, rel=1e-10)
    assert pb == pytest.approx(float(r @ r - (r + J @ sb).square().sum()), rel=1e-9)
    before = b.damping
    b.judge(pb, -1.0)  # rejected: a retry reuses the Gram matrix at a larger damping
    step, _ = b.propose()
    assert b.damping > before and step.norm() < sb.norm()


@pytest.mark.parametrize(("n", "p"), [(700, 600), (300, 600)], ids=["primal", "kernel"])
def test_a_retry_after_the_in_place_factor_is_a_fresh_solve(n: int, p: int) -> None:
    """The damped matrix is factored over the Gram matrix itself; a retry at another damping
    writes the Gram matrix back (more than one strip of rows) and gives, to the bit, the step
    and the prediction of a fresh system at that damping."""
    g = torch.Generator().manual_seed(5)
    J, r = torch.randn(n, p, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64)
    tried = LevenbergMarquardt(LMConfig(damping=1e-3))
    tried.set_jacobian(r, J)
    tried.propose()
    tried.damping = 0.5
    step, predicted = tried.propose()
    fresh = LevenbergMarquardt(LMConfig(damping=0.5))
    fresh.set_jacobian(r, J)
    assert torch.equal(step, fresh.propose()[0]) and predicted == fresh.propose()[1]
    jd = J @ step  # the linear model's reduction at that step
    assert predicted == pytest.approx(-float(2.0 * (r @ jd) + jd @ jd), rel=1e-10)


SOLVE_MEMORY = """
import torch
from pinnkan.train.levenberg_marquardt import LevenbergMarquardt, LMConfig
torch.set_num_threads(1)
def rss(key):
    return next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status") if ln.startswith(key))
p = 3000
lm = LevenbergMarquardt(LMConfig())
small = torch.randn(300, 300, dtype=torch.float64)
lm.set_normal(small @ small.T, torch.randn(300, dtype=torch.float64))
lm.propose()  # code pages and small buffers
a = torch.randn(p, p, dtype=torch.float64)
gram, grad = a @ a.T, torch.randn(p, dtype=torch.float64)
del a
lm = LevenbergMarquardt(LMConfig())
open("/proc/self/clear_refs", "w").write("5")
before = rss("VmRSS")
lm.set_normal(gram, grad)
del gram
lm.propose()
lm.damping = 1.0
lm.propose()
print((rss("VmHWM") - before) / (p * p * 8))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_a_solve_holds_half_a_gram_matrix_beside_it() -> None:
    """Two solves (a retry) hold the Gram matrix's upper triangle beside the factor (0.5 of a
    Gram matrix), not a damped copy and LAPACK's column-major copy of it (2)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", SOLVE_MEMORY], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) < 0.75


def _primal_setup(seed: int = 0):
    """A [2, 3, 1] KAN (81 parameters) on 128 interior points: the primal form."""
    pde = build_pde("burgers", {}, {"boundary": 10.0, "initial": 10.0})
    gen = torch.Generator().manual_seed(seed)
    model = KAN([2, 3, 1], list(pde.domain), dtype=F64, generator=gen, kind="bspline")
    _, pts = pde.grid(15, F64)
    return pde, gen, model, Evaluator(pts, pde.exact(pts))


def _config(steps: int, **lm) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        n_interior=128,
        n_boundary=16,
        eval_every=3,
        progress="none",
        optimizer="lm",
        lm=LMConfig(**lm),
    )


def test_chunk_size_changes_only_roundoff() -> None:
    curves = []
    for chunk in (16, 10_000):
        curves.append(_run(_config(12, chunk=chunk, resample_every=4, sampling="rad")))
    assert curves[0].step == curves[1].step
    for a, b in zip(curves[0].loss, curves[1].loss):
        assert a == pytest.approx(b, rel=1e-6)


def _run(cfg: TrainConfig, seed: int = 0, **kwargs):
    """`train` on `_primal_setup(seed)` with cfg; kwargs: checkpoint, stop, resume."""
    pde, gen, model, ev = _primal_setup(seed)
    return train(
        model, PinnLoss(pde), [{"params": list(model.parameters())}], cfg, ev, gen, **kwargs
    )


def _interrupted(cfg: TrainConfig, after: int) -> TrainState:
    """The state a run checkpoints when a signal arrives after `after` + 1 steps."""
    saved: list[TrainState] = []
    calls = iter(range(10_000))
    with pytest.raises(Interrupted):
        _run(
            cfg,
            checkpoint=lambda s: saved.append(copy.deepcopy(s)),
            stop=lambda: 2 if next(calls) == after else None,
        )
    return saved[-1]


def test_resume_with_chunks_and_adaptive_points_is_bit_for_bit() -> None:
    cfg = _config(20, chunk=40, resample_every=3, sampling="rad")
    full = _run(cfg)
    resumed = _run(cfg, seed=7, resume=_interrupted(cfg, 9))  # another init: all restored
    assert resumed.loss == full.loss and resumed.rel_l2 == full.rel_l2


def test_rad_puts_points_where_a_planted_residual_is_large() -> None:
    gen = torch.Generator().manual_seed(0)
    pool = torch.rand(8000, 2, generator=gen, dtype=F64)
    planted = torch.where(pool[:, 0] < 0.1, 100.0, 1.0).to(F64)  # 10 % of the area, 100x
    drawn = draw_by_residual(pool, planted, 1000, k=1.0, c=1.0, gen=gen)
    share = float((drawn[:, 0] < 0.1).float().mean())
    # p ∝ r/mean(r) + c: inside 100/10.9 + 1 ≈ 10.2, outside 1.09 → about half the points
    assert 0.4 < share < 0.65, share
    uniform = draw_by_residual(pool, planted, 1000, k=1.0, c=1e6, gen=gen)
    assert float((uniform[:, 0] < 0.1).float().mean()) < 0.15
    assert len({tuple(p.tolist()) for p in drawn}) == 1000  # without replacement
    again = draw_by_residual(pool, planted, 1000, 1.0, 1.0, torch.Generator().manual_seed(5))
    same = draw_by_residual(pool, planted, 1000, 1.0, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(again, same)


def test_rad_with_zero_or_nan_residuals_draws_uniformly() -> None:
    gen = torch.Generator().manual_seed(1)
    pool = torch.rand(50, 2, generator=gen, dtype=F64)
    for res in (torch.zeros(50, dtype=F64), torch.full((50,), float("nan"), dtype=F64)):
        assert draw_by_residual(pool, res, 50, 1.0, 0.0, gen).shape == (50, 2)


def test_pde_residual_in_pieces_is_the_loss_residual() -> None:
    model, loss, batch = _problem("bspline", "burgers", None)
    x = batch["interior"]
    whole = loss.pde.residual(x, model.forward_jet(x))
    torch.testing.assert_close(pde_residual(loss.pde, model, x, rows=3), whole.detach())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("optim.chunk", -1),
        ("optim.sampling", "everywhere"),
        ("optim.rad_k", -1.0),
        ("optim.rad_pool", 0),
    ],
)
def test_bad_chunk_and_sampling_options_are_one_line(tmp_path: Path, key: str, value) -> None:
    cfg = tiny_config(tmp_path, {"optim": {"name": "lm"}, key: value})
    with pytest.raises(PinnkanError, match=key.replace(".", r"\.")):
        runner.pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_chunked_system_and_rad_on_cuda_match_the_cpu() -> None:
    model, loss, batch = _problem("bspline", "advection", "lotra")
    total, gram, grad = normal_equations(loss, model, batch, rows=4)
    gpu = copy.deepcopy(model).to("cuda")
    gpu_batch = {k: v.to("cuda") for k, v in batch.items()}
    g_total, g_gram, g_grad = normal_equations(loss, gpu, gpu_batch, rows=4)
    assert g_gram.is_cuda and g_total == pytest.approx(total, rel=1e-12)
    torch.testing.assert_close(g_gram.cpu(), gram, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_grad.cpu(), grad, rtol=1e-10, atol=1e-12)
    pool = torch.rand(500, 2, dtype=F64, device="cuda")
    res = pde_residual(loss.pde, gpu, pool, rows=64)
    drawn = draw_by_residual(pool, res, 100, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert drawn.is_cuda and drawn.shape == (100, 2)
    pde, gen, net, ev = _primal_setup()
    net = net.to("cuda")
    ev = Evaluator(ev.points.to("cuda"), ev.u_ref.to("cuda"))
    hist = train(
        net,
        PinnLoss(pde),
        [{"params": list(net.parameters())}],
        _config(8, chunk=40, resample_every=2, sampling="rad"),
        ev,
        gen,
    )
    assert hist.loss[-1] < hist.loss[0]


def test_time_windows_march_through_t_and_resume_bit_for_bit() -> None:
    cfg = _config(24, chunk=40, resample_every=3)
    cfg.time_windows, cfg.window_steps = 4, 3
    full = _run(cfg)
    # the run opened every window, and its points reach the end of the interval only then
    states: list[TrainState] = []
    cfg.checkpoint_every = 1
    _run(cfg, checkpoint=lambda s: states.append(copy.deepcopy(s)))
    windows = [s.optimizer["window"] for s in states]
    assert windows[0] == 1 and windows[-1] == 4 and windows == sorted(windows)
    for s in states:
        t_max = float(s.optimizer["batch"]["interior"][:, -1].max())
        assert t_max <= s.optimizer["window"] / 4 + 1e-12
    assert float(states[-1].optimizer["heldout"]["interior"][:, -1].max()) > 0.9  # whole t
    # interrupted in a middle window and resumed: the uninterrupted numbers
    cut = _interrupted(cfg, 14)
    assert 2 <= cut.optimizer["window"] < 4
    resumed = _run(cfg, seed=3, resume=cut)
    assert resumed.loss == full.loss and resumed.rel_l2 == full.rel_l2


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"train.time_windows": 4}, "needs a time-dependent PDE"),
        ({"train.time_windows": 4, "pde": {"name": "burgers", "source": {}}, "optim": {}}, "lm"),
        ({"train.time_windows": 0}, "train.time_windows"),
    ],
)
def test_bad_time_windows_are_one_line(tmp_path: Path, changes: dict, match: str) -> None:
    base = {"optim": {"name": "lm"}}
    cfg = tiny_config(tmp_path, {**base, **changes})
    if changes.get("optim") == {}:  # Adam
        cfg["optim"] = {"name": "adam", "lr": 0.01}
    with pytest.raises(PinnkanError, match=match):
        runner.pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
