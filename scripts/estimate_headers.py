"""The paper-scale experiment files' estimate headers, written from ``taskneurons estimate``.

Each ``experiments/*paper-scale*.yaml`` opens with what ``taskneurons estimate FILE --device
h100`` prints (its stage table) and the 24 GB card's total and fit; everything from the first
``# PAPER.md`` line on is the file's own text and is kept. The README's "Running at 7B" shows
the same tables (between :data:`README_FROM` and :data:`README_TO`). ``write`` rewrites both
from the estimate as the cost model gives it now; ``check`` exits 1 when one differs (a test
runs it, so a change to the cost model cannot leave a stale table behind).

    python scripts/estimate_headers.py write
    python scripts/estimate_headers.py check
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from taskneurons.experiments.estimate.plan import estimate

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "experiments").glob("*paper-scale*.yaml"))
#: where a file's own text begins
OWN = "# PAPER.md"
README = ROOT / "README.md"
#: the README's estimate tables: from the line after this one to the line before README_TO
README_FROM = "What `taskneurons estimate` printed for the paper-scale files on an H100"
README_TO = "The GPU rates behind these are"


@functools.cache
def _tables(path: Path) -> tuple[list[str], str, str]:
    """The H100 stage table's lines, and the 24 GB card's total time and fit (priced once per
    file: the header and the README show the same table)."""
    h100 = estimate(path, "h100").text.splitlines()
    card = estimate(path, "24gb").text.splitlines()
    total = next(line for line in card if line.startswith("| **total** |")).split("|")[2].strip()
    fit = next((line for line in card if line.startswith("Does not fit")), "fits in 24.0 GiB.")
    return [line for line in h100 if line.startswith("|")], total, fit


def header(path: Path) -> str:
    """The estimate header of one file (``#`` lines, ending in a newline)."""
    rel = path.relative_to(ROOT).as_posix()
    table, total, fit = _tables(path)
    lines = [
        f"# `taskneurons estimate {rel} --device h100` (predicted, not measured;",
        "# H100 rates from issue 26's reference figures, the rest assumptions it prints):",
        *(f"#   {line}" for line in table),
        f"# --device 24gb: {total}; {fit}",
    ]
    return "\n".join(lines) + "\n"


def with_readme_tables(path: Path) -> str:
    """The README's text with every paper-scale file's H100 table as the estimate gives it."""
    text = path.read_text(encoding="utf-8")
    start = text.index("\n", text.index(README_FROM) + len(README_FROM))
    start = text.index("\n\n", start) + 2  # after the paragraph that names them
    end = text.index(README_TO)
    blocks = []
    for path in FILES:
        rel = path.relative_to(ROOT).as_posix()
        table = _tables(path)[0]
        blocks.append("\n".join([f"`taskneurons estimate {rel} --device h100`", "", *table]))
    return text[:start] + "\n\n".join(blocks) + "\n\n" + text[end:]


def with_header(path: Path) -> str:
    """The file's text with its header as the estimate gives it now."""
    text = path.read_text(encoding="utf-8")
    at = text.index(OWN) if text.startswith("#") else 0
    return header(path) + text[at:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("write", "check"))
    args = parser.parse_args(argv)
    stale = []
    for path, make in [*((p, with_header) for p in FILES), (README, with_readme_tables)]:
        new = make(path)
        if new != path.read_text(encoding="utf-8"):
            stale.append(path.name)
            if args.mode == "write":
                path.write_text(new, encoding="utf-8")
    verb = (
        "rewritten"
        if args.mode == "write"
        else "stale (run: python scripts/estimate_headers.py write)"
    )
    print(f"{len(stale)} of {len(FILES) + 1} files {verb}: {', '.join(stale) or '-'}")
    return 1 if stale and args.mode == "check" else 0


if __name__ == "__main__":
    sys.exit(main())
