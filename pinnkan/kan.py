"""The network: layers y_j = Σ_i Σ_k A[i, j, k] · b_k(x_i) (+ bias_j), A (n_in, n_out, n_d).

Evaluation is "features, then one contraction" (efficient-kan's layout). Each layer can also
push a jet (value, ∂/∂x_k, ∂²/∂x_k²) forward with the basis' closed-form derivatives, which is
the forward derivative engine (see `pinnkan.derivatives`).

Several layer kinds plug into the same network (`LAYER_KINDS`, the `model=` choices): every
layer satisfies the `Layer` interface below, and LoTRA, checkpoints and merge only use that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pinnkan.bases import BSplineBasis
from pinnkan.bases.activation import ActivationBasis
from pinnkan.bases.bspline_jet import bspline_jet_matmul
from pinnkan.bases.chebyshev import ChebyshevBasis
from pinnkan.bases.rational import ACTIVATIONS, DENOMINATORS, RationalBasis, fitted_rational
from pinnkan.config_checks import as_choice, as_float, as_int
from pinnkan.errors import PinnkanError
from pinnkan.jet import Jet, affine_input_jet
from pinnkan.lmkan import OUTSIDE, LookupKANLayer


class CoefficientUpdate(Protocol):
    """What an adapter offers a layer: an additive update ΔA of A's shape."""

    def delta(self) -> Tensor: ...


class Layer(Protocol):
    """What every layer kind offers the network, LoTRA and checkpoints.

    `A` (n_modes1, n_out, n_d) is the tensor LoTRA adapts (state-dict key `layers.<l>.A`);
    every other parameter of the layer is listed by `extra_parameters()` (optional: without
    it, all parameters besides A and the adapter's): trainable in pretrain / full / scratch,
    frozen under lotra / slim. `forward_jet` may ignore `fused`. Add a kind to LAYER_KINDS.
    """

    n_in: int
    n_out: int
    n_d: int
    A: nn.Parameter
    adapter: nn.Module | None

    def coefficients(self) -> Tensor: ...  # A (+ ΔA)

    def forward(self, x: Tensor) -> Tensor: ...  # (B, n_in) -> (B, n_out)

    def forward_jet(self, jet: Jet, fused: bool = True) -> Jet: ...

    def jet_features(self, jet: Jet) -> Tensor: ...  # (1 + 2D, B, n_modes1, n_d)

    def extra_parameters(self) -> list[nn.Parameter]: ...

    def init_factor(self) -> Tensor: ...  # (n_d, q): A[i, j, :] = L z, z ~ N(0, I_q) at init


def other_parameters(layer: nn.Module) -> list[nn.Parameter]:
    """The parameters of a layer other than A and its adapter's (denominators, biases, ...)."""
    return [
        p for name, p in layer.named_parameters() if name != "A" and not name.startswith("adapter.")
    ]


def layer_extra_parameters(layer: nn.Module) -> list[nn.Parameter]:
    """`layer.extra_parameters()` where the layer defines it, else `other_parameters(layer)`."""
    own = getattr(layer, "extra_parameters", None)
    return list(own()) if callable(own) else other_parameters(layer)


class BasisLayer(nn.Module):
    """y = Σ_i Σ_k A[i, :, k] φ_k(x_i) (+ bias) over a basis with closed-form derivatives.

    The basis offers `n_basis`, `values(x)` (B, n_in, n_d) and `derivatives(x)` (φ, φ', φ'');
    a basis that is an `nn.Module` (e.g. rational denominators) contributes its parameters.
    `factor` (n_d, q) states how `a` was drawn: A[i, j, :] = L z, z ~ N(0, I_q), iid over
    (i, j) (`init_factor`; slim KAN reproduces these statistics with its Tucker factors).
    """

    def __init__(self, basis: Any, a: Tensor, factor: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        self.n_in, self.n_out, self.n_d = a.shape
        assert self.n_d == basis.n_basis, "A's last mode must match the basis"
        assert factor.ndim == 2 and factor.shape[0] == self.n_d, "factor must be (n_d, q)"
        self.basis = basis
        self.A = nn.Parameter(a)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.adapter: nn.Module | None = None
        self._factor = factor.detach().to("cpu", torch.float64)

    def init_factor(self) -> Tensor:
        """L (n_d, q), float64 on the CPU: this kind's init draws A[i, j, :] = L z, z ~ N(0, I)."""
        return self._factor

    def coefficients(self) -> Tensor:
        """The effective tensor A (+ ΔA), formed once per call, never per sample."""
        if self.adapter is None:
            return self.A
        return self.A + self.adapter.delta()

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters besides A (and the adapter): frozen under lotra / slim."""
        return other_parameters(self)

    def _weight(self) -> Tensor:
        # (n_in, n_out, n_d) -> (n_in * n_d, n_out) matching the (B, n_in, n_d) feature layout
        return self.coefficients().permute(0, 2, 1).reshape(self.n_in * self.n_d, self.n_out)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, n_in) -> (B, n_out)."""
        feats = self.basis.values(x)  # (B, n_in, n_d)
        y = feats.reshape(x.shape[0], -1) @ self._weight()
        return y if self.bias is None else y + self.bias

    def jet_features(self, jet: Jet) -> Tensor:
        """(1 + 2D, B, n_in, n_d): φ(x), φ'(x)·x_k and φ''(x)·x_k² + φ'(x)·x_kk, k = 1..D.

        The layer's jet output is these features contracted with A (+ ΔA) over (n_in, n_d),
        which is what the Gauss–Newton Jacobian (`pinnkan.jacobian`) uses.
        """
        x, dx, ddx = jet.value, jet.d1, jet.d2  # (B, n_in), (D, B, n_in), (D, B, n_in)
        assert dx is not None and ddx is not None
        phi, d1, d2 = self.basis.derivatives(x)  # each (B, n_in, n_d)
        dxe, ddxe = dx.unsqueeze(-1), ddx.unsqueeze(-1)  # (D, B, n_in, 1)
        return torch.cat([phi.unsqueeze(0), d1 * dxe, d2 * dxe * dxe + d1 * ddxe], 0)

    def forward_jet(self, jet: Jet, fused: bool = True) -> Jet:
        """Value, first and diagonal second derivatives through the layer (`fused` unused).

        y = Σ A φ(x), y_k = Σ A φ'(x) x_k, y_kk = Σ A (φ''(x) x_k² + φ'(x) x_kk): the 1 + 2D
        feature blocks go through a single matmul; the bias only enters the value.
        """
        assert jet.d1 is not None
        n_dir, n_batch = jet.d1.shape[0], jet.value.shape[0]
        feats = self.jet_features(jet)
        out = feats.reshape(-1, self.n_in * self.n_d) @ self._weight()
        out = out.reshape(1 + 2 * n_dir, n_batch, self.n_out)
        value = out[0] if self.bias is None else out[0] + self.bias
        return Jet(value, out[1 : 1 + n_dir], out[1 + n_dir :])


class KANLayer(BasisLayer):
    """B-spline + SiLU KAN layer, A (n_in, n_out, grid_size + 4), with the fused jet step."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        basis: BSplineBasis,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        spline_scale: float = 0.1,
    ) -> None:
        # SiLU slot N(0, 1/n_in), spline slots `spline_scale` times smaller (efficient-kan's
        # habit): the network starts close to a smooth SiLU MLP, whose second derivatives are
        # moderate, instead of a rough spline sum whose u_xx makes the first PDE losses huge.
        a = torch.randn(n_in, n_out, basis.n_basis, generator=generator, dtype=dtype) / n_in**0.5
        a[..., : basis.n_splines] *= spline_scale
        std = torch.ones(basis.n_basis, dtype=torch.float64) / n_in**0.5
        std[: basis.n_splines] *= spline_scale
        super().__init__(basis, a.to(device), torch.diag(std))

    def jet_features(self, jet: Jet) -> Tensor:
        """(1 + 2D, B, n_in, n_d) jet features (see `BasisLayer.jet_features`), by plain ops."""
        assert jet.d1 is not None and jet.d2 is not None
        return self.basis.jet_features(jet.value, jet.d1, jet.d2)

    def forward_jet(self, jet: Jet, fused: bool = True) -> Jet:
        """Push (value, first and diagonal second derivatives) through the layer exactly.

        `fused` uses the hand-written backward of `bspline_jet` (fast, first-order only);
        otherwise plain autograd ops (differentiable twice, and what torch.compile traces).
        """
        x, dx, ddx = jet.value, jet.d1, jet.d2  # (B, n_in), (D, B, n_in), (D, B, n_in)
        assert dx is not None and ddx is not None
        n_dir, n_batch = dx.shape[0], x.shape[0]
        if fused:
            out = bspline_jet_matmul(self.basis, x, dx, ddx, self.coefficients())
        else:
            feats = self.basis.jet_features(x, dx, ddx)  # (1 + 2D, B, n_in, n_d)
            out = feats.reshape(-1, self.n_in * self.n_d) @ self._weight()
            out = out.reshape(1 + 2 * n_dir, n_batch, self.n_out)
        return Jet(out[0], out[1 : 1 + n_dir], out[1 + n_dir :])


# --- layer kinds ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerContext:
    """Where a layer sits in the network and how its tensors are made."""

    index: int  # 0 = first layer
    n_layers: int
    dtype: torch.dtype
    device: torch.device | str
    generator: torch.Generator | None

    @property
    def tensor_kw(self) -> dict[str, Any]:
        """dtype / device / generator keywords for a layer constructor."""
        return {"dtype": self.dtype, "device": self.device, "generator": self.generator}


# An option check maps (value, field name) to the normalised (JSON-able) value or raises a
# one-line PinnkanError naming the field.
OptionCheck = Callable[[Any, str], Any]


@dataclass(frozen=True)
class LayerKind:
    """One `model=` choice: its layer factory and its options (defaults and checks).

    `make(n_in, n_out, ctx, **options)` builds one layer. Options not in `init_only` are part
    of the architecture and so of `KAN.spec()` (a checkpoint must match them).
    """

    make: Callable[..., nn.Module]
    options: dict[str, tuple[Any, OptionCheck]] = field(default_factory=dict)
    init_only: tuple[str, ...] = ()
    hidden: tuple[int, ...] = (32, 32)  # default hidden widths

    def resolve(self, kind: str, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults updated with `given`, every value checked; unknown names are refused."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            raise PinnkanError(
                f"model.{unknown[0]} is not an option of model={kind}; its options: "
                f"{', '.join(['hidden', *self.options])}"
            )
        merged = {k: given.get(k, default) for k, (default, _) in self.options.items()}
        return {k: self.options[k][1](v, f"model.{k}") for k, v in merged.items()}


def check_range(value: Any, name: str) -> list[float]:
    """[low, high] with low < high."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise PinnkanError(f"{name}={value!r} must be [low, high]")
    lo = as_float(value[0], f"{name}[0]")
    return [lo, as_float(value[1], f"{name}[1]", lo, lo_open=True)]


def _bspline_layer(
    n_in: int, n_out: int, ctx: LayerContext, grid_size: int, grid_range: list, spline_scale: float
) -> KANLayer:
    basis = BSplineBasis(grid_size, (grid_range[0], grid_range[1]))
    return KANLayer(n_in, n_out, basis, spline_scale=spline_scale, **ctx.tensor_kw)


def _rational_layer(
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


def _chebyshev_layer(
    n_in: int, n_out: int, ctx: LayerContext, degree: int, decay: float
) -> BasisLayer:
    """A[i, j, k] ~ N(0, σ_k²), σ_k ∝ (1 + k)^(-decay), Σ_k σ_k² = 1/n_in: higher modes start
    small, so the network starts smooth (T_k'' grows like k⁴)."""
    k = torch.arange(degree + 1, dtype=torch.float64)
    std = (1.0 + k) ** (-decay)
    std = std / std.square().sum().sqrt() / math.sqrt(n_in)
    a = torch.randn(n_in, n_out, degree + 1, generator=ctx.generator, dtype=ctx.dtype)
    a = a * std.to(ctx.dtype)
    return BasisLayer(ChebyshevBasis(degree), a.to(ctx.device), torch.diag(std))


def _mlp_layer(n_in: int, n_out: int, ctx: LayerContext) -> BasisLayer:
    """Dense layer on identity (first layer) or tanh features; Xavier-normal W, zero bias."""
    basis = ActivationBasis("identity" if ctx.index == 0 else "tanh")
    std = math.sqrt(2.0 / (n_in + n_out))
    a = torch.randn(n_in, n_out, 1, generator=ctx.generator, dtype=ctx.dtype) * std
    bias = torch.zeros(n_out, dtype=ctx.dtype)
    factor = torch.full((1, 1), std, dtype=torch.float64)
    return BasisLayer(basis, a.to(ctx.device), factor, bias.to(ctx.device))


def _lmkan_layer(
    n_in: int,
    n_out: int,
    ctx: LayerContext,
    grid_size: int,
    grid_range: list,
    outside: str,
    scale: float,
) -> LookupKANLayer:
    """lmKAN: sums of bicubic 2-D functions of input pairs (pinnkan/lmkan.py, docs/lmkan.md)."""
    lo_hi = (grid_range[0], grid_range[1])
    return LookupKANLayer(
        n_in,
        n_out,
        grid_size=grid_size,
        grid_range=lo_hi,
        outside=outside,
        scale=scale,
        **ctx.tensor_kw,
    )


LAYER_KINDS: dict[str, LayerKind] = {
    "bspline": LayerKind(
        _bspline_layer,
        {
            "grid_size": (5, lambda v, n: as_int(v, n, 1, 1000)),
            "grid_range": ([-1.0, 1.0], check_range),
            "spline_scale": (0.1, lambda v, n: as_float(v, n, 0.0, lo_open=True)),
        },
        init_only=("spline_scale",),
        hidden=(16, 16),  # with optim=lm; Adam did best at (32, 32) (docs/method.md)
    ),
    "rational": LayerKind(
        _rational_layer,
        {
            "groups": (4, lambda v, n: as_int(v, n, 1, 4096)),
            "denominator": ("smooth", lambda v, n: as_choice(v, n, DENOMINATORS)),
            "eps": (1e-2, lambda v, n: as_float(v, n, 0.0, 1.0, lo_open=True)),
            "init_activation": ("silu", lambda v, n: as_choice(v, n, ACTIVATIONS)),
        },
        init_only=("init_activation",),
    ),
    "chebyshev": LayerKind(
        _chebyshev_layer,
        {
            "degree": (5, lambda v, n: as_int(v, n, 1, 64)),
            "decay": (1.0, lambda v, n: as_float(v, n, 0.0)),
        },
        init_only=("decay",),
    ),
    "mlp": LayerKind(_mlp_layer, {}, hidden=(98, 98)),
    "lmkan": LayerKind(
        _lmkan_layer,
        {
            "grid_size": (5, lambda v, n: as_int(v, n, 1, 1000)),
            "grid_range": ([-1.0, 1.0], check_range),
            "outside": ("extrapolate", lambda v, n: as_choice(v, n, OUTSIDE)),
            "scale": (0.3, lambda v, n: as_float(v, n, 0.0)),
        },
        init_only=("scale",),
        hidden=(16, 16),
    ),
}


def spec_differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Keys of `want` whose values differ in `have`; domain bounds compare to float32 precision
    (files written before the spec kept the exact bounds read them back from float32 tensors)."""

    def same(key: str) -> bool:
        a, b = have.get(key), want[key]
        if key == "domain" and isinstance(a, list) and len(a) == len(b):
            return all(
                len(x) == 2 and all(math.isclose(u, v, rel_tol=1e-6) for u, v in zip(x, y))
                for x, y in zip(a, b)
            )
        return a == b

    return [k for k in want if not same(k)]


class KAN(nn.Module):
    """A network of one layer kind on a box domain: inputs are mapped affinely to [-1, 1].

    `kind` names an entry of LAYER_KINDS; `options` are that kind's options (e.g. grid_size
    for bspline, degree for chebyshev), checked and completed with defaults.
    """

    def __init__(
        self,
        widths: list[int],
        domain: list[tuple[float, float]],
        *,
        kind: str = "bspline",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if len(widths) < 2 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be >= 2 positive integers, got {widths}")
        if len(domain) != widths[0]:
            raise ValueError(f"domain has {len(domain)} coordinates but widths[0] = {widths[0]}")
        if kind not in LAYER_KINDS:
            raise PinnkanError(f"unknown model {kind!r}; choose one of: {', '.join(LAYER_KINDS)}")
        self.kind = kind
        self.options = LAYER_KINDS[kind].resolve(kind, options)
        self.widths = [int(w) for w in widths]
        lo = torch.tensor([d[0] for d in domain], dtype=dtype, device=device)
        hi = torch.tensor([d[1] for d in domain], dtype=dtype, device=device)
        self.register_buffer("lo", lo)
        self.register_buffer("hi", hi)
        # as given, not read back from lo / hi: a float32 and a float64 network on (0, 2π)
        # have the same spec
        self.domain = [[float(a), float(b)] for a, b in domain]
        n_layers = len(self.widths) - 1
        make = LAYER_KINDS[kind].make
        self.layers = nn.ModuleList(
            make(a, b, LayerContext(i, n_layers, dtype, device, generator), **self.options)
            for i, (a, b) in enumerate(zip(self.widths[:-1], self.widths[1:]))
        )

    def spec(self) -> dict[str, Any]:
        """Architecture identity: what a checkpoint must match to be loaded into this network."""
        init_only = LAYER_KINDS[self.kind].init_only
        return {
            "basis": self.kind,
            "widths": self.widths,
            **{k: v for k, v in self.options.items() if k not in init_only},
            "domain": self.domain,
        }

    def base_state(self) -> dict[str, Tensor]:
        """The network's own tensors (A and extra parameters per layer, lo, hi), no adapters."""
        return {k: v for k, v in self.state_dict().items() if ".adapter." not in k}

    def merged_state(self) -> dict[str, Tensor]:
        """`base_state` with every A replaced by its effective A + ΔA (a plain model file)."""
        state = self.base_state()
        for i, layer in enumerate(self.layers):
            state[f"layers.{i}.A"] = layer.coefficients().detach()
        return state

    def normalise(self, x: Tensor) -> Tensor:
        """Physical points (B, D) -> [-1, 1]^D."""
        return (x - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0

    def forward(self, x: Tensor) -> Tensor:
        """Physical points x (B, D) -> u (B, n_out)."""
        h = self.normalise(x)
        for layer in self.layers:
            h = layer(h)
        return h

    def forward_jet(self, x: Tensor, fused: bool = True) -> Jet:
        """u and its first and diagonal second derivatives w.r.t. the physical coordinates."""
        jet = affine_input_jet(x, self.lo, self.hi)
        for layer in self.layers:
            jet = layer.forward_jet(jet, fused)
        return jet
