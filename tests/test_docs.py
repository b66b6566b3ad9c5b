"""Every number in the docs traceable (scripts/docblocks.py): each generated block of README.md
and docs/*.md is what its script regenerates from the committed raw data, so a hand-edited
table fails; every other table of numbers is named in docs/untraced.yaml with what is known of
it, so a new hand-typed table fails; the default networks' sizes the docs give are the ones
pinnkan builds; the commands of docs/usage.md pass the CLI's pre-checks as written."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import docblocks
import pytest
import torch

from pinnkan.cli import check_overrides, config_dirs
from pinnkan.network.kan import KAN, LAYER_KINDS
from pinnkan.stages.precheck import check_composes

ROOT = docblocks.ROOT
GENERATED = [d for d in docblocks.docs() if docblocks.names(d.read_text(), d)]


def _name(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


def _edit_a_number(text: str) -> str:
    """`text` with the first digit of the first table row inside its first generated block
    that holds a table changed, as a hand edit would."""
    for start, end in docblocks.spans(text):
        m = re.search(r"\n\|[-|: ]+\|\n\|[^\n\d]*(\d)", text[start:end])
        if m:
            i = start + m.start(1)
            return text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :]
    raise AssertionError("no generated block with a table of numbers")


def test_every_generated_block_has_its_script() -> None:
    found = {n for d in docblocks.docs() for n in docblocks.names(d.read_text(), d)}
    prefixed = {n for n in found if n.startswith(tuple(docblocks.PREFIX_OWNERS))}
    assert found - prefixed == set(docblocks.OWNERS)  # no block without a script, no script
    for name in prefixed:  # without a page; a prefixed block's script is found by its prefix
        assert docblocks.owner_of(name) in docblocks.PREFIX_OWNERS.values()


@pytest.mark.parametrize("doc", GENERATED, ids=_name)
def test_committed_page_is_its_data_regenerated(doc: Path) -> None:
    text = doc.read_text()
    assert docblocks.differences(text, docblocks.regenerated(doc), doc) == ""


@pytest.mark.parametrize("doc", GENERATED, ids=_name)
def test_a_hand_edited_block_fails(doc: Path) -> None:
    """A number typed into a block differs from what the data gives, and regenerating the
    edited page restores the committed one."""
    text = doc.read_text()
    edited = _edit_a_number(text)
    fresh = docblocks.regenerated(doc, edited)
    assert fresh != edited and fresh == text
    assert docblocks.differences(edited, fresh, doc)


def test_the_check_command_fails_on_a_hand_edited_copy(tmp_path: Path) -> None:
    page = tmp_path / "tolerance.md"
    shutil.copy(ROOT / "docs" / "tolerance.md", page)
    cmd = [sys.executable, str(ROOT / "scripts" / "docblocks.py"), "--docs", str(page)]
    assert subprocess.run(cmd, capture_output=True, check=False).returncode == 0
    page.write_text(_edit_a_number(page.read_text()))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "differs from its data" in proc.stdout and "regenerated" in proc.stdout


def test_the_check_command_passes_on_the_committed_docs() -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "docblocks.py")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_block_without_its_script_or_its_end_is_refused() -> None:
    orphan = "<!-- generated:nobody -->\n<!-- /generated:nobody -->\n"
    with pytest.raises(SystemExit, match="no script writes"):
        docblocks.regenerated(ROOT / "x.md", orphan)
    with pytest.raises(SystemExit, match="never closed"):
        docblocks.names("<!-- generated:tta -->\n| a |")


# --- hand-written tables -----------------------------------------------------------------------
def test_every_hand_written_table_of_numbers_is_in_the_ledger() -> None:
    assert docblocks.ledger_problems(docblocks.pages()) == []


def test_a_new_hand_typed_table_fails() -> None:
    pages = docblocks.pages()
    pages["README.md"] += "\n| run | rel. L2 |\n|---|---|\n| new | 1.2e-3 |\n"
    problems = docblocks.ledger_problems(pages)
    assert len(problems) == 1 and problems[0].startswith("README.md:")
    assert "does not name" in problems[0]


def test_tables_in_blocks_fences_or_without_numbers_need_no_entry() -> None:
    pages = docblocks.pages()
    pages["README.md"] += (
        "\n| option | meaning |\n|---|---|\n| cr | compression ratio |\n"
        "\n```\n| run | rel. L2 |\n|---|---|\n| a | 1e-3 |\n```\n"
    )
    assert docblocks.ledger_problems(pages) == []
    assert (
        docblocks.hand_tables(
            "<!-- generated:x -->\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- /generated:x -->\n"
        )
        == []
    )


def test_a_second_table_with_a_listed_header_or_a_removed_table_fails() -> None:
    entry = next(e for e in docblocks.ledger() if len(e["tables"]) == 1)
    doc, header = entry["doc"], entry["tables"][0]
    pages = docblocks.pages()
    pages[doc] += "\n" + pages[doc][pages[doc].index(header) :]
    assert any("2 tables with the header" in p for p in docblocks.ledger_problems(pages))
    pages = docblocks.pages()
    pages[doc] = pages[doc].split(header, 1)[0]
    assert any(p.endswith(doc) and "no table" in p for p in docblocks.ledger_problems(pages))


# --- figures in the prose -----------------------------------------------------------------------
def test_every_figure_in_the_prose_is_in_its_pages_data_or_the_ledger() -> None:
    assert docblocks.untraced_figures(docblocks.pages()) == []


def test_a_figure_typed_into_the_prose_fails() -> None:
    pages = docblocks.pages()
    pages["docs/tolerance.md"] += "\nA run of mine reached rel. L2 4.321e-5.\n"
    problems = docblocks.untraced_figures(pages)
    assert len(problems) == 1 and "4.321e-5 is in none of the data" in problems[0]
    assert problems[0].startswith("docs/tolerance.md:")


def test_settings_code_tables_and_blocks_hold_no_figures() -> None:
    text = (
        "Set `train.tol=4.321e-5` or train.tol=4.321e-5; aim at 1e-3.\n"
        "```\nrel. L2 4.321e-5\n```\n"
        "| run | rel. L2 |\n|---|---|\n| a | 4.321e-5 |\n"
        "<!-- generated:x -->\nreached 4.321e-5\n<!-- /generated:x -->\n"
    )
    assert docblocks.prose_figures(text) == []
    assert [f for _, f, _ in docblocks.prose_figures("it reached 4.321e-5.")] == ["4.321e-5"]


def test_a_figure_of_the_data_the_page_names_passes() -> None:
    """The seed-0 wave pretrain of docs/e2e/defaults.json ended at 1.12e-5 (1.1219…e-05):
    quoted at the digits shown it passes where the page names that file, not elsewhere."""
    quote = "The wave source reached 1.12e-5."
    named = {"docs/x.md": f"Raw data: docs/e2e/defaults.json. {quote}\n"}
    declared = {"docs/x.md": f"<!-- data: docs/e2e/*.json -->\n{quote}\n"}
    unnamed = {"docs/x.md": f"{quote}\n"}
    docs_folder = {"docs/x.md": f"The pages are in docs/ and README.md. {quote}\n"}  # not data
    assert len(docblocks.untraced_figures(docs_folder, [])) == 1
    assert docblocks.untraced_figures(named, []) == []
    assert docblocks.untraced_figures(declared, []) == []
    assert len(docblocks.untraced_figures(unnamed, [])) == 1
    wrong_digits = {"docs/x.md": named["docs/x.md"].replace("1.12e-5", "1.13e-5")}
    assert len(docblocks.untraced_figures(wrong_digits, [])) == 1


def test_an_absolute_path_in_a_page_is_no_data_and_no_crash() -> None:
    """A command block writing to /tmp/part.json (docs/results.md) made pathlib's glob raise
    NotImplementedError; an absolute path names no file of the repository."""
    page = {
        "docs/x.md": "python x.py --raw /tmp/part.json --root /tmp/study/\nIt reached 1.12e-5.\n"
    }
    assert len(docblocks.untraced_figures(page, [])) == 1


def test_a_nested_folder_named_in_the_prose_is_the_pages_data() -> None:
    """docs/tolerance/bspline/ holds the B-spline calibration (parabolic 6.75…e-05 in its
    curve); the check once read only one folder level, so a page naming it could not use it."""
    quote = "the B-spline parabolic pretrain reached 6.8e-5"
    nested = {"docs/x.md": f"Its data are in `docs/tolerance/bspline/`: {quote}.\n"}
    assert docblocks.untraced_figures(nested, []) == []
    assert len(docblocks.untraced_figures({"docs/x.md": f"{quote}.\n"}, [])) == 1


def test_a_measured_ledger_figure_that_the_data_now_holds_fails() -> None:
    """A figure the ledger excuses but the page's data holds belongs to the data: the entry
    must go. A literature figure (not-measured) that matches by chance stays."""
    page = {"docs/x.md": "Raw data: docs/e2e/defaults.json. The wave source reached 1.12e-5.\n"}
    entry = {"doc": "docs/x.md", "figures": ["1.12e-5"], "status": "untraced"}
    (problem,) = docblocks.untraced_figures(page, [entry])
    assert "data now holds 1.12e-5" in problem
    assert docblocks.untraced_figures(page, [{**entry, "status": "not-measured"}]) == []


def test_a_ledger_figure_the_page_no_longer_quotes_fails() -> None:
    entry = next(e for e in docblocks.ledger() if e.get("figures"))
    pages = docblocks.pages()
    pages[entry["doc"]] = pages[entry["doc"]].replace(entry["figures"][0], "")
    problems = docblocks.untraced_figures(pages)
    assert any("no longer quotes " + entry["figures"][0] in p for p in problems)


def test_ledger_entries_name_a_commit_of_this_repository() -> None:
    """A stale or untraced table's `measured` starts with the commit that wrote its numbers."""
    git = ROOT / ".git"
    if not git.exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    if (git / "shallow").exists():
        pytest.skip("a shallow clone lacks the older commits")
    for e in docblocks.ledger():
        if e["status"] == "not-measured":
            continue
        sha = e["measured"].split()[0]
        cmd = ["git", "cat-file", "-e", f"{sha}^{{commit}}"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False)
        assert proc.returncode == 0, f"{e['doc']}: {sha} is not a commit here"


# --- the default networks -----------------------------------------------------------------------
def _models_table() -> list[list[str]]:
    text = (ROOT / "docs" / "models.md").read_text()
    table = next(t for t in docblocks.hand_tables(text) if "default widths" in t.header)
    return [[c.strip() for c in row.strip("|").split("|")] for row in table.rows]


@pytest.mark.parametrize("row", _models_table(), ids=lambda r: r[0].strip("`"))
def test_models_md_gives_the_default_networks_and_their_sizes(row: list[str]) -> None:
    """docs/models.md's widths are each kind's defaults; its count is A's entries, then
    `+ extra` and `= total` where the kind has extra parameters."""
    kind, widths, count = row[0].strip("`"), row[4], row[5]
    hidden = tuple(int(w) for w in widths.strip("[]").split(",")[1:-1])
    assert hidden == LAYER_KINDS[kind].hidden
    net = KAN([2, *hidden, 1], [(0.0, 1.0), (0.0, 1.0)], kind=kind, dtype=torch.float64)
    numbers = [int(v) for v in re.findall(r"\d+", count)]
    assert numbers[0] == sum(layer.A.numel() for layer in net.layers)
    total = numbers[-1] if "=" in count else sum(numbers)
    assert total == sum(p.numel() for p in net.parameters())


# --- the commands of docs/usage.md -----------------------------------------------------------
# files and runs the page's commands name as the user's own (placeholders, not pinnkan's)
USER_FILES = ("fine_mu15.npz", "heat.h5", "adv.h5")


def _usage_commands() -> list[list[str]]:
    """Every `pinnkan pretrain|transfer` line of docs/usage.md's bash blocks, with continuation
    lines joined and the block's shell variables (D=..., COMMON="...") expanded."""
    text = (ROOT / "docs" / "usage.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        env: dict[str, str] = {}
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if len(words) == 1 and re.fullmatch(r"\w+=.*", words[0]):
                name, value = words[0].split("=", 1)
                env[name] = value
            elif words[:1] == ["pinnkan"] and words[1] in ("pretrain", "transfer"):
                expanded = " ".join(words[1:])
                for name, value in env.items():
                    expanded = expanded.replace(f"${name}", value)
                commands.append(expanded.split())
    return commands


@pytest.mark.parametrize("command", _usage_commands(), ids=lambda c: " ".join(c)[:60])
def test_usage_commands_compose_as_written(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's own pre-checks pass on each command of docs/usage.md: its options exist and
    every variant of a sweep composes (the first one also validates). Not a run: running the
    page's blocks with tiny budgets takes many minutes of subprocesses."""
    monkeypatch.chdir(tmp_path)
    stage, args = command[0], command[1:]
    assert check_overrides(stage, args) is None
    problem = check_composes(stage, args, config_dirs(args))
    if any(name in arg for name in USER_FILES for arg in args):
        assert problem is not None and "reference file not found" in problem
    else:
        assert problem is None


def test_a_script_with_a_dataclass_loads(tmp_path: Path) -> None:
    """docblocks loads scripts as modules registered under their name, as an import would:
    a dataclass in one (with postponed annotations) needs its module in sys.modules."""
    script = tmp_path / "script_with_dataclass.py"
    script.write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n\n\n"
        "@dataclass\nclass Row:\n    name: str\n    value: float = 0.0\n"
    )
    module = docblocks.load_script(script)
    assert module.Row("a").value == 0.0
    assert docblocks.load_script(script) is module
