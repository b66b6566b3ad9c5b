"""The two stages as plain functions of a RunConfig (or a dict of the settings that differ from
its defaults) and a run directory, no Hydra here: `pretrain` trains a source KAN, `transfer`
adapts one to a target member of the family."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pinnkan.adapters import (
    ADAPTER_FILE,
    adapter_summary,
    apply,
    get_adapter,
    param_groups,
    save_adapter,
)
from pinnkan.adapters.growth import RankGrowth
from pinnkan.adapters.tucker import FACTORS
from pinnkan.common.atomic import make_dir
from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import (
    MODEL_FILE,
    MODEL_FORMAT,
    load_checkpoint,
    save_checkpoint,
)
from pinnkan.io.results import RunResult
from pinnkan.network.kan import KAN
from pinnkan.pde import PDEFamily
from pinnkan.pde.config import member_from_config
from pinnkan.pde.parametric import member_values
from pinnkan.pinn.homotopy import HomotopyPath, point
from pinnkan.pinn.loss import PinnLoss
from pinnkan.run import continuation
from pinnkan.run.config import RunConfig
from pinnkan.run.diagnostics import diagnose_run
from pinnkan.run.fit import StageRun, fit
from pinnkan.run.lock import acquire, locked_while_running
from pinnkan.run.outcome import build_result, finish
from pinnkan.run.resume import load_resume, stage_faults
from pinnkan.run.setup import (
    Setup,
    as_run_config,
    build_model,
    check_memory,
    cli_keys,
    loss_from_setup,
    validate_config,
)
from pinnkan.run.sources import check_compatible, matching, source_checkpoint, source_spec
from pinnkan.train.evaluate_only import evaluate_only
from pinnkan.train.lstsq import train_lstsq

log = logging.getLogger("pinnkan")


def pretrain(cfg: RunConfig | dict[str, Any], run_dir: Path, config_yaml: str = "") -> RunResult:
    """Train a source KAN on the family's source parameters; write model.safetensors,
    results.h5, plots.

    `cfg` is a RunConfig or a plain dict of the settings that differ from the defaults. With
    `resume` = run_dir it continues that run from its checkpoint.pt."""
    with locked_while_running(run_dir), stage_faults(run_dir, "pretrain"):
        return _pretrain(as_run_config(cfg, "pretrain"), run_dir, config_yaml)


def _pretrain(cfg: RunConfig, run_dir: Path, config_yaml: str) -> RunResult:
    setup = validate_config(cfg)
    pde = setup.pde
    gen = torch.Generator().manual_seed(setup.seed)
    model = build_model(cfg, pde, setup, gen)
    check_memory(model, pde, setup)
    loss_fn = loss_from_setup(pde, setup)
    acquire(run_dir)  # the config is valid: from here on this run writes into run_dir
    resume = load_resume(cfg, run_dir, "pretrain")
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": setup.train.lr}]
    log.info("pretrain %s on %s, widths %s", pde.describe(), setup.device, model.widths)
    attrs = {"model": model.kind, "widths": json.dumps(model.widths)}
    if pde.swept:  # a parametric source: the parameters it takes and their ranges
        attrs["parametric"] = json.dumps(pde.ranges)
    run = StageRun(cfg, model, pde, setup, loss_fn, gen, run_dir, config_yaml)
    hist = fit(run, groups, "pretrain", resume, {"stage": "pretrain"}, ("pretrain", {}, attrs))
    make_dir(run_dir)
    meta = {"stage": "pretrain", **_model_meta(pde, model, setup)}
    meta |= {"parametric": pde.ranges} if pde.swept else {}
    save_checkpoint(run_dir / MODEL_FILE, MODEL_FORMAT, meta, model.state_dict())
    return finish(
        run_dir, build_result(cfg, "pretrain", model, pde, setup, hist, config_yaml, {}, attrs)
    )


def transfer(cfg: RunConfig | dict[str, Any], run_dir: Path, config_yaml: str = "") -> RunResult:
    """Adapt a pretrained KAN to the family's target parameters with the configured adapter
    (`cfg` as for `pretrain`)."""
    with locked_while_running(run_dir), stage_faults(run_dir, "transfer"):
        return _transfer(as_run_config(cfg, "transfer"), run_dir, config_yaml)


def _source_network(
    meta: dict[str, Any],
    path: Path,
    model: KAN,
    setup: Setup,
    gen: torch.Generator,
    fresh: torch.Tensor,
) -> KAN:
    """The network of a source whose spec differs from the run's model settings: a transfer
    adapts the source as it is. `gen` is reset to `fresh`, so that the run draws what it would
    with model settings that match the source."""
    spec = source_spec(meta)
    if spec.get("params"):
        log.info(
            "source %s is a parametric network (inputs %s): evaluated at this member's values",
            path,
            ", ".join(spec["params"]),
        )
    else:
        log.info(
            "source %s holds a %s network, not this run's %s: the transfer adapts the source's "
            "(model settings apply to pretrain and adapter=scratch)",
            path,
            matching(spec),
            matching(model.spec()),
        )
    gen.set_state(fresh)
    return KAN.from_spec(spec, dtype=setup.dtype, device=setup.device, generator=gen)


def _transfer(cfg: RunConfig, run_dir: Path, config_yaml: str) -> RunResult:
    setup = validate_config(cfg)  # before any file is written
    pde, acfg = setup.pde, setup.adapter
    gen = torch.Generator().manual_seed(setup.seed)
    fresh = gen.get_state()  # a source's own network is built from the same draws (below)
    model = build_model(cfg, pde, setup, gen)
    loop = None
    kind = get_adapter(acfg.name)
    if kind.solve:  # one solve is the whole training
        setup = replace(setup, train=replace(setup.train, steps=1, lbfgs_steps=0))
        loop = train_lstsq
    elif setup.evaluate_only:
        loop = evaluate_only
    loss_fn = loss_from_setup(pde, setup)
    acquire(run_dir)  # the config is valid: from here on this run writes into run_dir
    resume = load_resume(cfg, run_dir, "transfer")
    source_path, source_meta = None, {}
    if kind.needs_source:
        root = Path(cfg.outputs_root)
        # a resumed run keeps the source it started from, even if newer pretrain runs exist
        source = resume[0].get("source") if resume else cfg.source
        source_path = source_checkpoint(source, root, pde.name, run_dir)
        source_meta, state = load_checkpoint(source_path, MODEL_FORMAT)
        if check_compatible(source_meta, source_path, pde, model):
            model = _source_network(source_meta, source_path, model, setup, gen, fresh)
            with cli_keys("adapter"):  # against the source's own layers
                acfg.validate(len(model.layers))
        try:
            model.load_state_dict(state)
        except RuntimeError:
            raise PinnkanError(f"checkpoint {source_path} does not fit the network") from None
        if model.params:  # a parametric source: the network at this member's values
            values, notes = member_values(pde.params, model.params, source_meta.get("parametric"))
            model.fix(values)
            for note in notes:
                log.warning("parametric source %s: %s (an extrapolation)", source_path, note)
    check_memory(model, pde, setup, acfg)
    first = loss_fn.sample(
        setup.train.n_interior, setup.train.n_boundary, gen, setup.dtype, setup.device
    )
    # acfg is validated for these layers (above): `apply` attaches, and records the hash of
    # the base that save_adapter writes into the adapter file
    apply(model, acfg, gen, lambda m: loss_fn(m, first))
    # what the update is measured from and what is frozen: after `apply` (slim zeroes A)
    A_pt = [layer.A.detach().clone() for layer in model.layers]
    started = continuation.start(cfg, run_dir, model, pde, acfg.name, source_path, resume)
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
        **({"optimizer": "lstsq"} if loop is not None else {}),
        "adapter": acfg.name,
        "cr": float(acfg.cr),
        "lr_strategy": acfg.lr_strategy,
        "init": acfg.init,
        "source": str(source_path) if source_path else None,
        "source_pde_params": json.dumps(source_meta.get("pde_params")) if source_meta else None,
        # the data file and sample the source was trained on (pde.reference), if any
        "source_reference": json.dumps(source_meta["reference"])
        if source_meta.get("reference")
        else None,
        "model": model.kind,
        "widths": json.dumps(model.widths),
        "layers": _layers_attr(summary),
    }
    attrs |= {"start": json.dumps(started)}  # where it started (pinnkan.run.continuation)
    if setup.train.optimizer == "lm":  # its initial λ: the transfer's, or a fresh network's
        attrs |= {"damping": setup.train.lm.damping}
    path = _homotopy(cfg, setup, pde, source_meta)
    if path is not None:
        attrs |= {"homotopy": cfg.transfer.homotopy, "leg_steps": cfg.transfer.leg_steps}
    growth = None
    if acfg.grow_to is not None:
        lr = setup.train.lr
        growth = RankGrowth(
            lambda m: param_groups(m, acfg, lr), acfg.cr, acfg.grow_to, acfg.grow_patience
        )
        attrs |= {"grow_to": acfg.grow_to, "grow_patience": acfg.grow_patience}
    extra = {"n_full_finetune": n_full}

    state_meta = {"stage": "transfer", "source": str(source_path) if source_path else None}
    state_meta["start"] = started
    run = StageRun(cfg, model, pde, setup, loss_fn, gen, run_dir, config_yaml, path, growth)
    report = ("transfer", extra, attrs)
    hist = fit(run, groups, f"transfer[{acfg.name}]", resume, state_meta, report, loop)
    if path is not None:  # how far along the path it got (1: the target)
        attrs["homotopy_s"] = _path_end(path, cfg, pde)
    if growth is not None:  # the ranks it ended with, and when they grew
        attrs |= {"layers": _layers_attr(adapter_summary(model))}
        attrs |= {"grown": json.dumps(growth.events)}
    make_dir(run_dir)
    spec_meta = _model_meta(pde, model, setup)
    merged = model.merged_state()  # A + ΔA, extra parameters, lo, hi
    save_checkpoint(run_dir / MODEL_FILE, MODEL_FORMAT, {**spec_meta, "stage": "transfer"}, merged)
    lotra = {
        i: {c: getattr(layer.adapter, c).detach().cpu().numpy() for c in FACTORS}
        for i, layer in enumerate(model.layers)
        if layer.adapter is not None
    }
    if lotra or kind.writes_adapter:  # lstsq: the solved last layer alone (A, bias)
        save_adapter(
            model,
            run_dir / ADAPTER_FILE,
            {
                **spec_meta,
                "adapter": acfg.name,
                "cr": acfg.cr,
                "base_source": str(source_path) if source_path else None,
            },
        )
    model_tensors = None
    if kind.records_delta:
        model_tensors = {
            i: {
                "A_pretrained": A_pt[i].cpu().numpy(),
                "delta": (layer.coefficients().detach() - A_pt[i]).cpu().numpy(),
            }
            for i, layer in enumerate(model.layers)
        }
    result = build_result(cfg, "transfer", model, pde, setup, hist, config_yaml, extra, attrs)
    result.lotra, result.model_tensors = lotra or None, model_tensors
    result = finish(run_dir, result)
    if kind.diagnose:  # the low-rank evidence: singular values and HOSVD error of ΔA
        diagnose_run(run_dir)
    return result


def _layers_attr(summary: list[dict[str, Any]]) -> str:
    """results.h5's `layers`: each layer's shape, mode, ranks and trainable count (JSON)."""
    rows = [
        {**r, "shape": list(r["shape"]), "ranks": list(r["ranks"]) if r["ranks"] else None}
        for r in summary
    ]
    return json.dumps(rows)


def _model_meta(pde: PDEFamily, model: KAN, setup: Setup) -> dict[str, Any]:
    """What a model or adapter file says of its network and member; `reference` is the data
    file its member came from (none for the family's own), which a transfer from it records as
    `source_reference`."""
    meta = {"pde": pde.name, "pde_params": pde.params, "spec": model.spec()}
    meta |= {"precision": setup.precision}
    record = pde.reference_record()
    return meta | ({"reference": record} if record is not None else {})


def _path_end(path: HomotopyPath, cfg: RunConfig, target: PDEFamily) -> float:
    """The fraction of the homotopy path the run ended at; a warning when the budget ran out
    before the target (the run's network then solves a member on the way, not the target)."""
    if path.at_target:
        return 1.0
    log.warning(
        "transfer.homotopy=%d ended at s = %.4g of its path, short of the target %s: the "
        "network solves a member on the way and its error is against the target. Raise "
        "train.steps, or loosen train.tol (a leg ends when it meets it or LM converges)",
        cfg.transfer.homotopy,
        path.done,
        target.describe(),
    )
    return path.done


def _homotopy(
    cfg: RunConfig, setup: Setup, target: PDEFamily, source_meta: dict[str, Any]
) -> HomotopyPath | None:
    """The homotopy path of `transfer.homotopy` > 1: from the source's member (its file's
    parameters, else pde.source) to the `target` member, every point a member of the family.
    """
    opts = cfg.transfer  # checked against the other options by validate_config
    if opts.homotopy <= 1:
        return None
    start = dict(source_meta.get("pde_params") or cfg.pde.source)
    pde_dict, end = dataclasses.asdict(cfg.pde), dict(target.params)

    def make_loss(s: float) -> PinnLoss:
        member = member_from_config({**pde_dict, "target": point(start, end, s)}, "target")
        return loss_from_setup(member, setup)

    return HomotopyPath(make_loss, opts.homotopy, opts.leg_steps)
