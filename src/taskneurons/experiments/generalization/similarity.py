"""PAPER.md Figure 3 and Table 4: parameter similarity of task neurons, and its link to OOD scores.

For every group and every training task ``i`` one model ``M_i`` is fine-tuned on task ``i``
alone (``train.method: full`` as in the paper, or ``neurons``: only task ``i``'s top-``p`` %
set). In ``M_i``, layer by layer, the cosine similarity of the mean parameter vector of task
``i``'s neurons and that of each out-of-domain test task ``j``'s neurons is computed
(:func:`~taskneurons.analysis.parameter_similarity.layer_similarity`; a neuron's vector is its gate and
up rows and its down column), with every neuron of the sets, with the general neurons removed,
and, as a control, for random sets of the same per-layer sizes (a cosine of mean vectors grows
with the sets' sizes, since a large set's mean tends to the layer's mean), and for random pairs
that also share as many neurons as the two sets do (a shared neuron adds the same vector to both
means, so overlap alone raises the cosine). The weights are read
directly (:func:`layer_vectors`): the similarity pass runs no forward pass. ``M_i`` is then
scored on every test task, and the base weights are restored (a CPU copy for ``full``; the
detached delta for ``neurons``) before the next model.

The sets are those of the base model (scores computed once per task), at ``proportion`` % of
each task's set under ``detect.selection``. Figure 3 averages the per-layer curves over the
models of a group; Table 4 correlates each pair's mean similarity over ``layers`` with its
score (``raw``) or gain over zero-shot (``gain``) — see :mod:`.similarity_report`.

Files: ``similarity_records.json`` (every pair's per-layer similarities and scores: what
``taskneurons analyze similarity|correlate`` read back), ``figure3_<group>[_<variant>]
.{md,csv,json,png}``, ``similarity_pairs.{md,csv,json}``, ``correlation.{md,csv,json,png}`` and
``similarity_config.json``.

Example:
    >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig())  # doctest: +SKIP
    >>> res = similarity_experiment(ctx, SimilarityConfig(), "out")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from taskneurons._io import write_json_sealed
from taskneurons.analysis.parameter_similarity import layer_similarity, neuron_vectors
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.experiments.common import eval_examples, limited
from taskneurons.experiments.generalization.proportion_sweep import Timings
from taskneurons.experiments.generalization.similarity_report import (
    RECORDS_FILE,
    VARIANTS,
    correlation_rows,
    figure_rows,
    variants_of,
    write_correlation,
    write_similarity,
)
from taskneurons.experiments.generalization.similarity_stage import SimilarityConfig, check_layers
from taskneurons.experiments.generalization.task_groups import (
    GroupSets,
    ScoredTasks,
    joined,
    prepare_sets,
    stage_record,
)
from taskneurons.experiments.run_context import RunContext
from taskneurons.neurons.selection import random_like, random_pair_like
from taskneurons.neurons.space import NeuronSpace
from taskneurons.report.tables import markdown_table
from taskneurons.store.run_folder import read_record
from taskneurons.store.stored_result import StoredResult
from taskneurons.training.trained import trained

#: The record of a similarity stage.
RECORD_FILE = "similarity_config.json"


@dataclass
class SimilarityResult(StoredResult):
    """Every pair's per-layer similarities and scores, Figure 3's tables and Table 4's rows.

    Attributes:
        records: one dict per (model ``M_i``, test task ``j``) (see :mod:`.similarity_report`).
        tables: group -> ``(header, rows)`` of Figure 3 (every neuron of the sets).
        correlation: Table 4 rows (:data:`~.similarity_report.CORRELATION_HEADER`).
        timings: the time split (``reading``: the similarity pass, weights read directly).
        out_dir: where the files are.
        scored: the scores used (for later stages of the run; ``None`` after :meth:`load`).
        meta: ``similarity_config.json``: settings, groups, scores files, summaries.

    :meth:`save` writes the records, tables, plots and the record; :meth:`load` reads the
    records and Table 4 back and lays Figure 3 out from the records again (the time split as
    recorded, to the millisecond).

    Example:
        >>> SimilarityResult.load("runs/x/similarity").correlation[0]  # doctest: +SKIP
    """

    RECORD = RECORD_FILE
    records: list[dict]
    tables: dict[str, tuple[list[str], list[list]]]
    correlation: list[list]
    timings: Timings
    out_dir: Path
    scored: ScoredTasks | None = None
    meta: dict = field(default_factory=dict, repr=False)

    def markdown(self) -> str:
        from_report = [
            f"group {g}: similarity per layer (mean over the models)\n\n"
            + markdown_table(h[:3], [r[:3] for r in rows], digits=3)
            for g, (h, rows) in self.tables.items()
        ]
        header = ["group", "variant", "layers", "score", "n", "pearson r", "p", "spearman rho", "p"]
        rows = [[r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[8], r[9]] for r in self.correlation]
        table4 = "correlation with the OOD score\n\n" + markdown_table(header, rows, digits=3)
        return "\n\n".join([*from_report, table4, self.timings.line()])

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``similarity_records.json``, the Figure 3 and Table 4 files and the record
        into ``folder`` (default: :attr:`out_dir`)."""
        out = self.target(folder)
        config = SimilarityConfig.from_dict(self.meta["config"], where=RECORD_FILE)
        write_json_sealed(out / RECORDS_FILE, {"records": self.records, "meta": self.meta})
        write_similarity(self.records, out, self.meta, config.layers)
        write_correlation(
            self.correlation, self.records, out, self.meta, config.layers, config.score
        )
        return self.write_meta(out)

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> SimilarityResult:
        """The similarity run in ``path``.

        Raises:
            FinishedRunError: the records, Table 4 or the record is missing or unreadable.
        """
        config = SimilarityConfig.from_dict(meta["config"], where=str(path / RECORD_FILE))
        records = read_record(path / RECORDS_FILE)["records"]
        tables = _tables(records, config.layers)
        correlation = read_record(path / "correlation.json")["rows"]
        timings = Timings.from_dict(meta["timings"])
        return cls(records, tables, correlation, timings, path, None, meta)


def layer_vectors(space: NeuronSpace, layer: int) -> torch.Tensor:
    """Layer ``layer``'s per-neuron parameter vectors ``[d_ff, p]``, read from the weights.

    Row ``j``: neuron ``j``'s W1 rows (gate/up, with bias entries) and W2 column, as
    :func:`~taskneurons.analysis.parameter_similarity.neuron_vectors` lays them out; on the
    parameters' device and dtype, detached. Runs no forward pass.
    """
    d_ff = space.units["ffn"]
    rows, columns = [], []
    for s in space.parameter_slices(layer, "ffn"):
        t = s.param.detach().narrow(s.dim, s.offset, d_ff)
        if t.ndim == 1:
            rows.append(t[:, None])
        elif s.dim == 0:
            rows.append(t)
        else:
            columns.append(t)
    return neuron_vectors(rows, columns)


def _overlap_pairs(mine, sets: GroupSets, tests, proportion: float, space, seed: int) -> dict:
    """``{test task: (mask, mask)}``: a random pair matched to (train set, test set) in counts
    and overlap per layer (``[layers, d_ff]`` each)."""
    out = {}
    for k, j in enumerate(tests, start=1):
        pair = random_pair_like(mine, sets.at(proportion, j), space, seed + k)
        out[j] = (joined(pair[0]), joined(pair[1]))
    return out


def model_similarity(
    model: nn.Module,
    sets: GroupSets,
    train_task: str,
    tests: Sequence[str],
    proportion: float,
    seed: int = 0,
) -> dict[str, dict[str, list[float]]]:
    """``{test task: {variant: per-layer cosine}}`` in ``model`` (the weights as they are now).

    Variants (:data:`~.similarity_report.VARIANTS`): ``all``, ``without_general``, and
    ``random``: for each task a random set with its set's count in every layer
    (:func:`~taskneurons.neurons.selection.random_like`, seed ``seed + position`` of the task
    in ``[train_task, *tests]``), the similarity that set sizes alone give; and
    ``random_overlap``: for each pair a random pair with the two sets' counts *and shared
    neurons* in every layer (:func:`~taskneurons.neurons.selection.random_pair_like`, seed
    ``seed + position`` of the test task), the similarity that sizes and overlap give. Each layer's
    vectors are read once (:func:`layer_vectors`) and compared for every test task and
    variant, then freed, so memory stays at one layer's FFN.
    """
    space = NeuronSpace(model, "ffn")
    tasks = [train_task, *tests]
    masks = {
        "all": {t: joined(sets.at(proportion, t)) for t in tasks},
        "without_general": {t: joined(sets.at(proportion, t, True)) for t in tasks},
        "random": {
            t: joined(random_like(sets.at(proportion, t), space, seed + k))
            for k, t in enumerate(tasks)
        },
    }
    pairs = _overlap_pairs(sets.at(proportion, train_task), sets, tests, proportion, space, seed)
    out = {j: {v: [] for v in VARIANTS} for j in tests}
    for layer in range(space.n_layers):
        params = [layer_vectors(space, layer)]
        for v in VARIANTS:
            for j in tests:
                mine, theirs = (
                    pairs[j] if v == "random_overlap" else (masks[v][train_task], masks[v][j])
                )
                sim = layer_similarity(params, mine[layer : layer + 1], theirs[layer : layer + 1])
                out[j][v].append(float(sim[0]))
    return out


def similarity_experiment(
    ctx: RunContext, config: SimilarityConfig, out_dir: str | os.PathLike
) -> SimilarityResult:
    """Train ``M_i`` per training task, compare neuron parameters per layer, score, correlate.

    The ``similarity`` stage itself (:data:`run_similarity`): model, tokenizer, tasks, the
    detect settings and the scores to reuse come from ``ctx``.

    Raises:
        ValueError: neurons other than ``ffn``; a group names a task the run does not have;
            ``layers`` beyond the model's layers.

    Example:
        >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig(k=10))  # doctest: +SKIP
        >>> print(similarity_experiment(ctx, SimilarityConfig(), "out").markdown())  # doctest: +SKIP
    """
    model, detect = ctx.model, ctx.config.detect
    if detect.attribution.definition != "ffn":
        raise ValueError("similarity compares ffn neurons: set detect.attribution.definition: ffn")
    start, out = time.perf_counter(), Path(out_dir)
    check_layers(config.layers, NeuronSpace(model, "ffn").n_layers)
    chosen, scored, sets = prepare_sets(ctx, config.groups, out, "similarity.groups")
    timings = Timings(scoring=scored.seconds)
    runner = _Models(model, ctx.tokenizer, chosen, config, sets, timings, ctx.progress)
    base = runner.zero_shot() if config.zero_shot else {}
    records = []
    for g in config.groups:
        for i in g.train:
            for j, (sims, score) in runner.train_and_compare(i, g.test).items():
                records.append({
                    "group": g.name, "train_task": i, "test_task": j, "similarity": sims,
                    "score": score, "zero_shot": base.get(j),
                })  # fmt: skip
    timings.total = time.perf_counter() - start
    meta = stage_record(
        "similarity", config, detect, sets, scored, out, model, timings=timings.to_dict(),
        runs=runner.runs, definition="cosine of the sets' mean [gate row, up row, down column]",
    )  # fmt: skip
    rows = correlation_rows(
        records, config.layers, config.score, config.n_boot, config.seed, config.confidence
    )
    tables = _tables(records, config.layers)
    result = SimilarityResult(records, tables, rows, timings, out, scored, meta)
    result.save()
    return result


def _tables(records: list[dict], layers: list[int] | None) -> dict:
    """Figure 3's table of every group (all the sets' neurons), as :func:`write_similarity`
    writes it."""
    if "all" not in variants_of(records):
        return {}
    groups = dict.fromkeys(r["group"] for r in records)
    return {g: figure_rows(records, g, "all", layers)[:2] for g in groups}


class _Models:
    """Trains one model per training task from the base weights, reads it, scores it."""

    def __init__(self, model, tokenizer, tasks, config, sets, timings, progress):
        self.model, self.tokenizer, self.config, self.sets = model, tokenizer, config, sets
        self.tasks = {t.id: t for t in tasks}
        self.test = {t.id: eval_examples(t, config.n_test, config.seed) for t in tasks}
        self.train = {t.id: limited(t, config.n_train, config.seed) for t in tasks}
        self.timings, self.progress = timings, progress
        self.runs: dict[str, dict] = {}

    def score(self, task_id: str) -> float:
        t0 = time.perf_counter()
        res = evaluate(
            self.model, self.tokenizer, self.tasks[task_id], self.test[task_id],
            config=self.config.eval, progress=False,
        )  # fmt: skip
        self.timings.evaluation += time.perf_counter() - t0
        return float(res.score)

    def zero_shot(self) -> dict[str, float]:
        tests = dict.fromkeys(j for g in self.config.groups for j in g.test)
        return {j: self.score(j) for j in tests}

    def _compare(self, i: str, tests: Sequence[str]) -> dict:
        t0 = time.perf_counter()
        cfg = self.config
        sims = model_similarity(self.model, self.sets, i, tests, cfg.proportion, cfg.seed)
        self.timings.reading += time.perf_counter() - t0
        return sims

    def train_and_compare(self, i: str, tests: Sequence[str]) -> dict[str, tuple[dict, float]]:
        """``{test task: (similarities, score of M_i)}``; the base weights are back after."""
        cfg = self.config
        neurons = self.sets.at(cfg.proportion, i) if cfg.train.method == "neurons" else None
        t0 = time.perf_counter()
        with trained(
            self.model, self.tokenizer, [self.train[i]], cfg.train, neurons=neurons,
            progress=self.progress,
        ) as res:  # fmt: skip
            self.timings.training += time.perf_counter() - t0
            if res.delta is not None:
                res.delta.merge()  # the similarity pass reads the weights
            sims = self._compare(i, tests)
            if res.delta is not None:
                res.delta.unmerge()  # trained() unmerges too when _compare raises
            scores = {j: self.score(j) for j in tests}
        self.runs[i] = res.summary()
        return {j: (sims[j], scores[j]) for j in tests}


#: The ``similarity`` stage (``Stage.run`` names it): scores from earlier stages, ``neurons:``
#: or this run's detect.
run_similarity = similarity_experiment
