"""Levenberg–Marquardt (damped Gauss–Newton) on a residual vector: loss = r·r.

One step solves (JᵀJ + λ D²) δ = −Jᵀr in the scaled variables δ̃ = D δ, J̃ = J D⁻¹:
by Cholesky of J̃ᵀJ̃ + λI (P × P, "primal") when P ≤ N, else in the kernel form
δ̃ = −J̃ᵀ (J̃J̃ᵀ + λI)⁻¹ r (N × N); both give the same step. The primal form needs only JᵀJ and
Jᵀr, which the loop accumulates over chunks of points (`pinnkan.jacobian.normal_equations`),
so N can grow far beyond what a whole J would fit in memory. D² is Marquardt's diag(JᵀJ), kept
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
SAMPLINGS = ("sobol", "rad")


@dataclass
class LMConfig:
    """Damping and solve options of `optim=lm` (conf/optim/lm.yaml)."""

    damping: float = 1e-3  # initial λ
    damping_max: float = 1e10  # λ above this: no step lowers the loss any more, stop
    scaling: str = "marquardt"  # marquardt (D² = running max of diag JᵀJ) | identity
    solve: str = "auto"  # auto (primal when P <= N) | primal | kernel
    resample_every: int = 10  # new collocation points every N accepted steps (0: fixed set)
    # interior points per chunk of J in the primal form (JᵀJ accumulated chunk by chunk);
    # 0: max(1024, P / 2), so that one chunk of J is about half the Gram matrix
    chunk: int = 0
    # where new interior points go: sobol (uniform) | rad (residual-based: drawn from a Sobol
    # pool of rad_pool × n_interior with probability ∝ |r|^rad_k / mean |r|^rad_k + rad_c)
    sampling: str = "sobol"
    rad_k: float = 1.0
    rad_c: float = 1.0
    rad_pool: int = 4

    def validate(self) -> None:
        """Type and range of every field; one PinnkanError line naming the field."""
        self.damping = as_float(self.damping, "optim.damping", 0.0, 1e30, lo_open=True)
        self.damping_max = as_float(self.damping_max, "optim.damping_max", self.damping)
        self.scaling = as_choice(self.scaling, "optim.scaling", SCALINGS)
        self.solve = as_choice(self.solve, "optim.solve", SOLVES)
        self.resample_every = as_int(self.resample_every, "optim.resample_every", 0)
        self.chunk = as_int(self.chunk, "optim.chunk", 0)
        self.sampling = as_choice(self.sampling, "optim.sampling", SAMPLINGS)
        self.rad_k = as_float(self.rad_k, "optim.rad_k", 0.0, 10.0)
        self.rad_c = as_float(self.rad_c, "optim.rad_c", 0.0, 1e6)
        self.rad_pool = as_int(self.rad_pool, "optim.rad_pool", 1, 1000)

    def chunk_rows(self, n_params: int) -> int:
        """Interior points per chunk of J (`chunk`, or its automatic size for P parameters)."""
        return self.chunk or max(1024, n_params // 2)


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

    The linear system comes either as the normal equations (`set_normal(JᵀJ, Jᵀr)`, the
    primal form, accumulated in chunks of J) or as r and J (`set_jacobian`, either form);
    `propose()` then returns a step δ and the reduction the linear model predicts for it, and
    `judge(predicted, actual)` updates λ and says whether to keep the step.
    """

    def __init__(self, cfg: LMConfig) -> None:
        self.cfg = cfg
        self.damping = float(cfg.damping)
        self.nu = 2.0
        self.scale2: Tensor | None = None  # D² (P,)
        # the scaled system (form, Gram, vector, D, J̃): ("primal", G̃ = J̃ᵀJ̃ (P, P), g̃ = J̃ᵀr,
        # D, None) or ("kernel", J̃J̃ᵀ (N, N), r, D, J̃ (N, P)), with J̃ = J D⁻¹
        self._system: tuple[str, Tensor, Tensor, Tensor, Tensor | None] | None = None

    def restart(self, rescale: bool = False) -> None:
        """Damping back to its initial value and no system: a new problem (time window);
        `rescale`: the scaling D too (new parameters, e.g. grown ranks)."""
        self.damping, self.nu, self._system = float(self.cfg.damping), 2.0, None
        if rescale:
            self.scale2 = None

    def forget_jacobian(self) -> None:
        """The next step needs a new system (after an accepted step or new points)."""
        self._system = None

    @property
    def has_system(self) -> bool:
        return self._system is not None

    def form(self, n_rows: int, n_params: int) -> str:
        """primal (P × P Gram) or kernel (N × N), as `optim.solve` says (auto: the smaller)."""
        if self.cfg.solve != "auto":
            return self.cfg.solve
        return "primal" if n_params <= n_rows else "kernel"

    def _scale(self, col2: Tensor) -> Tensor:
        """D from the column norms² of J (diag JᵀJ): Moré's running maximum, or ones."""
        if self.cfg.scaling != "marquardt":
            return torch.ones_like(col2)
        self.scale2 = col2 if self.scale2 is None else torch.maximum(self.scale2, col2)
        floor = 1e-12 * float(self.scale2.max()) if self.scale2.numel() else 0.0
        return self.scale2.clamp_min(max(floor, torch.finfo(col2.dtype).tiny)).sqrt()

    def set_normal(self, gram: Tensor, grad: Tensor) -> None:
        """The primal system from JᵀJ (P, P; scaled in place, the caller gives it up) and Jᵀr."""
        d = self._scale(gram.diagonal().clone())
        gram.div_(d.unsqueeze(1)).div_(d.unsqueeze(0))
        self._system = ("primal", gram, grad / d, d, None)

    def set_jacobian(self, r: Tensor, J: Tensor) -> None:
        """The system from r (N,) and J (N, P), in the form `form` picks."""
        if self.form(*J.shape) == "primal":
            self.set_normal(J.T @ J, J.T @ r)
            return
        d = self._scale(J.square().sum(0))
        js = J / d
        self._system = ("kernel", js @ js.T, r, d, js)

    def propose(
        self, r: Tensor | None = None, J: Tensor | None = None
    ) -> tuple[Tensor, float] | None:
        """(δ (P,), predicted loss reduction) at the current λ; None if the solve failed.
        r and J (given once after `forget_jacobian`) set the system, as `set_jacobian`."""
        if r is not None and J is not None and self._system is None:
            self.set_jacobian(r, J)
        assert self._system is not None, "set_normal or set_jacobian first"
        form, gram, vec, d, js = self._system
        # the damped copy is factored in place; the Gram matrix stays for retries at another λ
        chol = gram.clone()
        chol.diagonal().add_(self.damping)
        info = torch.empty((), dtype=torch.int32, device=chol.device)
        torch.linalg.cholesky_ex(chol, out=(chol, info))
        if int(info) != 0:
            return None
        if js is None:  # primal: δ̃ = −(G̃ + λI)⁻¹ g̃; predicted −(2 g̃·δ̃ + δ̃ᵀ G̃ δ̃)
            step = -torch.cholesky_solve(vec.unsqueeze(1), chol)[:, 0]
            del chol
            predicted = -float(2.0 * (vec @ step) + step @ (gram @ step))
        else:  # kernel: δ̃ = −J̃ᵀ (J̃J̃ᵀ + λI)⁻¹ r; predicted −(2 r·J̃δ̃ + |J̃δ̃|²)
            step = -(js.T @ torch.cholesky_solve(vec.unsqueeze(1), chol)[:, 0])
            jd = js @ step
            predicted = -float(2.0 * (vec @ jd) + jd @ jd)
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
        self._system = None
