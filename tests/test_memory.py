"""pinnkan.train.memory: the step estimate scales with the sizes, bounds the measured peak of a real
step from above (not by much), and the available-memory probe and the refusal behave."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pinnkan.adapters import AdapterConfig, apply
from pinnkan.errors import PinnkanError
from pinnkan.network.kan import KAN
from pinnkan.pde import PDEFamily
from pinnkan.pinn.jacobian import trainable_parameters
from pinnkan.run import setup as stage_setup
from pinnkan.run.config import RunConfig, set_dotted
from pinnkan.train.config import TrainConfig
from pinnkan.train.memory import MemoryEstimate, available_bytes, check_fits, estimate_step

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "memory_estimate.py"
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def config(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "seed": 0,
        "precision": "float64",
        "device": "cpu",
        "pde": {"name": "elliptic", "source": {"mu": 1.0}, "weights": {}},
        "model": {"name": "bspline", "hidden": [16, 16]},
        "optim": {"name": "lm"},
        "train": {"steps": 1, "n_interior": 1600, "n_boundary": 400, "progress": "none"},
        "eval": {"n": 5},
    }
    for path, value in (changes or {}).items():
        set_dotted(cfg, path, value)
    return cfg


def build(changes: dict[str, Any] | None = None) -> tuple[KAN, PDEFamily, TrainConfig]:
    cfg = RunConfig.from_dict(config(changes))
    setup = stage_setup.resolve_setup(cfg)
    pde = stage_setup.pde_from_config(cfg, "source")
    model = stage_setup.build_model(cfg, pde, setup, torch.Generator().manual_seed(0))
    return model, pde, setup.train


def estimate(
    changes: dict[str, Any] | None = None, freeze: tuple[str, ...] = ()
) -> tuple[MemoryEstimate, KAN]:
    model, pde, train = build(changes)
    for name, p in model.named_parameters():
        if name in freeze:
            p.requires_grad_(False)
    return estimate_step(model, pde, train), model


def test_residual_rows_follow_the_pde_samplers() -> None:
    est, _ = estimate({"train.n_interior": 1000, "train.n_boundary": 102})
    assert est.sizes["N"] == 1000 + 4 * (102 // 4)  # elliptic: 4 faces, n // 4 points each
    changes = {"pde.name": "advection", "pde.source": {}, "train.n_boundary": 101}
    est, _ = estimate({**changes, "train.n_interior": 1000})
    # periodic pairs: 2 * 50 points, 50 rows; initial condition: 101 points and rows
    assert est.sizes["N"] == 1000 + 50 + 101
    assert est.sizes["points"] == 1000 + 100 + 101


def test_jacobian_part_scales_with_points_and_counts_trainable_parameters() -> None:
    kernel = {"optim.solve": "kernel"}  # the whole J at once
    small, model = estimate({"train.n_interior": 2000, "train.n_boundary": 400, **kernel})
    big, _ = estimate({"train.n_interior": 4000, "train.n_boundary": 800, **kernel})
    P = sum(p.numel() for p in trainable_parameters(model))
    assert small.sizes["P"] == P
    assert small.parts["Jacobian"] == small.sizes["N"] * P * 8  # float64
    assert big.parts["Jacobian"] == pytest.approx(2 * small.parts["Jacobian"], rel=0.01)
    assert big.total > 1.5 * small.total
    frozen, _ = estimate(
        {"train.n_interior": 2000, "train.n_boundary": 400, **kernel}, ("layers.1.A",)
    )
    assert frozen.sizes["P"] == P - model.layers[1].A.numel()
    assert frozen.parts["Jacobian"] < small.parts["Jacobian"]
    # Adam holds no Jacobian; float32 needs less
    adam, _ = estimate({"optim.name": "adam"})
    assert "Jacobian" not in adam.parts and adam.total < small.total
    f32, _ = estimate({"optim.name": "adam", "precision": "float32"})
    assert f32.total < adam.total


def test_lotra_adapters_count_only_their_trainable_factors() -> None:
    model, pde, train = build()
    full = estimate_step(model, pde, train)
    apply(model, AdapterConfig(name="lotra", cr=0.5, init="random"), torch.Generator())
    est = estimate_step(model, pde, train)
    assert est.sizes["P"] == sum(p.numel() for p in trainable_parameters(model))
    assert 0 < est.sizes["P"] < full.sizes["P"]
    assert est.parts["Jacobian"] < full.parts["Jacobian"]


def test_a_jacobian_that_cannot_fit_is_never_underestimated() -> None:
    # 10^6 points x ~10^4 parameters: J alone is 80 GB; assembling it holds three copies
    changes = {"train.n_interior": 10**6, "model.hidden": [32, 32], "optim.solve": "kernel"}
    est, _ = estimate(changes)
    jac = est.sizes["N"] * est.sizes["P"] * 8
    assert jac > 8e10 and est.total >= 3 * jac
    assert "N=1000400 residuals x P=10080 parameters" in est.describe()


def test_the_primal_form_holds_one_chunk_of_j_beside_the_gram_matrix() -> None:
    """N = 10^6 points in the primal form: J is built chunk by chunk (P / 8 rows each), so the
    step needs 1.5 Gram matrices (it, factored in place, and its upper triangle) or one Gram
    matrix beside the building of a chunk, whatever N is."""
    big, _ = estimate({"train.n_interior": 10**6, "model.hidden": [32, 32]})
    small, _ = estimate({"train.n_interior": 20_000, "model.hidden": [32, 32]})
    P = big.sizes["P"]
    gram, chunk = P * P * 8, big.sizes["chunk"] * P * 8
    assert big.sizes["chunk"] == P // 8 + 400  # the interior's share plus the conditions
    assert 1.5 * gram <= big.total <= 1.5 * gram + 4 * chunk + 200e6
    points = big.parts["collocation points"]  # the batch and the held-out set, 2-D, float64
    assert points == 2 * big.sizes["points"] * 2 * 8
    # the points are the only part that grows with N (heap-sized ones count with slack)
    assert 0 < big.total - small.total <= 2 * points
    fixed, _ = estimate({"train.n_interior": 10**6, "model.hidden": [32, 32], "optim.chunk": 64})
    assert fixed.sizes["chunk"] == 64 + 400 and fixed.total < big.total


def measured(changes: dict[str, Any]) -> dict[str, Any]:
    """Estimate and measured peak of one training step, in a fresh interpreter."""
    arg = json.dumps({"cfg": config(changes), "freeze": [], "threads": 2})
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--child", arg],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@linux
@pytest.mark.parametrize(
    "changes",
    [
        {},  # LM, forward engine: N = 2000, P = 2736
        {"optim.name": "adam", "model.hidden": [32, 32]},
        {"optim.name": "adam", "model.hidden": [32, 32], "train.derivatives": "autograd"},
    ],
    ids=["lm", "adam-forward", "adam-autograd"],
)
def test_estimate_bounds_the_measured_peak(changes: dict[str, Any]) -> None:
    res = measured(changes)
    est, got = res["estimate"], res["measured"]
    assert got > 30e6, res  # the step itself, not noise
    assert got <= 1.1 * est, res
    assert est <= 4 * got, res


@linux
def test_available_memory_on_cpu() -> None:
    avail = available_bytes(torch.device("cpu"))
    with open("/proc/meminfo") as fh:
        total = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("MemTotal:"))
    assert avail is not None and 0 < avail <= total


@linux
def test_available_memory_respects_the_address_space_limit() -> None:
    code = (
        "import resource, torch\n"
        "from pinnkan.train.memory import available_bytes, _read\n"
        "size = _read('/proc/self/status', 'VmSize')\n"
        "limit = size + 300 * 2**20\n"
        "hard = resource.getrlimit(resource.RLIMIT_AS)[1]\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limit, hard))\n"
        "print(available_bytes(torch.device('cpu')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert 0 < int(proc.stdout.strip()) <= 300 * 2**20


def test_check_fits_refuses_with_one_line_naming_the_sizes() -> None:
    est, _ = estimate({"train.n_interior": 10**6, "model.hidden": [32, 32]})
    with pytest.raises(PinnkanError) as info:
        check_fits(est, torch.device("cpu"), available=10**9)
    msg = str(info.value)
    assert "\n" not in msg
    assert "N=1000400" in msg and "P=10080" in msg and "Gram + Cholesky" in msg
    assert "1 GB is available on cpu" in msg and "train.check_memory=false" in msg
    # the primal form's memory hardly grows with N: the advice is the Gram matrix's side
    assert "model.hidden (the 10080 x 10080 Gram)" in msg and "optim=adam" in msg
    check_fits(est, torch.device("cpu"), available=est.total)  # fits exactly: passes
    check_fits(MemoryEstimate(10**6, {"activations": 10**6}, {"N": 1, "P": 1}), "cpu")


def test_check_fits_names_the_gram_side() -> None:
    est, _ = estimate({"optim.solve": "kernel", "train.n_interior": 10**5, "model.hidden": [4]})
    assert est.sizes["Gram"] == est.sizes["N"]
    with pytest.raises(PinnkanError, match="optim.solve=auto"):
        check_fits(est, torch.device("cpu"), available=10**9)
