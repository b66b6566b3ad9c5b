"""Cost of one Levenberg–Marquardt step: building J (structured) against solving, per network.

For each case: the time of `residuals_and_jacobian` (one jet pass + one backward per residual
group, forward-mode columns for rational denominators), of the damped solve (Gram matrix +
Cholesky), and, for the first network only, of J by `torch.func.jacrev` (one call). float64, 2
threads, elliptic, N = 1024 interior + 256 boundary points; median of 5 (after one warm-up).
The raw data (every case's times with the command, commit and machine) goes to --out; the
table of docs/benchmarks.md is the generated block `lm-step`, rebuilt from
docs/benchmarks/lm_step.json alone (scripts/docblocks.py).

    python scripts/bench_lm_step.py --out docs/benchmarks/lm_step.json
    python scripts/bench_lm_step.py --tables   # rewrite the block from the JSON
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import docblocks
import torch

from pinnkan.adapters import AdapterConfig, apply
from pinnkan.network.kan import KAN
from pinnkan.pde import build_pde
from pinnkan.pinn.jacobian import residuals_and_jacobian, trainable_parameters
from pinnkan.pinn.loss import PinnLoss
from pinnkan.train.levenberg_marquardt import LevenbergMarquardt, LMConfig

CASES = [  # the first is the default network; jacrev is timed on it alone
    ("chebyshev [20,20]", "chebyshev", [20, 20], None),
    ("chebyshev [20,20], LoTRA cr 0.5", "chebyshev", [20, 20], 0.5),
    ("chebyshev [20,20], LoTRA cr 0.25", "chebyshev", [20, 20], 0.25),
    ("chebyshev [40,40]", "chebyshev", [40, 40], None),
    ("chebyshev [40,40], LoTRA cr 0.25", "chebyshev", [40, 40], 0.25),
    ("bspline [16,16]", "bspline", [16, 16], None),
    ("bspline [16,16], LoTRA cr 0.5", "bspline", [16, 16], 0.5),
    ("rational [20,20] (denominators trained)", "rational", [20, 20], None),
    # the edge layers train in full (denominators too), the hidden layer's Tucker update not
    ("rational [20,20], LoTRA cr 0.5 (hidden denominators frozen)", "rational", [20, 20], 0.5),
]
RAW = docblocks.ROOT / "docs" / "benchmarks" / "lm_step.json"
PAGE = docblocks.ROOT / "docs" / "benchmarks.md"


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


def table(data: dict[str, Any]) -> str:
    """The block: the table and what it says, from the raw data alone."""
    prov = data["provenance"]
    lines = [
        f"Measured at commit {docblocks.owner('hard_benchmarks').commit_label(prov)} on "
        f"{prov['date'][:10]} "
        f"(torch {prov['torch']}, {data['threads']} threads, {prov['machine']['processor']}, "
        f"{prov['machine']['cpu_count']} cores):",
        "",
        "| network | P | N | build J s | solve s (form) | J by `torch.func.jacrev` s |",
        "|---|---|---|---|---|---|",
    ]
    cases = data["cases"]
    for c in cases:
        rev = "" if c["jacrev_s"] is None else f"{c['jacrev_s']:.2f} (one call)"
        lines.append(
            f"| {c['label']} | {c['P']} | {c['N']} | {c['build_s']:.3f} | "
            f"{c['solve_s']:.3f} ({c['form']}) | {rev} |"
        )
    first = cases[0]
    lora = [c for c in cases if c["label"].startswith(first["label"] + ", LoTRA")]
    lines.append("")
    if first["jacrev_s"] is not None:
        lines.append(
            f"- The structured Jacobian of {first['label']} is "
            f"{first['jacrev_s'] / first['build_s']:.0f}× faster than `jacrev`."
        )
    for c in lora:
        lines.append(
            f"- {c['label'].split(', ')[1]}: the solve is {first['solve_s'] / c['solve_s']:.1f}× "
            f"cheaper than the full network's, building J {first['build_s'] / c['build_s']:.1f}×."
        )
    return "\n".join(lines)


def block(name: str, doc: Path) -> str:
    """The page's block from the committed raw data (scripts/docblocks.py)."""
    return table(json.loads(RAW.read_text(encoding="utf-8")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write the raw data here (JSON)")
    ap.add_argument("--tables", action="store_true", help="rewrite docs/benchmarks.md's blocks")
    ap.add_argument("--check", action="store_true", help="exit 1 if the block differs")
    args = ap.parse_args()
    done = docblocks.table_mode(args.tables, args.check, PAGE, lambda: docblocks.regenerated(PAGE))
    if done is not None:
        return done
    torch.set_num_threads(2)
    cases = []
    for i, (label, kind, hidden, cr) in enumerate(CASES):
        p, n, t_build, t_solve, form, t_rev = measure(kind, hidden, cr, with_jacrev=i == 0)
        cases.append(
            {
                "label": label,
                "P": p,
                "N": n,
                "build_s": t_build,
                "solve_s": t_solve,
                "form": form,
                "jacrev_s": None if math.isnan(t_rev) else t_rev,
            }
        )
        print(cases[-1], flush=True)
    hb = docblocks.owner("hard_benchmarks")  # provenance
    data = {
        "command": "python scripts/bench_lm_step.py " + " ".join(sys.argv[1:]),
        "provenance": hb.provenance(threads=torch.get_num_threads()),
        "threads": torch.get_num_threads(),
        "cases": cases,
    }
    docblocks.write_raw(args.out, data)
    print(table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
