"""The typed config: the library's defaults are the CLI's for every group option, the core runs
without Hydra, and a bad key or value is one line, from the library and from the CLI alike."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from pinnkan.adapters import AdapterConfig, adapter_names
from pinnkan.errors import FieldError, PinnkanError
from pinnkan.network.kan import KAN, LAYER_KINDS
from pinnkan.pde import FAMILIES, build_pde
from pinnkan.run.config import RunConfig
from pinnkan.run.setup import build_model, pde_from_config, resolve_setup, validate_config
from pinnkan.stages.precheck import check_composes
from pinnkan.stages.schema import register
from pinnkan.train.config import TrainConfig
from pinnkan.train.levenberg_marquardt import LMConfig
from pinnkan.train.lm_loop import TRANSFER_DAMPING
from pinnkan.train.optimizers import optimizer_names
from tests.conftest import tiny_config


def composed(stage: str, *overrides: str) -> RunConfig:
    """The config `pinnkan <stage> <overrides>` runs with, as the stage receives it."""
    register()
    with initialize_config_module("pinnkan.conf", version_base="1.3"):
        cfg = compose(config_name=stage, overrides=list(overrides))
    return RunConfig.from_dict(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]


@pytest.mark.parametrize("stage", ["pretrain", "transfer"])
def test_cli_defaults_are_the_library_defaults(stage: str) -> None:
    """`pinnkan <stage>` with no overrides is RunConfig() of that stage, field for field."""
    assert composed(stage).as_dict() == RunConfig(stage=stage).as_dict()


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_model_option_defaults(kind: str) -> None:
    """model=<kind> builds the network `KAN(widths, domain, kind=kind)` builds by default."""
    cfg = composed("pretrain", f"model={kind}")
    assert dataclasses.asdict(cfg.model) == dataclasses.asdict(LAYER_KINDS[kind].model())
    setup = resolve_setup(cfg)
    pde = pde_from_config(cfg, "source")
    cli = build_model(cfg, pde, setup, torch.Generator().manual_seed(0))
    widths = [pde.dim, *LAYER_KINDS[kind].hidden, 1]
    lib = KAN(widths, list(pde.domain), kind=kind, dtype=setup.dtype)
    assert cli.spec() == lib.spec() and cli.options == lib.options


@pytest.mark.parametrize("name", optimizer_names())
def test_optim_option_defaults(name: str) -> None:
    """optim=<name> trains a pretrain with `TrainConfig(optimizer=name)`."""
    cli = resolve_setup(composed("pretrain", f"optim={name}")).train
    lib = TrainConfig(optimizer=name)
    lib.validate()
    assert cli == lib


def test_lm_damping_is_per_stage() -> None:
    """optim=lm starts a pretrain at λ 1e-3 and a transfer (near its solution) lower, but a
    transfer from a fresh network (adapter=scratch or slim) at the pretrain's (a LoTRA update
    at zero starts at the transfer's: tests/test_continuation.py); one number sets both
    stages, a dict each."""
    pretrain = resolve_setup(composed("pretrain")).train.lm.damping
    transfer = resolve_setup(composed("transfer")).train.lm.damping
    assert pretrain == LMConfig().damping == 1e-3 and transfer == TRANSFER_DAMPING < pretrain
    # a fresh network starts as far from its solution as a pretrain's: the pretrain's λ
    for fresh in ("scratch", "slim"):
        assert resolve_setup(composed("transfer", f"adapter={fresh}")).train.lm.damping == pretrain
    full = resolve_setup(composed("transfer", "adapter=full")).train.lm.damping
    assert full == TRANSFER_DAMPING
    assert resolve_setup(composed("transfer", "optim.damping=1e-4")).train.lm.damping == 1e-4
    both = "optim.damping={pretrain:0.01,transfer:1e-5}"
    assert resolve_setup(composed("pretrain", both)).train.lm.damping == 0.01
    assert resolve_setup(composed("transfer", both)).train.lm.damping == 1e-5


@pytest.mark.parametrize("name", adapter_names())
def test_adapter_option_defaults(name: str) -> None:
    """adapter=<name> is `AdapterConfig(name=name)`: for lotra, the multipliers 16 / 9."""
    assert composed("transfer", f"adapter={name}").adapter == AdapterConfig(name=name)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_pde_option_defaults(name: str) -> None:
    """pde=<name> solves `build_pde(name)` (same parameters, same loss weights); its transfer
    target is the family's `target_params`."""
    cfg = composed("transfer", f"pde={name}")
    for which, params in (("source", None), ("target", FAMILIES[name].target_params)):
        cli, lib = pde_from_config(cfg, which), build_pde(name, params)
        assert (cli.params, cli.weights, cli.domain) == (lib.params, lib.weights, lib.domain)


def test_readme_library_example_solves_the_cli_problem() -> None:
    """The README's library example (build_pde, KAN, TrainConfig(optimizer="lm")) is
    `pinnkan pretrain pde=parabolic` with train.steps=300."""
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    example = text.split("## Library use", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert 'build_pde("parabolic", {"nu": 0.1})' in example
    assert "KAN([2, 20, 20, 1], list(pde.domain)" in example
    assert 'TrainConfig(steps=300, optimizer="lm")' in example
    cfg = composed("pretrain", "pde=parabolic", "train.steps=300")
    cli, lib = pde_from_config(cfg, "source"), build_pde("parabolic", {"nu": 0.1})
    assert (cli.params, cli.weights) == (lib.params, lib.weights)
    assert (cfg.model.name, cfg.model.hidden) == ("chebyshev", [20, 20])
    lib_train = TrainConfig(steps=300, optimizer="lm")
    lib_train.validate()
    assert resolve_setup(cfg).train == lib_train


def test_core_runs_without_hydra(tmp_path: Path) -> None:
    """With hydra and omegaconf unimportable, the core imports and a library stage runs."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        from pathlib import Path

        class NoHydra(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("hydra", "omegaconf"):
                    raise ImportError(f"{{name}} is blocked")
                return None

        sys.meta_path.insert(0, NoHydra())
        from pinnkan import adapters, pde
        from pinnkan.run import config, merge, runner
        from pinnkan.network import kan
        from pinnkan.io import results
        from pinnkan.train import training
        from tests.conftest import tiny_config

        cfg = tiny_config({str(tmp_path / "out")!r}, {{"train.steps": 2, "eval.n": 5}})
        result = runner.pretrain(cfg, Path({str(tmp_path / "run")!r}))
        assert result.status == "ok", result.status
        assert not any(m.split(".")[0] in ("hydra", "omegaconf") for m in sys.modules)
        print("ok")
        """
    )
    root = Path(__file__).parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"train": {"stpes": 3}}, r"^unknown setting train\.stpes; train has: steps, "),
        ({"bogus": 1}, r"^unknown setting bogus"),
        ({"pde": {"name": "elliptic", "wieghts": {}}}, r"^unknown setting pde\.wieghts"),
        ({"adapter": {"rank": [1, 1, 1]}}, r"^unknown setting adapter\.rank"),
        ({"optim": {"name": "sgd"}}, r"^unknown optim 'sgd'; choose one of: adam, gd, lm"),
        ({"model": {"name": "mlp", "degree": 3}}, r"^model\.degree is not an option of model=mlp"),
    ],
)
def test_library_config_errors_are_one_line(cfg: dict, match: str) -> None:
    with pytest.raises(PinnkanError, match=match) as info:
        RunConfig.from_dict(cfg)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("stage", "args", "want"),
    [
        ("pretrain", ["train.stpes=3"], "unknown setting train.stpes; train has: steps, "),
        ("pretrain", ["train.n_interior=abc"], "train.n_interior='abc' must be an integer >= 1"),
        (
            "pretrain",
            ["model=bspline", "model.grid_size=2.5"],
            "model.grid_size=2.5 must be an integer in [1, ",
        ),
        (  # an option of another kind: the line names the kind in use and those that have it
            "pretrain",
            ["model.grid_size=5"],
            "unknown setting model.grid_size; model=chebyshev has: name, hidden, periodic, degree, "
            "decay; grid_size is an option of model=bspline, model=lmkan",
        ),
        ("pretrain", ["cr=0.5"], "cr= applies to `pinnkan transfer`, not `pinnkan pretrain`"),
        ("transfer", ["cr=abc"], "cr='abc' is not a number; pass a compression ratio"),
        ("transfer", ["-m", "cr=0.5", "train.steps=3,2.5"], "train.steps=2.5 must be an integer"),
        ("transfer", ["adapter.rank=2"], "unknown setting adapter.rank; adapter has: name, "),
        ("pretrain", ["pde.domain=[[0,2],[0,1]]", "train.steps=2"], None),
        ("pretrain", ["optim.lr=1e-3"], "unknown setting optim.lr; optim has: "),  # lm has none
    ],
)
def test_cli_config_errors_are_one_line(stage: str, args: list, want: str | None) -> None:
    """Hydra's key and type errors become the library's one line before Hydra runs."""
    got = check_composes(stage, args, [])
    if want is None:
        assert got is None
    else:
        assert got is not None and got.startswith(want) and "\n" not in got, got


def test_pde_hyperbolic_is_the_advection_family() -> None:
    """pde=hyperbolic (the mission's name for the first-order hyperbolic family) passes the CLI's
    check and composes to pde=advection, name included; the library takes it too."""
    from pinnkan.cli import check_overrides, group_options
    from pinnkan.pde import ALIASES
    from pinnkan.pde.advection import Advection
    from pinnkan.run.config import PDEConfig

    assert check_overrides("pretrain", ["pde=hyperbolic"]) is None
    for stage in ("pretrain", "transfer"):
        assert (
            composed(stage, "pde=hyperbolic").as_dict()
            == composed(stage, "pde=advection").as_dict()
        )
    for alias, name in ALIASES.items():  # every alias is a pde= option recording the family
        assert alias in group_options("pde")
        assert composed("pretrain", f"pde={alias}").pde.name == name
    pde = build_pde("hyperbolic", {"beta": 3.0})
    assert type(pde) is Advection and pde.name == "advection" and pde.params == {"beta": 3.0}
    lib = RunConfig.from_dict({"pde": {"name": "hyperbolic"}}).pde
    assert lib == PDEConfig.of_family(Advection)  # target beta=2, as pde=advection
    with pytest.raises(PinnkanError) as err:
        build_pde("hyperbolik")
    assert "\n" not in str(err.value) and "hyperbolic" in str(err.value)


def _fake_pretrain(run: Path, pde: str, mtime: float) -> Path:
    """A finished pretrain run dir as find_source sees it: results.h5 attrs and a model file."""
    run.mkdir(parents=True)
    with h5py.File(run / "results.h5", "w") as f:
        f.attrs.update(stage="pretrain", pde=pde, status="ok")
    (run / "model.safetensors").write_bytes(b"")
    os.utime(run / "results.h5", (mtime, mtime))
    return run


def test_a_source_under_either_name_of_the_family_is_found(tmp_path: Path) -> None:
    """A transfer of pde=advection or pde=hyperbolic finds the newest pretrain run of the family,
    whichever name it recorded (files written before the rename say hyperbolic); its checkpoint
    fits; another family's does not."""
    from pinnkan.run.sources import check_compatible, find_source

    old = _fake_pretrain(tmp_path / "old", "hyperbolic", 1_000_000)
    _fake_pretrain(tmp_path / "other", "elliptic", 3_000_000)
    assert find_source(tmp_path, "advection") == old
    assert find_source(tmp_path, "hyperbolic") == old
    new = _fake_pretrain(tmp_path / "new", "advection", 2_000_000)
    assert find_source(tmp_path, "hyperbolic") == new
    with pytest.raises(PinnkanError, match="no finished pretrain run of pde=wave"):
        find_source(tmp_path, "wave")
    pde = build_pde("advection")
    model = KAN([2, 3, 1], list(pde.domain), kind="bspline")
    meta = {"pde": "hyperbolic", "spec": model.spec()}
    check_compatible(meta, tmp_path / "model.pt", pde, model)  # no error
    with pytest.raises(PinnkanError, match="pde=elliptic"):
        check_compatible({**meta, "pde": "elliptic"}, tmp_path / "model.pt", pde, model)


def test_hyperbolic_runs_record_advection_and_old_files_still_serve(tmp_path: Path) -> None:
    """A library pretrain of pde hyperbolic records advection (one family, one name in files);
    with its files rewritten as before the rename (pde hyperbolic), an advection transfer finds
    and adapts it, and merging an adapter recorded as hyperbolic writes advection."""
    from conftest import tiny_config

    from pinnkan.adapters import ADAPTER_FILE
    from pinnkan.adapters.files import ADAPTER_FORMAT
    from pinnkan.io.checkpoint import MODEL_FORMAT, load_checkpoint, model_file, save_checkpoint
    from pinnkan.io.results import root_attrs
    from pinnkan.run import runner
    from pinnkan.run.merge import merge_adapter

    def rename(path: Path, fmt: str) -> None:
        meta, state = load_checkpoint(path, fmt)
        assert meta["pde"] == "advection"
        save_checkpoint(path, fmt, {**meta, "pde": "hyperbolic"}, state)

    src, dst = tmp_path / "src", tmp_path / "dst"
    runner.pretrain(tiny_config(tmp_path, {"pde": {"name": "hyperbolic"}}), src)
    assert root_attrs(src / "results.h5")["pde"] == "advection"
    rename(model_file(src), MODEL_FORMAT)
    with h5py.File(src / "results.h5", "r+") as f:
        f.attrs["pde"] = "hyperbolic"
    cfg = tiny_config(tmp_path, {"pde": {"name": "advection"}, "adapter": {"name": "lotra"}})
    runner.transfer(cfg, dst)  # no source=: the newest pretrain run of the family
    attrs = root_attrs(dst / "results.h5")
    assert attrs["pde"] == "advection" and attrs["source"] == str(model_file(src))
    assert json.loads(attrs["pde_params"]) == {"beta": 2.0}
    rename(dst / ADAPTER_FILE, ADAPTER_FORMAT)
    assert merge_adapter(dst)[0]["pde"] == "advection"


@pytest.mark.parametrize(("given", "means"), [(False, "none"), ("False", "none"), ("true", "auto")])
def test_progress_takes_a_yaml_boolean(given: object, means: str) -> None:
    """`train.progress=false` (Hydra hands the str field "False") turns the bar off; true is
    the default (auto)."""
    cfg = TrainConfig(progress=given)  # type: ignore[arg-type]
    cfg.validate()
    assert cfg.progress == means


@pytest.mark.parametrize(
    ("library", "changes", "message"),
    [
        (lambda: TrainConfig(steps=2.5).validate(), {"train.steps": 2.5}, "train.steps=2.5 must"),
        (
            lambda: TrainConfig(lm=LMConfig(damping=0.0)).validate(),
            {"optim.damping": 0.0},
            "optim.damping=0.0 must",
        ),
        (lambda: TrainConfig(optimizer="adam", lr_decay=2.0).validate(), None, None),
        (
            lambda: AdapterConfig(grow_patience=0).validate(2),
            {"adapter.grow_patience": 0},
            "adapter.grow_patience=0 must",
        ),
        (
            lambda: build_pde("elliptic", weights={"residual": -1.0}),
            {"pde.weights": {"residual": -1.0}},
            "pde.weights.residual=-1.0 must",
        ),
        (
            lambda: LAYER_KINDS["bspline"].resolve("bspline", {"grid_size": 2.5}),
            {"model.grid_size": 2.5},
            "model.grid_size=2.5 must",
        ),
    ],
    ids=["train", "lm", "optim", "adapter", "pde", "model"],
)
def test_the_library_names_its_arguments_and_the_cli_its_keys(
    library: Any, changes: dict | None, message: str | None, tmp_path: Path
) -> None:
    """A bad value is named as the library spells it (`steps`, `lm.damping`, `lr_decay`,
    `grow_patience`); the stages report it under the CLI's key (`train.steps`, ...)."""
    with pytest.raises(FieldError) as info:
        library()
    assert not str(info.value).startswith(("train.", "optim.", "adapter."))
    if changes is None:
        assert str(info.value).startswith("lr_decay=2.0")
        return
    cfg = tiny_config(tmp_path, {"optim": {"name": "lm"}, **changes})
    cfg["stage"] = "transfer" if "adapter.grow_patience" in changes else "pretrain"
    with pytest.raises(FieldError, match=re.escape(message)):
        validate_config(RunConfig.from_dict(cfg))
