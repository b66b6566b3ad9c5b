"""Peak memory of one training step estimated from the config (`estimate_step`), the memory
left to use (`available_bytes`), and the one-line refusal of a step that cannot fit
(`check_fits`). Sizes print in decimal units (1 MB = 10^6 bytes); docs/memory.md.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from pinnkan.errors import PinnkanError
from pinnkan.layers.jet import Jet
from pinnkan.train.gauss_newton import CG_ROWS, DIAG_ENTRIES
from pinnkan.train.levenberg_marquardt import upper_strips_numel
from pinnkan.train.optimizers import get_optimizer

if TYPE_CHECKING:
    from pinnkan.network.kan import KAN
    from pinnkan.pde import PDEFamily
    from pinnkan.train.config import TrainConfig

# Bytes of the jet pass with its backward (saved tensors, gradients) per byte of the layers'
# jet-feature blocks (C, B, n_in, n_d), (forward, autograd) engine, measured by
# scripts/memory_estimate.py with margin. lmkan counts its 16 gathered cells per pair, not n_d.
ACTIVATIONS = {
    "bspline": (2.7, 3.2),
    "rational": (5.8, 8.0),
    "chebyshev": (4.7, 3.6),
    "mlp": (4.9, 3.4),
    "lmkan": (2.2, 3.5),
}
MMAP_THRESHOLD = 32 * 2**20  # glibc (pinnkan.common.malloc) maps larger blocks, unmapped when freed
HEAP_SLACK = 1.0  # smaller freed blocks stay in the heap, fragmented: up to twice the live
LBFGS_EVALS = 1.3  # the line search evaluates the loss several times a step: more fragments
OVERHEAD = 16 * 10**6  # small temporaries, points, evaluation


@dataclass
class MemoryEstimate:
    """Peak bytes of one step above what the process holds, its terms, and the sizes."""

    total: int
    parts: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def describe(self, n_parts: int = 3, total: bool = True) -> str:
        """One line: N x P, the largest parts (and the total)."""
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:n_parts]
        terms = ", ".join(f"{k} {human_bytes(v)}" for k, v in top if v > 0)
        line = f"N={self.sizes.get('N', 0)} residuals x P={self.sizes.get('P', 0)} parameters: "
        return line + terms + (f"; about {human_bytes(self.total)} per step" if total else "")


def human_bytes(n: float) -> str:
    """Decimal units: 1 kB = 1000 bytes, 1 MB = 10^6, 1 GB = 10^9, 1 TB = 10^12."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _groups(pde: PDEFamily, n_interior: int, n_boundary: int, dtype: torch.dtype) -> list[tuple]:
    """(points, residual rows, jet components) of the interior and of every condition, from
    the PDE's own samplers and residuals on a zero jet (at most 2^16 points, then scaled)."""
    gen, comps, cap = torch.Generator().manual_seed(0), 1 + 2 * pde.dim, 1 << 16

    def count(sample, residual, n: int, c: int) -> tuple[int, int, int]:
        x = sample(min(n, cap), gen, dtype)
        z, dz = x.new_zeros(x.shape[0], 1), x.new_zeros(x.shape[1], x.shape[0], 1)
        rows, scale = residual(x, Jet(z, dz, dz)).numel(), n / min(n, cap)
        return math.ceil(x.shape[0] * scale), math.ceil(rows * scale), c

    out = [count(pde.sample_interior, pde.residual, n_interior, comps)]
    for cond in pde.conditions():
        out.append(count(cond.sample, cond.residual, n_boundary, comps if cond.derivatives else 1))
    return out


class _Moment(dict):
    """name -> [bytes in heap-sized blocks, bytes in mapped blocks] at one moment of a step."""

    def add(self, name: str, size: float, count: float = 1, heap: bool = False) -> None:
        entry = self.setdefault(name, [0, 0])
        entry[0 if heap or size < MMAP_THRESHOLD else 1] += int(size * count)


def estimate_step(model: KAN, pde: PDEFamily, cfg: TrainConfig) -> MemoryEstimate:
    """Peak bytes of one step of `cfg` on `model` (trainable: requires_grad) for `pde`.

    The big tensors of each moment of the step (docs/memory.md lists them); the total is the
    most bytes in mapped blocks of any moment plus (1 + HEAP_SLACK) x the heap-sized blocks
    of all moments, which the allocator keeps once freed.
    """
    e, lm = model.lo.element_size(), get_optimizer(cfg.optimizer).gauss_newton
    params = [p for p in model.parameters() if p.requires_grad]
    P = sum(p.numel() for p in params)
    structured = set()
    for layer in model.layers:
        structured |= {id(layer.A), id(getattr(layer, "bias", None))}
        structured |= {id(p) for p in (layer.adapter.parameters() if layer.adapter else ())}
    fwd_mode = [p.numel() for p in params if id(p) not in structured]
    fwd, agr = ACTIVATIONS.get(model.kind, (max(map(max, ACTIVATIONS.values())),) * 2)
    act = agr if cfg.derivatives == "autograd" else fwd

    def blocks(n_int: int, n_bnd: int) -> tuple[list, list]:
        """The groups, and per group and layer the elements of its feature block."""
        groups, out = _groups(pde, n_int, n_bnd, model.lo.dtype), []
        for b, _, c in groups:
            for layer in model.layers:
                k, n_out, n_d = layer.A.shape
                lookup = hasattr(layer, "n_pairs") and not lm  # lmkan: 16 cells per pair
                out.append(c * b * k * 16 + b * k * 16 * n_out if lookup else c * b * k * n_d)
        return groups, out

    groups, feats = blocks(cfg.n_interior, cfg.n_boundary)
    N = sum(r for _, r, _ in groups)
    sizes = {"N": N, "P": P, "points": sum(b for b, _, _ in groups), "C": 1 + 2 * pde.dim}
    cg = lm and cfg.lm.solve == "cg"
    primal = lm and (cfg.lm.solve == "primal" or (cfg.lm.solve == "auto" and P <= N))
    if primal or cg:  # J (products) in chunks of `rows` interior points, conditions with the first
        rows = min(cfg.lm.chunk or CG_ROWS if cg else cfg.lm.chunk_rows(P), cfg.n_interior)
        groups, feats = blocks(rows, cfg.n_boundary)
        sizes["chunk"] = sum(r for _, r, _ in groups)
    sizes |= {"feature elements": sum(feats), "largest block": max(feats)}
    jet = _Moment()
    # the point sets themselves: LM holds its batch and a held-out set (and a pool of
    # rad_pool x n_interior candidates when it resamples by the residual); Adam one batch
    sets = (2 + (cfg.lm.rad_pool if cfg.lm.sampling == "rad" else 0)) if lm else 1
    jet.add("collocation points", sizes["points"] * pde.dim * e, sets)
    for f in feats:  # LM builds J from its own jet pass, whatever the engine
        jet.add("jet pass" if lm else "activations", f * e, fwd if lm else act, heap=True)
    moments = [jet]
    if cg:  # matrix-free (pinnkan.train.gauss_newton): no Gram matrix
        # diag(JᵀJ) from J a few interior points at a time, the conditions with the first
        rows_d = min(max(1, DIAG_ENTRIES // max(P, 1)), cfg.n_interior)
        groups_d, feats_d = blocks(rows_d, cfg.n_boundary)
        rows_j = sum(r for _, r, _ in groups_d)
        build = _Moment()
        for f in feats_d:
            build.add("jet features", f * e)
        for p in params:
            for b in [b for b, _, _ in groups_d] + [rows_j]:
                build.add("Jacobian blocks", b * p.numel() * e)
        build.add("Jacobian", rows_j * P * e)
        products = _Moment()  # one chunk's graph at a time (feats: a chunk's)
        for f in feats:
            products.add("chunk graph", f * e, agr, heap=True)
        products.add("CG vectors", P * e, 8)
        moments += [build, products]
    elif lm:
        rows_j = sizes.get("chunk", N)  # rows of J held at once
        jac = rows_j * P * e
        g = P if primal else N
        sizes["Gram"] = g
        build = _Moment()  # the end of residuals_and_jacobian (one chunk of it)
        for f in feats:
            build.add("jet features", f * e)
        for p in params:
            for b in [b for b, _, _ in groups] + [rows_j]:  # per-group blocks, then the columns
                build.add("Jacobian blocks", b * p.numel() * e)
        build.add("Jacobian", jac)
        solve = _Moment()
        # the solve: the damped Gram matrix factored in place, its upper triangle kept beside
        # it in strips of STRIP rows (about half a Gram matrix)
        solve.add("Gram + Cholesky", g * g * e)
        solve.add("Gram + Cholesky", upper_strips_numel(g) * e)
        if primal:  # JᵀJ accumulates beside each chunk
            build.add("Gram + Cholesky", g * g * e)
        else:  # J, J/D, J̃J̃ᵀ, then J/D beside the solve
            solve.add("Jacobian", jac if jac >= MMAP_THRESHOLD else 0)  # else counted above
            solve.add("scaled Jacobian", jac)
        moments += [build, solve]
        if fwd_mode:  # jacfwd: numel(p) tangents through an autograd-recorded jet pass
            moments.append(_Moment())
            moments[-1].add("forward-mode pass", sum(feats) * e, act * (1 + max(fwd_mode)), True)
    else:
        jet.add("optimizer state", P * e, get_optimizer(cfg.optimizer).state_per_param)
        if cfg.lbfgs_steps:
            moments.append(_Moment())
            for f in blocks(4 * cfg.n_interior, 4 * cfg.n_boundary)[1]:
                moments[-1].add("L-BFGS activations", f * e, act * LBFGS_EVALS, heap=True)
            moments[-1].add("L-BFGS history", P * e, 2 * 50 + 4)
    mapped = max(moments, key=lambda m: sum(v[1] for v in m.values()))
    parts = {k: v[1] for k, v in mapped.items() if v[1]}
    for k, v in [kv for m in moments for kv in m.items()]:
        parts[k] = parts.get(k, 0) + v[0]
    heap = sum(v[0] for m in moments for v in m.values())
    parts = {k: v for k, v in parts.items() if v}
    parts["allocator"] = int(HEAP_SLACK * heap) + OVERHEAD
    return MemoryEstimate(sum(parts.values()), parts, sizes)


def _read(path: str, key: str | None = None) -> int | None:
    """An integer file (cgroup; "max": None), or field `key` (kB) of a /proc file in bytes."""
    try:
        with open(path) as fh:
            if key is None:
                text = fh.read().strip()
                return int(text) if text.isdigit() else None
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> list[int]:
    """limit - usage of this process' memory cgroup and its ancestors (v2 and v1)."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = [ln.strip().split(":", 2) for ln in fh if ln.count(":") >= 2]
    except OSError:
        return []
    out = []
    for _, ctrl, path in lines:
        v1 = "memory" in ctrl.split(",")
        if ctrl and not v1:
            continue
        root = "/sys/fs/cgroup/memory" if v1 else "/sys/fs/cgroup"
        files = ("limit_in_bytes", "usage_in_bytes") if v1 else ("max", "current")
        parts = [p for p in path.split("/") if p and p != ".."]
        for depth in range(len(parts) + 1):
            base = os.path.join(root, *parts[:depth])
            limit, used = (_read(f"{base}/memory.{f}") for f in files)
            if limit is not None and used is not None and limit < 1 << 60:  # v1 "none": ~2^63
                out.append(max(limit - used, 0))
    return out


def available_bytes(device: torch.device) -> int | None:
    """Memory this process can still allocate on `device`; None where nothing is known.

    CPU: the least of MemAvailable, the room in the memory cgroup (and ancestors) and under
    the address-space and data rlimits (soft limit - VmSize / VmData). CUDA: free device
    memory plus what torch's caching allocator holds reserved but unused."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    room = [_read("/proc/meminfo", "MemAvailable"), *_cgroup_room()]
    for limit, key in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, used = resource.getrlimit(limit)[0], _read("/proc/self/status", key)
        if soft != resource.RLIM_INFINITY and used is not None:
            room.append(max(soft - used, 0))
    known = [r for r in room if r is not None]
    return min(known) if known else None


def _hint(est: MemoryEstimate) -> str:
    """What shrinks the largest part of the estimate."""
    named = {k: v for k, v in est.parts.items() if k != "allocator"}
    top, pts = max(named, key=lambda k: named[k], default=""), "train.n_interior / train.n_boundary"
    n, p, g = est.sizes["N"], est.sizes["P"], est.sizes.get("Gram")
    if top == "Gram + Cholesky":
        if g != min(n, p):
            return "set optim.solve=auto (the smaller of the P x P and N x N Gram matrices)"
        return f"lower {'model.hidden' if g == p else pts} (the {g} x {g} Gram), or use optim=adam"
    if top in ("Jacobian", "scaled Jacobian", "Jacobian blocks"):
        return f"lower {pts} (N) or model.hidden (P), or use optim=adam"
    return {
        "forward-mode pass": f"lower {pts} or model.groups (a jet pass per denominator entry)",
        "L-BFGS activations": f"lower {pts} (L-BFGS takes 4x the points) or optim.lbfgs_steps",
    }.get(top, f"lower {pts} or model.hidden")


def check_fits(
    estimate: MemoryEstimate, device: torch.device, available: int | None = None
) -> None:
    """Raise a one-line PinnkanError when `estimate` exceeds the memory available on `device`
    (`available_bytes` unless given); pass when it fits or nothing is known."""
    available = available_bytes(device) if available is None else available
    if available is None or estimate.total <= available:
        return
    need = f"{human_bytes(estimate.total)} ({estimate.describe(total=False)})"
    raise PinnkanError(
        f"a training step needs about {need} "
        f"but only {human_bytes(available)} is available on {device}; {_hint(estimate)} "
        "(train.check_memory=false skips this check)"
    )
