"""Generated blocks of the docs: one definition of their markers, replacement and check.

A block of README.md or docs/*.md between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->` is written by one script (OWNERS) from raw data committed beside the
page; the script's `block(name, doc)` returns the block's body from that data alone. Nobody
edits a block by hand: tests/test_docs.py regenerates every block and fails when the page
differs.

Every other table with a number in it (outside code fences) is hand-written: each is named in
the ledger docs/untraced.yaml (page, header row, how many tables have that header there) with
what is known of it: `stale` (measured, and known to predate the current defaults), `untraced`
(measured, no raw data committed) or `not-measured` (definitions, options, computed counts).
A table in neither place fails the check.

A measured figure in a page's prose, written as a mantissa and an exponent (`3.82e-5`,
`1.0005e-4`), must be a value, at the digits shown, of the page's own data: the committed JSON
files it names by path (a file, a glob, or a folder such as docs/family/) or declares in a
`<!-- data: GLOB ... -->` comment. A figure typed from a run whose data was not kept fails
(`untraced_figures`) unless the ledger lists it under the page's `figures` with what is known
of it. Settings in inline code (`train.tol=1e-8`), round goals (`1e-3`), code fences,
generated blocks and hand-written tables (the ledger's business) are not figures of the prose.

    python scripts/docblocks.py            # exit 1 if a block differs from its data, or a
                                           # hand-written table of numbers is not in the ledger
    python scripts/docblocks.py --write    # rewrite every block from its data (no plots)
    python scripts/docblocks.py --docs docs/tolerance.md   # only these pages
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# block name -> the script (scripts/<owner>.py) whose block(name, doc) writes it
OWNERS = {
    "family-table": "family_benchmark",
    "family-damping": "family_benchmark",
    "tolerance-table": "tolerance_calibration",
    "hard-table": "hard_benchmarks",
    "hard-references": "hard_benchmarks",
    "tta": "time_to_accuracy",
    "tta-summary": "time_to_accuracy",
    "growth-table": "growth_study",
    "growth-wave_c1.5": "growth_study",
    "pdebench-table": "pdebench_benchmark",
    "memory-table": "memory_estimate",
    "memory-big": "memory_estimate",
    "sweep-demo-walls": "sweep_demo",
    "sweep-demo-jobs": "sweep_demo",
    "sweep-demo-diag": "sweep_demo",
    "optuna-demo": "sweep_demo",
    "results-study": "reproduce",
    "lm-step": "bench_lm_step",
    "lmkan-step": "bench_lmkan",
    "rational-fit": "rational_fit",
    "adam-widths": "adam_widths",
}
# block names by prefix: e2e-<study> is the table of docs/e2e/<study>.json (e2e-<study>.compare
# its two compared models side by side), bench-step-<section> the step timings of
# docs/benchmarks/step_<section>.json
PREFIX_OWNERS = {"e2e-": "e2e_table", "bench-step-": "bench_step"}
MARKER = re.compile(r"<!-- (/?)generated:([\w.-]+) -->")
LEDGER = ROOT / "docs" / "untraced.yaml"
STATUSES = ("stale", "untraced", "not-measured")
_DELIMITER = re.compile(r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def docs() -> list[Path]:
    """The pages whose blocks are checked: README.md and docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def markers(name: str) -> tuple[str, str]:
    return f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"


def names(text: str, where: object = "the page") -> list[str]:
    """The names of the page's generated blocks in order; an unclosed, unopened or nested
    marker is an error (SystemExit naming it)."""
    found, open_name = [], None
    for m in MARKER.finditer(text):
        closing, name = bool(m.group(1)), m.group(2)
        if not closing and open_name is None:
            open_name = name
        elif closing and open_name == name:
            found.append(name)
            open_name = None
        else:
            raise SystemExit(f"{where}: unbalanced generated-block marker {m.group(0)}")
    if open_name is not None:
        raise SystemExit(f"{where}: <!-- generated:{open_name} --> is never closed")
    return found


def spans(text: str) -> list[tuple[int, int]]:
    """Character ranges [start marker, end of end marker) of every generated block."""
    out, start = [], None
    for m in MARKER.finditer(text):
        if m.group(1):
            out.append((start, m.end()))
        else:
            start = m.start()
    return out


def replace(text: str, markers_or_name: tuple[str, str] | str, body: str, where: object) -> str:
    """`text` with the block between the markers (the first pair) replaced by `body`, one
    newline after the start marker and one before the end marker."""
    pair = markers(markers_or_name) if isinstance(markers_or_name, str) else markers_or_name
    start, end = pair
    if start not in text or end not in text.split(start, 1)[1]:
        raise SystemExit(f"{where} lacks the markers {start} ... {end}; add them where it belongs")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


@cache
def owner(script: str) -> ModuleType:
    """scripts/<script>.py as a module (scripts are not a package)."""
    return load_script(ROOT / "scripts" / f"{script}.py")


def load_script(path: Path) -> ModuleType:
    """A script file as a module, registered in sys.modules under its stem as an import would
    be (dataclasses look their module up there); the one already imported from that file is
    returned as it is."""
    existing = sys.modules.get(path.stem)
    if existing is not None and getattr(existing, "__file__", None):
        if Path(existing.__file__).resolve() == path.resolve():
            return existing
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def owner_of(name: str, doc: object = "the page") -> str:
    """The script that writes block `name` (OWNERS, else PREFIX_OWNERS)."""
    if name in OWNERS:
        return OWNERS[name]
    for prefix, script in PREFIX_OWNERS.items():
        if name.startswith(prefix):
            return script
    raise SystemExit(f"{doc}: no script writes <!-- generated:{name} --> (OWNERS)")


def regenerated(doc: Path, text: str | None = None) -> str:
    """The page (or `text` read as that page) with every generated block rebuilt by its owner
    from the committed data."""
    text = doc.read_text() if text is None else text
    for name in names(text, doc):
        text = replace(text, name, owner(owner_of(name, doc)).block(name, doc), doc)
    return text


def table_mode(tables: bool, check_only: bool, doc: Path, fresh: Callable[[], str]) -> int | None:
    """A generator's --tables (write the page rebuilt by `fresh()`) or --check (exit 1 when the
    page differs); None when neither was asked for."""
    if tables:
        doc.write_text(fresh())
        return 0
    if check_only:
        return check(doc, fresh())
    return None


def layer_modes(attrs: Any) -> list[str] | None:
    """Each layer's mode (lotra | full | frozen) from a results.h5's root attributes; None for
    a run written before the attribute `layers` existed."""
    if "layers" not in attrs:
        return None
    return [row.get("mode") for row in json.loads(attrs["layers"])]


def tucker_everywhere(modes: list[str] | None) -> bool:
    """Whether a LoTRA run had Tucker updates on every layer (the default before the edge layers
    trained in full; records from then have no modes)."""
    return modes is None or set(modes) == {"lotra"}


def write_raw(path: Path | None, data: dict[str, Any]) -> None:
    """A benchmark's raw data as JSON at `path` (its --out), if one was given."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def differences(text: str, fresh: str, doc: object, lines: int = 60) -> str:
    """A unified diff of the committed page against the regenerated one ('' when equal)."""
    if text == fresh:
        return ""
    diff = difflib.unified_diff(
        text.splitlines(), fresh.splitlines(), f"{doc} (committed)", f"{doc} (regenerated)"
    )
    return "\n".join(list(diff)[:lines])


def check(doc: Path, fresh: str) -> int:
    """0 when the page equals `fresh`, else 1 after printing the diff."""
    diff = differences(doc.read_text(), fresh, doc)
    if not diff:
        return 0
    print(diff)
    print(f"{doc}: a generated block differs from its data; regenerate it (never edit it by hand)")
    return 1


@dataclass(frozen=True)
class Table:
    """A Markdown table of a page: its header row (stripped), first line (1-based), body rows."""

    header: str
    line: int
    rows: tuple[str, ...]

    @property
    def has_numbers(self) -> bool:
        return any(re.search(r"\d", row) for row in self.rows)


def hand_tables(text: str) -> list[Table]:
    """The page's tables outside generated blocks and code fences."""
    inside = spans(text)
    lines = text.splitlines()
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    found, fence, i = [], False, 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith(("```", "~~~")):
            fence = not fence
        generated = any(a <= offsets[i] < b for a, b in inside)
        if (
            not fence
            and not generated
            and line.startswith("|")
            and i + 1 < len(lines)
            and _DELIMITER.fullmatch(lines[i + 1])
        ):
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            found.append(Table(line, i + 1, tuple(r.strip() for r in lines[i + 2 : j])))
            i = j
            continue
        i += 1
    return found


def ledger(path: Path = LEDGER) -> list[dict[str, Any]]:
    """The entries of docs/untraced.yaml: each names a page (`doc`), the header rows of its
    tables (`tables`, a header once per table that has it) or the figures of its prose
    (`figures`, as written) and says `status`, `measured` (the
    commit and date, or what is known) and `why`."""
    import yaml

    entries = yaml.safe_load(path.read_text()) or []
    for e in entries:
        e.setdefault("tables", [])
        missing = {"doc", "status", "measured", "why"} - set(e)
        lists = isinstance(e["tables"], list) and isinstance(e.get("figures", []), list)
        if missing or e["status"] not in STATUSES or not lists:
            raise SystemExit(
                f"{path}: the entry of {e.get('doc')} needs {sorted(missing) or 'its fields'}, "
                f"a list of table headers and a status of {STATUSES}"
            )
    return entries


def ledger_problems(
    pages: dict[str, str], entries: list[dict[str, Any]] | None = None
) -> list[str]:
    """What is wrong between the pages' hand-written tables with numbers and the ledger: a table
    it does not name, a header it names more or fewer times than the page has it, an entry for
    a table that is gone."""
    entries = ledger() if entries is None else entries
    listed: dict[tuple[str, str], int] = {}
    for e in entries:
        for header in e["tables"]:
            key = (e["doc"], header.strip())
            listed[key] = listed.get(key, 0) + 1
    found: dict[tuple[str, str], list[Table]] = {}
    for doc, text in pages.items():
        for t in hand_tables(text):
            if t.has_numbers:
                found.setdefault((doc, t.header), []).append(t)
    where = LEDGER.relative_to(ROOT)
    problems = []
    for key, tables in found.items():
        if key not in listed:
            problems.append(
                f"{key[0]}:{tables[0].line}: a hand-written table of numbers that {where} does "
                f"not name (generate it from committed data, or add it there with what is known "
                f"of it): {key[1][:90]}"
            )
        elif listed[key] != len(tables):
            problems.append(
                f"{key[0]}: {len(tables)} tables with the header {key[1][:60]!r}, {where} names "
                f"{listed[key]}"
            )
    for key in listed.keys() - found.keys():
        if key[0] in pages:
            problems.append(f"{where}: no table {key[1][:60]!r} in {key[0]}")
    return problems


FIGURE = re.compile(r"(?<![\w.`=])(\d\.\d+)e([+-]?\d+)(?![\w`]|\.\d)")
_CODE = re.compile(r"```.*?```|~~~.*?~~~|`[^`\n]*`", re.S)
_DATA_DECLARED = re.compile(r"<!-- data: (.*?) -->")
# a JSON file or glob, or a folder (nested ones too: docs/tolerance/bspline/) named in the text
_DATA_CITED = re.compile(r"[\w./*-]+\.json|(?<![\w/])(?:[\w-]+/)+(?=[\s`)*,;:]|$)")


def page_data(doc: Path, text: str) -> list[Path]:
    """The committed JSON files a page names: by path in its text (a file, a glob, a folder,
    relative to the repository, to docs/ or to the page) or in `<!-- data: GLOB ... -->`."""
    names = [m.group(0) for m in _DATA_CITED.finditer(text)]
    names += [g for m in _DATA_DECLARED.finditer(text) for g in m.group(1).split()]
    found: set[Path] = set()
    for name in names:
        if name.rstrip("/") in ("docs", ".") or name.startswith("/"):
            continue  # the docs folder names no data; an absolute path (/tmp/...) is not ours
        pattern = name if name.endswith(".json") else name.rstrip("/") + "/**/*.json"
        for base in (ROOT, ROOT / "docs", doc.parent):
            found.update(p.resolve() for p in base.glob(pattern) if p.is_file())
    return sorted(p for p in found if ROOT in p.parents)


@cache
def data_figures(path: Path) -> frozenset[str]:
    """Every number of one raw-data JSON file in e-notation at 1 to 4 decimals of the mantissa:
    the forms a page may quote it in."""
    import json

    found: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, bool):
            return
        if isinstance(x, int | float):
            if x == x and abs(x) != float("inf"):
                found.update(f"{x:.{d}e}" for d in range(1, 5))
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(json.loads(path.read_text(encoding="utf-8")))
    return frozenset(found)


def _canonical(figure: str) -> str:
    """A prose figure (`3.82e-5`) in the form data_figures writes it (`3.82e-05`)."""
    m = FIGURE.fullmatch(figure)
    return f"{m.group(1)}e{int(m.group(2)):+03d}"


def prose_figures(text: str) -> list[tuple[int, str, str]]:
    """(line, figure as written, its canonical form) of every mantissa-exponent figure in the
    page's prose: outside generated blocks, code, and table rows."""
    skip = spans(text) + [(m.start(), m.end()) for m in _CODE.finditer(text)]
    out = []
    for m in FIGURE.finditer(text):
        i = m.start()
        line_start = text.rfind("\n", 0, i) + 1
        if any(a <= i < b for a, b in skip) or text[line_start:i].lstrip().startswith("|"):
            continue
        out.append((text.count("\n", 0, i) + 1, m.group(0), _canonical(m.group(0))))
    return out


def untraced_figures(
    pages: dict[str, str], entries: list[dict[str, Any]] | None = None
) -> list[str]:
    """A line per prose figure that none of its page's data holds and the ledger does not list,
    and per ledger figure that its page no longer quotes or, for a figure this project
    measured, that the page's data now holds (a literature figure may match by chance)."""
    entries = ledger() if entries is None else entries
    listed: dict[str, set[str]] = {}
    measured: dict[str, set[str]] = {}  # a literature figure (not-measured) may match by chance
    for e in entries:
        listed.setdefault(e["doc"], set()).update(e.get("figures", []))
        if e.get("status") != "not-measured":
            measured.setdefault(e["doc"], set()).update(e.get("figures", []))
    problems = []
    for doc, text in pages.items():
        held: set[str] = set()
        for path in page_data(ROOT / doc, text):
            held |= data_figures(path)
        quoted = set()
        for line, fig, canonical in prose_figures(text):
            quoted.add(fig)
            if canonical not in held and fig not in listed.get(doc, set()):
                problems.append(
                    f"{doc}:{line}: {fig} is in none of the data this page names (docs/**/*.json "
                    "by path, or <!-- data: GLOB -->); quote it from the raw data of the run "
                    f"that measured it, or list it in {LEDGER.relative_to(ROOT)} with why"
                )
        for fig in sorted(listed.get(doc, set())):
            if fig not in quoted:
                problems.append(f"{LEDGER.relative_to(ROOT)}: {doc} no longer quotes {fig}")
            elif fig in measured.get(doc, set()) and _canonical(fig) in held:
                problems.append(
                    f"{LEDGER.relative_to(ROOT)}: {doc}'s data now holds {fig}; drop it from the "
                    "ledger"
                )
    return problems


def pages(paths: list[Path] | None = None) -> dict[str, str]:
    """{page relative to the repository: its text} of README.md and docs/*.md (or `paths`)."""
    return {str(p.resolve().relative_to(ROOT)): p.read_text() for p in paths or docs()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the blocks from their data")
    ap.add_argument("--docs", nargs="*", type=Path, default=None, help="pages (default: all)")
    args = ap.parse_args(argv)
    status = 0
    for doc in args.docs or docs():
        fresh = regenerated(doc)
        if args.write:
            if fresh != doc.read_text():
                doc.write_text(fresh)
                print(f"wrote {doc}")
        else:
            status |= check(doc, fresh)
    if not args.docs:
        for problem in ledger_problems(pages()) + untraced_figures(pages()):
            print(problem)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
