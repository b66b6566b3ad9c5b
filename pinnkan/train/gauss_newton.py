"""Matrix-free Gauss–Newton for `optim.solve=cg`: the products J v and Jᵀ u of the residual
vector on a batch, by forward- and reverse-mode AD (torch.func), chunk by chunk, so that
neither J (N × P) nor a Gram matrix (P × P or N × N) is ever formed; and the conjugate-gradient
solve of the damped, scaled system (J̃ᵀJ̃ + λI) δ̃ = −J̃ᵀr with them.

A product (JᵀJ) v costs, per chunk, one forward-mode pass (J v) and a forward and a backward
pass (Jᵀ of it); only one chunk's graph is held at a time (`optim.chunk` interior points,
CG_ROWS by default), so memory is about one chunk's Adam step plus a few vectors of P. The
jets are the layers' plain torch operations (`forward_jet(fused=False)`): the fused B-spline
kernel has no forward-mode derivative. The Marquardt scaling's diag(JᵀJ) comes from J itself,
built a few rows at a time and dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp

from pinnkan.layers.jet import Jet
from pinnkan.network.kan import KAN
from pinnkan.pinn.jacobian import chunks, residuals_and_jacobian
from pinnkan.pinn.loss import PinnLoss

# entries of J held at once while its column norms are summed (32 MB in float64)
DIAG_ENTRIES = 1 << 22
# interior points per chunk of the products when optim.chunk is 0
CG_ROWS = 1024


class _Residuals(nn.Module):
    """r of a chunk (`PinnLoss.residual_vector`'s rows) from plain-torch jets, as a module so
    that torch.func can call it with other parameter values."""

    def __init__(self, model: KAN, loss_fn: PinnLoss) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, piece: dict[str, Tensor], count: int) -> Tensor:
        def jet_of(x: Tensor, derivatives: bool) -> Jet:
            return self.model.forward_jet(x, fused=False) if derivatives else Jet(self.model(x))

        return self.loss_fn.residual_vector(self.model, piece, count, jet_of)


class GaussNewtonProducts:
    """J and Jᵀ of the residual vector of `batch` w.r.t. `params` (flat, in their order), at the
    parameters' current values; `rows` interior points per chunk."""

    def __init__(
        self, loss_fn: PinnLoss, model: KAN, params: list[nn.Parameter], batch: dict, rows: int
    ) -> None:
        names = {id(p): n for n, p in model.named_parameters()}
        self._names = [f"model.{names[id(p)]}" for p in params]
        self._shapes = [p.shape for p in params]
        self._primals = tuple(p.detach() for p in params)
        self._module = _Residuals(model, loss_fn)
        self._loss_fn, self._model, self._batch = loss_fn, model, batch
        count = batch["interior"].shape[0]
        self._fns = [self._function(piece, count) for piece in chunks(batch, rows)]
        # r and Jᵀr in one pass: each chunk's forward, then its backward with its own r
        residuals, grad = [], None
        for fn in self._fns:
            r, pullback = vjp(fn, *self._primals)
            r = r.detach()
            flat = torch.cat([g.reshape(-1) for g in pullback(r)])
            grad = flat if grad is None else grad.add_(flat)
            residuals.append(r)
            del pullback
        assert grad is not None
        self.r = torch.cat(residuals)  # (N,)
        self.grad = grad  # Jᵀr (P,)

    def _function(self, piece: dict[str, Tensor], count: int) -> Callable[..., Tensor]:
        def fn(*tensors: Tensor) -> Tensor:
            values = dict(zip(self._names, tensors))
            return functional_call(self._module, values, (piece, count), strict=False)

        return fn

    def _split(self, v: Tensor) -> tuple[Tensor, ...]:
        out, i = [], 0
        for shape in self._shapes:
            n = math.prod(shape)
            out.append(v[i : i + n].view(shape))
            i += n
        return tuple(out)

    def times(self, v: Tensor) -> Tensor:
        """J v (N,) for v (P,): one forward-mode pass per chunk."""
        tangents = self._split(v)
        return torch.cat([jvp(fn, self._primals, tangents)[1].detach() for fn in self._fns])

    def transpose_times(self, u: Tensor) -> Tensor:
        """Jᵀ u (P,) for u (N,): a forward and a backward pass per chunk (one chunk's graph
        at a time)."""
        total, start = None, 0
        for fn in self._fns:
            r, pullback = vjp(fn, *self._primals)
            n = r.shape[0]
            flat = torch.cat([g.reshape(-1) for g in pullback(u[start : start + n])])
            total = flat if total is None else total.add_(flat)
            start += n
            del r, pullback
        assert total is not None
        return total

    def gram_times(self, v: Tensor) -> Tensor:
        """(JᵀJ) v (P,): per chunk J_c v by forward mode, then J_cᵀ of it."""
        tangents = self._split(v)
        total = None
        for fn in self._fns:
            jv = jvp(fn, self._primals, tangents)[1].detach()
            _, pullback = vjp(fn, *self._primals)
            flat = torch.cat([g.reshape(-1) for g in pullback(jv)])
            total = flat if total is None else total.add_(flat)
            del pullback
        assert total is not None
        return total

    def column_norms2(self) -> Tensor:
        """diag(JᵀJ) (P,), from J built a few interior points at a time (DIAG_ENTRIES)."""
        n_params = sum(math.prod(s) for s in self._shapes)
        rows = max(1, DIAG_ENTRIES // max(n_params, 1))
        count = self._batch["interior"].shape[0]
        total = None
        for piece in chunks(self._batch, rows):
            _, J = residuals_and_jacobian(self._loss_fn, self._model, piece, interior_count=count)
            col2 = J.square().sum(0)
            total = col2 if total is None else total + col2
            del J
        assert total is not None
        return total


@dataclass
class CGResult:
    """x with ‖A x − b‖ ≤ tol ‖b‖ (or the last iterate), A x, and the iterations taken."""

    x: Tensor
    ax: Tensor
    iterations: int


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, tol: float, max_iter: int
) -> CGResult:
    """Solve A x = b for symmetric positive definite A (given as `matvec`) from x = 0; A x of
    the result comes from the recurrence (b − residual), no extra product."""
    x = torch.zeros_like(b)
    res = b.clone()
    p = res.clone()
    rr = float(res @ res)
    bound = (tol * math.sqrt(float(b @ b))) ** 2
    k = 0
    while k < max_iter and rr > bound:
        ap = matvec(p)
        pap = float(p @ ap)
        if not pap > 0:  # not positive definite along p (round-off): stop with what we have
            break
        alpha = rr / pap
        x.add_(p, alpha=alpha)
        res.sub_(ap, alpha=alpha)
        rr_new = float(res @ res)
        p.mul_(rr_new / rr).add_(res)
        rr = rr_new
        k += 1
    return CGResult(x, b - res, k)
