"""`pinnkan <stage> [hydra overrides...]`: dispatch to the stage's Hydra entry point.

Config-group choices (pde=, model=, adapter=, optim=), plugins and output directories are
checked here first (every value of a sweep), then the config is composed and validated
(pinnkan.stages.precheck), so a typo or a bad value gets one clear line instead of Hydra's
multi-line report.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from importlib import import_module, resources
from pathlib import Path

from omegaconf import OmegaConf

from pinnkan.adapters.tucker import check_cr
from pinnkan.common.atomic import unwritable_dir
from pinnkan.errors import PinnkanError
from pinnkan.run.merge import merge_to_file
from pinnkan.run.sweep import PLUGIN_GROUPS, check_plugin, sweep_values
from pinnkan.stages.entry import FAILED_JOBS
from pinnkan.version import __version__

STAGES = {
    "pretrain": "train the source KAN on the PDE family's source parameters",
    "transfer": "adapt a pretrained KAN to a target member (adapter=lotra|full|scratch|slim)",
}
COMMANDS = {
    **STAGES,
    "merge": "apply a LoTRA adapter file to its base model: pinnkan merge <adapter> [--base M]",
    "report": "collect results.h5 files into one table and plots: pinnkan report <dirs> [--out D]",
    "predict": "u of a trained run at your points: pinnkan predict <run> --points F [--out F]",
}
GROUPS = ("pde", "model", "adapter", "optim", "experiment")

USAGE = f"""usage: pinnkan <stage> [key=value ...] [-m key=a,b,c ...]

stages:
{chr(10).join(f"  {k:<10} {v}" for k, v in COMMANDS.items())}

examples:
  pinnkan pretrain pde=elliptic
  pinnkan transfer cr=0.25
  pinnkan transfer pde=parabolic pde.target.nu=0.2 cr=0.5
  pinnkan transfer -m cr=0.5,0.25,0.125
  pinnkan transfer -m hydra/launcher=joblib cr=0.5,0.25 pde.target.mu=1.5,2
  pinnkan report outputs/multirun/transfer/elliptic/<time> --out report/
  pinnkan pretrain resume=outputs/pretrain/elliptic/<run>   (continue an interrupted run)
  pinnkan merge outputs/transfer/elliptic/<run> --out merged.safetensors
  pinnkan predict outputs/transfer/elliptic/<run> --points pts.npz --out u.h5 --derivatives
  pinnkan <stage> --help      (Hydra's help: every config value)
"""


def group_options(group: str, config_dirs: list[Path] | None = None) -> list[str]:
    """Names of the YAML configs available in a config group: pinnkan's own and those in the
    user's `--config-dir`s (e.g. a PDE family of their own, docs/adding_a_pde.md)."""
    folders = [resources.files("pinnkan.conf") / group]
    folders += [Path(d) / group for d in config_dirs or [] if (Path(d) / group).is_dir()]
    names = {p.name[:-5] for f in folders for p in f.iterdir() if p.name.endswith(".yaml")}
    return sorted(names)


def config_dirs(args: list[str]) -> list[Path]:
    """The directories given with Hydra's `--config-dir DIR` / `-cd DIR` / `--config-dir=DIR`."""
    dirs = []
    for i, arg in enumerate(args):
        if arg in ("-cd", "--config-dir") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
    return dirs


# where runs are written (conf/base.yaml); checked before Hydra, which would fail with a traceback
OUTPUT_DIRS = ("outputs_root", "hydra.run.dir", "hydra.sweep.dir")
DEFAULT_OUTPUTS = "outputs"


def check_overrides(stage: str, args: list[str]) -> str | None:
    """A one-line message for an override we can tell is wrong before Hydra runs, else None."""
    output_given, own_dirs = False, config_dirs(args)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key in PLUGIN_GROUPS:
            problem = check_plugin(key, value)
            if problem:
                return problem
        if key in GROUPS:
            options = group_options(key, own_dirs)
            if key == "adapter" and stage != "transfer":
                return f"adapter= applies to `pinnkan transfer`, not `pinnkan {stage}`"
            for choice in sweep_values(value):
                if choice not in options:
                    own = ""
                    if key == "pde":
                        own = f"; a pde of your own: --config-dir DIR with DIR/pde/{choice}.yaml"
                    return f"unknown {key} {choice!r}; choose one of: {', '.join(options)}{own}"
        if key in ("cr",):
            for v in sweep_values(value):
                try:
                    check_cr(float(v))
                except ValueError:
                    return f"cr={v} is not a number; pass a compression ratio like cr=0.25"
                except PinnkanError as exc:
                    return str(exc)
        output_given = output_given or key in OUTPUT_DIRS
        if key in OUTPUT_DIRS and "," not in value and "$" not in value:
            problem = unwritable_dir(value.strip("'\""))
            if problem:
                return f"cannot create {key}={value}: {problem}; pass another {key}="
        if key in ("train.steps", "optim.lbfgs_steps"):
            for v in sweep_values(value):
                # a transfer with train.steps=0 evaluates its start (pinnkan.train.evaluate_only)
                lowest = 0 if key == "optim.lbfgs_steps" or stage == "transfer" else 1
                if not v.strip().lstrip("-").isdigit() or int(v) < lowest:
                    return f"{key}={v} must be an integer >= {lowest}"
    if not output_given:
        problem = unwritable_dir(DEFAULT_OUTPUTS)
        if problem:
            where = f"the runs' directory {DEFAULT_OUTPUTS}/"
            return f"cannot create {where}: {problem}; pass outputs_root="
    return None


def resume_overrides(stage: str, args: list[str]) -> list[str]:
    """`resume=<run dir>` becomes the run's own overrides plus hydra.run.dir=<run dir>; the
    checkpoint itself is checked by `pinnkan.run.resume.load_resume`."""
    resumes = [a for a in args if a.split("=", 1)[0] == "resume"]
    if not resumes:
        return args
    if len(args) != 1:
        raise PinnkanError(
            "resume=<run dir> takes no other overrides: the run continues with its own config"
        )
    run_dir = Path(resumes[0].split("=", 1)[1])
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise PinnkanError(f"{run_dir} is not a pinnkan run directory (no .hydra/overrides.yaml)")
    try:
        saved_list = OmegaConf.to_container(OmegaConf.load(saved))
    except Exception:  # yaml / omegaconf raise many types for a damaged file
        saved_list = None
    if not isinstance(saved_list, list) or not all(isinstance(o, str) for o in saved_list):
        raise PinnkanError(
            f"{saved} is damaged (not the list of overrides Hydra writes); start the run again"
        )
    own = [o for o in saved_list if not o.startswith("resume=")]
    where = _quote(str(run_dir))
    return [*_saved_config_dirs(run_dir), *own, f"hydra.run.dir={where}", f"resume={where}"]


def _saved_config_dirs(run_dir: Path) -> list[str]:
    """`--config-dir` flags the run was started with (they are not overrides: Hydra records
    them in .hydra/hydra.yaml as command-line config sources)."""
    try:
        sources = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.config_sources
        dirs = [str(s.path) for s in sources if s.provider == "command-line" and s.schema == "file"]
    except Exception:  # an older or damaged hydra.yaml: the overrides alone
        return []
    return [arg for d in dirs for arg in ("--config-dir", d)]


def _quote(value: str) -> str:
    """A path as a Hydra override value (quoted unless it is plain)."""
    if re.fullmatch(r"[\w./-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _one_line_errors(command: Callable[[], object]) -> int:
    """Run a command that is not a Hydra stage: 0, or 2 after a user error's one line."""
    try:
        command()
    except PinnkanError as exc:
        print(f"pinnkan: error: {exc}", file=sys.stderr)
        return 2
    return 0


def merge_main(args: list[str]) -> int:
    """`pinnkan merge <adapter file or transfer run dir> [--base M] [--out F]`."""
    parser = argparse.ArgumentParser(
        prog="pinnkan merge",
        description="Apply a LoTRA adapter file to the base model it was trained on and write "
        "the merged model. The base must be the adapter's own (checked by hash).",
    )
    parser.add_argument(
        "adapter", type=Path, help="adapter.safetensors (or an old adapter.pt) or the run dir"
    )
    parser.add_argument(
        "--base", type=Path, default=None, help="base model file or run dir (default: recorded)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output file (default: merged.safetensors beside it)"
    )
    ns = parser.parse_args(args)
    return _one_line_errors(
        lambda: print(f"merged model written to {merge_to_file(ns.adapter, ns.base, ns.out)}")
    )


def report_main(args: list[str]) -> int:
    """`pinnkan report <multirun dir or run dirs...> [--out DIR]`."""
    parser = argparse.ArgumentParser(
        prog="pinnkan report",
        description="Collect every results.h5 below the given directories into one table "
        "(report.csv, report.h5, printed) and plots; computes the ΔA diagnostics of full "
        "fine-tuning runs that lack them.",
    )
    parser.add_argument("paths", type=Path, nargs="+", help="multirun dirs, run dirs or files")
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default: the first path)"
    )
    ns = parser.parse_args(args)
    from pinnkan.report import run_report  # matplotlib only when reporting

    return _one_line_errors(lambda: run_report(ns.paths, ns.out))


def predict_main(args: list[str]) -> int:
    """`pinnkan predict <run dir or model file> --points F [--out F] [--derivatives]`."""
    parser = argparse.ArgumentParser(
        prog="pinnkan predict",
        description="Evaluate a trained network (pretrain, transfer or merged model) at the "
        "points of an NPZ or HDF5 file (an (N, d) array in physical coordinates) and write u, "
        "and with --derivatives its exact first and second derivatives, to an HDF5 file.",
    )
    parser.add_argument("run", type=Path, help="run directory or model file")
    parser.add_argument("--points", type=Path, required=True, help="points file (.npz or .h5)")
    parser.add_argument(
        "--key", default=None, help="the array to read (default: `points`, or the only one)"
    )
    parser.add_argument("--out", type=Path, default=Path("predictions.h5"), help="output HDF5 file")
    parser.add_argument(
        "--derivatives", action="store_true", help="also u_c and u_cc for each coordinate c"
    )
    parser.add_argument(
        "--adapter",
        action="store_true",
        help="a transfer run's base with its adapter attached (default: its merged network)",
    )
    ns = parser.parse_args(args)
    from pinnkan.run.solution import predict_to_file

    options = {"derivatives": ns.derivatives, "adapter": ns.adapter, "key": ns.key}
    return _one_line_errors(
        lambda: print(
            f"predictions written to {predict_to_file(ns.run, ns.points, ns.out, **options)}"
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pinnkan` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if args[0] in ("-V", "--version"):
        print(f"pinnkan {__version__}")
        return 0
    stage, rest = args[0], args[1:]
    if stage == "merge":
        return merge_main(rest)
    if stage == "report":
        return report_main(rest)
    if stage == "predict":
        return predict_main(rest)
    if stage not in STAGES:
        print(
            f"pinnkan: error: unknown command {stage!r}; choose one of: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        rest = resume_overrides(stage, rest)
    except PinnkanError as exc:
        print(f"pinnkan: error: {exc}", file=sys.stderr)
        return 2
    problem = check_overrides(stage, rest)
    if problem is None and not any(a.startswith("resume=") for a in rest):
        from pinnkan.stages.precheck import check_composes  # Hydra's compose API

        problem = check_composes(stage, rest, config_dirs(rest))
    if problem:
        print(f"pinnkan: error: {problem}", file=sys.stderr)
        return 2
    entry = import_module(f"pinnkan.stages.{stage}")
    FAILED_JOBS.clear()
    sys.argv = [f"pinnkan {stage}", *rest]
    entry.main()
    if FAILED_JOBS:
        first_num, first_msg = FAILED_JOBS[0]
        print(
            f"pinnkan: error: {len(FAILED_JOBS)} sweep job(s) failed (job {first_num}: "
            f"{first_msg}); the other jobs' results are in their directories",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
