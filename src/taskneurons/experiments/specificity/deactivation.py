"""PAPER.md Table 1 rows and the task x task deactivation matrix (Figure 5 b).

For each task i: its score with nothing deactivated (Original), with as many random neurons as
task i has, matched per layer and module (Deactivate-Random), and with task i's neurons
(Deactivate-Task); and the score of every task j with task i's neurons off (the matrix).

Example:
    >>> ctx = RunContext.of(model, tok, tasks, neurons="runs/detect")  # doctest: +SKIP
    >>> res = deactivation_experiment(ctx, DeactivateConfig(), "out")  # doctest: +SKIP
    >>> res.table.row("Deactivate-Task")  # task id -> accuracy %  # doctest: +SKIP
    >>> print(res.markdown())  # tables, matrices and the two-line summaries  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from taskneurons.data.tasks import Task, examples_hash
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.experiments.common import check_sets_cover, eval_examples, experiment_meta
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.damage_summary import Resampling, specificity
from taskneurons.experiments.specificity.deactivate_stage import DeactivateConfig
from taskneurons.experiments.specificity.deactivation_result import (
    EVALUATIONS_FILE,
    DeactivationResult,
    Evaluation,
    runs_from_json,
    runs_to_json,
    tables,
)
from taskneurons.neurons.activation_probability import mean_activation
from taskneurons.neurons.intervention import deactivate
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection import matched_random_sets
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint
from taskneurons.store.settings import SettingsKey, read_keyed

__all__ = [
    "EVALUATIONS_FILE",
    "DeactivationInputs",
    "DeactivationResult",
    "deactivation_experiment",
    "run_deactivate",
]


@dataclass
class DeactivationInputs:
    """The optional inputs of :func:`deactivation_experiment`.

    Attributes:
        sets: task id -> its set (``None``: the run's, :meth:`RunContext.neuron_sets`).
        general: the general set of a ``specific`` detection, deactivated as a control when
            ``config.general`` (``None`` with ``sets`` ``None``: the run's).
        original: :attr:`DeactivationResult.original` of an earlier call with the same model
            weights, tasks and config (the Original row is then not re-evaluated).
        resume: when ``out_dir`` holds ``evaluations.json``, its evaluations are used instead
            of evaluating again (the tables and statistics are recomputed from them).

    Example:
        >>> DeactivationInputs(resume=True).general is None
        True
    """

    sets: Mapping[str, NeuronSet] | None = None
    general: NeuronSet | None = None
    original: Mapping[str, Any] | None = None
    resume: bool = False


def deactivation_experiment(
    ctx: RunContext,
    config: DeactivateConfig,
    out_dir: str | os.PathLike,
    inputs: DeactivationInputs | None = None,
) -> DeactivationResult:
    """PAPER.md Table 1 rows, the task x task deactivation matrix (Figure 5) and controls.

    Writes ``table1.{md,csv,json}``, ``matrix.{md,csv,json}`` (change of task j's score when
    task i's neurons are off, in points), ``matrix.png``, ``specificity.{json,md}`` and
    ``deactivate_config.json``. When every task is scored by label likelihood, the same
    evaluations also give the gold label's mean NLL (:meth:`EvalResult.gold_nll`), written as
    ``table1_nll.*`` and ``matrix_nll.*`` (change in nats; a rise means the neurons
    mattered), a readout that still moves when the model is at chance. ``inputs``: the
    general set to deactivate as a control, the Original evaluations of an earlier call, and
    whether to resume (:class:`DeactivationInputs`; default: none of them).

    Every evaluation is kept per example in ``evaluations.json`` with what it depends on (the
    config but its bootstrap and permutation counts, the model fingerprint, the test examples'
    hashes and the deactivated sets' digests), which ``inputs.resume`` compares.

    Raises:
        ValueError: ``resume`` and ``evaluations.json`` was made with other settings, model,
            examples or sets.

    Example:
        >>> ctx = RunContext.of(model, tok, tasks)  # doctest: +SKIP
        >>> res = deactivation_experiment(ctx, DeactivateConfig(), "out",
        ...     DeactivationInputs(sets=det.sets, general=det.general))  # doctest: +SKIP
    """
    given = inputs if inputs is not None else DeactivationInputs()
    model, tokenizer, tasks, progress = ctx.model, ctx.tokenizer, ctx.tasks, ctx.progress
    neuron_sets = given.sets if given.sets is not None else ctx.neuron_sets()
    if given.sets is None and given.general is None:
        given = dataclasses.replace(given, general=ctx.general)
    check_sets_cover(tasks, neuron_sets)
    space = NeuronSpace(model, next(iter(neuron_sets.values())).definition)
    for ns in neuron_sets.values():
        ns.check_space(space)
    test = {t.id: eval_examples(t, config.n_test, config.seed) for t in tasks}
    own = {t.id: neuron_sets[t.id] for t in tasks}
    controls = matched_random_sets(own, space, config.random_seed, config.random_excludes_task)
    conditions = _conditions(tasks, neuron_sets, controls, given.general, config)
    key = _evaluation_key(config, model, test, conditions)
    saved = read_keyed(Path(out_dir) / EVALUATIONS_FILE, key, _refusal) if given.resume else None
    runs = runs_from_json(saved["runs"]) if saved is not None else None
    if runs is None:  # the evaluations themselves, so a later cell can reuse ``original``
        means = _means(ctx, space) if config.mode == "mean" else None
        bench = _Bench(model, tokenizer, tasks, test, config, space, progress, means)
        runs = _run_conditions(bench, conditions, given.original)
        saved = {"key": key.to_dict(), "runs": runs_to_json(runs)}
    runs["Deactivate-Task"] = {t.id: runs["matrix"][t.id][t.id] for t in tasks}
    result = _result(tasks, runs, Path(out_dir), config)
    result.sets, result.original = own, dict(runs["Original"])
    result.general = given.general if "Deactivate-General" in runs else None
    result.meta = experiment_meta(config, model, tasks, test, neuron_sets, controls)
    result.evaluations = saved
    result.save()
    return result


def _conditions(tasks, neuron_sets, controls, general, config) -> list[tuple[str, dict]]:
    """``(row, {deactivated task i: (set, [measured tasks])})`` for every condition to run."""
    ids = [t.id for t in tasks]
    out = [
        ("Deactivate-Random", {i: (controls[i], [i]) for i in ids}),
        ("matrix", {i: (neuron_sets[i], ids) for i in ids}),
    ]
    if config.others and len(ids) > 1:
        others = {}
        for i in ids:
            rest = [neuron_sets[j] for j in ids if j != i]
            union = rest[0]
            for ns in rest[1:]:
                union = union | ns
            others[i] = (union, [i])
        out.append(("Deactivate-Others", others))
    if config.general and general is not None and len(general) > 0:
        out.append(("Deactivate-General", {"general": (general, ids)}))
    return out


@dataclass
class _Bench:
    """What every evaluation of one deactivation experiment uses."""

    model: nn.Module
    tokenizer: Any
    tasks: list[Task]
    test: dict[str, list]
    config: DeactivateConfig
    space: NeuronSpace
    progress: bool
    means: dict[str, NeuronScores] | None = None


def _means(ctx: RunContext, space: NeuronSpace) -> dict[str, NeuronScores]:
    """Each task's mean activations over its ``detect.attribution`` (train) examples."""
    cfg = ctx.config.detect.attribution
    return {
        t.id: mean_activation(ctx.model, t, space, tokenizer=ctx.tokenizer, config=cfg)
        for t in ctx.tasks
    }


def _run_conditions(bench: _Bench, conditions, original) -> dict:
    """``{row: {task: Evaluation}}``, with ``"matrix": {i: {j: Evaluation}}``."""
    tasks, config = bench.tasks, bench.config
    by_id = {t.id: t for t in tasks}
    if original is not None and set(original) != set(by_id):
        raise ValueError(f"original evaluations of {sorted(original)}, tasks {sorted(by_id)}")
    total = (original is None) * len(tasks)
    total += sum(len(m) for _, c in conditions for _, m in c.values())
    bar = tqdm(total=total, desc="deactivation", unit="eval", disable=not bench.progress)

    def run(task: Task) -> Evaluation:
        res = evaluate(
            bench.model, bench.tokenizer, task, bench.test[task.id], config=config.eval,
            progress=False,
        )  # fmt: skip
        bar.update()
        return Evaluation(res.score, res.gold_nll(), res.example_scores(), res.example_gold_nll())

    runs: dict = {"Original": dict(original or {}) or {t.id: run(t) for t in tasks}}
    for row, cells in conditions:
        runs[row] = {}
        for key, (neurons, measured) in cells.items():
            values = {}
            for j in measured:  # (mean mode: held at the measured task's means)
                held = bench.means[j] if bench.means is not None else None
                with deactivate(bench.model, neurons, config.mode, bench.space, held):
                    values[j] = run(by_id[j])
            if row == "matrix":
                runs[row][key] = values
            else:
                runs[row].update(values)
    bar.close()
    return runs


def _digest(ns: NeuronSet) -> str:
    """A short content hash of a set: its definition, layout and membership."""
    h = hashlib.sha256(f"{ns.definition}{sorted(ns.shapes().items())}".encode())
    h.update(ns.flat().numpy().tobytes())
    return h.hexdigest()[:16]


def _evaluation_key(config: DeactivateConfig, model, test, conditions) -> SettingsKey:
    """What the evaluations of a run depend on (compared on resume)."""
    cfg = {k: v for k, v in config.to_dict().items() if k not in ("n_boot", "n_permutations")}
    return SettingsKey.of(
        config=cfg,
        model=model_fingerprint(model),
        data_hash={t: examples_hash(exs) for t, exs in test.items()},
        sets={
            row: {i: [_digest(ns), measured] for i, (ns, measured) in cells.items()}
            for row, cells in conditions
        },
    )


def _refusal(path: Path, differ: list[str]) -> str:
    return (
        f"cannot resume from {path}: it was made with other {', '.join(differ)}; resume "
        "with the same settings, model and sets, or use another folder"
    )


def _result(tasks: list[Task], runs: dict, out: Path, config: DeactivateConfig):
    names = [t.id for t in tasks]
    table, nll = tables(names, runs)
    result = DeactivationResult(table, nll, {t.id: t.metric for t in tasks}, out)
    readouts = [("score", table)] + ([("nll", nll)] if nll is not None else [])
    for readout, comparison in readouts:
        per = "scores" if readout == "score" else "nlls"
        result.specificity[readout] = specificity(
            comparison,
            {i: {j: getattr(v, per) for j, v in row.items()} for i, row in runs["matrix"].items()},
            {j: getattr(runs["Original"][j], per) for j in names},
            readout=readout,
            resampling=Resampling.of(config),
        )
    return result


run_deactivate = deactivation_experiment
