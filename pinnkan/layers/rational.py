"""The group-rational KAN layer (`model=rational`, KAT, seed 003): its basis with exact first
and second derivatives, the fitted initial rational and the layer factory.

Per group g of input channels the layer's univariate functions share one denominator

    Q_g(x) = 1 + Σ_{m=1..4} s(b_{g,m} u^m),   s(t) = √(t² + ε) − √ε  (smooth, default)
                                               s(t) = |t|              (kinked, KAT's CUDA form)

with u = x / 3, and the basis functions of a channel i in group g are b_k(x) = u^k / Q_g(x),
k = 0..5, so an edge function is Σ_k A[i, j, k] u^k / Q_g(x) = P_ij(x) / Q_g(x) with a degree-5
numerator of its own. The denominator coefficients b_{g,m} (groups, 4) are the layer's extra
parameters. The polynomials are in u = x / 3, not x: the same functions, but on the fit range
[-3, 3] every u^k is at most 1 and the fitted coefficients are all O(1), so Adam's roughly
equal steps on every coefficient do not swamp the small high-order ones of the raw monomials.

The smooth s is C^∞, 0 at t = 0 and within √ε of |t| everywhere; its curvature s''(0) = 1/√ε is
what the kink's point mass in u_xx becomes (see docs/models.md for the choice of ε).

The initial coefficients are a least-squares fit of P/Q to a chosen activation on [-3, 3]
(`fitted_rational`), computed once per (activation, form, ε) and cached.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pinnkan.common.config_checks import as_choice, as_float, as_int
from pinnkan.layers.base import BasisLayer, LayerContext, LayerKind, NetworkModel

DEGREE_P = 5  # numerator degree: n_d = DEGREE_P + 1 basis functions per channel
DEGREE_Q = 4  # denominator degree: DEGREE_Q coefficients per group
DENOMINATORS = ("smooth", "kinked")
ACTIVATIONS = ("identity", "silu", "gelu")
FIT_RANGE = (-3.0, 3.0)
FIT_POINTS = 601
INPUT_SCALE = 3.0  # u = x / INPUT_SCALE: the fit range maps to [-1, 1]

_ACT = {"identity": lambda x: x, "silu": F.silu, "gelu": F.gelu}


@dataclass
class RationalModel(NetworkModel):
    """`model=rational`: KAT group-rational KAN; hidden widths and the layer options."""

    name: str = "rational"
    hidden: list[int] = field(default_factory=lambda: [20, 20])
    groups: int = 4  # denominators per layer; input channels split evenly
    denominator: str = "smooth"  # one of DENOMINATORS
    eps: float = 0.01  # smooth form only: s''(0) = 1/sqrt(eps)
    init_activation: str = "silu"  # one of ACTIVATIONS: P/Q fitted to it on [-3, 3]


def soft_abs(t: Tensor, form: str, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """s(t), s'(t), s''(t) of the denominator's absolute value (smooth or kinked)."""
    if form == "kinked":
        return t.abs(), torch.sign(t), torch.zeros_like(t)
    r = torch.sqrt(t * t + eps)
    return r - math.sqrt(eps), t / r, eps / (r * r * r)


def _powers(x: Tensor, n: int) -> Tensor:
    """x (...,) -> (..., n) holding x^0 .. x^(n-1)."""
    pw = [torch.ones_like(x), x]
    while len(pw) < n:
        pw.append(pw[-1] * x)
    return torch.stack(pw[:n], dim=-1)


def rational_features(
    x: Tensor, b: Tensor, form: str, eps: float, derivatives: bool = True
) -> tuple[Tensor, ...]:
    """Basis u^k / Q, u = x / 3, k = 0..5, and (when `derivatives`) its first and second
    derivatives in x.

    x (..., n_in); b (n_in, 4) denominator coefficients of each channel's group.
    Returns tensors of shape (..., n_in, 6). Quotient rule in u with R = 1/Q:
    R' = -Q' R², R'' = (2 Q'² R − Q'') R²;  b_k' = k u^{k-1} R + u^k R',
    b_k'' = k(k-1) u^{k-2} R + 2k u^{k-1} R' + u^k R''; then d/dx = (1/3) d/du.
    """
    pw = _powers(x * (1.0 / INPUT_SCALE), DEGREE_P + 1)  # (..., n_in, 6): u^k
    t = b * pw[..., 1 : DEGREE_Q + 1]  # (..., n_in, 4): b_m u^m
    s, s1, s2 = soft_abs(t, form, eps)
    r = 1.0 / (1.0 + s.sum(-1, keepdim=True))  # (..., n_in, 1)
    phi = pw * r
    if not derivatives:
        return (phi,)
    m = torch.arange(1, DEGREE_Q + 1, dtype=x.dtype, device=x.device)  # (4,)
    dt = b * m * pw[..., :DEGREE_Q]  # m b_m u^{m-1} (d/du)
    ddt = b[..., 1:] * (m[1:] * (m[1:] - 1)) * pw[..., : DEGREE_Q - 1]  # m(m-1) b_m u^{m-2}
    q1 = (s1 * dt).sum(-1, keepdim=True)
    q2 = (s2 * dt * dt).sum(-1, keepdim=True) + (s1[..., 1:] * ddt).sum(-1, keepdim=True)
    r1 = -q1 * r * r
    r2 = (2.0 * q1 * q1 * r - q2) * r * r
    k = torch.arange(DEGREE_P + 1, dtype=x.dtype, device=x.device)  # (6,)
    zero = torch.zeros_like(pw[..., :1])
    dpw = k * torch.cat([zero, pw[..., :-1]], -1)  # k u^{k-1}
    ddpw = k * (k - 1) * torch.cat([zero, zero, pw[..., :-2]], -1)  # k(k-1) u^{k-2}
    inv = 1.0 / INPUT_SCALE
    d1 = (dpw * r + pw * r1) * inv
    d2 = (ddpw * r + 2.0 * dpw * r1 + pw * r2) * (inv * inv)
    return phi, d1, d2


def rational(x: Tensor, a: Tensor, b: Tensor, form: str, eps: float) -> Tensor:
    """F(x) = P(x)/Q(x) for one numerator a (6,) and denominator b (4,); x of any shape."""
    (phi,) = rational_features(x.unsqueeze(-1), b.unsqueeze(0), form, eps, derivatives=False)
    return phi[..., 0, :] @ a


def gaussian_second_moment(fn, n: int = 20001, half_width: float = 12.0) -> float:
    """E[fn(x)²] for x ~ N(0, 1) by the trapezoidal rule on [-12, 12] (float64)."""
    x = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return float(torch.trapezoid(fn(x) ** 2 * pdf, x))


@functools.cache
def fitted_rational(
    activation: str, form: str, eps: float
) -> tuple[tuple[float, ...], tuple[float, ...], float]:
    """Numerator a (6), denominator b (4) of P/Q ≈ activation on [-3, 3], and E[F(x)²], x~N(0,1).

    Linearised least squares first: with Q − 1 = Σ c_m |u|^m (the kinked form, c_m = |b_m| ≥ 0),
    P/Q = f becomes the linear system P(u) − f(x) Σ c_m |u|^m = f(x) on a dense grid. Every
    subset of active c_m is solved; the best fit with all c_m ≥ 0 (so Q ≥ 1) is kept. Then
    Levenberg–Marquardt refines (a, b) on the squared error of the actual form (smooth or
    kinked). float64, CPU, deterministic; cached per (activation, form, ε).
    """
    if activation == "identity":  # exact: P = x, Q = 1
        return (0.0, INPUT_SCALE, 0.0, 0.0, 0.0, 0.0), (0.0,) * DEGREE_Q, 1.0
    x = torch.linspace(*FIT_RANGE, FIT_POINTS, dtype=torch.float64)
    f = _ACT[activation](x)
    u = x / INPUT_SCALE
    pw = _powers(u, DEGREE_P + 1)  # (N, 6)
    absu = _powers(u.abs(), DEGREE_Q + 1)[:, 1:]  # (N, 4)
    best: tuple[float, Tensor, Tensor] | None = None
    for active in itertools.product((False, True), repeat=DEGREE_Q):
        idx = [m for m in range(DEGREE_Q) if active[m]]
        lhs = torch.cat([pw, -f.unsqueeze(-1) * absu[:, idx]], dim=1)
        sol = _least_squares(lhs, f)
        c = torch.zeros(DEGREE_Q, dtype=torch.float64)
        c[idx] = sol[DEGREE_P + 1 :]
        if (c < 0).any():
            continue
        err = float((rational(x, sol[: DEGREE_P + 1], c, "kinked", 0.0) - f).square().mean())
        if best is None or err < best[0]:
            best = (err, sol[: DEGREE_P + 1], c)
    assert best is not None  # the empty subset (a polynomial) is always feasible
    # b = 0 is a stationary point of s(b u^m) (zero gradient): start every term off zero so that
    # the fit and later training can use it
    a, b = _levenberg_marquardt(x, f, best[1], best[2].clamp(min=1e-2), form, eps)
    m2 = gaussian_second_moment(lambda t: rational(t, a, b, form, eps))
    return tuple(a.tolist()), tuple(b.tolist()), m2


def _least_squares(lhs: Tensor, rhs: Tensor) -> Tensor:
    """argmin ‖lhs · s − rhs‖ for lhs (N, M), rhs (N,): LAPACK's gelsd (SVD), whose result
    does not depend on where the arrays lie in memory; the default gelsy (pivoted QR) in MKL
    differs in the last bits with the alignment, so the fit, and every seeded run of a
    rational model, differed between processes."""
    return torch.linalg.lstsq(lhs, rhs.unsqueeze(-1), driver="gelsd").solution[:, 0]


def _levenberg_marquardt(
    x: Tensor, f: Tensor, a: Tensor, b: Tensor, form: str, eps: float, steps: int = 60
) -> tuple[Tensor, Tensor]:
    """Minimise Σ (P/Q − f)² over (a, b) from the given start, with the closed-form Jacobian
    ∂F/∂a_k = u^k / Q,  ∂F/∂b_m = −(P / Q²) s'(b_m u^m) u^m."""
    pw = _powers(x / INPUT_SCALE, DEGREE_P + 1)  # (N, 6)

    def residual_and_jacobian(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        s, s1, _ = soft_abs(b * pw[:, 1 : DEGREE_Q + 1], form, eps)  # (N, 4)
        r = 1.0 / (1.0 + s.sum(-1, keepdim=True))  # (N, 1)
        p = pw @ a  # (N,)
        jac = torch.cat([pw * r, -(p.unsqueeze(-1) * r * r) * s1 * pw[:, 1 : DEGREE_Q + 1]], 1)
        return p * r[:, 0] - f, jac

    res, jac = residual_and_jacobian(a, b)
    loss, damping = float(res @ res), 1e-2
    for _ in range(steps):
        jtj, jtr = jac.T @ jac, jac.T @ res
        step = torch.linalg.solve(jtj + damping * torch.diag(jtj.diagonal() + 1e-12), -jtr)
        a_t, b_t = a + step[: DEGREE_P + 1], b + step[DEGREE_P + 1 :]
        res_t, jac_t = residual_and_jacobian(a_t, b_t)
        loss_t = float(res_t @ res_t)
        if loss_t < loss:
            done = loss - loss_t <= 1e-10 * loss
            a, b, res, jac, loss = a_t, b_t, res_t, jac_t, loss_t
            damping = max(damping / 3.0, 1e-9)
            if done:
                break
        else:
            damping *= 4.0
    return a, b


class RationalBasis(nn.Module):
    """u^k / Q_g(x), u = x / 3, k = 0..5, with a trainable denominator per group of channels.

    Channel i belongs to group i · n_groups // n_in (contiguous, as even as n_in allows);
    n_groups = min(groups, n_in), so groups >= n_in gives one denominator per channel.
    """

    def __init__(
        self,
        n_in: int,
        groups: int,
        b_init: Tensor,
        *,
        form: str = RationalModel.denominator,
        eps: float = RationalModel.eps,
    ) -> None:
        super().__init__()
        if form not in DENOMINATORS:
            raise ValueError(f"denominator form {form!r}; choose one of {DENOMINATORS}")
        self.n_in, self.n_groups = n_in, min(int(groups), n_in)
        self.form, self.eps = form, float(eps)
        self.n_basis = DEGREE_P + 1
        self.denominator = nn.Parameter(b_init.reshape(1, DEGREE_Q).repeat(self.n_groups, 1))
        group_of = torch.arange(n_in, device=b_init.device) * self.n_groups // n_in
        self.register_buffer("group_of", group_of, persistent=False)

    def channel_denominators(self) -> Tensor:
        """(n_in, 4): the denominator coefficients of each input channel's group."""
        return self.denominator[self.group_of]

    def values(self, x: Tensor) -> Tensor:
        """x (B, n_in) -> (B, n_in, 6)."""
        b = self.channel_denominators()
        return rational_features(x, b, self.form, self.eps, derivatives=False)[0]

    def derivatives(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, n_in) -> φ, φ', φ'', each (B, n_in, 6)."""
        b = self.channel_denominators()
        return rational_features(x, b, self.form, self.eps)  # type: ignore[return-value]


def make_rational_layer(
    n_in: int,
    n_out: int,
    ctx: LayerContext,
    groups: int,
    denominator: str,
    eps: float,
    init_activation: str,
) -> BasisLayer:
    """KAT group-rational layer, variance-preserving init (docs/models.md).

    A[i, j, k] = w_ij · a_k with (a, b) fitted to `init_activation` and
    w_ij ~ N(0, 1 / (n_in · E[F(x)²])), x ~ N(0, 1): Var y_j = n_in Var(w) E[F²] = 1.
    """
    a, b, m2 = fitted_rational(init_activation, denominator, eps if denominator == "smooth" else 0)
    kw = {"dtype": ctx.dtype}
    w = torch.randn(n_in, n_out, 1, generator=ctx.generator, **kw) / math.sqrt(n_in * m2)
    coef = w * torch.tensor(a, **kw)  # (n_in, n_out, 6)
    basis = RationalBasis(
        n_in, groups, torch.tensor(b, **kw, device=ctx.device), form=denominator, eps=eps
    )
    factor = torch.tensor(a, dtype=torch.float64).reshape(-1, 1) / math.sqrt(n_in * m2)
    return BasisLayer(basis, coef.to(ctx.device), factor)


KIND = LayerKind(
    make_rational_layer,
    RationalModel,
    {
        "groups": lambda v, n: as_int(v, n, 1, 4096),
        "denominator": lambda v, n: as_choice(v, n, DENOMINATORS),
        "eps": lambda v, n: as_float(v, n, 0.0, 1.0, lo_open=True),
        "init_activation": lambda v, n: as_choice(v, n, ACTIVATIONS),
    },
    init_only=("init_activation",),
)
