"""Two continual lr choice files side by side: each method's choice in the first against its
candidates in the second (e.g. a grid and its edge check, run with ``tune.only``).

    python scripts/lr_choice_compare.py results/continual-fair-lr-smollm2-cpu/lr_choice.json \\
        results/continual-fair-lr-edge-smollm2-cpu/lr_choice.json

Prints a Markdown table: the method, its chosen values and their validation mean, each
candidate of the second file and its change from the choice (points).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _values(values: dict) -> str:
    return ", ".join(
        f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
    )


def rows(first: dict, second: dict) -> list[list[str]]:
    """One row per candidate of ``second`` whose method ``first`` holds."""
    out = []
    for label, method in second.items():
        if label not in first:
            continue
        choice = first[label]["choice"]
        score = next(r["score"] for r in first[label]["rows"] if r["values"] == choice)
        for row in method["rows"]:
            out.append([label, f"{_values(choice)} ({score:.1f})",
                        f"{_values(row['values'])} ({row['score']:.1f})",
                        f"{row['score'] - score:+.1f}"])  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    first, second = (json.loads(p.read_text())["methods"] for p in (args.first, args.second))
    print("| method | chosen (validation mean) | candidate | change |")
    print("|---|---|---|---:|")
    for row in rows(first, second):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
