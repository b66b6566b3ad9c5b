"""The two stages as plain functions of a config dict and a run directory (no Hydra here):
`pretrain` trains a source KAN, `transfer` adapts one to a target member of the family."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pinnkan.adapters import (
    AdapterConfig,
    adapter_summary,
    count_parameters,
    needs_source,
    param_groups,
    prepare,
)
from pinnkan.checkpoint import (
    ADAPTER_FILE,
    ADAPTER_FORMAT,
    MODEL_FILE,
    MODEL_FORMAT,
    load_checkpoint,
    save_checkpoint,
    tensors_hash,
)
from pinnkan.errors import PinnkanError
from pinnkan.kan import KAN
from pinnkan.pde import PDEFamily, build_pde
from pinnkan.plots import plot_run
from pinnkan.results import RESULTS_FILE, RunResult, max_abs_error, relative_l2, write_results
from pinnkan.training import Evaluator, History, PinnLoss, TrainConfig, train

log = logging.getLogger("pinnkan")

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
MODELS = ("bspline",)


@dataclass
class Setup:
    """What every stage derives from its config before any file is written."""

    dtype: torch.dtype
    device: torch.device
    train: TrainConfig
    seed: int


def resolve_setup(cfg: dict[str, Any]) -> Setup:
    """Validate the stage-independent part of the config (precision, device, budget, seed)."""
    precision = cfg.get("precision", "float32")
    if precision not in PRECISIONS:
        raise PinnkanError(f"precision={precision!r}; choose float32 or float64")
    device = str(cfg.get("device", "auto"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise PinnkanError(f"device={device!r}; choose cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PinnkanError("device=cuda but CUDA is not available here; use device=cpu or auto")
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise PinnkanError(f"seed={seed!r} must be a non-negative integer")
    t, o = cfg.get("train", {}), cfg.get("optim", {})
    try:
        tc = TrainConfig(
            steps=int(t.get("steps", 2000)),
            lbfgs_steps=int(o.get("lbfgs_steps", 0)),
            lr=float(o.get("lr", 1e-2)),
            lr_decay=float(o.get("lr_decay", 0.1)),
            n_interior=int(t.get("n_interior", 1024)),
            n_boundary=int(t.get("n_boundary", 256)),
            derivatives=str(t.get("derivatives", "forward")),
            compile=t.get("compile", False),
            eval_every=int(t.get("eval_every", 100)),
            log_every=int(t.get("log_every", 200)),
            progress=str(t.get("progress", "auto")),
        )
    except (TypeError, ValueError) as exc:
        raise PinnkanError(f"bad number in train/optim config: {exc}") from None
    tc.validate()
    eval_n = int(cfg.get("eval", {}).get("n", 101))
    if eval_n < 2:
        raise PinnkanError(f"eval.n={eval_n} must be >= 2 grid points per axis")
    return Setup(PRECISIONS[precision], torch.device(device), tc, seed)


def build_model(cfg: dict[str, Any], pde: PDEFamily, setup: Setup, gen: torch.Generator) -> KAN:
    """The KAN the model config describes, on the PDE's domain."""
    m = cfg.get("model", {})
    name = m.get("name", "bspline")
    if name not in MODELS:
        raise PinnkanError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    hidden = list(m.get("hidden", [32, 32]))
    if not hidden or any(int(w) < 1 for w in hidden):
        raise PinnkanError(f"model.hidden={hidden} must list positive layer widths")
    grid = int(m.get("grid_size", 5))
    if grid < 1:
        raise PinnkanError(f"model.grid_size={grid} must be >= 1")
    return KAN(
        [pde.dim, *[int(w) for w in hidden], 1],
        list(pde.domain),
        grid_size=grid,
        grid_range=tuple(m.get("grid_range", (-1.0, 1.0))),
        spline_scale=float(m.get("spline_scale", 0.1)),
        dtype=setup.dtype,
        device=setup.device,
        generator=gen,
    )


def pde_from_config(cfg: dict[str, Any], which: str) -> PDEFamily:
    """The family member at the config's `source` or `target` parameters."""
    p = cfg.get("pde", {})
    return build_pde(p.get("name", "?"), p.get(which, {}) or {}, p.get("weights"))


def evaluate(
    model: KAN, pde: PDEFamily, n: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Grid axes, prediction and reference on the evaluation grid (shape n per axis)."""
    axes, pts = pde.grid(n, model.lo.dtype)
    with torch.no_grad():
        pred = model(pts.to(model.lo.device))[:, 0].cpu()
    shape = tuple(len(a) for a in axes.values())
    ref = pde.exact(pts)
    return (
        {k: v.numpy() for k, v in axes.items()},
        pred.reshape(shape).numpy(),
        ref.reshape(shape).numpy(),
    )


def _fit(
    cfg: dict[str, Any],
    model: KAN,
    pde: PDEFamily,
    setup: Setup,
    groups: list[dict[str, Any]],
    gen: torch.Generator,
    desc: str,
    loss_fn: PinnLoss,
) -> History:
    """Train with an evaluator of the relative L2 error on the config's evaluation grid."""
    n = int(cfg.get("eval", {}).get("n", 101))
    _, pts = pde.grid(n, setup.dtype)
    evaluator = Evaluator(pts.to(setup.device), pde.exact(pts).to(setup.device))
    return train(model, loss_fn, groups, setup.train, evaluator, gen, desc=desc)


def _result(
    cfg: dict[str, Any],
    stage: str,
    model: KAN,
    pde: PDEFamily,
    setup: Setup,
    hist: History,
    config_yaml: str,
    extra_metrics: dict[str, Any],
    attrs: dict[str, Any],
) -> RunResult:
    n = int(cfg.get("eval", {}).get("n", 101))
    grid, pred, ref = evaluate(model, pde, n)
    n_trainable, n_total = count_parameters(model)
    metrics = {
        "rel_l2": relative_l2(pred, ref),
        "max_abs_error": max_abs_error(pred, ref),
        "n_trainable": n_trainable,
        "n_total": n_total,
        "train_seconds": float(hist.seconds[-1]) if hist.seconds else 0.0,
        "steps": setup.train.steps + setup.train.lbfgs_steps,
        **extra_metrics,
    }
    return RunResult(
        stage=stage,
        pde=pde.name,
        pde_params=dict(pde.params),
        seed=setup.seed,
        config_yaml=config_yaml,
        coords=list(pde.coords),
        grid=grid,
        u_pred=pred,
        u_ref=ref,
        metrics=metrics,
        history={k: np.asarray(v) for k, v in hist.as_dict().items()},
        attrs={k: v for k, v in attrs.items() if v is not None},
    )


def _finish(run_dir: Path, result: RunResult) -> RunResult:
    plot_run(run_dir, result)
    write_results(run_dir / RESULTS_FILE, result)  # last: its presence marks a finished run
    m = result.metrics
    log.info(
        "%s %s%s: rel_l2 %.3e, max |err| %.3e, %d trainable / %d parameters, %.1f s -> %s",
        result.stage,
        result.pde,
        json.dumps(result.pde_params),
        m["rel_l2"],
        m["max_abs_error"],
        m["n_trainable"],
        m["n_total"],
        m["train_seconds"],
        run_dir,
    )
    return result


def pretrain(cfg: dict[str, Any], run_dir: Path, config_yaml: str = "") -> RunResult:
    """Train a source KAN on the family's source parameters; write model.pt, results.h5, plots."""
    setup = resolve_setup(cfg)
    pde = pde_from_config(cfg, "source")
    gen = torch.Generator().manual_seed(setup.seed)
    model = build_model(cfg, pde, setup, gen)
    loss_fn = PinnLoss(pde, setup.train.derivatives)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": setup.train.lr}]
    log.info("pretrain %s on %s, widths %s", pde.describe(), setup.device, model.widths)
    hist = _fit(cfg, model, pde, setup, groups, gen, "pretrain", loss_fn)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "stage": "pretrain",
        "pde": pde.name,
        "pde_params": pde.params,
        "spec": model.spec(),
        "precision": str(cfg.get("precision", "float32")),
    }
    save_checkpoint(run_dir / MODEL_FILE, MODEL_FORMAT, meta, model.state_dict())
    result = _result(
        cfg,
        "pretrain",
        model,
        pde,
        setup,
        hist,
        config_yaml,
        {},
        {"model": "bspline", "widths": json.dumps(model.widths)},
    )
    return _finish(run_dir, result)


# --- transfer -------------------------------------------------------------------------------
def find_source(outputs_root: Path, pde: str, exclude: Path | None = None) -> Path:
    """Newest finished pretrain run of `pde` under `outputs_root` (a run dir with model.pt)."""
    found = []
    for res in Path(outputs_root).rglob(RESULTS_FILE):
        run = res.parent
        if exclude is not None and run.resolve() == exclude.resolve():
            continue
        if not (run / MODEL_FILE).is_file():
            continue
        try:
            with h5py.File(res, "r") as f:
                ok = f.attrs.get("stage") == "pretrain" and f.attrs.get("pde") == pde
                ok = ok and f.attrs.get("status", "ok") == "ok"
        except OSError:
            continue
        if ok:
            found.append((res.stat().st_mtime, run))
    if not found:
        raise PinnkanError(
            f"no finished pretrain run of pde={pde} under {outputs_root}/; run "
            f"`pinnkan pretrain pde={pde}` first or pass source=<run dir>"
        )
    return max(found)[1]


def source_checkpoint(source: str | None, outputs_root: Path, pde: str, run_dir: Path) -> Path:
    """model.pt of the given source (run dir or file), or of the newest pretrain run."""
    if source:
        p = Path(source)
        return p / MODEL_FILE if p.is_dir() else p
    return find_source(outputs_root, pde, exclude=run_dir) / MODEL_FILE


def check_compatible(meta: dict[str, Any], path: Path, pde: PDEFamily, model: KAN) -> None:
    """Refuse a checkpoint of another PDE family or another network shape, in one line."""
    if meta.get("pde") != pde.name:
        raise PinnkanError(
            f"checkpoint {path} was trained on pde={meta.get('pde')}, but this transfer is "
            f"pde={pde.name}; pass pde={meta.get('pde')} or a source= run of {pde.name}"
        )
    want, have = model.spec(), meta.get("spec", {})
    if want != have:
        diff = ", ".join(
            f"{k}: checkpoint {have.get(k)} vs config {want[k]}"
            for k in want
            if have.get(k) != want[k]
        )
        raise PinnkanError(
            f"checkpoint {path} has a different network shape ({diff}); set model.* to match it "
            "or pretrain a new source"
        )


def transfer(cfg: dict[str, Any], run_dir: Path, config_yaml: str = "") -> RunResult:
    """Adapt a pretrained KAN to the family's target parameters with the configured adapter."""
    setup = resolve_setup(cfg)
    a = dict(cfg.get("adapter", {}))
    acfg = AdapterConfig(
        name=a.get("name", "lotra"),
        cr=float(cfg.get("cr", 0.25)),
        ranks=a.get("ranks"),
        init=a.get("init", "grad"),
        lr_strategy=a.get("lr_strategy", "theory"),
        multipliers={k: float(v) for k, v in (a.get("multipliers") or {}).items()},
        layers=a.get("layers"),
    )
    pde = pde_from_config(cfg, "target")
    gen = torch.Generator().manual_seed(setup.seed)
    model = build_model(cfg, pde, setup, gen)
    acfg.validate(len(model.layers))
    source_path, source_meta = None, {}
    if needs_source(acfg.name):
        root = Path(cfg.get("outputs_root", "outputs"))
        source_path = source_checkpoint(cfg.get("source"), root, pde.name, run_dir)
        source_meta, state = load_checkpoint(source_path, MODEL_FORMAT)
        check_compatible(source_meta, source_path, pde, model)
        try:
            model.load_state_dict(state)
        except RuntimeError:
            raise PinnkanError(f"checkpoint {source_path} does not fit the network") from None
    A_pt = [layer.A.detach().clone() for layer in model.layers]
    loss_fn = PinnLoss(pde, setup.train.derivatives)
    first = loss_fn.sample(
        setup.train.n_interior, setup.train.n_boundary, gen, setup.dtype, setup.device
    )
    prepare(model, acfg, gen, lambda m: loss_fn(m, first))
    groups = param_groups(model, acfg, setup.train.lr)
    summary = adapter_summary(model)
    n_full = sum(t.numel() for t in A_pt)
    log.info(
        "transfer %s with %s (cr=%g) from %s: %d trainable vs %d for full fine-tuning",
        pde.describe(),
        acfg.name,
        acfg.cr,
        source_path or "fresh init",
        sum(r["trainable"] for r in summary),
        n_full,
    )
    hist = _fit(cfg, model, pde, setup, groups, gen, f"transfer[{acfg.name}]", loss_fn)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_meta = {
        "pde": pde.name,
        "pde_params": pde.params,
        "spec": model.spec(),
        "precision": str(cfg.get("precision", "float32")),
    }
    merged = {f"layers.{i}.A": layer.coefficients() for i, layer in enumerate(model.layers)}
    merged.update({k: v for k, v in model.state_dict().items() if k in ("lo", "hi")})
    save_checkpoint(run_dir / MODEL_FILE, MODEL_FORMAT, {**spec_meta, "stage": "transfer"}, merged)
    lotra = {
        i: {c: getattr(layer.adapter, c).detach().cpu().numpy() for c in ("G", "U1", "U2", "U3")}
        for i, layer in enumerate(model.layers)
        if layer.adapter is not None
    }
    if lotra:
        base = {f"layers.{i}.A": t for i, t in enumerate(A_pt)}
        adapter_state = {
            f"layers.{i}.{c}": torch.from_numpy(v) for i, d in lotra.items() for c, v in d.items()
        }
        save_checkpoint(
            run_dir / ADAPTER_FILE,
            ADAPTER_FORMAT,
            {
                **spec_meta,
                "adapter": acfg.name,
                "cr": acfg.cr,
                "ranks": {
                    str(i): list(layer.adapter.ranks)
                    for i, layer in enumerate(model.layers)
                    if layer.adapter is not None
                },
                "base_hash": tensors_hash(base),
                "base_source": str(source_path) if source_path else None,
            },
            adapter_state,
        )
    model_tensors = None
    if acfg.name != "scratch":
        model_tensors = {
            i: {
                "A_pretrained": A_pt[i].cpu().numpy(),
                "delta": (layer.coefficients().detach() - A_pt[i]).cpu().numpy(),
            }
            for i, layer in enumerate(model.layers)
        }
    attrs = {
        "adapter": acfg.name,
        "cr": float(acfg.cr),
        "lr_strategy": acfg.lr_strategy,
        "init": acfg.init,
        "source": str(source_path) if source_path else None,
        "source_pde_params": json.dumps(source_meta.get("pde_params")) if source_meta else None,
        "model": "bspline",
        "widths": json.dumps(model.widths),
        "layers": json.dumps(
            [
                {**r, "shape": list(r["shape"]), "ranks": list(r["ranks"]) if r["ranks"] else None}
                for r in summary
            ]
        ),
    }
    result = _result(
        cfg, "transfer", model, pde, setup, hist, config_yaml, {"n_full_finetune": n_full}, attrs
    )
    result.lotra, result.model_tensors = lotra or None, model_tensors
    return _finish(run_dir, result)
