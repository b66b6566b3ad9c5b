"""The layer kinds of the network, a module each (basis, layer, factory, options dataclass and
`KIND`), and in `base` what they share (the `Layer` interface, `BasisLayer`, `LayerKind`)."""

from pinnkan.layers.base import (
    BasisLayer,
    CoefficientLayer,
    Layer,
    LayerContext,
    LayerKind,
    NetworkModel,
    layer_extra_parameters,
    other_parameters,
)
from pinnkan.layers.bspline import BSplineBasis, BSplineLayer, BSplineModel
from pinnkan.layers.chebyshev import ChebyshevBasis, ChebyshevModel
from pinnkan.layers.lmkan import LookupKANLayer, LookupKANModel
from pinnkan.layers.mlp import ActivationBasis, MLPModel
from pinnkan.layers.rational import RationalBasis, RationalModel

__all__ = [
    "ActivationBasis",
    "BSplineBasis",
    "BSplineLayer",
    "BSplineModel",
    "BasisLayer",
    "ChebyshevBasis",
    "ChebyshevModel",
    "CoefficientLayer",
    "Layer",
    "LayerContext",
    "LayerKind",
    "LookupKANLayer",
    "LookupKANModel",
    "MLPModel",
    "NetworkModel",
    "RationalBasis",
    "RationalModel",
    "layer_extra_parameters",
    "other_parameters",
]
