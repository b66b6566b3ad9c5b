"""LoTRA: the Tucker-form update ΔA = G ×1 U1 ×2 U2 ×3 U3 of one KAN layer's tensor A.

ΔA[i,j,k] = Σ_{a,b,c} G[a,b,c] U1[i,a] U2[j,b] U3[k,c];  G (r1,r2,r3), U1 (n_in,r1),
U2 (n_out,r2), U3 (n_d,r3). Ranks come from a compression ratio cr or are given explicitly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from pinnkan.errors import PinnkanError

# the Tucker update's tensors: core G and the factors of modes 1, 2, 3 (in / out / basis)
FACTORS = ("G", "U1", "U2", "U3")

INITS = ("grad", "random", "hosvd")


def check_cr(cr: Any) -> float:
    """The one range check of a compression ratio: a number in (0, 1]; returns it as float."""
    if not isinstance(cr, int | float) or isinstance(cr, bool):
        raise PinnkanError(f"cr={cr!r} is not a number; pass a compression ratio like cr=0.25")
    if not 0.0 < float(cr) <= 1.0:
        raise PinnkanError(f"cr={cr!r} is outside (0, 1]; pass a compression ratio like cr=0.25")
    return float(cr)


def ranks_from_cr(shape: tuple[int, int, int], cr: float) -> tuple[int, int, int]:
    """r_m = max(1, ceil(cr · dim_m)) for each mode, cr in (0, 1]."""
    check_cr(cr)
    # round before ceil so that e.g. 0.1 * 30 = 3.0000000000000004 gives 3, not 4
    return tuple(max(1, math.ceil(round(cr * d, 9))) for d in shape)  # type: ignore[return-value]


def tucker_param_count(shape: tuple[int, int, int], ranks: tuple[int, int, int]) -> int:
    """r1·r2·r3 + n_in·r1 + n_out·r2 + n_d·r3 (METHOD.md §2)."""
    (n1, n2, n3), (r1, r2, r3) = shape, ranks
    return r1 * r2 * r3 + n1 * r1 + n2 * r2 + n3 * r3


def tucker_product(G: Tensor, U1: Tensor, U2: Tensor, U3: Tensor) -> Tensor:
    """G ×1 U1 ×2 U2 ×3 U3, shape (n_in, n_out, n_d)."""
    return torch.einsum("abc,ia,jb,kc->ijk", G, U1, U2, U3)


def unfold(t: Tensor, mode: int) -> Tensor:
    """Mode-m unfolding of a 3-way tensor: (dim_m, product of the other dims)."""
    return t.movedim(mode, 0).reshape(t.shape[mode], -1)


def leading_subspace(t: Tensor, mode: int, rank: int) -> Tensor:
    """Top-`rank` left singular vectors of the mode unfolding, (dim_m, rank).

    Columns past the unfolding's own rank are filled with orthonormal completions from the SVD,
    so the result always has `rank` orthonormal columns (rank <= dim_m).
    """
    u, _, _ = torch.linalg.svd(unfold(t, mode), full_matrices=True)
    return u[:, :rank]


class TuckerUpdate(nn.Module):
    """Trainable Tucker factors of one layer; `delta()` gives ΔA (n_in, n_out, n_d)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        ranks: tuple[int, int, int],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        for m, (r, d) in enumerate(zip(ranks, shape), start=1):
            if not 1 <= r <= d:
                raise PinnkanError(f"rank r{m}={r} must be between 1 and the mode size {d}")
        self.shape, self.ranks = tuple(shape), tuple(ranks)
        kw = {"dtype": dtype, "device": device}
        self.G = nn.Parameter(torch.zeros(*ranks, **kw))
        self.U1 = nn.Parameter(torch.zeros(shape[0], ranks[0], **kw))
        self.U2 = nn.Parameter(torch.zeros(shape[1], ranks[1], **kw))
        self.U3 = nn.Parameter(torch.zeros(shape[2], ranks[2], **kw))

    def delta(self) -> Tensor:
        return tucker_product(self.G, self.U1, self.U2, self.U3)

    @torch.no_grad()
    def initialise(
        self, method: str, generator: torch.Generator, grad: Tensor | None = None
    ) -> None:
        """G = 0; U1, U3 Gaussian / √dim; U2 from the gradient (`grad`), Gaussian (`random`),
        or all three factors from the gradient's HOSVD (`hosvd`)."""
        if method not in INITS:
            raise PinnkanError(f"unknown LoTRA init {method!r}; choose one of: {', '.join(INITS)}")
        if method != "random" and grad is None:
            raise ValueError(f"init {method!r} needs the loss gradient w.r.t. A")
        self.G.zero_()
        for m, u in enumerate((self.U1, self.U2, self.U3)):
            if method == "hosvd" or (method == "grad" and m == 1):
                u.copy_(leading_subspace(grad.to(u.dtype), m, u.shape[1]))  # type: ignore[union-attr]
            else:
                g = torch.randn(u.shape, generator=generator, dtype=u.dtype)
                u.copy_(g / math.sqrt(u.shape[0]))

    @torch.no_grad()
    def initialise_like(self, factor: Tensor, generator: torch.Generator) -> None:
        """Slim KAN's start: ΔA with the statistics of a fresh layer whose init draws
        A[i, j, :] = L z, z ~ N(0, I_q) iid over (i, j), L = `factor` (n_d, q).

        U1, U2 random orthonormal columns, U3 = L R with R a random orthonormal frame (q, r3)
        scaled so that E[R Rᵀ] = I_q, and G ~ N(0, n_in n_out / (r1 r2)): then
        E[ΔA[i, j, :] ΔA[i', j', :]ᵀ] = δ_ii' δ_jj' L Lᵀ, the kind's own covariance (per-slot
        variances and cross-slot structure). Orthonormal rather than Gaussian factors keep ΔA
        close to Gaussian given G: a product of four Gaussians is heavy-tailed, and most draws
        would then start far smaller than a fresh layer.
        """
        (n1, n2, n3), (r1, r2, r3) = self.shape, self.ranks
        if factor.ndim != 2 or factor.shape[0] != n3:
            raise ValueError(f"init factor must be ({n3}, q), got {tuple(factor.shape)}")
        q = factor.shape[1]
        u1, u2 = _orthonormal(n1, r1, generator), _orthonormal(n2, r2, generator)
        r = _orthonormal(q, r3, generator) * math.sqrt(max(1.0, q / r3))
        g = torch.randn(r1, r2, r3, generator=generator, dtype=torch.float64)
        g *= math.sqrt(n1 * n2 / (r1 * r2))
        for p, v in ((self.U1, u1), (self.U2, u2), (self.U3, factor.double() @ r), (self.G, g)):
            p.copy_(v.to(p.dtype))


def _orthonormal(rows: int, cols: int, generator: torch.Generator) -> Tensor:
    """A random (rows, cols) float64 frame: orthonormal columns when cols <= rows, else
    orthonormal rows (Q of a Gaussian matrix's QR, signs fixed by R's diagonal)."""
    g = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)
    return q if cols <= rows else q.T
