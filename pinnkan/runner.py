"""The two stages as plain functions of a config dict and a run directory (no Hydra here):
`pretrain` trains a source KAN, `transfer` adapts one to a target member of the family."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

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
from pinnkan.atomic import make_dir
from pinnkan.checkpoint import (
    ADAPTER_FILE,
    ADAPTER_FORMAT,
    MODEL_FILE,
    MODEL_FORMAT,
    STATE_FILE,
    load_checkpoint,
    save_checkpoint,
    save_train_state,
    tensors_hash,
)
from pinnkan.config_checks import as_choice, as_int
from pinnkan.diagnostics import diagnose_run
from pinnkan.errors import PinnkanError
from pinnkan.interrupts import StopRequest
from pinnkan.kan import KAN, LAYER_KINDS
from pinnkan.levenberg_marquardt import LMConfig
from pinnkan.memory import check_fits, estimate_step
from pinnkan.pde import PDEFamily
from pinnkan.pde.config import member_from_config
from pinnkan.plots import plot_run
from pinnkan.results import RESULTS_FILE, RunResult, max_abs_error, relative_l2, write_results
from pinnkan.resume import config_fingerprint, load_resume, stage_faults
from pinnkan.runlock import acquire, locked_while_running
from pinnkan.sources import check_compatible, source_checkpoint
from pinnkan.training import (
    OPTIMIZERS,
    Diverged,
    Evaluator,
    History,
    Interrupted,
    OutOfMemory,
    PinnLoss,
    TrainConfig,
    TrainState,
    predict,
    train,
)

log = logging.getLogger("pinnkan")

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
MODELS = LAYER_KINDS  # model= choices: name -> LayerKind (pinnkan.kan)


@dataclass
class Setup:
    """What every stage derives from its config before any file is written."""

    dtype: torch.dtype
    device: torch.device
    train: TrainConfig
    seed: int
    precision: str = "float32"


def _stage_default(value: Any, stage: str, name: str) -> Any:
    """A per-stage default ({pretrain: .., transfer: ..}) or a plain value."""
    if isinstance(value, dict):
        if stage not in value:
            raise PinnkanError(f"{name} has no entry for stage {stage!r}: {value}")
        return value[stage]
    return value


def resolve_setup(cfg: dict[str, Any]) -> Setup:
    """Validate the stage-independent part of the config (precision, device, budget, seed).

    `precision: auto` is float64 for optim=lm (second-order steps need it) and float32 for
    Adam; `train.steps: null` takes the optimizer's default for the stage (`optim.steps`), and
    `optim.lr` may be per stage too ({pretrain: .., transfer: ..})."""
    t, o = cfg.get("train", {}) or {}, cfg.get("optim", {}) or {}
    optimizer = as_choice(o.get("name", "adam"), "optim", OPTIMIZERS)
    precision = cfg.get("precision", "float32")
    if precision == "auto":
        precision = "float64" if optimizer == "lm" else "float32"
    precision = as_choice(precision, "precision", tuple(PRECISIONS))
    device = str(cfg.get("device", "auto"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise PinnkanError(f"device={device!r}; choose cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PinnkanError("device=cuda but CUDA is not available here; use device=cpu or auto")
    seed = as_int(cfg.get("seed", 0), "seed", 0)
    stage = str(cfg.get("stage", "pretrain"))
    steps = t.get("steps")
    if steps is None:
        steps = _stage_default(o.get("steps", 2000), stage, "optim.steps")
    lm = LMConfig(**{f.name: o[f.name] for f in fields(LMConfig) if f.name in o})
    tc = TrainConfig(
        steps=steps,
        lbfgs_steps=o.get("lbfgs_steps", 0),
        lr=_stage_default(o.get("lr", 1e-2), stage, "optim.lr"),
        lr_decay=o.get("lr_decay", 0.1),
        n_interior=t.get("n_interior", 1024),
        n_boundary=t.get("n_boundary", 256),
        derivatives=t.get("derivatives", "forward"),
        compile=t.get("compile", False),
        eval_every=t.get("eval_every", 100),
        log_every=t.get("log_every", 200),
        progress=t.get("progress", "auto"),
        checkpoint_every=t.get("checkpoint_every", 0),
        optimizer=optimizer,
        lm=lm,
        max_seconds=t.get("max_seconds", 0.0),
        check_memory=t.get("check_memory", True),
    )
    tc.validate()
    n_eval = (cfg.get("eval", {}) or {}).get("n")
    if n_eval is not None:
        as_int(n_eval, "eval.n", 2, 4096)
    return Setup(PRECISIONS[precision], torch.device(device), tc, seed, precision)


def build_model(cfg: dict[str, Any], pde: PDEFamily, setup: Setup, gen: torch.Generator) -> KAN:
    """The network the model config describes (a `model=` layer kind), on the PDE's domain."""
    m = dict(cfg.get("model", {}))
    name = m.pop("name", "bspline")
    if name not in MODELS:
        raise PinnkanError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    hidden = m.pop("hidden", list(MODELS[name].hidden))
    if not isinstance(hidden, list | tuple) or not hidden:
        raise PinnkanError(f"model.hidden={hidden!r} must list positive layer widths, e.g. [32,32]")
    hidden = [as_int(w, "model.hidden[]", 1, 4096) for w in hidden]
    return KAN(
        [pde.dim, *hidden, 1],
        list(pde.domain),
        kind=name,
        dtype=setup.dtype,
        device=setup.device,
        generator=gen,
        **m,
    )


def check_memory(
    model: KAN, pde: PDEFamily, setup: Setup, adapter: AdapterConfig | None = None
) -> None:
    """Refuse (one line) a config whose training step cannot fit in the device's free memory
    (pinnkan.memory); `train.check_memory=false` skips it. With `adapter`, the estimate is
    for a copy of the model with those adapters attached (randomly initialised: the real init
    from the loss gradient could itself run out of memory)."""
    if not setup.train.check_memory:
        return
    if adapter is not None:
        model = copy.deepcopy(model)
        init = "random" if adapter.init in ("grad", "hosvd") else adapter.init
        prepare(model, replace(adapter, init=init), torch.Generator().manual_seed(0))
    check_fits(estimate_step(model, pde, setup.train), setup.device)


def eval_points(cfg: dict[str, Any], pde: PDEFamily) -> int:
    """Evaluation grid points per axis: `eval.n`, or the family's default when it is null."""
    n = (cfg.get("eval", {}) or {}).get("n")
    return pde.eval_points if n is None else int(n)


def pde_from_config(cfg: dict[str, Any], which: str) -> PDEFamily:
    """The family member at the config's `source` or `target` parameters."""
    return member_from_config(cfg.get("pde", {}) or {}, which)


def evaluate(
    model: KAN, pde: PDEFamily, n: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """Grid axes, prediction and reference (None without one) on the evaluation grid (shape
    n per axis)."""
    axes, pts = pde.grid(n, model.lo.dtype)
    pred = predict(model, pts.to(model.lo.device)).cpu()
    shape = tuple(len(a) for a in axes.values())
    ref = pde.exact(pts).reshape(shape).numpy() if pde.has_reference else None
    return {k: v.numpy() for k, v in axes.items()}, pred.reshape(shape).numpy(), ref


def heldout_losses(model: KAN, pde: PDEFamily, setup: Setup) -> dict[str, float]:
    """The PDE's and each condition's mean squared residual (`loss_<name>`) and their
    weighted sum (`loss`) on points drawn apart from training (a fixed seed of their own)."""
    loss_fn = PinnLoss(pde, setup.train.derivatives)
    gen = torch.Generator().manual_seed(setup.seed + 7919)
    t = setup.train
    batch = loss_fn.sample(t.n_interior, t.n_boundary, gen, setup.dtype, setup.device)
    losses = loss_fn.losses(model, batch)
    return {"loss": losses.pop("loss"), **{f"loss_{k}": v for k, v in losses.items()}}


def _fit(
    cfg: dict[str, Any],
    model: KAN,
    pde: PDEFamily,
    setup: Setup,
    groups: list[dict[str, Any]],
    gen: torch.Generator,
    desc: str,
    loss_fn: PinnLoss,
    run_dir: Path,
    resume: tuple[dict, TrainState] | None,
    state_meta: dict[str, Any],
    report: tuple[str, str, dict[str, Any], dict[str, Any]],
) -> History:
    """Train with checkpoints, resume and clean stops; on a stop write the partial results.

    `report` = (stage, config_yaml, extra metrics, attrs): what `_result` needs for them."""
    stage, config_yaml, extra, attrs = report

    def write_partial(hist: History, status: str, more: dict[str, Any]) -> RunResult:
        metrics = {**extra, **more}
        res = _result(cfg, stage, model, pde, setup, hist, config_yaml, metrics, attrs, status)
        return _finish(run_dir, res)

    n = eval_points(cfg, pde)
    _, pts = pde.grid(n, setup.dtype)
    ref = pde.exact(pts).to(setup.device) if pde.has_reference else None
    evaluator = Evaluator(pts.to(setup.device), ref)
    meta = {**state_meta, "fingerprint": config_fingerprint(cfg)}
    saved_step = resume[1].step if resume else None

    def checkpoint(state: TrainState) -> None:
        nonlocal saved_step
        make_dir(run_dir)
        save_train_state(run_dir / STATE_FILE, state, meta)
        saved_step = state.step

    with StopRequest() as stop:
        try:
            return train(
                model,
                loss_fn,
                groups,
                setup.train,
                evaluator,
                gen,
                desc=desc,
                resume=resume[1] if resume else None,
                checkpoint=checkpoint,
                stop=stop,
            )
        except Interrupted as exc:
            write_partial(exc.history, "interrupted", {"steps_done": exc.step})
            raise StageInterrupted(exc.signum, exc.step, run_dir, saved_step) from None
        except OutOfMemory as exc:
            smaller = "lower train.n_interior / train.n_boundary or model.hidden and start again"
            step = exc.saved_step or saved_step
            if step:
                raise PinnkanError(
                    f"{exc}; checkpoint at step {step} in {run_dir / STATE_FILE}: {smaller}, "
                    f"or free memory and `pinnkan {stage} resume={run_dir}`"
                ) from None
            raise PinnkanError(f"{exc}; no checkpoint: {smaller}") from None
        except Diverged as exc:
            write_partial(exc.history, "diverged", {"diverged_at_step": exc.step})
            kept = (
                f"; last good checkpoint: step {saved_step} in {run_dir / STATE_FILE}"
                if saved_step
                else ""
            )
            raise PinnkanError(f"{exc}{kept}") from None


class StageInterrupted(Exception):
    """A stage stopped by SIGINT/SIGTERM after writing its checkpoint and partial results."""

    def __init__(self, signum: int, step: int, run_dir: Path, saved_step: int | None) -> None:
        super().__init__(f"interrupted after step {step}")
        self.signum, self.step, self.run_dir, self.saved_step = signum, step, run_dir, saved_step


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
    status: str = "ok",
) -> RunResult:
    n = eval_points(cfg, pde)
    grid, pred, ref = evaluate(model, pde, n)
    n_trainable, n_total = count_parameters(model)
    metrics: dict[str, Any] = {
        "n_trainable": n_trainable,
        "n_total": n_total,
        "train_seconds": float(hist.seconds[-1]) if hist.seconds else 0.0,
        "steps": setup.train.steps + setup.train.lbfgs_steps,
        "steps_done": int(hist.step[-1]) if hist.step else 0,
        **extra_metrics,
    }
    if status != "diverged":  # a diverged model's fields are not results
        metrics.update(heldout_losses(model, pde, setup))
    if status != "diverged" and ref is not None:
        metrics["rel_l2"] = relative_l2(pred, ref)
        metrics["max_abs_error"] = max_abs_error(pred, ref)
    reference = pde.reference_file or ("family" if pde.has_reference else "none")
    return RunResult(
        stage=stage,
        pde=pde.name,
        pde_params=dict(pde.params),
        seed=setup.seed,
        config_yaml=config_yaml,
        coords=list(pde.coords),
        grid=grid,
        u_pred=None if status == "diverged" else pred,
        u_ref=None if status == "diverged" else ref,  # None too without a reference
        metrics=metrics,
        history={k: np.asarray(v) for k, v in hist.as_dict().items()},
        status=status,
        attrs={
            "optimizer": setup.train.optimizer,
            "precision": setup.precision,
            "reference": reference,
            **{k: v for k, v in attrs.items() if v is not None},
        },
    )


def _finish(run_dir: Path, result: RunResult) -> RunResult:
    make_dir(run_dir)
    if result.status != "diverged":
        plot_run(run_dir, result)
    write_results(run_dir / RESULTS_FILE, result)  # last: its status marks a finished run
    if result.status != "ok":
        log.warning(
            "%s run %s: results.h5 written with status=%s", result.stage, run_dir, result.status
        )
        return result
    (run_dir / STATE_FILE).unlink(missing_ok=True)  # finished: nothing left to resume
    m = result.metrics
    error = (
        f"rel_l2 {m['rel_l2']:.3e}, max |err| {m['max_abs_error']:.3e}"
        if "rel_l2" in m
        else f"no reference; held-out loss {m['loss']:.3e}"
    )
    log.info(
        "%s %s%s: %s, %d trainable / %d parameters, %.1f s -> %s",
        result.stage,
        result.pde,
        json.dumps(result.pde_params),
        error,
        m["n_trainable"],
        m["n_total"],
        m["train_seconds"],
        run_dir,
    )
    return result


def pretrain(cfg: dict[str, Any], run_dir: Path, config_yaml: str = "") -> RunResult:
    """Train a source KAN on the family's source parameters; write model.pt, results.h5, plots.

    With cfg["resume"] = run_dir it continues that run from its checkpoint.pt."""
    with locked_while_running(run_dir), stage_faults(run_dir, "pretrain"):
        return _pretrain(cfg, run_dir, config_yaml)


def _pretrain(cfg: dict[str, Any], run_dir: Path, config_yaml: str) -> RunResult:
    setup = resolve_setup(cfg)
    pde = pde_from_config(cfg, "source")
    gen = torch.Generator().manual_seed(setup.seed)
    model = build_model(cfg, pde, setup, gen)
    check_memory(model, pde, setup)
    acquire(run_dir)  # the config is valid: from here on this run writes into run_dir
    resume = load_resume(cfg, run_dir, "pretrain")
    loss_fn = PinnLoss(pde, setup.train.derivatives)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": setup.train.lr}]
    log.info("pretrain %s on %s, widths %s", pde.describe(), setup.device, model.widths)
    attrs = {"model": model.kind, "widths": json.dumps(model.widths)}
    report = ("pretrain", config_yaml, {}, attrs)
    hist = _fit(
        cfg,
        model,
        pde,
        setup,
        groups,
        gen,
        "pretrain",
        loss_fn,
        run_dir,
        resume,
        {"stage": "pretrain"},
        report,
    )
    make_dir(run_dir)
    meta = {
        "stage": "pretrain",
        "pde": pde.name,
        "pde_params": pde.params,
        "spec": model.spec(),
        "precision": setup.precision,
    }
    save_checkpoint(run_dir / MODEL_FILE, MODEL_FORMAT, meta, model.state_dict())
    return _finish(
        run_dir, _result(cfg, "pretrain", model, pde, setup, hist, config_yaml, {}, attrs)
    )


def transfer(cfg: dict[str, Any], run_dir: Path, config_yaml: str = "") -> RunResult:
    """Adapt a pretrained KAN to the family's target parameters with the configured adapter."""
    with locked_while_running(run_dir), stage_faults(run_dir, "transfer"):
        return _transfer(cfg, run_dir, config_yaml)


def _transfer(cfg: dict[str, Any], run_dir: Path, config_yaml: str) -> RunResult:
    setup = resolve_setup(cfg)
    a = dict(cfg.get("adapter", {}))
    acfg = AdapterConfig(
        name=a.get("name", "lotra"),
        cr=cfg.get("cr", 0.5),
        ranks=a.get("ranks"),
        init=a.get("init", "grad"),
        lr_strategy=a.get("lr_strategy", "theory"),
        multipliers=dict(a.get("multipliers") or {}),
        layers=a.get("layers"),
    )
    pde = pde_from_config(cfg, "target")
    gen = torch.Generator().manual_seed(setup.seed)
    model = build_model(cfg, pde, setup, gen)
    acfg.validate(len(model.layers))
    acquire(run_dir)  # the config is valid: from here on this run writes into run_dir
    resume = load_resume(cfg, run_dir, "transfer")
    source_path, source_meta = None, {}
    if needs_source(acfg.name):
        root = Path(cfg.get("outputs_root", "outputs"))
        # a resumed run keeps the source it started from, even if newer pretrain runs exist
        source = resume[0].get("source") if resume else cfg.get("source")
        source_path = source_checkpoint(source, root, pde.name, run_dir)
        source_meta, state = load_checkpoint(source_path, MODEL_FORMAT)
        check_compatible(source_meta, source_path, pde, model)
        try:
            model.load_state_dict(state)
        except RuntimeError:
            raise PinnkanError(f"checkpoint {source_path} does not fit the network") from None
    check_memory(model, pde, setup, acfg)
    loss_fn = PinnLoss(pde, setup.train.derivatives)
    first = loss_fn.sample(
        setup.train.n_interior, setup.train.n_boundary, gen, setup.dtype, setup.device
    )
    prepare(model, acfg, gen, lambda m: loss_fn(m, first))
    # what the update is measured from and what is frozen: after `prepare` (slim zeroes A)
    A_pt = [layer.A.detach().clone() for layer in model.layers]
    base = {k: v.detach().clone() for k, v in model.base_state().items() if k.startswith("layers.")}
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
    attrs = {
        "adapter": acfg.name,
        "cr": float(acfg.cr),
        "lr_strategy": acfg.lr_strategy,
        "init": acfg.init,
        "source": str(source_path) if source_path else None,
        "source_pde_params": json.dumps(source_meta.get("pde_params")) if source_meta else None,
        "model": model.kind,
        "widths": json.dumps(model.widths),
        "layers": json.dumps(
            [
                {**r, "shape": list(r["shape"]), "ranks": list(r["ranks"]) if r["ranks"] else None}
                for r in summary
            ]
        ),
    }
    extra = {"n_full_finetune": n_full}

    state_meta = {"stage": "transfer", "source": str(source_path) if source_path else None}
    report = ("transfer", config_yaml, extra, attrs)
    hist = _fit(
        cfg,
        model,
        pde,
        setup,
        groups,
        gen,
        f"transfer[{acfg.name}]",
        loss_fn,
        run_dir,
        resume,
        state_meta,
        report,
    )
    make_dir(run_dir)
    spec_meta = {
        "pde": pde.name,
        "pde_params": pde.params,
        "spec": model.spec(),
        "precision": setup.precision,
    }
    merged = model.merged_state()  # A + ΔA, extra parameters, lo, hi
    save_checkpoint(run_dir / MODEL_FILE, MODEL_FORMAT, {**spec_meta, "stage": "transfer"}, merged)
    lotra = {
        i: {c: getattr(layer.adapter, c).detach().cpu().numpy() for c in ("G", "U1", "U2", "U3")}
        for i, layer in enumerate(model.layers)
        if layer.adapter is not None
    }
    if lotra:
        adapter_state = {
            f"layers.{i}.{c}": torch.from_numpy(v) for i, d in lotra.items() for c, v in d.items()
        }
        # layers fine-tuned in full (adapter.layers) travel whole (A and extra parameters): the
        # adapter alone rebuilds them
        adapter_state.update(
            {n: p for n, p in model.named_parameters() if p.requires_grad and ".adapter." not in n}
        )
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
    result = _result(cfg, "transfer", model, pde, setup, hist, config_yaml, extra, attrs)
    result.lotra, result.model_tensors = lotra or None, model_tensors
    result = _finish(run_dir, result)
    if acfg.name == "full":  # the low-rank evidence: singular values and HOSVD error of ΔA
        diagnose_run(run_dir)
    return result
