"""Low-rank evidence for LoTRA from a full fine-tuning run (METHOD.md §2, Diagnostics).

For each layer's update ΔA = A_final − A_pretrained (n_in, n_out, n_d): the normalised singular
values σ_i/σ_1 of its three mode unfoldings, beside those of A_pretrained as a control, and the
relative truncated-HOSVD error ||ΔA − HOSVD_r(ΔA)|| / ||ΔA|| at the ranks each cr implies: the
best a rank-(r1, r2, r3) LoTRA adapter could do (up to HOSVD's quasi-optimality).

Layout written into results.h5 (group ``diagnostics``, attribute ``crs`` = JSON list of cr):
``diagnostics/layer_<l>/{delta_sv_mode<m>, A_pretrained_sv_mode<m>}`` (m = 1, 2, 3; 1-D σ_i/σ_1,
descending), ``hosvd_ranks`` (n_cr, 3) int, ``hosvd_rel_error`` (n_cr,), attributes
``shape`` (JSON [n_in, n_out, n_d]), ``delta_norm`` and ``A_pretrained_norm`` (Frobenius norms).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pinnkan.adapters.tucker import leading_subspace, ranks_from_cr, unfold
from pinnkan.common.atomic import atomic_replace
from pinnkan.io.plots import save_png
from pinnkan.io.results import RESULTS_FILE

CRS = (1.0, 0.5, 0.25, 0.125)
GROUP = "diagnostics"
PNG = "diagnostics.png"


@dataclass
class LayerDiagnostics:
    """The diagnostics of one layer; arrays are float64 numpy."""

    shape: tuple[int, int, int]
    delta_sv: list[np.ndarray]  # per mode m: σ_i/σ_1 of unfold(ΔA, m), descending
    pretrained_sv: list[np.ndarray]  # the same for A_pretrained (control)
    crs: list[float]
    ranks: list[tuple[int, int, int]]  # ranks_from_cr(shape, cr) for each cr
    hosvd_rel_error: list[float]  # ||ΔA − HOSVD_r(ΔA)|| / ||ΔA|| for each cr
    delta_norm: float
    pretrained_norm: float


def normalised_singular_values(t: torch.Tensor) -> list[np.ndarray]:
    """σ_i/σ_1 of the three mode unfoldings of a 3-way tensor (all zeros for a zero tensor)."""
    out = []
    for mode in range(3):
        s = torch.linalg.svdvals(unfold(t.double(), mode))
        out.append((s / s[0] if s[0] > 0 else torch.zeros_like(s)).numpy())
    return out


def hosvd_truncate(t: torch.Tensor, ranks: tuple[int, int, int]) -> torch.Tensor:
    """Truncated HOSVD of a 3-way tensor: project each mode on its top-r_m singular vectors."""
    t = t.double()
    U = [leading_subspace(t, m, r) for m, r in enumerate(ranks)]  # (dim_m, r_m)
    core = torch.einsum("ijk,ia,jb,kc->abc", t, *U)
    return torch.einsum("abc,ia,jb,kc->ijk", core, *U)


def hosvd_rel_error(t: torch.Tensor, ranks: tuple[int, int, int]) -> float:
    """||t − HOSVD_r(t)|| / ||t|| (0 for a zero tensor)."""
    norm = float(torch.linalg.norm(t.double()))
    if norm == 0.0:
        return 0.0
    return float(torch.linalg.norm(t.double() - hosvd_truncate(t, ranks))) / norm


def layer_diagnostics(
    pretrained: np.ndarray | torch.Tensor,
    delta: np.ndarray | torch.Tensor,
    crs: tuple[float, ...] = CRS,
) -> LayerDiagnostics:
    """All diagnostics of one layer from A_pretrained and ΔA, both (n_in, n_out, n_d)."""
    a = torch.as_tensor(np.asarray(pretrained), dtype=torch.float64)
    d = torch.as_tensor(np.asarray(delta), dtype=torch.float64)
    assert a.shape == d.shape and d.ndim == 3, (a.shape, d.shape)
    shape = tuple(int(n) for n in d.shape)
    ranks = [ranks_from_cr(shape, cr) for cr in crs]  # type: ignore[arg-type]
    return LayerDiagnostics(
        shape=shape,  # type: ignore[arg-type]
        delta_sv=normalised_singular_values(d),
        pretrained_sv=normalised_singular_values(a),
        crs=[float(c) for c in crs],
        ranks=ranks,
        hosvd_rel_error=[hosvd_rel_error(d, r) for r in ranks],
        delta_norm=float(torch.linalg.norm(d)),
        pretrained_norm=float(torch.linalg.norm(a)),
    )


def read_update(results: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{layer: (A_pretrained, delta)} from a results.h5 ({} when it stores none)."""
    out = {}
    with h5py.File(results, "r") as f:
        if "model" not in f:
            return {}
        for name, grp in f["model"].items():
            if "A_pretrained" in grp and "delta" in grp:
                out[int(name.removeprefix("layer_"))] = (grp["A_pretrained"][()], grp["delta"][()])
    return dict(sorted(out.items()))


def has_diagnostics(results: Path) -> bool:
    """Whether a results.h5 already holds the diagnostics group."""
    with h5py.File(results, "r") as f:
        return GROUP in f


def _write_group(f: h5py.File, layers: dict[int, LayerDiagnostics]) -> None:
    if GROUP in f:
        del f[GROUP]
    root = f.create_group(GROUP)
    crs = next(iter(layers.values())).crs if layers else list(CRS)
    root.attrs["crs"] = json.dumps(crs)
    root.attrs["description"] = (
        "per layer: sigma_i/sigma_1 of the mode-m unfoldings of delta = A_final - A_pretrained "
        "and of A_pretrained; relative truncated-HOSVD error of delta at the ranks of each cr"
    )
    for layer, d in layers.items():
        g = root.create_group(f"layer_{layer}")
        for m in range(3):
            g.create_dataset(f"delta_sv_mode{m + 1}", data=d.delta_sv[m])
            g.create_dataset(f"A_pretrained_sv_mode{m + 1}", data=d.pretrained_sv[m])
        g.create_dataset("hosvd_ranks", data=np.asarray(d.ranks, dtype=np.int64))  # (n_cr, 3)
        g.create_dataset("hosvd_rel_error", data=np.asarray(d.hosvd_rel_error))  # (n_cr,)
        g.attrs["shape"] = json.dumps(list(d.shape))
        g.attrs["delta_norm"] = d.delta_norm
        g.attrs["A_pretrained_norm"] = d.pretrained_norm


def write_diagnostics(results: Path, layers: dict[int, LayerDiagnostics]) -> None:
    """Add (or replace) the diagnostics group of a results.h5 without ever leaving it half
    written: edit a copy in the same directory, fsync it, then rename it over the original."""
    with atomic_replace(results) as tmp:
        shutil.copyfile(results, tmp)
        with h5py.File(tmp, "a") as f:
            _write_group(f, layers)


def read_diagnostics(results: Path) -> dict[int, LayerDiagnostics]:
    """The diagnostics group of a results.h5 as LayerDiagnostics ({} when absent)."""
    out = {}
    with h5py.File(results, "r") as f:
        if GROUP not in f:
            return {}
        crs = json.loads(f[GROUP].attrs["crs"])
        for name, g in f[GROUP].items():
            out[int(name.removeprefix("layer_"))] = LayerDiagnostics(
                shape=tuple(json.loads(g.attrs["shape"])),  # type: ignore[arg-type]
                delta_sv=[g[f"delta_sv_mode{m}"][()] for m in (1, 2, 3)],
                pretrained_sv=[g[f"A_pretrained_sv_mode{m}"][()] for m in (1, 2, 3)],
                crs=list(crs),
                ranks=[tuple(int(v) for v in r) for r in g["hosvd_ranks"][()]],  # type: ignore[misc]
                hosvd_rel_error=[float(e) for e in g["hosvd_rel_error"][()]],
                delta_norm=float(g.attrs["delta_norm"]),
                pretrained_norm=float(g.attrs["A_pretrained_norm"]),
            )
    return dict(sorted(out.items()))


def plot_diagnostics(path: Path, layers: dict[int, LayerDiagnostics], title: str = "") -> Path:
    """One row per layer: σ_i/σ_1 of each mode unfolding (ΔA solid, A_pretrained dashed) and
    the truncated-HOSVD error of ΔA against cr."""
    n = max(1, len(layers))
    fig = Figure(figsize=(10, 2.3 * n + 0.4))
    axes = fig.subplots(n, 4, squeeze=False)
    for row, (layer, d) in zip(axes, layers.items()):
        for m in range(3):
            ax = row[m]
            ax.semilogy(np.arange(1, len(d.delta_sv[m]) + 1), d.delta_sv[m], "o-", ms=3, label="ΔA")
            ax.semilogy(
                np.arange(1, len(d.pretrained_sv[m]) + 1),
                d.pretrained_sv[m],
                "s--",
                ms=3,
                label="A_pretrained",
            )
            ax.set_title(f"layer {layer} {d.shape}: mode {m + 1}", fontsize=8)
            ax.set_xlabel("i", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(0.5, len(d.delta_sv[m]) + 0.5)
            ax.tick_params(labelsize=7)
        row[0].set_ylabel("σ_i / σ_1", fontsize=8)
        row[0].legend(fontsize=7)
        ax = row[3]
        ax.plot(d.crs, d.hosvd_rel_error, "o-", ms=3)
        for cr, r, e in zip(d.crs, d.ranks, d.hosvd_rel_error):
            ax.annotate("×".join(map(str, r)), (cr, e), fontsize=6)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cr", fontsize=8)
        ax.set_title("HOSVD error of ΔA", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, Path(path), dpi=100)


def diagnose_run(run_dir: Path, crs: tuple[float, ...] = CRS) -> dict[int, LayerDiagnostics]:
    """Compute a run's diagnostics from its results.h5 and write them there and to
    diagnostics.png; {} (nothing written) when the file stores no model update."""
    results = Path(run_dir) / RESULTS_FILE
    update = read_update(results)
    if not update:
        return {}
    layers = {layer: layer_diagnostics(a, d, crs) for layer, (a, d) in update.items()}
    write_diagnostics(results, layers)
    name = Path(run_dir).name
    name = name if len(name) <= 60 else name[:59] + "…"
    plot_diagnostics(Path(run_dir) / PNG, layers, title=f"ΔA = A_final − A_pretrained of {name}")
    return layers
