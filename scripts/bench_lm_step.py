"""Cost of one Levenberg–Marquardt step: building J (structured) against solving, per network.

For each case: the time of `residuals_and_jacobian` (one jet pass + one backward per residual
group, forward-mode columns for rational denominators), of the damped solve (Gram matrix +
Cholesky), and, for the first network only, of J by `torch.func.jacrev` (one call). float64, 2
threads, elliptic, N = 1024 interior + 256 boundary points; median of 5 (after one warm-up).

    python scripts/bench_lm_step.py            # prints a Markdown table
"""

from __future__ import annotations

import functools
import statistics
import time

import torch

from pinnkan.adapters import AdapterConfig, apply
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.jacobian import residuals_and_jacobian, trainable_parameters
from pinnkan.pinn.loss import PinnLoss
from pinnkan.train.levenberg_marquardt import LevenbergMarquardt, LMConfig

CASES = [
    ("bspline [16,16]", "bspline", [16, 16], None),
    ("bspline [16,16], LoTRA cr 0.5", "bspline", [16, 16], 0.5),
    ("bspline [16,16], LoTRA cr 0.25", "bspline", [16, 16], 0.25),
    ("bspline [32,32]", "bspline", [32, 32], None),
    ("bspline [32,32], LoTRA cr 0.25", "bspline", [32, 32], 0.25),
    ("rational [16,16] (denominators trained)", "rational", [16, 16], None),
    ("rational [16,16], LoTRA cr 0.5 (denominators frozen)", "rational", [16, 16], 0.5),
]


def median_time(fn, repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def jacrev_time(model: KAN, loss: PinnLoss, batch: dict) -> float:
    params = trainable_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    model.forward_jet = functools.partial(KAN.forward_jet, model, fused=False)  # type: ignore

    def r_of(*values: torch.Tensor) -> torch.Tensor:
        with torch.nn.utils.stateless._reparametrize_module(model, dict(zip(keys, values))):
            return loss.residual_vector(model, batch)

    jac = torch.func.jacrev(r_of, argnums=tuple(range(len(params))))
    try:
        t0 = time.perf_counter()  # one call: it takes about a minute
        jac(*[p.detach() for p in params])
        return time.perf_counter() - t0
    finally:
        del model.forward_jet


def measure(
    kind: str, hidden: list[int], cr: float | None, with_jacrev: bool
) -> tuple[int, int, float, float, str, float]:
    """(P, N, build J s, solve s, solve form, jacrev s) of one network."""
    pde = build_pde("elliptic", {"mu": 1.0}, {"boundary": 10.0})
    gen = torch.Generator().manual_seed(0)
    model = KAN([2, *hidden, 1], list(pde.domain), kind=kind, dtype=torch.float64, generator=gen)
    loss = PinnLoss(pde)
    batch = loss.sample(1024, 256, gen, torch.float64, torch.device("cpu"), quasi=True)
    if cr is not None:
        apply(model, AdapterConfig(name="lotra", cr=cr), gen, lambda m: loss(m, batch))
    r, J = residuals_and_jacobian(loss, model, batch)
    t_build = median_time(lambda: residuals_and_jacobian(loss, model, batch))
    lm = LevenbergMarquardt(LMConfig())

    def solve() -> None:
        lm.forget_jacobian()
        lm.propose(r, J)

    t_solve = median_time(solve)
    form = "primal" if J.shape[1] <= J.shape[0] else "kernel"
    t_rev = jacrev_time(model, loss, batch) if with_jacrev else float("nan")
    return J.shape[1], J.shape[0], t_build, t_solve, form, t_rev


def main() -> None:
    torch.set_num_threads(2)
    print("| network | P | N | build J s | solve s (form) | jacrev s |")
    print("|---|---|---|---|---|---|")
    for i, (label, kind, hidden, cr) in enumerate(CASES):
        p, n, t_build, t_solve, form, t_rev = measure(kind, hidden, cr, with_jacrev=i == 0)
        print(
            f"| {label} | {p} | {n} | {t_build:.3f} | {t_solve:.3f} ({form}) | {t_rev:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
