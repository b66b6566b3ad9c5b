"""The PINN objective: collocation points, residuals, their Jacobian, causal weights."""
