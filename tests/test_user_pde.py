"""A PDE family from a package outside pinnkan (docs/examples/user_pde), run by the CLI with
`--config-dir`: pretrain, transfer (finding its source by the family's name), resume, and
the one-line errors of a bad `_target_` or `domain`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinnkan import cli
from pinnkan.errors import PinnkanError
from pinnkan.io.results import RESULTS_FILE, read_results
from pinnkan.pde.config import member_from_config
from tests.conftest import describe, run_pinnkan, tiny

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "user_pde"
CONF = EXAMPLE / "conf"


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example package importable, in this process and in the CLI subprocesses."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLE))


def test_pretrain_transfer_and_resume_a_family_from_outside(tmp_path: Path, on_path: None) -> None:
    root = tmp_path / "outputs"
    pre = root / "pretrain" / "reaction" / "run"
    proc = run_pinnkan(
        ["pretrain", "--config-dir", str(CONF), "pde=reaction", *tiny(root, "train.steps=20")]
        + [f"hydra.run.dir={pre}"],
        tmp_path,
    )
    assert proc.returncode == 0, describe(proc)
    res = read_results(pre / RESULTS_FILE)
    assert res["attrs"]["pde"] == "reaction" and res["attrs"]["pde_params"] == {
        "D": 0.1,
        "kappa": 1.0,
    }
    assert res["coords"] == ["x", "t"] and res["metrics"]["rel_l2"] < 0.05  # it trains
    tr = tmp_path / "transfer"
    proc = run_pinnkan(  # no source=: the newest pretrain run of pde=reaction under root
        ["transfer", "-cd", str(CONF), "pde=reaction", *tiny(root), f"hydra.run.dir={tr}"],
        tmp_path,
    )
    assert proc.returncode == 0, describe(proc)
    res = read_results(tr / RESULTS_FILE)
    assert res["attrs"]["source"] == str(pre / "model.safetensors")
    assert res["attrs"]["pde_params"]["kappa"] == 3.0
    # resume= brings the --config-dir back (Hydra records it in .hydra/hydra.yaml, not in
    # the overrides)
    args = cli.resume_overrides("pretrain", [f"resume={pre}"])
    assert args[:2] == ["--config-dir", str(CONF)] and "pde=reaction" in args


def test_domain_from_yaml(tmp_path: Path, on_path: None) -> None:
    run = tmp_path / "run"
    proc = run_pinnkan(
        ["pretrain", "-cd", str(CONF), "pde=reaction_long", *tiny(tmp_path)]
        + [f"hydra.run.dir={run}"],
        tmp_path,
    )
    assert proc.returncode == 0, describe(proc)
    res = read_results(run / RESULTS_FILE)
    assert res["attrs"]["pde"] == "reaction_long"
    assert res["grid"]["x"].max() == 2.0 and res["grid"]["t"].max() == 1.0


def test_unknown_family_names_the_config_dir_way(tmp_path: Path) -> None:
    proc = run_pinnkan(["pretrain", "pde=reaction"], tmp_path)
    assert proc.returncode == 2, describe(proc)
    assert proc.stderr.strip().endswith("--config-dir DIR with DIR/pde/reaction.yaml")


@pytest.mark.parametrize(
    ("pde", "match"),
    [
        ({"_target_": "reactionpkg.nowhere.X"}, "cannot import reactionpkg.nowhere"),
        ({"_target_": "Reaction"}, "must be a dotted path"),
        ({"_target_": "torch.Tensor"}, "is not a PDEFamily subclass"),
        ({"_target_": "reactionpkg.reaction.ReactionDiffusion", "domain": [[0, 1]]}, "domain"),
        ({"name": "elliptic", "domain": [[1, 0], [0, 1]]}, "lo < hi"),
    ],
)
def test_bad_target_or_domain_is_one_line(on_path: None, pde: dict, match: str) -> None:
    with pytest.raises(PinnkanError, match=match) as info:
        member_from_config({"name": "x", "source": {}, **pde}, "source")
    assert "\n" not in str(info.value)


def test_domain_override_of_a_builtin_family_leaves_the_class_alone() -> None:
    from pinnkan.pde import FAMILIES

    member = member_from_config({"name": "elliptic", "domain": [[0, 2], [0, 1]]}, "source")
    assert member.domain == ((0.0, 2.0), (0.0, 1.0)) and member.name == "elliptic"
    assert FAMILIES["elliptic"].domain != member.domain


BROKEN = """
from pinnkan.pde.elliptic import Elliptic


class Broken(Elliptic):
    name = "broken"

    def residual(self, x, jet):
        return jet.u / self.params["missing"]
"""


def test_an_error_in_the_users_family_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's own residual raising: one line naming the method, file, line and error (exit
    2); HYDRA_FULL_ERROR=1 gives the whole traceback."""
    pkg = tmp_path / "brokenpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fam.py").write_text(BROKEN)
    args = ["pretrain", "+pde._target_=brokenpkg.fam.Broken", *tiny(tmp_path / "out")]
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    proc = run_pinnkan(args, tmp_path)
    assert proc.returncode == 2, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, describe(proc)
    assert "KeyError: 'missing' in Broken.residual of the PDE family 'elliptic'" in lines[0]
    assert f"{pkg / 'fam.py'}:9" in lines[0]
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    proc = run_pinnkan(args, tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "KeyError" in proc.stderr
