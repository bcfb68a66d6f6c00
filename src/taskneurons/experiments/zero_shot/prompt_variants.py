"""Zero-shot scores under several prompt variants, with paired per-example statistics.

Each task is scored zero-shot on the same label-stratified test subset under every named
prompt variant (by default the plain ``instruction / input / Option: / Answer:`` prompt and the
same user text wrapped in the tokenizer's chat template). A variant is the run's evaluation
prompt (``eval.prompt``) with some :class:`~taskneurons.data.prompts.PromptConfig` fields
overridden. The first variant is the reference: for every other variant and task the paired
difference (variant - reference) of the per-example scores gets a percentile bootstrap 95 % CI
and a two-sided sign-flip p-value (:func:`~taskneurons.analysis.paired.mean_difference`), so
the table says whether a prompt changes a task's score beyond what the test examples' luck
would. Scores are in points, 0-100: per example 100 (correct) or 0 (wrong) for accuracy tasks,
ROUGE-L F1 x 100 for generation tasks, as :func:`~taskneurons.evaluation.dispatch.evaluate`
returns them.

A variant that asks for the chat template on a tokenizer without one is refused before any
evaluation (the prompt code would silently fall back to the plain prompt).

Example:
    >>> cfg = PromptVariantsConfig.from_dict(
    ...     {"n_test": 200, "variants": [{"name": "plain"}, {"name": "chat", "chat_template": True}]}
    ... )
    >>> [cfg.prompt_for(v).chat_template for v in cfg.names()]
    [False, True]
    >>> res = prompt_variants_experiment(RunContext.of(model, tok, tasks), cfg, "runs/prompts")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.analysis.paired import MeanDifference, mean_difference
from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import render_prompt
from taskneurons.data.tasks import Example, Task, examples_hash
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.experiments.common import eval_examples
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.zero_shot.prompts_stage import PromptVariantsConfig
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import read_record
from taskneurons.store.stored_result import StoredResult

#: The record of a prompt-variants run, and its per-example scores.
RECORD_FILE = "prompt_variants_config.json"
EXAMPLES_FILE = "per_example.json"
#: The row of the table that averages the tasks.
MEAN_ROW = "Mean"
#: What a per-example score is.
SCORE_UNIT = "points 0-100 per example: 100/0 (correct/wrong) or ROUGE-L F1 x 100"


@dataclass
class PromptVariantsResult(StoredResult):
    """The table and what it was computed from.

    Attributes:
        header: ``task``, one score column per variant, then per non-reference variant ``v``:
            ``v-ref``, ``v-ref low``, ``v-ref high``, ``v-ref p``.
        rows: one row per task, then :data:`MEAN_ROW` (unweighted means over tasks; its CI
            and p pool the tasks' examples, see :func:`mean_row`). Scores and differences in
            points (0-100).
        variants: variant names, reference first.
        scores: ``scores[task][variant]``: ``[n_test]`` per-example scores (points).
        differences: ``differences[variant][task or MEAN_ROW]``: the paired statistics.
        out_dir: where the files were written.
        meta: ``prompt_variants_config.json``: config, model, prompts, data hashes, statistics.
        examples: ``per_example.json``: every per-example score, each task's metric and data
            hash, and each variant's rendered prompt of its first test example.

    :meth:`save` writes the files the experiment writes; :meth:`load` reads them back.

    Example:
        >>> PromptVariantsResult.load("runs/x/prompts").variants  # doctest: +SKIP
        ['plain', 'chat']
    """

    RECORD = RECORD_FILE
    header: list[str]
    rows: list[list[Any]]
    variants: list[str]
    scores: dict[str, dict[str, list[float]]]
    differences: dict[str, dict[str, MeanDifference]]
    out_dir: Path
    meta: dict = field(default_factory=dict, repr=False)
    examples: dict = field(default_factory=dict, repr=False)

    def markdown(self) -> str:
        ref = self.variants[0]
        note = (
            f"Zero-shot score (points) per prompt variant; differences are variant - {ref!r} "
            "over the same test examples, with a bootstrap 95 % CI and a sign-flip p-value."
        )
        return note + "\n\n" + markdown_table(self.header, self.rows, digits=3)

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``prompt_variants.*``, ``per_example.json`` and the record into ``folder``
        (default: :attr:`out_dir`)."""
        out = self.target(folder)
        write_table(
            out / "prompt_variants", self.header, self.rows, meta=self.meta, digits=3,
            title="Zero-shot score per prompt variant, paired differences to "
            f"{self.variants[0]!r} (points)",
        )  # fmt: skip
        write_json_atomic(out / EXAMPLES_FILE, self.examples)
        return self.write_meta(out)

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> PromptVariantsResult:
        """The prompt-variants run in ``path``.

        Raises:
            FinishedRunError: the table, the per-example scores or the record is missing.
        """
        table = read_record(path / "prompt_variants.json")
        examples = read_record(path / EXAMPLES_FILE)
        scores = {t: dict(v["scores"]) for t, v in examples["tasks"].items()}
        differences = {
            v: {task: MeanDifference(**d) for task, d in per.items()}
            for v, per in meta["differences"].items()
        }
        return cls(
            table["header"], table["rows"], list(examples["variants"]), scores, differences,
            path, meta, examples,
        )  # fmt: skip


def prompt_variants_experiment(
    ctx: RunContext, config: PromptVariantsConfig, out_dir: str | os.PathLike
) -> PromptVariantsResult:
    """Score every task zero-shot under every prompt variant; paired differences to the first.

    Writes ``prompt_variants.{md,csv,json}`` (the table, with provenance), ``per_example.json``
    (every per-example score, so the statistics can be recomputed, and each variant's rendered
    prompt of the first test example) and ``prompt_variants_config.json``.

    Raises:
        ValueError: a variant asks for the chat template and the tokenizer has none (before
            any evaluation); no tasks.
    """
    model, tokenizer, tasks, progress = ctx.model, ctx.tokenizer, ctx.tasks, ctx.progress
    if not tasks:
        raise ValueError("prompt variants: no tasks")
    names = config.names()
    prompts = {name: config.prompt_for(name) for name in names}
    check_chat_template(tokenizer, prompts)
    test = {t.id: eval_examples(t, config.n_test, config.seed) for t in tasks}
    scores: dict[str, dict[str, list[float]]] = {}
    for task in tasks:
        scores[task.id] = {}
        for name in names:
            cfg = dataclasses.replace(config.eval, prompt=prompts[name])
            res = evaluate(model, tokenizer, task, test[task.id], config=cfg, progress=progress)
            scores[task.id][name] = res.example_scores()
    header, rows, diffs = _table(names, scores, config)
    result = PromptVariantsResult(header, rows, names, scores, diffs, Path(out_dir))
    result.meta, result.examples = _records(result, config, model, tokenizer, tasks, test, prompts)
    result.save()
    return result


def check_chat_template(tokenizer, prompts: dict[str, PromptConfig]) -> None:
    """Raise ``ValueError`` if a variant wants the chat template and ``tokenizer`` has none."""
    if getattr(tokenizer, "chat_template", None):
        return
    wanting = [name for name, p in prompts.items() if p.chat_template]
    if wanting:
        raise ValueError(
            f"prompt variant(s) {wanting} set chat_template: true, but the tokenizer has no chat "
            "template (the prompt would silently be the plain one); drop those variants or use "
            "a model whose tokenizer has a chat template"
        )


def _table(
    names: list[str], scores: dict[str, dict[str, list[float]]], config: PromptVariantsConfig
) -> tuple[list[str], list[list[Any]], dict[str, dict[str, MeanDifference]]]:
    """Header, task rows + mean row, and the differences of every non-reference variant."""
    ref, others = names[0], names[1:]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    header = ["task", *names]
    for v in others:
        header += [f"{v}-{ref}", f"{v}-{ref} low", f"{v}-{ref} high", f"{v}-{ref} p"]
    diffs: dict[str, dict[str, MeanDifference]] = {v: {} for v in others}
    stat = dict(n_boot=config.n_boot, n_perm=config.n_boot, seed=config.seed)
    for task, per in scores.items():
        for v in others:
            diffs[v][task] = mean_difference(per[v], per[ref], **stat)
    for v in others:
        x, y = mean_row(scores, v, ref)
        diffs[v][MEAN_ROW] = mean_difference(x, y, **stat)
    rows: list[list[Any]] = []
    for task in [*scores, MEAN_ROW]:
        if task == MEAN_ROW:
            row: list[Any] = [
                MEAN_ROW,
                *(mean([mean(p[n]) for p in scores.values()]) for n in names),
            ]
        else:
            row = [task, *(mean(scores[task][n]) for n in names)]
        for v in others:
            d = diffs[v][task]
            row += [d.mean, d.low, d.high, d.p_value]
        rows.append(row)
    return header, rows, diffs


def mean_row(
    scores: dict[str, dict[str, list[float]]], variant: str, reference: str
) -> tuple[list[float], list[float]]:
    """All tasks' per-example scores of ``variant`` and ``reference`` pooled, ``[N]`` each.

    Each example of task ``t`` is weighted by ``N / (T * n_t)`` (``N`` examples in all, ``T``
    tasks), so the pooled mean difference is exactly the unweighted mean over tasks of the
    per-task differences; with equal ``n_t`` the weights are 1.
    """
    total = sum(len(per[reference]) for per in scores.values())
    x: list[float] = []
    y: list[float] = []
    for per in scores.values():
        w = total / (len(scores) * len(per[reference]))
        x += [w * s for s in per[variant]]
        y += [w * s for s in per[reference]]
    return x, y


def _records(
    result: PromptVariantsResult,
    config: PromptVariantsConfig,
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    test: dict[str, list[Example]],
    prompts: dict[str, PromptConfig],
) -> tuple[dict, dict]:
    """The run's record (``meta``) and its per-example file (``examples``)."""
    meta = provenance(
        config=config.to_dict(),
        model=model_fingerprint(model),
        prompts={name: p.to_dict() for name, p in prompts.items()},
        reference=result.variants[0],
        unit=SCORE_UNIT,
        metric={t.id: t.metric for t in tasks},
        data_hash={t.id: examples_hash(test[t.id]) for t in tasks},
        differences={
            v: {task: d.to_dict() for task, d in per.items()}
            for v, per in result.differences.items()
        },
    )
    per_example = {
        "variants": result.variants,
        "reference": result.variants[0],
        "unit": SCORE_UNIT,
        "tasks": {
            t.id: {
                "metric": t.metric,
                "data_hash": examples_hash(test[t.id]),
                "scores": result.scores[t.id],
                "first_prompt": {
                    name: render_prompt(tokenizer, t, test[t.id][0].input, p)
                    for name, p in prompts.items()
                },
            }
            for t in tasks
        },
        "meta": meta,
    }
    return meta, per_example


run_prompts = prompt_variants_experiment
