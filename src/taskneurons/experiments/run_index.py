"""The ``README.md`` a run writes into its folder: what ran, and what each file holds."""

from __future__ import annotations

from collections import defaultdict
from fnmatch import fnmatchcase
from pathlib import Path

from taskneurons.experiments.run_context import RunResult
from taskneurons.experiments.stage import stage as stage_named
from taskneurons.experiments.stage import stages
from taskneurons.store.run_folder import CONFIG_FILE, RunFolder

#: Files any run may hold (each stage's own are in its record: ``Stage.files``).
SHARED_NOTES = {
    CONFIG_FILE: "the resolved experiment file: every knob, defaults filled",
    "scores/": "each task's relevance scores (reused by later stages and `analyze`)",
}


def file_notes() -> dict[str, str]:
    """Every file note: the shared ones and each registered stage's (patterns with ``*``)."""
    notes = dict(SHARED_NOTES)
    for s in stages():
        notes.update(s.files)
    return notes


def file_note(name: str) -> str:
    """What a run file (``name``: a file name, a stem, or ``folder/``) holds; ``""`` if unknown."""
    notes = file_notes()
    if name in notes:
        return notes[name]
    patterns = ((k, v) for k, v in notes.items() if "*" in k)
    return next((note for pattern, note in patterns if fnmatchcase(name, pattern)), "")


def run_index(run: RunResult, source: str) -> str:
    """The run folder's ``README.md``: what ran, from which file, and what each file holds."""
    cfg = run.config
    lines = [
        f"# Run of {source}",
        "",
        f"Model `{cfg.model}` ({cfg.dtype}, {cfg.device}); tasks: "
        + ", ".join(f"`{t}`" for t in cfg.tasks)
        + f"; seed {cfg.seed}; {run.seconds:.0f} s.",
        "Rerun: `taskneurons run config.yaml` (every knob is in it).",
        "",
        "| file | what it holds |",
        "|---|---|",
        "| `config.yaml` | " + SHARED_NOTES["config.yaml"] + " |",
    ]
    stages = list(run.results)
    for stage, folder in RunFolder(run.out_dir).stage_dirs(stages).items():
        prefix = "" if len(stages) == 1 else f"{stage}/"
        if prefix:
            lines.append(f"| `{prefix}` | {stage_named(stage).title} |")
        lines += _file_rows(folder, prefix)
    return "\n".join(lines) + "\n"


def _file_rows(folder: Path, prefix: str) -> list[str]:
    """One row per folder, and per file stem (``table1.{csv,json,md,png}`` in one row)."""
    rows = []
    notes = file_notes()
    stems: dict[str, list[str]] = defaultdict(list)
    for path in RunFolder(folder).entries():
        if path.is_dir():
            n = sum(1 for p in path.rglob("*") if p.is_file())
            note = file_note(f"{path.name}/")
            rows.append(f"| `{prefix}{path.name}/` | {n} files{': ' + note if note else ''} |")
        elif path.name in notes:
            rows.append(f"| `{prefix}{path.name}` | {notes[path.name]} |")
        else:
            stems[path.stem].append(path.suffix.lstrip("."))
    for stem, suffixes in stems.items():
        names = suffixes[0] if len(suffixes) == 1 else "{" + ",".join(suffixes) + "}"
        rows.append(f"| `{prefix}{stem}.{names}` | {file_note(stem)} |")
    return rows
