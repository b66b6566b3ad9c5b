"""Levenberg–Marquardt (damped Gauss–Newton) on a residual vector: loss = r·r.

One step solves (JᵀJ + λ D²) δ = −Jᵀr in the scaled variables δ̃ = D δ, J̃ = J D⁻¹:
by Cholesky of J̃ᵀJ̃ + λI (P × P, "primal") when P ≤ N, else in the kernel form
δ̃ = −J̃ᵀ (J̃J̃ᵀ + λI)⁻¹ r (N × N); both give the same step. The primal form needs only JᵀJ and
Jᵀr, which the loop accumulates over chunks of points (`pinnkan.pinn.jacobian.normal_equations`),
so N can grow far beyond what a whole J would fit in memory. D² is Marquardt's diag(JᵀJ), kept
as a running maximum (Moré), so parameters of very different scales (LoTRA's G and U's, a
network's layers) are damped alike. After an accepted step λ falls by Nielsen's gain-ratio
rule (`damping_rule=nielsen`, the default) or by a fixed factor (`divide`: ÷3, Transtrum and
Sethna's "delayed gratification"; docs/damping.md measures both); a step that does not lower
the loss is undone and retried with a larger λ (× ν, ν doubling on each rejection in a row)
from the same Gram matrix.

The damped Gram matrix is factored in place: its upper triangle is kept aside first, in strips
of rows (`_UpperStrips`, half a Gram matrix), and written back for a retry, so that a solve
holds 1.5 Gram matrices where a copy would hold two (three with torch's column-major copy of a
row-major input, which the factor avoids by working on the transposed view).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pinnkan.common.config_checks import as_choice, as_float, as_int
from pinnkan.train.gauss_newton import conjugate_gradient

SCALINGS = ("marquardt", "identity")
SOLVES = ("auto", "primal", "kernel", "cg")
SAMPLINGS = ("sobol", "rad")
DAMPING_RULES = ("divide", "nielsen")
STRIP = 256  # rows per strip of the kept upper triangle


@dataclass
class LMConfig:
    """Damping and solve options of `optim=lm` (conf/optim/lm.yaml)."""

    damping: float = 1e-3  # initial λ
    damping_max: float = 1e10  # λ above this: no step lowers the loss any more, stop
    # how λ falls after an accepted step: nielsen (λ × max(1/3, 1 − (2ρ − 1)³), hardly at all
    # while the gain ratio ρ is below about 0.8) | divide (λ ÷ damping_down, whatever ρ)
    damping_rule: str = "nielsen"
    damping_down: float = 3.0
    scaling: str = "marquardt"  # marquardt (D² = running max of diag JᵀJ) | identity
    solve: str = "auto"  # auto (primal when P <= N) | primal | kernel | cg (matrix-free)
    # cg: conjugate gradients on the damped system with J v / Jᵀu products
    # (pinnkan.train.gauss_newton): at most cg_iters iterations, to a residual cg_tol × ‖J̃ᵀr‖
    cg_iters: int = 100
    cg_tol: float = 1e-4
    resample_every: int = 10  # new collocation points every N accepted steps (0: fixed set)
    # interior points per chunk of J in the primal form (JᵀJ accumulated chunk by chunk);
    # 0: max(1024, P / 8): one chunk of J is an eighth of the Gram matrix, so that building
    # it (about 4 chunks) stays within half a Gram matrix beside the one accumulated
    chunk: int = 0
    # where new interior points go: sobol (uniform) | rad (residual-based: drawn from a Sobol
    # pool of rad_pool × n_interior with probability ∝ |r|^rad_k / mean |r|^rad_k + rad_c)
    sampling: str = "sobol"
    rad_k: float = 1.0
    rad_c: float = 1.0
    rad_pool: int = 4

    def validate(self) -> None:
        """Type and range of every field; one PinnkanError line naming the field."""
        self.damping = as_float(self.damping, "damping", 0.0, 1e30, lo_open=True)
        self.damping_max = as_float(self.damping_max, "damping_max", self.damping)
        self.damping_rule = as_choice(self.damping_rule, "damping_rule", DAMPING_RULES)
        self.damping_down = as_float(self.damping_down, "damping_down", 1.0, 1e6, lo_open=True)
        self.scaling = as_choice(self.scaling, "scaling", SCALINGS)
        self.solve = as_choice(self.solve, "solve", SOLVES)
        self.cg_iters = as_int(self.cg_iters, "cg_iters", 1)
        self.cg_tol = as_float(self.cg_tol, "cg_tol", 0.0, 1.0, lo_open=True)
        self.resample_every = as_int(self.resample_every, "resample_every", 0)
        self.chunk = as_int(self.chunk, "chunk", 0)
        self.sampling = as_choice(self.sampling, "sampling", SAMPLINGS)
        self.rad_k = as_float(self.rad_k, "rad_k", 0.0, 10.0)
        self.rad_c = as_float(self.rad_c, "rad_c", 0.0, 1e6)
        self.rad_pool = as_int(self.rad_pool, "rad_pool", 1, 1000)

    def chunk_rows(self, n_params: int) -> int:
        """Interior points per chunk of J (`chunk`, or its automatic size for P parameters)."""
        return self.chunk or max(1024, n_params // 8)


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


def _solve_factored(low: Tensor, b: Tensor) -> Tensor:
    """x (M,) with L Lᵀ x = b, L = `low` (M, M) lower triangular: two triangular solves, which
    read L where it lies (torch.cholesky_solve copies it first)."""
    y = torch.linalg.solve_triangular(low, b.unsqueeze(1), upper=False)
    return torch.linalg.solve_triangular(low.T, y, upper=True)[:, 0]


def upper_strips_numel(m: int) -> int:
    """Numbers in the strips of `_UpperStrips` for an (m, m) matrix: about m² / 2."""
    return sum(min(STRIP, m - i) * (m - i) for i in range(0, m, STRIP))


class _UpperStrips:
    """The upper triangle of a symmetric (M, M) matrix, kept as strips of `STRIP` rows from the
    diagonal on (views of one buffer of about M² / 2 numbers): written back over the matrix
    after an in-place factor, and its product with a vector without the matrix."""

    def __init__(self, a: Tensor) -> None:
        m = a.shape[0]
        buffer = torch.empty(upper_strips_numel(m), dtype=a.dtype, device=a.device)
        self.strips, offset = [], 0
        for i in range(0, m, STRIP):
            b, w = min(STRIP, m - i), m - i
            self.strips.append(buffer[offset : offset + b * w].view(b, w))
            self.strips[-1].copy_(a[i : i + b, i:])
            offset += b * w

    def restore(self, a: Tensor) -> None:
        """Both triangles of the matrix back into `a` (M, M)."""
        for k, strip in enumerate(self.strips):
            i, b = k * STRIP, strip.shape[0]
            a[i : i + b, i:].copy_(strip)
            a[i + b :, i : i + b].copy_(strip[:, b:].T)

    def matvec(self, x: Tensor) -> Tensor:
        """The matrix times x (M,)."""
        y = torch.zeros_like(x)
        for k, strip in enumerate(self.strips):
            i, b = k * STRIP, strip.shape[0]
            y[i : i + b] += strip @ x[i:]
            y[i + b :] += strip[:, b:].T @ x[i : i + b]
        return y


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
        # the Gram matrix's upper triangle while the matrix itself holds a factor
        self._upper: _UpperStrips | None = None
        # solve=cg: (JᵀJ) v as a function, g̃ = J̃ᵀr, D; and the CG iterations of the last solve
        self._products: tuple[Callable[[Tensor], Tensor], Tensor, Tensor] | None = None
        self.cg_iterations = 0

    def restart(self, rescale: bool = False) -> None:
        """Damping back to its initial value and no system: a new problem (time window);
        `rescale`: the scaling D too (new parameters, e.g. grown ranks)."""
        self.damping, self.nu = float(self.cfg.damping), 2.0
        self.forget_jacobian()
        if rescale:
            self.scale2 = None

    def forget_jacobian(self) -> None:
        """The next step needs a new system (after an accepted step or new points)."""
        self._system, self._upper, self._products = None, None, None

    @property
    def has_system(self) -> bool:
        return self._system is not None or self._products is not None

    def form(self, n_rows: int, n_params: int) -> str:
        """primal (P × P Gram), kernel (N × N) or cg (matrix-free), as `optim.solve` says
        (auto: the smaller Gram matrix)."""
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
        self._system, self._upper = ("primal", gram, grad / d, d, None), None

    def set_products(
        self, gram_times: Callable[[Tensor], Tensor], grad: Tensor, col2: Tensor
    ) -> None:
        """The matrix-free system (solve=cg): v ↦ (JᵀJ) v, Jᵀr and diag(JᵀJ) (for D)."""
        d = self._scale(col2)
        self._system, self._upper = None, None
        self._products = (gram_times, grad / d, d)

    def set_jacobian(self, r: Tensor, J: Tensor) -> None:
        """The system from r (N,) and J (N, P), in the form `form` picks."""
        if self.form(*J.shape) == "primal":
            self.set_normal(J.T @ J, J.T @ r)
            return
        d = self._scale(J.square().sum(0))
        js = J / d
        self._system, self._upper = ("kernel", js @ js.T, r, d, js), None

    def propose(
        self, r: Tensor | None = None, J: Tensor | None = None
    ) -> tuple[Tensor, float] | None:
        """(δ (P,), predicted loss reduction) at the current λ; None if the solve failed.
        r and J (given once after `forget_jacobian`) set the system, as `set_jacobian`."""
        if r is not None and J is not None and self._system is None:
            self.set_jacobian(r, J)
        if self._products is not None:
            return self._propose_cg()
        assert self._system is not None, "set_normal or set_jacobian first"
        form, gram, vec, d, js = self._system
        # the damped matrix is factored in place (a retry writes the Gram matrix back first);
        # gram.T is the column-major view LAPACK factors without a copy (gram is symmetric)
        if self._upper is None:
            self._upper = _UpperStrips(gram)
        else:
            self._upper.restore(gram)
        chol = gram.T
        chol.diagonal().add_(self.damping)
        info = torch.empty((), dtype=torch.int32, device=chol.device)
        torch.linalg.cholesky_ex(chol, out=(chol, info))
        if int(info) != 0:
            return None
        if js is None:  # primal: δ̃ = −(G̃ + λI)⁻¹ g̃; predicted −(2 g̃·δ̃ + δ̃ᵀ G̃ δ̃)
            step = -_solve_factored(chol, vec)
            predicted = -float(2.0 * (vec @ step) + step @ self._upper.matvec(step))
        else:  # kernel: δ̃ = −J̃ᵀ (J̃J̃ᵀ + λI)⁻¹ r; predicted −(2 r·J̃δ̃ + |J̃δ̃|²)
            step = -(js.T @ _solve_factored(chol, vec))
            jd = js @ step
            predicted = -float(2.0 * (vec @ jd) + jd @ jd)
        return step / d, predicted

    def _propose_cg(self) -> tuple[Tensor, float] | None:
        """The step by conjugate gradients on (G̃ + λI) δ̃ = −g̃, G̃ v = D⁻¹ JᵀJ D⁻¹ v; the
        prediction −(2 g̃·δ̃ + δ̃ᵀG̃δ̃) from the iteration's own A δ̃ (no extra product)."""
        assert self._products is not None
        gram_times, vec, d = self._products
        lam = self.damping

        def matvec(v: Tensor) -> Tensor:
            return gram_times(v / d) / d + lam * v

        cg = conjugate_gradient(matvec, -vec, self.cfg.cg_tol, self.cfg.cg_iters)
        self.cg_iterations = cg.iterations
        step = cg.x
        if not bool(torch.isfinite(step).all()):
            return None
        g_step = cg.ax - lam * step  # G̃ δ̃
        predicted = -float(2.0 * (vec @ step) + step @ g_step)
        return step / d, predicted

    def judge(self, predicted: float | None, actual: float) -> bool:
        """Update λ (`damping_rule`) from the actual and predicted reductions of the loss; True
        when the step is kept (it lowered the loss)."""
        if predicted is not None and predicted > 0 and actual > 0:  # NaN > 0 is False
            if self.cfg.damping_rule == "nielsen":
                rho = actual / predicted  # the gain ratio
                self.damping *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            else:
                self.damping /= self.cfg.damping_down
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
        self.forget_jacobian()
