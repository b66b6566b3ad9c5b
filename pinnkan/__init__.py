"""pinnkan: physics-informed transfer learning of PDE solutions with Kolmogorov–Arnold networks."""

__version__ = "0.2.0"
