"""Where a transfer starts (`transfer.start`, pinnkan.run.continuation): the nearest solved member
of a sweep, chosen deterministically, optionally along the secant; the chain recorded, a member
reproducible alone, and its files still an update of the source."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from pinnkan.adapters import AdapterConfig, apply, load_adapter
from pinnkan.adapters.files import read_adapter
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import MODEL_FILE
from pinnkan.io.results import read_results
from pinnkan.network.kan import KAN
from pinnkan.run import continuation, runner
from pinnkan.run.continuation import Member, nearest
from pinnkan.run.merge import model_from_file
from pinnkan.train.levenberg_marquardt import LMConfig
from pinnkan.train.lm_loop import TRANSFER_DAMPING
from pinnkan.train.options import TransferOptions
from tests.conftest import tiny_config

F64 = torch.float64


def _cfg(root: Path, **changes) -> dict:
    cfg = tiny_config(root, {"optim": {"name": "lm"}, "train.steps": 4, "train.tol": 0.0})
    cfg["precision"] = "float64"
    for key, value in changes.items():
        parts = key.split(".")
        node = cfg
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return cfg


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A source and a three-job sweep over μ with transfer.start=nearest (jobs in order, as
    the basic launcher runs them); job 2 also with the secant predictor."""
    root = tmp_path_factory.mktemp("continuation")
    source = root / "source"
    runner.pretrain(_cfg(root, **{"train.steps": 6}), source)
    sweep_dir = root / "multirun"
    jobs = []
    for num, mu in enumerate((1.1, 1.2, 1.3)):
        job = sweep_dir / f"{num}_pde.target.mu-{mu}"
        cfg = _cfg(root, source=str(source), **{"pde.target.mu": mu, "transfer.start": "nearest"})
        runner.transfer(cfg, job)
        jobs.append(job)
    secant = sweep_dir / "3_pde.target.mu-1.3+secant"
    cfg = _cfg(
        root,
        source=str(source),
        **{"pde.target.mu": 1.3, "transfer.start": "nearest", "transfer.predictor": "secant"},
    )
    runner.transfer(cfg, secant)
    return {"root": root, "source": source, "jobs": jobs, "secant": secant}


def _start(run: Path) -> dict:
    return json.loads(read_results(run / "results.h5")["attrs"]["start"])


def test_each_member_starts_from_the_nearest_earlier_one(sweep: dict) -> None:
    jobs = sweep["jobs"]
    assert _start(jobs[0]) == {"start": "nearest", "start_from": None}  # the source
    assert _start(jobs[1])["start_from"] == str(jobs[0])
    assert _start(jobs[2])["start_from"] == str(jobs[1])
    # the secant member: through the two nearest (1.2 then 1.1); 1.3 = 1.2 + 1·(1.2 − 1.1)
    record = _start(sweep["secant"])
    assert record["start_from"] == str(jobs[2])  # μ 1.3 itself is nearest (distance 0)


def test_the_initial_damping_follows_the_start(sweep: dict) -> None:
    """Every LoTRA member starts at a trained network's function, the source's (job 0, its
    update at zero, the edge layers at the source's) or a neighbour's: LM begins at the
    transfer's λ, not the pretrain's (docs/family_benchmark.md)."""

    def damping(run: Path) -> float:
        return float(read_results(run / "results.h5")["attrs"]["damping"])

    assert damping(sweep["jobs"][0]) == TRANSFER_DAMPING
    assert damping(sweep["jobs"][1]) == damping(sweep["secant"]) == TRANSFER_DAMPING
    assert TRANSFER_DAMPING < LMConfig().damping


def test_the_start_is_the_members_trained_factors(sweep: dict, tmp_path: Path) -> None:
    """The first values of a started run are the earlier member's adapter tensors."""
    jobs = sweep["jobs"]
    cfg = _cfg(sweep["root"], source=str(sweep["source"]), **{"pde.target.mu": 1.3})
    cfg["train"]["steps"] = 1
    cfg["train"]["tol"] = 0.0
    cfg["transfer"] = {"start": str(jobs[1])}
    seen = {}
    original = continuation.apply_start

    def spy(model: KAN, first: Member, second: Member | None, params: dict) -> dict:
        out = original(model, first, second, params)
        seen.update({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return out

    continuation.apply_start = spy
    try:
        runner.transfer(cfg, tmp_path / "alone")
    finally:
        continuation.apply_start = original
    saved = read_adapter(jobs[1]).tensors
    assert saved and seen
    for name, value in saved.items():
        prefix, last = name.rsplit(".", 1)
        key = f"{prefix}.adapter.{last}" if last in ("G", "U1", "U2", "U3") else name
        assert torch.equal(seen[key], value)


def test_secant_predictor_extrapolates_the_factors(sweep: dict) -> None:
    jobs = sweep["jobs"]
    _, source_model = model_from_file(sweep["source"] / MODEL_FILE, F64)
    apply(source_model, AdapterConfig(cr=0.5, init="random"), torch.Generator().manual_seed(0))
    m1 = Member(jobs[1], {"lam": 0.0, "mu": 1.2}, 1)
    m0 = Member(jobs[0], {"lam": 0.0, "mu": 1.1}, 0)
    record = continuation.apply_start(source_model, m1, m0, {"lam": 0.0, "mu": 1.4})
    assert record["predictor_step"] == pytest.approx(2.0)
    w1, w0 = read_adapter(jobs[1]).tensors, read_adapter(jobs[0]).tensors
    G = source_model.layers[0].adapter.G
    assert torch.allclose(G, w1["layers.0.G"] + 2.0 * (w1["layers.0.G"] - w0["layers.0.G"]))


def test_a_member_reproduces_alone_from_its_recorded_start(sweep: dict, tmp_path: Path) -> None:
    job = sweep["jobs"][2]
    record = _start(job)
    cfg = _cfg(sweep["root"], source=str(sweep["source"]), **{"pde.target.mu": 1.3})
    cfg["transfer"] = {"start": record["start_from"]}
    runner.transfer(cfg, tmp_path / "again")
    a = read_results(job / "results.h5")
    b = read_results(tmp_path / "again" / "results.h5")
    assert a["metrics"]["rel_l2"] == b["metrics"]["rel_l2"]
    assert (a["fields"]["u_pred"] == b["fields"]["u_pred"]).all()


def test_a_started_member_is_still_an_update_of_the_source(sweep: dict) -> None:
    """Base + the member's adapter file computes the member's model: merge needs no chain."""
    job = sweep["jobs"][2]
    _, base = model_from_file(sweep["source"] / MODEL_FILE, F64)
    load_adapter(base, job)
    _, member = model_from_file(job / MODEL_FILE, F64)
    x = torch.rand(50, 2, dtype=F64)
    assert torch.allclose(base(x), member(x), atol=1e-12)


def test_nearest_is_deterministic_ties_to_the_earlier_job() -> None:
    members = [
        Member(Path("b"), {"mu": 1.3}, 2),
        Member(Path("a"), {"mu": 1.1}, 0),
        Member(Path("c"), {"mu": 1.5}, 1),
    ]
    assert [m.job for m in nearest(members, {"mu": 1.2}, 2)] == [0, 2]  # tie: job 0 first
    assert [m.job for m in nearest(members, {"mu": 1.45}, 1)] == [1]


def test_a_sweep_job_waits_for_the_jobs_before_it(tmp_path: Path) -> None:
    (tmp_path / "0_a").mkdir()
    job = tmp_path / "1_b"
    job.mkdir()
    t0 = time.monotonic()
    continuation.wait_for_earlier_jobs(job, timeout=0.3, poll=0.05)  # job 0 never ends
    assert time.monotonic() - t0 >= 0.3
    (tmp_path / "0_a" / "failed.txt").write_text("boom\n")
    t0 = time.monotonic()
    continuation.wait_for_earlier_jobs(job, timeout=30, poll=0.05)  # ended: no wait
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        (TransferOptions(start="nowhere"), "neither source"),
        (TransferOptions(predictor="secant"), "needs transfer.start=nearest"),
        (TransferOptions(wait_seconds=-1), "wait_seconds"),
    ],
)
def test_bad_options_are_one_line(opts: TransferOptions, match: str) -> None:
    with pytest.raises(PinnkanError, match=match):
        continuation.validate(opts)


def test_a_start_from_another_adapter_is_refused(sweep: dict, tmp_path: Path) -> None:
    cfg = _cfg(sweep["root"], source=str(sweep["source"]), cr=0.25)
    cfg["transfer"] = {"start": str(sweep["jobs"][0])}
    with pytest.raises(PinnkanError, match="its cr is 0.5"):
        runner.transfer(cfg, tmp_path / "other")
