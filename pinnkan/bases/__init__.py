"""Univariate basis families of the network's layers. Each maps x (..., n_in) to features
(..., n_in, n_basis) with closed-form first and second derivatives."""

from pinnkan.bases.activation import ActivationBasis
from pinnkan.bases.bspline import BSplineBasis
from pinnkan.bases.chebyshev import ChebyshevBasis
from pinnkan.bases.rational import RationalBasis

__all__ = ["ActivationBasis", "BSplineBasis", "ChebyshevBasis", "RationalBasis"]
