"""End-to-end tests of the `pinnkan` command: every call is a subprocess on a tiny problem."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import SourceRun, describe, run_pinnkan, tiny

from pinnkan.adapters import ADAPTER_FILE, read_adapter
from pinnkan.io.checkpoint import MODEL_FILE, MODEL_FORMAT, load_checkpoint, tensors_hash

PDES = ("elliptic", "parabolic", "advection", "wave")
AXES = {
    "elliptic": ["x", "y"],
    "parabolic": ["x", "t"],
    "advection": ["x", "t"],
    "wave": ["x", "t"],
}
PDE_PARAM = {"elliptic": "mu", "parabolic": "nu", "advection": "beta", "wave": "c"}
N_D = 5 + 4  # default grid_size 5 -> cubic B-spline basis plus SiLU: 9 coefficients per edge
# TINY: model.hidden=[4] -> widths [2, 4, 1]; (n_in, n_out) of each layer (advection's
# periodic x enters as cos x, sin x: 3 inputs)
LAYERS = [(2, 4), (4, 1)]
PERIODIC_LAYERS = [(3, 4), (4, 1)]
RUN_FILES = ("results.h5", MODEL_FILE, "fields.png", "training.png")


def results(run_dir: Path) -> Path:
    """The results.h5 of a run directory."""
    return run_dir / "results.h5"


def attr_str(value: object) -> str:
    """An h5py string attribute as str (h5py may hand back bytes for fixed-length strings)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def u_pred(run_dir: Path) -> np.ndarray:
    """fields/u_pred of a run, read with plain h5py."""
    with h5py.File(results(run_dir), "r") as f:
        return f["fields/u_pred"][()]


def ok(proc: subprocess.CompletedProcess, what: str = "") -> None:
    """Assert the call exited 0 and printed no traceback."""
    assert proc.returncode == 0, f"{what}\n{describe(proc)}"
    assert "Traceback" not in proc.stdout + proc.stderr, describe(proc)


# --- 1. pretrain + transfer for every PDE family ----------------------------------------------
@pytest.fixture(scope="module", params=PDES)
def pde_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, source_run: SourceRun
) -> tuple[str, Path, Path]:
    """(pde, pretrain run dir, transfer run dir); the transfer finds its source on its own.

    For elliptic the shared session source is the pretrain run (saves one call).
    """
    pde = request.param
    base = tmp_path_factory.mktemp(f"family_{pde}")
    if pde == "elliptic":
        root, pre_dir = source_run.outputs_root, source_run.run_dir
    else:
        root = base / "outputs"
        pre_dir = root / "pretrain" / pde / "run"
        args = ["pretrain", f"pde={pde}", *tiny(root), f"hydra.run.dir={pre_dir}"]
        proc = run_pinnkan(args, base)
        ok(proc, f"pretrain pde={pde}")
    tr_dir = base / "transfer_run"
    proc = run_pinnkan(
        ["transfer", f"pde={pde}", "cr=0.5", *tiny(root), f"hydra.run.dir={tr_dir}"], base
    )
    ok(proc, f"transfer pde={pde}")
    return pde, pre_dir, tr_dir


def test_family_run_files(pde_runs: tuple[str, Path, Path]) -> None:
    """Both runs leave results.h5, the model file and the two plots; the transfer also the
    adapter file."""
    _, pre_dir, tr_dir = pde_runs
    for run_dir in (pre_dir, tr_dir):
        for name in RUN_FILES:
            assert (run_dir / name).is_file(), f"{run_dir} lacks {name}"
            assert (run_dir / name).stat().st_size > 0, f"{run_dir / name} is empty"
    assert (tr_dir / ADAPTER_FILE).is_file()
    assert not (pre_dir / ADAPTER_FILE).exists()


def test_family_transfer_found_newest_source(pde_runs: tuple[str, Path, Path]) -> None:
    """Without source=, transfer picked the pretrain run of the same PDE under outputs_root."""
    _, pre_dir, tr_dir = pde_runs
    with h5py.File(results(tr_dir), "r") as f:
        source = Path(attr_str(f.attrs["source"]))
    assert source.resolve() == (pre_dir / MODEL_FILE).resolve()


def test_family_results_layout(pde_runs: tuple[str, Path, Path]) -> None:
    """Root attrs, field axes, metrics and the LoTRA / model tensors, read with raw h5py."""
    pde, pre_dir, tr_dir = pde_runs
    for stage, run_dir in (("pretrain", pre_dir), ("transfer", tr_dir)):
        with h5py.File(results(run_dir), "r") as f:
            assert attr_str(f.attrs["stage"]) == stage
            assert attr_str(f.attrs["pde"]) == pde
            params = json.loads(attr_str(f.attrs["pde_params"]))
            assert isinstance(params, dict) and PDE_PARAM[pde] in params
            assert "rel_l2" in attr_str(f.attrs["error_metric"])
            assert list(f["fields"].attrs["axes"]) == AXES[pde]
            assert f["fields/u_pred"].shape == (9, 9)
            assert f["fields/u_ref"].shape == (9, 9)
            m = f["metrics"].attrs
            for key in ("rel_l2", "max_abs_error", "n_trainable", "n_total", "train_seconds"):
                assert key in m, f"metrics lack {key}"
            assert math.isfinite(float(m["rel_l2"])) and float(m["rel_l2"]) > 0
            assert int(m["steps"]) == 3
            assert ("lotra" in f) == (stage == "transfer")
            assert ("model" in f) == (stage == "transfer")
    with h5py.File(results(tr_dir), "r") as f:
        for layer, (n_in, n_out) in enumerate(PERIODIC_LAYERS if pde == "advection" else LAYERS):
            g = f[f"lotra/layer_{layer}/G"]
            assert g.ndim == 3
            assert f[f"lotra/layer_{layer}/U1"].shape == (n_in, g.shape[0])
            assert f[f"lotra/layer_{layer}/U2"].shape == (n_out, g.shape[1])
            assert f[f"lotra/layer_{layer}/U3"].shape == (N_D, g.shape[2])
            delta = f[f"model/layer_{layer}/delta"]
            a_pt = f[f"model/layer_{layer}/A_pretrained"]
            assert delta.shape == a_pt.shape == (n_in, n_out, N_D)
        assert float(f.attrs["cr"]) == 0.5


# --- 2. every adapter on elliptic; 7. explicit source= ------------------------------------------
@pytest.mark.parametrize("adapter", ["full", "lotra", "scratch", "slim"])
def test_adapter(adapter: str, tmp_path: Path, source_run: SourceRun) -> None:
    """Each adapter runs; lotra trains fewer numbers than full fine-tuning, full trains all A.

    scratch and slim run under an empty outputs_root (no source anywhere); lotra and full get
    the shared source through an explicit source=<run dir> and start from its weights.
    """
    root = tmp_path / "outputs"
    args = ["transfer", f"adapter={adapter}", *tiny(root), f"hydra.run.dir={tmp_path / 'run'}"]
    if adapter == "lotra":
        args.append("cr=0.25")  # at the default 0.5 the tiny [2, 4, 1] layers do not compress
    uses_source = adapter in ("full", "lotra")
    if uses_source:
        args.append(f"source={source_run.run_dir}")
    proc = run_pinnkan(args, tmp_path)
    ok(proc, f"adapter={adapter}")
    run_dir = tmp_path / "run"
    with h5py.File(results(run_dir), "r") as f:
        assert attr_str(f.attrs["adapter"]) == adapter
        m = {k: int(f["metrics"].attrs[k]) for k in ("n_trainable", "n_full_finetune")}
        assert m["n_full_finetune"] == sum(a * b * N_D for a, b in LAYERS)
        if adapter == "lotra":
            assert m["n_trainable"] < m["n_full_finetune"]
        if adapter in ("full", "scratch"):
            assert m["n_trainable"] == m["n_full_finetune"]
        if uses_source:
            src = Path(attr_str(f.attrs["source"]))
            assert src.resolve() == (source_run.run_dir / MODEL_FILE).resolve()
            a_pt = f["model/layer_0/A_pretrained"][()]
        else:
            assert "source" not in f.attrs
    assert (run_dir / ADAPTER_FILE).exists() == (adapter in ("lotra", "slim"))
    if uses_source:
        state = load_checkpoint(source_run.run_dir / MODEL_FILE, MODEL_FORMAT)[1]
        np.testing.assert_array_equal(a_pt, state["layers.0.A"].numpy())
    if adapter == "slim":
        _check_slim_results(run_dir)


def _check_slim_results(run_dir: Path) -> None:
    """Slim KAN's results.h5 describes what was trained: the frozen A is 0 (so delta is the
    whole final tensor), the init is the layer kind's, and the adapter file's base hash is
    that of the zero tensors that were actually frozen."""
    final = load_checkpoint(run_dir / MODEL_FILE, MODEL_FORMAT)[1]
    frozen = {}
    with h5py.File(results(run_dir), "r") as f:
        assert attr_str(f.attrs["init"]) == "layer_kind"
        for i in range(len(LAYERS)):
            a_pt, delta = f[f"model/layer_{i}/A_pretrained"][()], f[f"model/layer_{i}/delta"][()]
            assert not a_pt.any()
            np.testing.assert_array_equal(delta, final[f"layers.{i}.A"].numpy())
            frozen[f"layers.{i}.A"] = torch.zeros(a_pt.shape, dtype=final[f"layers.{i}.A"].dtype)
    meta = read_adapter(run_dir).meta
    assert meta["base_hash"] == tensors_hash(frozen)


# --- 3. LoTRA options ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "source_file"),
    [
        (["adapter.init=random", "adapter.lr_strategy=uniform", "adapter.multipliers.G=2"], True),
        (["adapter.init=hosvd"], False),
    ],
    ids=["random-uniform-G2", "hosvd"],
)
def test_lotra_options(
    options: list[str], source_file: bool, tmp_path: Path, source_run: SourceRun
) -> None:
    """init / lr_strategy / multipliers overrides reach the run (attrs and stored config).

    One case names the source as the model file instead of the run directory.
    """
    source = source_run.run_dir / MODEL_FILE if source_file else source_run.run_dir
    run_dir = tmp_path / "run"
    args = [
        "transfer",
        "adapter=lotra",
        *tiny(tmp_path / "outputs"),
        f"source={source}",
        f"hydra.run.dir={run_dir}",
        *options,
    ]
    ok(run_pinnkan(args, tmp_path), " ".join(options))
    want = dict(o.split("=", 1) for o in options)
    with h5py.File(results(run_dir), "r") as f:
        init = attr_str(f.attrs["init"])
        strategy = attr_str(f.attrs["lr_strategy"])
        cfg = yaml.safe_load(attr_str(f.attrs["config"]))
    assert init == want["adapter.init"] == cfg["adapter"]["init"]
    assert strategy == want.get("adapter.lr_strategy", "theory")
    assert cfg["adapter"]["multipliers"]["G"] == float(want.get("adapter.multipliers.G", 1.0))


# --- 4. target parameters -----------------------------------------------------------------------
def test_target_param_reaches_results(tmp_path: Path) -> None:
    """pde.target.nu=0.3 on parabolic is the nu stored in results.h5 pde_params."""
    run_dir = tmp_path / "run"
    args = [
        "transfer",
        "pde=parabolic",
        "pde.target.nu=0.3",
        "adapter=scratch",
        *tiny(tmp_path / "outputs"),
        f"hydra.run.dir={run_dir}",
    ]
    ok(run_pinnkan(args, tmp_path))
    with h5py.File(results(run_dir), "r") as f:
        assert json.loads(attr_str(f.attrs["pde_params"])) == {"nu": 0.3}


# --- 5. precision and seed ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeded_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three float64 pretrain runs: seed=7 twice ("a", "b") and seed=8 ("c")."""
    base = tmp_path_factory.mktemp("seeds")
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        run_dir = base / name
        args = [
            "pretrain",
            "precision=float64",
            f"seed={seed}",
            *tiny(base / "outputs"),
            f"hydra.run.dir={run_dir}",
        ]
        ok(run_pinnkan(args, base), f"seed={seed}")
        runs[name] = run_dir
    return runs


def test_precision_float64(seeded_runs: dict[str, Path], source_run: SourceRun) -> None:
    """precision=float64 stores float64 predictions; so does the default run (precision=auto
    with the default optim=lm); optim=adam under auto is float32 (tests/test_lm.py)."""
    for run_dir in seeded_runs.values():
        assert u_pred(run_dir).dtype == np.float64
    assert u_pred(source_run.run_dir).dtype == np.float64


def test_same_seed_identical(seeded_runs: dict[str, Path]) -> None:
    """Two runs with the same seed predict bit-identical fields."""
    np.testing.assert_array_equal(u_pred(seeded_runs["a"]), u_pred(seeded_runs["b"]))


def test_other_seed_differs(seeded_runs: dict[str, Path]) -> None:
    """Another seed gives another network and so other predictions."""
    assert not np.array_equal(u_pred(seeded_runs["a"]), u_pred(seeded_runs["c"]))


# --- 6. multirun --------------------------------------------------------------------------------
def test_multirun_sweep(tmp_path: Path, source_run: SourceRun) -> None:
    """`transfer -m cr=0.5,0.25` runs two jobs, each with its own results.h5 under multirun/."""
    root = tmp_path / "outputs"
    args = ["transfer", "-m", "cr=0.5,0.25", *tiny(root), f"source={source_run.run_dir}"]
    ok(run_pinnkan(args, tmp_path, timeout=180), "multirun")
    found = sorted((root / "multirun").rglob("results.h5"))
    assert len(found) == 2, found
    assert len({p.parent for p in found}) == 2
    crs = set()
    for path in found:
        with h5py.File(path, "r") as f:
            crs.add(float(f.attrs["cr"]))
    assert crs == {0.5, 0.25}
    assert not list(root.glob("transfer/**/results.h5"))


def test_multirun_with_a_failed_job(tmp_path: Path, source_run: SourceRun) -> None:
    """One bad job is reported and makes the exit status non-zero; the good job's results stay."""
    root = tmp_path / "outputs"
    args = ["transfer", "-m", "pde.target.mu=1.5,nan", *tiny(root), f"source={source_run.run_dir}"]
    proc = run_pinnkan(args, tmp_path, timeout=180)
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("pinnkan: error: 1 sweep job(s) failed (job 1:"), last
    found = sorted((root / "multirun").rglob("results.h5"))
    assert len(found) == 1 and found[0].parent.name.startswith("0_"), found


# --- 8. bad input -------------------------------------------------------------------------------
def _truncated(tmp: Path, src: SourceRun) -> str:
    data = (src.run_dir / MODEL_FILE).read_bytes()
    path = tmp / "half.pt"  # the content, not the name, tells what a file is
    path.write_bytes(data[: len(data) // 2])
    return f"source={path}"


def _random_bytes(tmp: Path, src: SourceRun) -> str:
    path = tmp / "noise.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return f"source={path}"


def _no_model_dir(tmp: Path, src: SourceRun) -> str:
    path = tmp / "not_a_run"
    path.mkdir()
    shutil.copy(src.run_dir / "fields.png", path / "fields.png")  # a run dir minus its weights
    return f"source={path}"


Case = tuple[list[str], Callable[[Path, SourceRun], str] | None, str]

BAD: dict[str, Case] = {
    "unknown-pde": (["pretrain", "pde=nope"], None, "unknown pde"),
    "unknown-model": (["pretrain", "model=nope"], None, "unknown model"),
    "unknown-adapter": (["transfer", "adapter=nope"], None, "unknown adapter"),
    "lstsq-nonlinear": (
        ["transfer", "adapter=lstsq", "pde=burgers"],
        None,
        "adapter=lstsq needs a linear PDE family",
    ),
    "homotopy-with-adam": (  # refused by the pre-check, before Hydra makes a directory
        ["transfer", "transfer.homotopy=2", "optim=adam"],
        lambda tmp, src: f"source={src.run_dir}",
        "transfer.homotopy=2: its legs end on LM's signals: it needs optim=lm",
    ),
    "cr-zero": (["transfer", "cr=0"], None, "cr=0"),
    "cr-above-one": (["transfer", "cr=1.5"], None, "cr=1.5"),
    "cr-negative": (["transfer", "cr=-0.1"], None, "cr=-0.1"),
    "steps-zero": (["pretrain", "train.steps=0"], None, "train.steps"),
    "steps-negative": (["pretrain", "train.steps=-3"], None, "train.steps"),
    "lbfgs-negative": (["pretrain", "optim.lbfgs_steps=-1"], None, "lbfgs_steps"),
    "unknown-stage": (["nope"], None, "unknown command"),
    "no-pretrain-run": (["transfer"], None, "no finished pretrain run"),
    "missing-checkpoint": (
        ["transfer"],
        lambda tmp, src: f"source={tmp / 'does_not_exist'}",
        "not found",
    ),
    "dir-without-model": (["transfer"], _no_model_dir, "not found"),
    "truncated-checkpoint": (["transfer"], _truncated, "half.pt"),
    "random-bytes-checkpoint": (["transfer"], _random_bytes, "noise.pt"),
    "other-pde-family": (
        ["transfer", "pde=parabolic"],
        lambda tmp, src: f"source={src.run_dir}",
        "pde=elliptic",
    ),
    "source-on-another-domain": (  # another network shape is adapted as it is (test_models)
        ["transfer", "pde.domain=[[0,2],[0,1]]"],
        lambda tmp, src: f"source={src.run_dir}",
        "on the domain",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input(case: str, tmp_path: Path, source_run: SourceRun) -> None:
    """Exit != 0, one `pinnkan: error:` line last on stderr, no traceback, no results.h5."""
    head, make_source, expect = BAD[case]
    args = [*head, *tiny(tmp_path / "outputs")]
    if make_source is not None:
        args.append(make_source(tmp_path, source_run))
    before = sorted(source_run.outputs_root.rglob("results.h5"))
    proc = run_pinnkan(args, tmp_path)
    assert proc.returncode != 0, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, describe(proc)
    assert lines[-1].startswith("pinnkan: error:"), describe(proc)
    assert expect in lines[-1], describe(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, describe(proc)
    assert not list(tmp_path.rglob("results.h5")), describe(proc)
    assert not list(tmp_path.rglob(MODEL_FILE)), describe(proc)
    assert sorted(source_run.outputs_root.rglob("results.h5")) == before


# --- 9. help ------------------------------------------------------------------------------------
def test_help_lists_stages(tmp_path: Path) -> None:
    """`pinnkan --help` exits 0 and names both stages."""
    proc = run_pinnkan(["--help"], tmp_path)
    ok(proc, "--help")
    assert "pretrain" in proc.stdout and "transfer" in proc.stdout
    assert "usage: pinnkan" in proc.stdout
