"""Levenberg–Marquardt (damped Gauss–Newton) on a residual vector: loss = r·r.

One step solves (JᵀJ + λ D²) δ = −Jᵀr in the scaled variables δ̃ = D δ, J̃ = J D⁻¹:
by Cholesky of J̃ᵀJ̃ + λI (P × P, "primal") when P ≤ N, else in the kernel form
δ̃ = −J̃ᵀ (J̃J̃ᵀ + λI)⁻¹ r (N × N); both give the same step. D² is Marquardt's diag(JᵀJ), kept
as a running maximum (Moré), so parameters of very different scales (LoTRA's G and U's, a
network's layers) are damped alike. λ follows Nielsen's gain-ratio rule; a step that does not
lower the loss is undone and retried with a larger λ, reusing the factored Gram matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pinnkan.config_checks import as_choice, as_float, as_int

SCALINGS = ("marquardt", "identity")
SOLVES = ("auto", "primal", "kernel")


@dataclass
class LMConfig:
    """Damping and solve options of `optim=lm` (conf/optim/lm.yaml)."""

    damping: float = 1e-3  # initial λ
    damping_max: float = 1e10  # λ above this: no step lowers the loss any more, stop
    scaling: str = "marquardt"  # marquardt (D² = running max of diag JᵀJ) | identity
    solve: str = "auto"  # auto (primal when P <= N) | primal | kernel
    resample_every: int = 10  # new collocation points every N accepted steps (0: fixed set)

    def validate(self) -> None:
        """Type and range of every field; one PinnkanError line naming the field."""
        self.damping = as_float(self.damping, "optim.damping", 0.0, 1e30, lo_open=True)
        self.damping_max = as_float(self.damping_max, "optim.damping_max", self.damping)
        self.scaling = as_choice(self.scaling, "optim.scaling", SCALINGS)
        self.solve = as_choice(self.solve, "optim.solve", SOLVES)
        self.resample_every = as_int(self.resample_every, "optim.resample_every", 0)


def flat_view(params: list[nn.Parameter]) -> Tensor:
    """The parameters as one detached vector (P,), in the Jacobian's column order."""
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def assign_flat(params: list[nn.Parameter], flat: Tensor) -> None:
    """Write a vector (P,) back into the parameters (inverse of `flat_view`)."""
    i = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[i : i + n].view_as(p))
        i += n


class LevenbergMarquardt:
    """The damping state (λ, ν, D) and the step of one LM iteration; no model knowledge.

    `propose(r, J)` returns a step δ and the reduction the linear model predicts for it;
    `judge(predicted, actual)` updates λ and says whether to keep the step.
    """

    def __init__(self, cfg: LMConfig) -> None:
        self.cfg = cfg
        self.damping = float(cfg.damping)
        self.nu = 2.0
        self.scale2: Tensor | None = None  # D² (P,)
        self._gram: tuple[Tensor, Tensor, str, Tensor] | None = None  # (J̃, Gram, form, D)

    def forget_jacobian(self) -> None:
        """The next `propose` gets a new J (after an accepted step or new points)."""
        self._gram = None

    def _prepare(self, J: Tensor) -> tuple[Tensor, Tensor, str, Tensor]:
        n, p = J.shape
        if self.cfg.scaling == "marquardt":
            col2 = J.square().sum(0)
            self.scale2 = col2 if self.scale2 is None else torch.maximum(self.scale2, col2)
            floor = 1e-12 * float(self.scale2.max()) if self.scale2.numel() else 0.0
            d = self.scale2.clamp_min(max(floor, torch.finfo(J.dtype).tiny)).sqrt()
        else:
            d = torch.ones(p, dtype=J.dtype, device=J.device)
        js = J / d
        form = self.cfg.solve if self.cfg.solve != "auto" else ("primal" if p <= n else "kernel")
        gram = js.T @ js if form == "primal" else js @ js.T
        return js, gram, form, d

    def propose(self, r: Tensor, J: Tensor) -> tuple[Tensor, float] | None:
        """(δ (P,), predicted loss reduction) at the current λ; None if the solve failed."""
        if self._gram is None:
            self._gram = self._prepare(J)
        js, gram, form, d = self._gram
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        chol, info = torch.linalg.cholesky_ex(gram + self.damping * eye)
        if int(info) != 0:
            return None
        if form == "primal":
            step = -torch.cholesky_solve((js.T @ r).unsqueeze(1), chol)[:, 0]
        else:
            step = -(js.T @ torch.cholesky_solve(r.unsqueeze(1), chol)[:, 0])
        jd = js @ step  # J δ = J̃ δ̃
        predicted = -float(2.0 * (r @ jd) + jd @ jd)
        return step / d, predicted

    def judge(self, predicted: float | None, actual: float) -> bool:
        """Update λ from the gain ratio actual / predicted; True when the step is kept."""
        if predicted is not None and predicted > 0 and actual > 0:  # NaN > 0 is False
            rho = actual / predicted
            self.damping *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            self.damping = max(self.damping, 1e-300)
            self.nu = 2.0
            return True
        self.damping *= self.nu
        self.nu *= 2.0
        return False

    @property
    def exhausted(self) -> bool:
        """λ beyond `damping_max`: steps no longer lower the loss (converged or stalled)."""
        return self.damping > self.cfg.damping_max

    def state_dict(self) -> dict[str, Any]:
        return {"damping": self.damping, "nu": self.nu, "scale2": self.scale2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.damping, self.nu = float(state["damping"]), float(state["nu"])
        self.scale2 = state["scale2"]
        self._gram = None
