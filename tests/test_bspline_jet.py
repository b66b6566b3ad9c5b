"""The fused jet layer: its forward against the plain-op chain rule, its hand-written backward
against finite differences (gradcheck) and against autograd through the plain ops."""

from __future__ import annotations

import pytest
import torch

from pinnkan.layers import BSplineBasis, bspline_jet
from pinnkan.layers.bspline_jet import BSplineJetMatmul, bspline_jet_matmul, padded_weight


def _inputs(n_in: int, n_out: int, n_dir: int, n_batch: int = 12, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    basis = BSplineBasis(4, (-1.0, 1.0))
    # spread beyond the padded knots (|x| > 2.5) so the masked / dummy-slot paths run too
    x = 1.8 * torch.randn(n_batch, n_in, generator=gen, dtype=torch.float64)
    x[0, 0], x[1, 0] = 3.0, -3.2
    dx = torch.randn(n_dir, n_batch, n_in, generator=gen, dtype=torch.float64)
    ddx = torch.randn(n_dir, n_batch, n_in, generator=gen, dtype=torch.float64)
    a = torch.randn(n_in, n_out, basis.n_basis, generator=gen, dtype=torch.float64)
    return basis, x, dx, ddx, a


def _plain(basis: BSplineBasis, x, dx, ddx, a) -> torch.Tensor:
    """The same layer by plain autograd ops (the reference the fused version replaces)."""
    feats = basis.jet_features(x, dx, ddx)  # (1 + 2D, B, n_in, n_d)
    return torch.einsum("kbid,iod->kbo", feats, a)


# n_out 1 and 3 take the sparse (gathered weight rows) path, 7 the dense scatter + matmul path
@pytest.mark.parametrize("n_out", [1, 3, 7])
@pytest.mark.parametrize("n_dir", [0, 1, 2])
def test_forward_matches_plain_chain_rule(n_out: int, n_dir: int) -> None:
    basis, x, dx, ddx, a = _inputs(3, n_out, n_dir)
    got = bspline_jet_matmul(basis, x, dx, ddx, a)
    torch.testing.assert_close(got, _plain(basis, x, dx, ddx, a), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_out", [1, 3, 7])
@pytest.mark.parametrize("n_dir", [0, 2])
def test_backward_passes_gradcheck(n_out: int, n_dir: int) -> None:
    basis, x, dx, ddx, a = _inputs(3, n_out, n_dir, n_batch=6, seed=1)
    w = padded_weight(a)
    args = [t.clone().requires_grad_(True) for t in (x, dx, ddx, w)]
    assert torch.autograd.gradcheck(
        lambda *t: BSplineJetMatmul.apply(*t, basis), args, eps=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("n_out", [1, 7])
def test_gradients_match_autograd_of_plain_ops(n_out: int) -> None:
    basis, x, dx, ddx, a = _inputs(4, n_out, 2, n_batch=40, seed=2)
    weight = torch.randn(5, 40, n_out, dtype=torch.float64)
    grads = []
    for fn in (bspline_jet_matmul, _plain):
        leaves = [t.clone().requires_grad_(True) for t in (x, dx, ddx, a)]
        (fn(basis, *leaves) * weight).sum().backward()
        grads.append([t.grad for t in leaves])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_paths_agree_where_the_threshold_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    basis, x, dx, ddx, a = _inputs(3, 3, 2)
    sparse = bspline_jet_matmul(basis, x, dx, ddx, a)
    monkeypatch.setattr(bspline_jet, "SPARSE_MAX_OUT", 0)
    dense = bspline_jet_matmul(basis, x, dx, ddx, a)
    torch.testing.assert_close(sparse, dense, rtol=1e-12, atol=1e-12)


def test_float32_runs_and_is_close() -> None:
    basis, x, dx, ddx, a = _inputs(3, 7, 2)
    want = bspline_jet_matmul(basis, x, dx, ddx, a)
    got = bspline_jet_matmul(basis, *(t.float() for t in (x, dx, ddx, a)))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
