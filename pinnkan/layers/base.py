"""What every layer kind shares: the `Layer` interface LoTRA, checkpoints and merge rely on,
the A (+ ΔA) coefficient layer, the basis layer y = Σ A φ(x), and a kind's `model=` entry.

A kind is one module of `pinnkan.layers` with its basis, its layer, its factory, a dataclass of
its options (the single source of their defaults) and a `LayerKind` tying them together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pinnkan.common.config_checks import as_float
from pinnkan.errors import PinnkanError
from pinnkan.layers.jet import Jet


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


class CoefficientLayer(nn.Module):
    """A layer whose coefficient tensor `A` an adapter may update: the effective A (+ ΔA)."""

    A: nn.Parameter
    adapter: nn.Module | None

    def coefficients(self) -> Tensor:
        """The effective tensor A (+ ΔA), formed once per call, never per sample."""
        if self.adapter is None:
            return self.A
        return self.A + self.adapter.delta()

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters besides A (and the adapter): frozen under lotra / slim."""
        return other_parameters(self)


class BasisLayer(CoefficientLayer):
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
        self.adapter = None
        self._factor = factor.detach().to("cpu", torch.float64)

    def init_factor(self) -> Tensor:
        """L (n_d, q), float64 on the CPU: this kind's init draws A[i, j, :] = L z, z ~ N(0, I)."""
        return self._factor

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
        which is what the Gauss–Newton Jacobian (`pinnkan.pinn.jacobian`) uses.
        """
        x, dx, ddx = jet.value, jet.d1, jet.d2  # (B, n_in), (D, B, n_in), (D, B, n_in)
        assert dx is not None and ddx is not None
        phi, d1, d2 = self.basis.derivatives(x)  # each (B, n_in, n_d)
        dxe, ddxe = dx.unsqueeze(-1), ddx.unsqueeze(-1)  # (D, B, n_in, 1)
        return torch.cat([phi.unsqueeze(0), d1 * dxe, d2 * dxe * dxe + d1 * ddxe], 0)

    def contract_jet(self, feats: Tensor) -> Jet:
        """Jet features (1 + 2D, B, n_in, n_d) through one matmul with A (+ ΔA); the bias only
        enters the value."""
        n_blocks, n_batch = feats.shape[0], feats.shape[1]
        n_dir = (n_blocks - 1) // 2
        out = feats.reshape(-1, self.n_in * self.n_d) @ self._weight()
        out = out.reshape(n_blocks, n_batch, self.n_out)
        value = out[0] if self.bias is None else out[0] + self.bias
        return Jet(value, out[1 : 1 + n_dir], out[1 + n_dir :])

    def forward_jet(self, jet: Jet, fused: bool = True) -> Jet:
        """Value, first and diagonal second derivatives through the layer (`fused` unused).

        y = Σ A φ(x), y_k = Σ A φ'(x) x_k, y_kk = Σ A (φ''(x) x_k² + φ'(x) x_kk): the 1 + 2D
        feature blocks go through a single matmul.
        """
        assert jet.d1 is not None
        return self.contract_jet(self.jet_features(jet))


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


@dataclass
class NetworkModel:
    """The fields every kind's `model=` dataclass starts with (it subclasses this and sets its
    own name and hidden defaults): they describe the network, not a layer option."""

    name: str = ""
    hidden: list[int] = field(default_factory=list)
    # auto: embed the PDE family's periodic axes (cos/sin, exactly periodic u) | true | false
    periodic: Any = "auto"


# fields of every model dataclass that are not layer options
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(NetworkModel))


@dataclass(frozen=True)
class LayerKind:
    """One `model=` choice: its layer factory, its options dataclass and their checks.

    `model` is the kind's dataclass (a `NetworkModel`: `name`, `hidden`, `periodic`, then the
    options with their defaults, also the `model=` config group's schema); `checks` has one
    check per option.
    `make(n_in, n_out, ctx, **options)` builds one layer. Options not in `init_only` are part
    of the architecture and so of `KAN.spec()` (a checkpoint must match them).
    """

    make: Callable[..., nn.Module]
    model: type
    checks: dict[str, OptionCheck] = field(default_factory=dict)
    init_only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [f.name for f in dataclasses.fields(self.model)]
        n = len(MODEL_FIELDS)
        assert names[:n] == list(MODEL_FIELDS), f"{self.model.__name__}: a NetworkModel"
        assert set(names[n:]) == set(self.checks), f"{self.model.__name__}: one check per option"

    def defaults(self) -> dict[str, Any]:
        """The options' defaults (without the NetworkModel fields), in field order."""
        model = self.model()
        return {
            f.name: getattr(model, f.name)
            for f in dataclasses.fields(model)
            if f.name not in MODEL_FIELDS
        }

    @property
    def hidden(self) -> tuple[int, ...]:
        """Default hidden widths."""
        return tuple(self.model().hidden)

    def refuse_unknown(self, kind: str, names: Iterable[str]) -> None:
        """One line naming the first of `names` that is not an option of this kind."""
        defaults = self.defaults()
        unknown = sorted(set(names) - set(defaults))
        if unknown:
            raise PinnkanError(
                f"model.{unknown[0]} is not an option of model={kind}; its options: "
                f"{', '.join([*MODEL_FIELDS[1:], *defaults])}"
            )

    def resolve(self, kind: str, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults updated with `given`, every value checked; unknown names are refused."""
        self.refuse_unknown(kind, given)
        defaults = self.defaults()
        merged = {k: given.get(k, default) for k, default in defaults.items()}
        return {k: self.checks[k](v, k) for k, v in merged.items()}


def check_range(value: Any, name: str) -> list[float]:
    """[low, high] with low < high."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise PinnkanError(f"{name}={value!r} must be [low, high]")
    lo = as_float(value[0], f"{name}[0]")
    return [lo, as_float(value[1], f"{name}[1]", lo, lo_open=True)]
