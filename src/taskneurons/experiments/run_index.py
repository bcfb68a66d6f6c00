"""The ``README.md`` a run writes into its folder: what ran, and what each file holds."""

from __future__ import annotations

from collections import defaultdict
from fnmatch import fnmatchcase
from pathlib import Path

from taskneurons.experiments.stage_table import STAGE_TITLES, RunResult

#: Files a run writes, for the README index (by name or stem; a folder by ``name/``).
FILE_NOTES = {
    "config.yaml": "the resolved experiment file: every knob, defaults filled",
    "detect_config.json": "detection knobs and provenance",
    "layer_counts": "task neurons per layer",
    "iou": "pairwise IoU of the task neuron sets",
    "table1": "Original / Deactivate-Random / Deactivate-Task (accuracy % / ROUGE-L)",
    "table1_nll": "the same evaluations by gold-label NLL (nats per example)",
    "matrix": "change of task j's score with task i's neurons off (points)",
    "matrix_nll": "change of task j's gold-label NLL with task i's neurons off (nats)",
    "deactivate_config.json": "deactivation knobs, data hashes, neuron-set records",
    "table2": "Zero-shot / Train-Random / Train-Task (accuracy % / ROUGE-L)",
    "train_matrix": "change of task j's score after training task i's neurons (points)",
    "finetune_config.json": "neuron-training knobs, data hashes, per-run summaries",
    "multitask_config.json": "multi-task fine-tuning knobs, tuned and base model fingerprints",
    "model/": "the fine-tuned model and tokenizer (Hugging Face folder, `taskneurons_model.json`"
    " records provenance): give this folder as `model:` in a later experiment file",
    "specificity": "specificity statistics of the matrices (diagonal, CI, p-value)",
    "general_neurons": "the general set: neurons in the top-k of most tasks",
    "sweep": "one row per (selection, k): set size, overlap, specificity by accuracy and NLL",
    "specificity_vs_k": "specificity statistic vs k, one line per selection (accuracy)",
    "specificity_vs_k_nll": "specificity statistic vs k, one line per selection (gold NLL)",
    "table5": "final score per task, CL, BWT, FWT per method (Table 5 layout)",
    "forgetting": "FG_j per stage for every method (Figure 4)",
    "suite": "Table 5 rows and FG_j curves as JSON",
    "reference_cache.json": "single-task and zero-shot scores shared by the methods",
    "budget": "Train-Task vs Train-Random per (task, optimizer, k, step), paired CI and p",
    "curves.json": "learning curves: the score after every scored step, own and random sets",
    "learning_curves_sgd": "score vs step with SGD, own set and mean of the random sets",
    "learning_curves_adamw": "score vs step with AdamW, own set and mean of the random sets",
    "task_minus_random": "Train-Task - Train-Random vs step per (optimizer, k)",
    "budget_config.json": "budget-grid knobs, zero-shot scores and provenance",
    "cross_training": "task j's score after training task i's neurons on task j's data",
    "cross_gain": "gain over zero-shot of task j from training task i's neurons on its data",
    "cross_training_config.json": "cross-training knobs, neuron-set records, run summaries",
    "prompt_variants": "zero-shot score per task and prompt variant; paired difference to the "
    "first variant (bootstrap 95 % CI, sign-flip p)",
    "per_example.json": "per-example scores per task and variant (and a rendered prompt of each)",
    "prompt_variants_config.json": "prompt-variant knobs and provenance",
    "overlap": "overlap rate of training and test tasks' neurons per proportion (Table 8)",
    "overlap_vs_proportion": "overlap rate vs proportion (Table 8 as a plot)",
    "overlap_config.json": "overlap knobs and provenance",
    "generalization_config.json": "proportion-sweep knobs, score sources, time split",
    "controlled_overlap_config.json": "controlled-overlap knobs, seeds and provenance",
    "similarity_config.json": "similarity knobs, score sources and provenance",
    "correlation": "Pearson/Spearman of similarity vs OOD score, p-values, bootstrap CIs",
    "evaluations": "every evaluation of the proportion sweep (group, mode, proportion, task)",
    "evaluation_examples.json": "the same evaluations with each test example's score",
    "similarity_pairs": "per (training task, test task): mean similarity, score, zero-shot",
    "similarity_records.json": "per-layer similarities and scores of every pair (input of "
    "`analyze similarity|correlate`)",
    "scores/": "each task's relevance scores (reused by later stages and `analyze`)",
    "pairwise/": "pairwise IoU matrices of the tasks' sets per proportion",
}

#: Notes for names that carry a group, mode or selection (first matching pattern wins).
PATTERN_NOTES = [
    ("figure2_*_change", "change of the ID/OOD means from zero-shot, paired CI and p"),
    ("figure2_*_tasks", "score vs proportion, one line per test task"),
    ("figure2_*_*", "ID mean, OOD mean and their average vs proportion (Figure 2)"),
    ("figure2_*", "score per task, ID/OOD means per mode and proportion (Figure 2)"),
    ("figure3_*_without_general", "per-layer similarity without the general neurons"),
    ("figure3_*_random", "per-layer similarity of random sets of the same sizes (control)"),
    ("figure3_*", "per-layer cosine similarity of training and test tasks' neurons (Figure 3)"),
    ("controlled_overlap_*", "score vs overlap at fixed size, mean ± std over seeds"),
    ("forgetting_*", "FG_j per stage of a run's methods (Figure 4)"),
]


def file_note(name: str) -> str:
    """What a run file (``name``: a file name, a stem, or ``folder/``) holds; ``""`` if unknown."""
    if name in FILE_NOTES:
        return FILE_NOTES[name]
    return next((note for pattern, note in PATTERN_NOTES if fnmatchcase(name, pattern)), "")


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
        "| `config.yaml` | " + FILE_NOTES["config.yaml"] + " |",
    ]
    stages = list(run.results)
    for stage in stages:
        folder = run.out_dir if len(stages) == 1 else run.out_dir / stage
        prefix = "" if len(stages) == 1 else f"{stage}/"
        if prefix:
            lines.append(f"| `{prefix}` | {STAGE_TITLES[stage]} |")
        lines += _file_rows(folder, prefix)
    return "\n".join(lines) + "\n"


def _file_rows(folder: Path, prefix: str) -> list[str]:
    """One row per folder, and per file stem (``table1.{csv,json,md,png}`` in one row)."""
    rows = []
    stems: dict[str, list[str]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.name in ("config.yaml", "README.md") or path.name.startswith("."):
            continue
        if path.is_dir():
            n = sum(1 for p in path.rglob("*") if p.is_file())
            note = file_note(f"{path.name}/")
            rows.append(f"| `{prefix}{path.name}/` | {n} files{': ' + note if note else ''} |")
        elif path.name in FILE_NOTES:
            rows.append(f"| `{prefix}{path.name}` | {FILE_NOTES[path.name]} |")
        else:
            stems[path.stem].append(path.suffix.lstrip("."))
    for stem, suffixes in stems.items():
        names = suffixes[0] if len(suffixes) == 1 else "{" + ",".join(suffixes) + "}"
        rows.append(f"| `{prefix}{stem}.{names}` | {file_note(stem)} |")
    return rows
