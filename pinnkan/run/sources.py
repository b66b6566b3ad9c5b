"""Where a transfer's source comes from: the given run or file, or the newest finished pretrain
run of the family; the check that it belongs to this family and domain; and the network it holds,
which a transfer adapts whatever the run's model settings say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pinnkan.errors import PinnkanError
from pinnkan.io.checkpoint import model_file
from pinnkan.io.results import RESULTS_FILE, root_attrs
from pinnkan.network.kan import (
    KAN,
    LAYER_KINDS,
    UNNAMED_KIND,
    completed_spec,
    renamed_spec,
    spec_differences,
)
from pinnkan.pde import PDEFamily, current_name


def find_source(outputs_root: Path, pde: str, exclude: Path | None = None) -> Path:
    """Newest finished pretrain run of `pde` under `outputs_root` (a run dir with a model file:
    model.safetensors, or model.pt of an earlier pinnkan version), also one recorded under
    another name of the family (`pinnkan.pde.ALIASES`)."""
    found = []
    for res in Path(outputs_root).rglob(RESULTS_FILE):
        run = res.parent
        if exclude is not None and run.resolve() == exclude.resolve():
            continue
        if not model_file(run).is_file():
            continue
        attrs = root_attrs(res)
        same = current_name(str(attrs.get("pde"))) == current_name(pde)
        ok = attrs.get("stage") == "pretrain" and same
        if ok and attrs.get("status", "ok") == "ok":
            found.append((res.stat().st_mtime, run))
    if not found:
        raise PinnkanError(
            f"no finished pretrain run of pde={pde} under {outputs_root}/; run "
            f"`pinnkan pretrain pde={pde}` first or pass source=<run dir>"
        )
    return max(found)[1]


def source_checkpoint(source: str | None, outputs_root: Path, pde: str, run_dir: Path) -> Path:
    """The model file of the given source (run dir or file), or of the newest pretrain run."""
    if source:
        return model_file(source)
    return model_file(find_source(outputs_root, pde, exclude=run_dir))


def check_compatible(meta: dict[str, Any], path: Path, pde: PDEFamily, model: KAN) -> list[str]:
    """Refuse a checkpoint of another PDE family or domain, in one line. Return the spec keys
    in which its network differs from `model` (none: its tensors load into `model`)."""
    if current_name(str(meta.get("pde"))) != pde.name:
        raise PinnkanError(
            f"checkpoint {path} was trained on pde={meta.get('pde')}, but this transfer is "
            f"pde={pde.name}; pass pde={meta.get('pde')} or a source= run of {pde.name}"
        )
    want, have = model.spec(), source_spec(meta)
    differ = spec_differences(have, want)
    # a parametric source's domain goes on with its parameters' ranges: the coordinates' part
    n_swept = len(have.get("params") or [])
    coords = {
        **have,
        "domain": (have.get("domain") or [])[: len(have.get("domain") or []) - n_swept],
    }
    if "domain" in spec_differences(coords, want):
        raise PinnkanError(
            f"checkpoint {path} is a network on the domain {have.get('domain')}, but this "
            f"pde={pde.name} member is posed on {want['domain']}; pass a source= run on that domain"
        )
    return differ


def source_spec(meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's network spec, completed (a file without `kind`, or the older `basis`,
    holds an UNNAMED_KIND network)."""
    return completed_spec({"kind": UNNAMED_KIND, **renamed_spec(meta.get("spec", {}))})


def matching(spec: dict[str, Any]) -> str:
    """The model overrides that build the network of a checkpoint's `spec`: its kind, hidden
    widths and every option of the kind that the spec holds (e.g. `model=bspline
    model.hidden=[16,16] model.grid_size=5`)."""
    kind = spec.get("kind", UNNAMED_KIND)
    out = [f"model={kind}", "model.hidden=[" + ",".join(map(str, spec["widths"][1:-1])) + "]"]
    if kind in LAYER_KINDS:
        defaults = LAYER_KINDS[kind].defaults()
        for key, value in spec.items():
            if key in defaults and value != defaults[key]:
                shown = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else value
                out.append(f"model.{key}={shown}")
    return " ".join(out)
