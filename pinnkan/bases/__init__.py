"""Univariate basis families of KAN layers. Each maps x (..., n_in) to (phi, dphi, d2phi),
each (..., n_in, n_basis), with closed-form first and second derivatives."""

from pinnkan.bases.bspline import BSplineBasis

__all__ = ["BSplineBasis"]
