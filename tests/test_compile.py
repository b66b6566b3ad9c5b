"""train.compile: the compiled forward-engine step equals the eager one, and every way it can
fail falls back to eager with one warning line."""

from __future__ import annotations

import logging

import pytest
import torch

from pinnkan.errors import PinnkanError
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.loss import PinnLoss
from pinnkan.train.config import TrainConfig
from pinnkan.train.first_order import CompiledStep


def _setup(engine: str = "forward"):
    gen = torch.Generator().manual_seed(0)
    model = KAN(
        [2, 4, 1], [(0.0, 1.0)] * 2, grid_size=3, dtype=torch.float64, generator=gen, kind="bspline"
    )
    loss_fn = PinnLoss(build_pde("elliptic", {}, {"boundary": 10.0}), engine)
    batch = loss_fn.sample(32, 8, gen, torch.float64, torch.device("cpu"))
    return model, loss_fn, batch


def _eager(model, loss_fn, batch):
    loss = loss_fn(model, batch)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    return loss.detach(), grads


def test_compiled_step_matches_eager() -> None:
    model, loss_fn, batch = _setup()
    want_loss, want_grads = _eager(model, loss_fn, batch)
    step = CompiledStep(loss_fn, model)
    for _ in range(2):  # the trial call and a steady one
        loss = step(batch)
        torch.testing.assert_close(loss.detach(), want_loss, rtol=1e-10, atol=1e-12)
        for p, g in zip(model.parameters(), want_grads):
            torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-12)
            p.grad = None
    assert step.compiled is not None  # it really ran compiled, no silent fallback


def test_compiler_failure_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(fn):
        def call(*args, **kwargs):
            raise RuntimeError("backend exploded\nlong compiler traceback")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    model, loss_fn, batch = _setup()
    want_loss, want_grads = _eager(model, loss_fn, batch)
    step = CompiledStep(loss_fn, model)
    with caplog.at_level(logging.WARNING, logger="pinnkan"):
        loss = step(batch)
        step(batch)
    torch.testing.assert_close(loss.detach(), want_loss)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "backend exploded" in warnings[0]
    assert "traceback" not in warnings[0]


def test_autograd_engine_runs_uncompiled_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    model, loss_fn, batch = _setup("autograd")
    want_loss, _ = _eager(model, loss_fn, batch)
    with caplog.at_level(logging.WARNING, logger="pinnkan"):
        step = CompiledStep(loss_fn, model)
    assert step.compiled is None
    assert any("train.derivatives=forward" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(step(batch).detach(), want_loss)


def test_compile_flag_must_be_a_bool() -> None:
    with pytest.raises(PinnkanError, match="compile='yes' must be true or false"):
        TrainConfig(compile="yes").validate()  # type: ignore[arg-type]
