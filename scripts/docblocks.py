"""Generated blocks of the docs: one definition of their markers, replacement and check.

A block of README.md or docs/*.md between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->` is written by one script (OWNERS) from raw data committed beside the
page; the script's `block(name, doc)` returns the block's body from that data alone. Nobody
edits a block by hand: tests/test_docs.py regenerates every block and fails when the page
differs. A hand-written table of measured numbers outside such blocks is named, with what is
known of it, in docs/untraced.yaml.

    python scripts/docblocks.py            # exit 1 (and a diff) if a block differs from its data
    python scripts/docblocks.py --write    # rewrite every block from its data (no plots)
    python scripts/docblocks.py --docs docs/tolerance.md   # only these pages
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
# block name -> the script (scripts/<owner>.py) whose block(name, doc) writes it
OWNERS = {
    "family-table": "family_benchmark",
    "tolerance-table": "tolerance_calibration",
    "hard-table": "hard_benchmarks",
    "hard-references": "hard_benchmarks",
    "tta": "time_to_accuracy",
    "tta-summary": "time_to_accuracy",
}
MARKER = re.compile(r"<!-- (/?)generated:([\w.-]+) -->")


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
    spec = importlib.util.spec_from_file_location(script, ROOT / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def regenerated(doc: Path, text: str | None = None) -> str:
    """The page (or `text` read as that page) with every generated block rebuilt by its owner
    from the committed data."""
    text = doc.read_text() if text is None else text
    for name in names(text, doc):
        if name not in OWNERS:
            raise SystemExit(f"{doc}: no script writes <!-- generated:{name} --> (OWNERS)")
        text = replace(text, name, owner(OWNERS[name]).block(name, doc), doc)
    return text


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
    return status


if __name__ == "__main__":
    sys.exit(main())
