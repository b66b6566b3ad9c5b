"""The network: layers y_j = Σ_i Σ_k A[i, j, k] · b_k(x_i) (+ bias_j), A (n_in, n_out, n_d).

Each layer can also push a jet (value, ∂/∂x_k, ∂²/∂x_k²) forward with the basis' closed-form
derivatives, which is the forward derivative engine (see `pinnkan.network.derivatives`).

Several layer kinds plug into the same network (`LAYER_KINDS`, the `model=` choices; each kind
is a module of `pinnkan.layers`): every layer satisfies `pinnkan.layers.base.Layer`, and LoTRA,
checkpoints and merge only use that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pinnkan.errors import PinnkanError
from pinnkan.layers import bspline, chebyshev, lmkan, mlp, rational
from pinnkan.layers.base import LayerContext, LayerKind
from pinnkan.layers.jet import Jet, affine_input_jet, periodic_input_jet

# the `model=` choices: name -> LayerKind (factory, options dataclass, checks)
LAYER_KINDS: dict[str, LayerKind] = {
    "bspline": bspline.KIND,
    "rational": rational.KIND,
    "chebyshev": chebyshev.KIND,
    "mlp": mlp.KIND,
    "lmkan": lmkan.KIND,
}
# the kind a network is without model= / kind=: the Chebyshev KAN [2,20,20,1] (docs/models.md)
DEFAULT_KIND = "chebyshev"


# the kind of a network whose spec has no `kind` (files written before the other kinds)
UNNAMED_KIND = "bspline"
# the spec key files written before pinnkan 0.2's tiers used for the kind
LEGACY_KIND_KEY = "basis"
# spec keys added after files were written, with the value a file without them means
LATER_SPEC_KEYS: dict[str, Any] = {"periodic": [], "params": [], "fixed": None}


def renamed_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec as read from a file, its kind under `kind` (older files wrote `basis`)."""
    spec = dict(spec)
    if LEGACY_KIND_KEY in spec:
        spec["kind"] = spec.pop(LEGACY_KIND_KEY)
    return spec


def completed_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec as read from a file (`renamed_spec`), with LATER_SPEC_KEYS it lacks at their
    defaults (a file written before `periodic` was a spec key holds a network without the
    embedding)."""
    return {**LATER_SPEC_KEYS, **renamed_spec(spec)}


def spec_differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Keys of `want` whose values differ in `have`, both `completed_spec`; domain bounds
    compare to float32 precision (files written before the spec kept the exact bounds read
    them back from float32 tensors)."""
    have, want = completed_spec(have), completed_spec(want)

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
    for bspline, degree for chebyshev), checked and completed with defaults. Each axis in
    `periodic` enters instead as cos and sin of 2π (x_k - lo_k) / (hi_k - lo_k), which makes u
    exactly periodic in it (`pinnkan.layers.jet.periodic_input_jet`): the first layer then takes
    widths[0] + len(periodic) inputs.

    `params` names family parameters that are inputs too (a parametric PINN,
    `pinnkan.pde.parametric`): the last len(params) of the widths[0] inputs, over their ranges
    in `domain`, with no derivative direction (the jet is w.r.t. the coordinates only).
    `fixed` holds their values at one member: the network then takes the coordinates alone
    and appends the values (`fix`).
    """

    def __init__(
        self,
        widths: list[int],
        domain: list[tuple[float, float]],
        *,
        kind: str = DEFAULT_KIND,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        periodic: Sequence[int] = (),
        params: Sequence[str] = (),
        fixed: Sequence[float] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if len(widths) < 2 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be >= 2 positive integers, got {widths}")
        if len(domain) != widths[0]:
            raise ValueError(f"domain has {len(domain)} coordinates but widths[0] = {widths[0]}")
        if kind not in LAYER_KINDS:
            raise PinnkanError(f"unknown model {kind!r}; choose one of: {', '.join(LAYER_KINDS)}")
        axes = tuple(int(k) for k in periodic)
        if any(not 0 <= k < len(domain) for k in axes) or len(set(axes)) != len(axes):
            raise PinnkanError(
                f"periodic={list(periodic)} must list distinct axes among 0..{len(domain) - 1}"
            )
        self.periodic = tuple(sorted(axes))
        self.params = tuple(str(p) for p in params)
        # the coordinates the jet differentiates: the inputs that are not parameters
        self.n_coords = len(domain) - len(self.params)
        if self.n_coords < 1 or any(k >= self.n_coords for k in axes):
            raise PinnkanError(
                f"params={list(self.params)} leaves no coordinate of the {len(domain)} inputs "
                "(or a periodic axis among the parameters)"
            )
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
        n_in = [self.widths[0] + len(self.periodic), *self.widths[1:-1]]
        self.layers = nn.ModuleList(
            make(a, b, LayerContext(i, n_layers, dtype, device, generator), **self.options)
            for i, (a, b) in enumerate(zip(n_in, self.widths[1:]))
        )
        self.fixed: Tensor | None = None
        if fixed is not None:
            self.fix(fixed)

    @classmethod
    def from_spec(
        cls,
        spec: dict[str, Any],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> KAN:
        """The network a checkpoint's `spec` describes (freshly initialised: load its tensors
        after); a spec without `kind` (or the older `basis`) is an UNNAMED_KIND network."""
        spec = renamed_spec(spec)
        skip = ("kind", "widths", "domain")
        options = {k: v for k, v in spec.items() if k not in skip and v is not None}
        return cls(
            spec["widths"],
            spec["domain"],
            kind=spec.get("kind", UNNAMED_KIND),
            dtype=dtype,
            device=device,
            generator=generator,
            **options,
        )

    def spec(self) -> dict[str, Any]:
        """Architecture identity: what a checkpoint must match to be loaded into this network."""
        init_only = LAYER_KINDS[self.kind].init_only
        return {
            "kind": self.kind,
            "widths": self.widths,
            **{k: v for k, v in self.options.items() if k not in init_only},
            "domain": self.domain,
            "periodic": list(self.periodic),
            "params": list(self.params),
            "fixed": None if self.fixed is None else self.fixed.tolist(),
        }

    def fix(self, values: Sequence[float] | None) -> None:
        """Evaluate at one member: the `params` inputs take `values` (None: inputs again).
        A plain attribute, not a tensor of the state: a model file's spec holds the values."""
        if values is None:
            self.fixed = None
            return
        if len(values) != len(self.params):
            raise PinnkanError(f"{len(values)} values for the parameter inputs {self.params}")
        self.fixed = self.lo.new_tensor([float(v) for v in values])

    def _with_fixed(self, x: Tensor) -> Tensor:
        """x (B, n_coords) with the fixed parameter values appended, when they are set."""
        if self.fixed is None:
            return x
        return torch.cat([x, self.fixed.to(x).expand(x.shape[0], -1)], dim=1)

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
        """Physical points (B, D) -> the first layer's input in [-1, 1]^(D + len(periodic))."""
        return self.input_jet(x, derivatives=False).value

    def input_jet(self, x: Tensor, derivatives: bool = True) -> Jet:
        """The first layer's input at physical points x (B, D) as a jet w.r.t. x (the
        derivative engines start from it); without `derivatives`, d1 and d2 have no
        directions (a value-only pass). The directions are the coordinates only: parameter
        inputs (`params`) are not differentiated."""
        x = self._with_fixed(x)
        if self.periodic:
            jet = periodic_input_jet(x, self.lo, self.hi, self.periodic, derivatives)
            return self._coordinate_directions(jet) if derivatives else jet
        if derivatives:
            return self._coordinate_directions(affine_input_jet(x, self.lo, self.hi))
        z = (x - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0
        empty = z.new_zeros(0, *z.shape)
        return Jet(z, empty, empty)

    def _coordinate_directions(self, jet: Jet) -> Jet:
        """The input jet's directions of the coordinates: the parameters' dropped."""
        if not self.params:
            return jet
        n = self.n_coords
        return Jet(jet.value, jet.d1[:n], jet.d2[:n])

    def forward(self, x: Tensor) -> Tensor:
        """Physical points x (B, D) -> u (B, n_out)."""
        h = self.normalise(x)
        for layer in self.layers:
            h = layer(h)
        return h

    def forward_jet(self, x: Tensor, fused: bool = True) -> Jet:
        """u and its first and diagonal second derivatives w.r.t. the physical coordinates."""
        jet = self.input_jet(x)
        for layer in self.layers:
            jet = layer.forward_jet(jet, fused)
        return jet
