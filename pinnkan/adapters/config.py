"""`AdapterConfig`: the adapter kind and the LoTRA options of a transfer (`adapter:` and
`cr`), checked in one place (`validate`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pinnkan.adapters.registry import adapter_names, get_adapter
from pinnkan.adapters.tucker import FACTORS, INITS, check_cr, ranks_from_cr
from pinnkan.common.config_checks import as_float, as_int
from pinnkan.errors import FieldError, PinnkanError

LAYER_MODES = ("lotra", "full", "frozen")
MAX_MULTIPLIER = 1e4  # with optim.lr <= 10 keeps every group's lr far from float32 overflow
LR_STRATEGIES = ("theory", "uniform")
# what results.h5 records as `init` for slim: the layer kind's own init statistics
SLIM_INIT = "layer_kind"
DEFAULT_MULTIPLIERS = {"G": 1.0, "U1": 16.0, "U2": 1.0, "U3": 9.0}


@dataclass
class AdapterConfig:
    """Adapter choice and LoTRA options (METHOD.md §2); `validate` checks them at the edge."""

    name: str = "lotra"
    cr: float = 0.5  # the one default of `cr` (RunConfig.cr takes it)
    ranks: list[Any] | None = None  # [r1, r2, r3] for every layer, or one triple per layer
    init: str = "grad"
    lr_strategy: str = "theory"
    # lr_strategy=theory keeps the theory's 1/n_in and 1/n_d scaling; c = 1 trains U1 and U3
    # too slowly with Adam (docs/method.md has the measurement behind c_U1 = 16, c_U3 = 9)
    multipliers: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MULTIPLIERS))
    # per-layer mode: lotra | full | frozen; None: `default_modes` (thin edge layers in full;
    # slim: lotra everywhere)
    layers: list[str] | None = None
    # rank growth (optim=lm; pinnkan.adapters.growth): the ranks start at cr's and double
    # their cr on a stall (grow_patience accepted steps without the loss halving) up to grow_to
    grow_to: float | None = None
    grow_patience: int = 20

    def validate(self, n_layers: int) -> None:
        """Every option's type and range for a network of `n_layers` (one line naming the
        option); remembered, so that `apply` does not check a validated config again."""
        kind = get_adapter(self.name)
        self.cr = check_cr(self.cr)
        if not kind.layer_modes and self.layers is not None:
            raise FieldError(
                "layers",
                f"={list(self.layers)} has no meaning for adapter={self.name} (it sets every "
                "layer's part itself); leave it null",
            )
        if kind.init is not None:
            self.init = kind.init  # e.g. slim: no pretrained network, no gradient direction
        elif self.init not in INITS:
            raise PinnkanError(
                f"unknown LoTRA init {self.init!r}; choose one of: {', '.join(INITS)}"
            )
        if self.lr_strategy not in LR_STRATEGIES:
            raise PinnkanError(
                f"unknown LoTRA lr strategy {self.lr_strategy!r}; choose one of: "
                f"{', '.join(LR_STRATEGIES)} (or explicit multipliers per factor)"
            )
        bad = sorted(set(self.multipliers) - set(FACTORS))
        if bad:
            raise PinnkanError(f"unknown LoTRA multiplier(s) {bad}; use {list(FACTORS)}")
        self.multipliers = {
            k: as_float(v, f"multipliers.{k}", 0.0, MAX_MULTIPLIER, lo_open=True)
            for k, v in self.multipliers.items()
        }
        if self.ranks is not None:
            per_layer = isinstance(self.ranks, list | tuple) and all(
                isinstance(r, list | tuple) for r in self.ranks
            )
            triples = list(self.ranks) if per_layer else [self.ranks]
            if per_layer and len(triples) != n_layers:
                raise FieldError("ranks", f" lists {len(triples)} triples for {n_layers} layers")
            for r in triples:
                if not isinstance(r, list | tuple) or len(r) != 3:
                    raise FieldError(
                        "ranks", f"={self.ranks!r} must be [r1, r2, r3] (or one per layer)"
                    )
                for v in r:
                    as_int(v, "ranks[]", 1)
        self.grow_patience = as_int(self.grow_patience, "grow_patience", 1)
        if self.grow_to is not None:
            self.grow_to = as_float(self.grow_to, "grow_to", self.cr, 1.0, lo_open=True)
            if not kind.tucker or self.ranks is not None:
                tucker = " or ".join(n for n in adapter_names() if get_adapter(n).tucker)
                raise FieldError(
                    "grow_to",
                    f"={self.grow_to:g} grows the Tucker ranks from cr's: it needs "
                    f"adapter={tucker} and no ranks",
                )
        if self.layers is not None:
            if len(self.layers) != n_layers or any(m not in LAYER_MODES for m in self.layers):
                raise FieldError(
                    "layers",
                    f"={list(self.layers)} must list {n_layers} modes out of "
                    f"{', '.join(LAYER_MODES)}",
                )
        self._validated_for = n_layers  # not a field: a copy (replace) is checked anew

    def validated_for(self, n_layers: int) -> bool:
        """Whether `validate(n_layers)` passed on this object."""
        return getattr(self, "_validated_for", None) == n_layers

    def layer_ranks(self, layer: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Explicit ranks when given, else from cr."""
        if self.ranks is None:
            return ranks_from_cr(shape, float(self.cr))
        r = self.ranks[layer] if isinstance(self.ranks[0], list | tuple) else self.ranks
        return tuple(int(v) for v in r)  # shape and values checked by `validate`  # type: ignore[return-value]


def default_modes(n_layers: int) -> list[str]:
    """LoTRA's default per-layer modes: the input and output layers trained in full, the hidden
    layers in Tucker form (a network of one or two layers: Tucker everywhere).

    Why: an edge layer is thin (n_in = the PDE's 1–3 coordinates, or n_out = 1), so cr leaves
    its Tucker update a rank of 1 in that mode, at as many parameters as the layer itself or
    more at cr 0.5; from zero, under LM, such updates ran out 300 steps where the edge layers
    in full converged in 17 (docs/family_benchmark.md has the measurement).
    """
    if n_layers < 3:
        return ["lotra"] * n_layers
    return ["full", *["lotra"] * (n_layers - 2), "full"]
