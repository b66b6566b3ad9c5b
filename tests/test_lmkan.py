"""The lookup KAN layer: 2-D basis vs finite differences, dense reference, cell edges, outside
the grid, odd widths, jets vs nested autograd, LoTRA adapter, gradcheck."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pinnkan.adapters.tucker import TuckerUpdate, tucker_product
from pinnkan.layers.jet import Jet, affine_input_jet
from pinnkan.layers.lmkan import OUTSIDE, LookupKANLayer

F64 = torch.float64


def make_layer(n_in: int, n_out: int, grid: int = 4, outside: str = "zero", seed: int = 0):
    """A layer whose A is the init plus O(1) noise, so f is a generic bicubic spline."""
    gen = torch.Generator().manual_seed(seed)
    layer = LookupKANLayer(n_in, n_out, grid_size=grid, dtype=F64, generator=gen, outside=outside)
    with torch.no_grad():
        layer.A.add_(0.5 * torch.randn(layer.A.shape, generator=gen, dtype=F64))
    return layer


def jet_of(layer: LookupKANLayer, x: Tensor, dirs: Tensor) -> Jet:
    """Push x (B, n_in) with constant directions dirs (D, n_in) and zero second derivatives."""
    d1 = dirs[:, None, :].expand(-1, x.shape[0], -1)
    return layer.forward_jet(Jet(x, d1, torch.zeros_like(d1)))


def partials(layer: LookupKANLayer, x: Tensor) -> tuple[Tensor, ...]:
    """f, f_u, f_v, f_uu, f_uv, f_vv of a one-pair layer (n_out = 1), each (B,)."""
    dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=x.dtype)
    jet = jet_of(layer, x, dirs)
    d1, d2 = jet.d1[..., 0], jet.d2[..., 0]  # type: ignore[index]
    return jet.value[:, 0], d1[0], d1[1], d2[0], 0.5 * (d2[2] - d2[0] - d2[1]), d2[1]


def cox_de_boor(x: Tensor, knots: Tensor, k: int = 3) -> Tensor:
    """All B-splines of degree k on `knots` at x (B,), half-open support -> (B, n_knots-k-1)."""
    x = x[:, None]
    b = ((x >= knots[:-1]) & (x < knots[1:])).to(x.dtype)
    for p in range(1, k + 1):
        left = (x - knots[: -(p + 1)]) / (knots[p:-1] - knots[: -(p + 1)]) * b[:, :-1]
        right = (knots[p + 1 :] - x) / (knots[p + 1 :] - knots[1:-p]) * b[:, 1:]
        b = left + right
    return b


def dense_forward(layer: LookupKANLayer, x: Tensor) -> Tensor:
    """y_j = Σ_p Σ_{cx,cy} A[p, j, cx·n + cy] N_cx(x_a) N_cy(x_b), summed over all cells."""
    g, (lo, hi) = layer.grid_size, layer.grid_range
    h = (hi - lo) / g
    knots = lo + h * torch.arange(-3, g + 4, dtype=x.dtype)
    n = layer.n_splines
    a = layer.coefficients().reshape(layer.n_pairs, layer.n_out, n, n)
    y = torch.zeros(x.shape[0], layer.n_out, dtype=x.dtype)
    for p in range(layer.n_pairs):
        na = cox_de_boor(x[:, 2 * p], knots)  # (B, n)
        nb = cox_de_boor(x[:, (2 * p + 1) % layer.n_in], knots)
        y += torch.einsum("bc,bd,jcd->bj", na, nb, a[p])
    return y


@pytest.mark.parametrize("outside", OUTSIDE)
def test_basis_derivatives_match_finite_differences(outside: str) -> None:
    layer = make_layer(2, 1, grid=4, outside=outside)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(200, 2, generator=gen, dtype=F64) * 2 - 1) * 2.2  # inside and outside
    f, fu, fv, fuu, fuv, fvv = partials(layer, x)
    with torch.no_grad():
        assert torch.allclose(f, layer(x)[:, 0], rtol=0, atol=1e-14)

        def ev(du: float, dv: float) -> Tensor:
            return layer(x + torch.tensor([du, dv], dtype=F64))[:, 0]

        d = 1e-5
        assert torch.allclose(fu, (ev(d, 0) - ev(-d, 0)) / (2 * d), atol=1e-7)
        assert torch.allclose(fv, (ev(0, d) - ev(0, -d)) / (2 * d), atol=1e-7)
        d = 1e-4
        assert torch.allclose(fuu, (ev(d, 0) - 2 * f + ev(-d, 0)) / d**2, atol=1e-5)
        assert torch.allclose(fvv, (ev(0, d) - 2 * f + ev(0, -d)) / d**2, atol=1e-5)
        mixed = (ev(d, d) - ev(d, -d) - ev(-d, d) + ev(-d, -d)) / (4 * d * d)
        assert torch.allclose(fuv, mixed, atol=1e-5)
    assert fuv.abs().max() > 1.0  # the mixed term is really exercised


def test_single_basis_function_is_the_tensor_product() -> None:
    layer = make_layer(2, 1, grid=3)
    n = layer.n_splines
    with torch.no_grad():
        layer.A.zero_()
        layer.A[0, 0, 2 * n + 4] = 1.0  # N_2(u) N_4(v)
    x = torch.rand(50, 2, dtype=F64) * 2 - 1
    knots = -1 + (2 / 3) * torch.arange(-3, 3 + 4, dtype=F64)
    ref = cox_de_boor(x[:, 0], knots)[:, 2] * cox_de_boor(x[:, 1], knots)[:, 4]
    torch.testing.assert_close(layer(x)[:, 0], ref, rtol=0, atol=1e-15)


@pytest.mark.parametrize("n_in", [1, 2, 3, 4])
def test_forward_matches_dense_reference(n_in: int) -> None:
    layer = make_layer(n_in, 3, grid=5, outside="zero")
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(300, n_in, generator=gen, dtype=F64) * 2 - 1) * 2.0  # reaches beyond hi + 3h
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense_forward(layer, x), rtol=0, atol=1e-13)
        inside = x.clamp(-0.999, 0.999)
        layer.outside = "extrapolate"  # the two rules agree on grid_range
        torch.testing.assert_close(layer(inside), dense_forward(layer, inside), rtol=0, atol=1e-13)


@pytest.mark.parametrize("outside", OUTSIDE)
def test_cell_edges_are_continuous_and_c2(outside: str) -> None:
    layer = make_layer(2, 1, grid=4, outside=outside)
    h, eps = 0.5, 1e-7
    edges = torch.tensor([-1.0 + k * h for k in range(5)], dtype=F64)  # includes lo and hi
    other = torch.full_like(edges, 0.3)
    for axis in (0, 1):

        def at(t: Tensor, axis: int = axis) -> tuple[Tensor, ...]:
            return partials(layer, torch.stack([t, other] if axis == 0 else [other, t], 1))

        exact, left, right = at(edges), at(edges - eps), at(edges + eps)
        for q, (e, lft, rgt) in enumerate(zip(exact, left, right)):
            tol = 1e-5 * (1 + e.abs().max()) if q >= 3 else 1e-6 * (1 + e.abs().max())
            assert (lft - rgt).abs().max() < tol, (axis, q)
            assert (e - rgt).abs().max() < tol, (axis, q)


def test_zero_rule_outside_the_grid() -> None:
    layer = make_layer(2, 2, grid=4, outside="zero")
    h = 0.5
    far = torch.tensor([[-1 - 3 * h - 1e-9, 0.1], [0.2, 1 + 3 * h], [5.0, -7.0], [0.0, 4.0]])
    f, *derivs = partials(make_layer(2, 1, grid=4, outside="zero"), far.to(F64))
    assert torch.all(f == 0) and all(torch.all(d == 0) for d in derivs)
    with torch.no_grad():
        assert torch.all(layer(far.to(F64)) == 0)
    # the taper reaches zero with zero slope and curvature (C² at the end of the support)
    near = torch.tensor([[-1 - 3 * h + 1e-6, 0.1], [0.2, 1 + 3 * h - 1e-6]], dtype=F64)
    for t in partials(make_layer(2, 1, grid=4, outside="zero"), near):
        assert t.abs().max() < 1e-4


def test_extrapolation_continues_the_polynomial_init() -> None:
    """The init is one quadratic for every grid size, continued exactly beyond grid_range."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(100, 3, generator=gen, dtype=F64) * 2 - 1) * 2.5
    outs = []
    for grid in (2, 5, 11):
        gen_l = torch.Generator().manual_seed(4)
        layer = LookupKANLayer(3, 4, grid_size=grid, dtype=F64, generator=gen_l)
        outs.append(partials_all(layer, x))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)  # far-out cubic roundoff
    assert outs[0][2].abs().max() > 1e-3  # the init has curvature


def partials_all(layer: LookupKANLayer, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Value, first and second derivatives along each input coordinate."""
    jet = jet_of(layer, x, torch.eye(layer.n_in, dtype=x.dtype))
    return jet.value, jet.d1, jet.d2  # type: ignore[return-value]


def test_odd_widths_pair_as_documented() -> None:
    one = make_layer(1, 2, grid=3)
    assert one.idx_a.tolist() == [0] and one.idx_b.tolist() == [0]
    three = make_layer(3, 2, grid=3)
    assert three.idx_a.tolist() == [0, 2] and three.idx_b.tolist() == [1, 0]
    pair = make_layer(2, 2, grid=3)
    x = torch.rand(40, 3, dtype=F64) * 2 - 1
    with torch.no_grad():
        pair.A.copy_(one.A)
        torch.testing.assert_close(one(x[:, :1]), pair(x[:, [0, 0]]), rtol=0, atol=1e-15)
        expect = 0.0
        for p, cols in enumerate(([0, 1], [2, 0])):
            pair.A.copy_(three.A[p : p + 1])
            expect = expect + pair(x[:, cols])
        torch.testing.assert_close(three(x), expect, rtol=0, atol=1e-14)


def stack_autograd(layers: list[LookupKANLayer], x: Tensor, lo: Tensor, hi: Tensor) -> Jet:
    """Reference jet of a layer stack by nested autograd (create_graph=True)."""
    x = x.detach().requires_grad_(True)
    h = (x - lo) * (2.0 / (hi - lo)) - 1.0
    for layer in layers:
        h = layer(h)
    (grad,) = torch.autograd.grad(h.sum(), x, create_graph=True)
    d2 = [torch.autograd.grad(grad[:, k].sum(), x, create_graph=True)[0][:, k] for k in range(2)]
    return Jet(h, grad.T.unsqueeze(-1), torch.stack(d2).unsqueeze(-1))


def stack_forward(layers: list[LookupKANLayer], x: Tensor, lo: Tensor, hi: Tensor) -> Jet:
    jet = affine_input_jet(x, lo, hi)
    for layer in layers:
        jet = layer.forward_jet(jet)
    return jet


def residual_loss(jet: Jet) -> Tensor:
    """A Poisson-like residual: (u_xx + u_yy + u_x + u)²."""
    return ((jet.d2[0] + jet.d2[1] + jet.d1[0] + jet.value) ** 2).mean()  # type: ignore[index]


@pytest.mark.parametrize("outside", OUTSIDE)
@pytest.mark.parametrize("width", [2, 3])
def test_forward_jet_matches_nested_autograd(outside: str, width: int) -> None:
    lo, hi = torch.tensor([0.0, -1.0], dtype=F64), torch.tensor([1.0, 2.0], dtype=F64)
    layers = [make_layer(2, width, 4, outside, 5), make_layer(width, 1, 5, outside, 6)]
    gen = torch.Generator().manual_seed(7)
    x = lo + (hi - lo) * torch.rand(128, 2, generator=gen, dtype=F64)
    ref, got = stack_autograd(layers, x, lo, hi), stack_forward(layers, x, lo, hi)
    assert ((got.value - ref.value).abs().max() / ref.value.abs().max()) < 1e-10
    for a, b in ((got.d1, ref.d1), (got.d2, ref.d2)):
        assert ((a - b).abs().max() / b.abs().max()) < 1e-10  # type: ignore[operator]
    # and the parameter gradients of a residual loss agree between the engines
    params = [layer.A for layer in layers]
    g_ref = torch.autograd.grad(residual_loss(ref), params)
    g_got = torch.autograd.grad(residual_loss(got), params)
    for a, b in zip(g_got, g_ref):
        assert ((a - b).abs().max() / b.abs().max()) < 1e-10


def test_tucker_adapter() -> None:
    layer = make_layer(3, 4, grid=3)
    x = torch.rand(64, 3, dtype=F64) * 2 - 1
    dirs = torch.eye(3, dtype=F64)
    before = jet_of(layer, x, dirs)
    upd = TuckerUpdate(tuple(layer.A.shape), (1, 2, 3), dtype=F64)  # type: ignore[arg-type]
    upd.initialise("random", torch.Generator().manual_seed(0))
    layer.adapter = upd
    after = jet_of(layer, x, dirs)
    for a, b in zip((before.value, before.d1, before.d2), (after.value, after.d1, after.d2)):
        assert torch.equal(a, b)  # G = 0: the pretrained function is unchanged
    with torch.no_grad():
        upd.G.normal_()
    expect = layer.A + tucker_product(upd.G, upd.U1, upd.U2, upd.U3)
    torch.testing.assert_close(layer.coefficients(), expect, rtol=0, atol=0)
    n = layer.n_splines
    table = layer.table()  # (gx, gy, n_out, n_pairs)
    assert table.shape == (n, n, 4, 2)
    torch.testing.assert_close(table[1, 2, 3, 1], expect[1, 3, 1 * n + 2], rtol=0, atol=0)
    merged = make_layer(3, 4, grid=3)
    with torch.no_grad():
        merged.A.copy_(expect)
        torch.testing.assert_close(layer(x), merged(x), rtol=0, atol=1e-14)
    loss = residual_loss(Jet(*partials_all(layer, x[:, :3])))
    loss.backward()
    assert upd.G.grad is not None and upd.G.grad.abs().sum() > 0


@pytest.mark.parametrize("outside", OUTSIDE)
def test_gradcheck_through_the_jet(outside: str) -> None:
    layer = make_layer(2, 2, grid=2, outside=outside)
    gen = torch.Generator().manual_seed(8)
    x = (torch.rand(4, 2, generator=gen, dtype=F64) * 2 - 1) * 1.3
    dx = torch.randn(2, 4, 2, generator=gen, dtype=F64)
    ddx = torch.randn(2, 4, 2, generator=gen, dtype=F64)

    def fn(a: Tensor, x: Tensor, d: Tensor) -> tuple[Tensor, ...]:
        layer.coefficients = lambda: a  # type: ignore[method-assign]  # A as an input
        jet = layer.forward_jet(Jet(x, d, ddx))
        return jet.value, jet.d1, jet.d2  # type: ignore[return-value]

    args = (layer.A.detach().clone(), x, dx)
    args = tuple(t.requires_grad_(True) for t in args)
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cuda_matches_cpu(dtype: torch.dtype) -> None:
    lo, hi = torch.zeros(2, dtype=dtype), torch.ones(2, dtype=dtype)
    cpu = [make_layer(2, 6, 4, "extrapolate", 5), make_layer(6, 1, 4, "extrapolate", 6)]
    gpu = [make_layer(2, 6, 4, "extrapolate", 5), make_layer(6, 1, 4, "extrapolate", 6)]
    for c, g in zip(cpu, gpu):
        c.to(dtype), g.to(device="cuda", dtype=dtype)
    x = torch.rand(256, 2, dtype=dtype)
    ref = stack_forward(cpu, x, lo, hi)
    got = stack_forward(gpu, x.cuda(), lo.cuda(), hi.cuda())
    auto = stack_autograd(gpu, x.cuda(), lo.cuda(), hi.cuda())
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    pairs = ((ref.value, got.value), (ref.d1, got.d1), (ref.d2, got.d2), (auto.d2.cpu(), got.d2))
    for a, b in pairs:
        assert ((a - b.cpu()).abs().max() / a.abs().max()) < tol  # type: ignore[operator,union-attr]
