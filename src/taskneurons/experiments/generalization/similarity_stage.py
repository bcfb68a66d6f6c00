"""The ``similarity`` stage: parameter similarity of task neurons and its link to OOD scores
(Figure 3, Table 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from taskneurons.config import Config
from taskneurons.config_fields import test_examples, train_examples
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.generalization.groups import (
    GroupsConfig,
    TaskGroup,
    check_percents,
    default_groups,
)
from taskneurons.experiments.stage import Stage, register
from taskneurons.training.train_config import TrainConfig

SCORES: tuple[str, ...] = ("raw", "gain")


def check_layers(layers: Sequence[int] | None, n_layers: int | None = None) -> None:
    """``ValueError`` unless ``layers`` is ``None`` or distinct layer indices (< ``n_layers``)."""
    if layers is None:
        return
    if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
        raise ValueError(f"layers: give distinct layer indices >= 0 (or null: all), got {layers}")
    if n_layers is not None and max(layers) >= n_layers:
        raise ValueError(f"layers: the model has layers 0..{n_layers - 1}, got {max(layers)}")


def _full_training() -> TrainConfig:
    return TrainConfig(method="full")


@dataclass
class SimilarityConfig(GroupsConfig, Config):
    """Knobs of the parameter-similarity analysis (PAPER.md Figure 3, Table 4).

    Attributes:
        groups: the task groups (default PAPER.md Table 3).
        proportion: % of each task's set compared (and trained, with ``neurons``).
        n_train, n_test, seed: data subsets (label-stratified, seeded; ``None``: all).
        zero_shot: also score the test tasks on the base model (needed by ``score: gain``).
        layers: layers averaged for the pair similarity of Table 4 (``None``: all).
        score: correlate with the OOD score (``raw``) or its gain over zero-shot (``gain``).
        n_boot, confidence: bootstrap resamples and coverage of the correlation intervals.
        train: the training knobs (``full``, the default, or ``neurons``).
        eval: how tasks are evaluated.
    """

    groups: list[TaskGroup] = field(default_factory=default_groups)
    proportion: float = 100.0
    n_train: int | None = train_examples(512)
    n_test: int | None = test_examples(200)
    seed: int = 0
    zero_shot: bool = True
    layers: list[int] | None = None
    score: str = "raw"
    n_boot: int = 1000
    confidence: float = 0.95
    train: TrainConfig = field(default_factory=_full_training)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        check_percents([self.proportion], "proportion")
        check_layers(self.layers)
        if not self.groups:
            raise ValueError("groups: give at least one group")
        if self.train.method not in ("full", "neurons") or self.train.merge:
            raise ValueError(
                f"train.method must be 'full' or 'neurons' (with merge false), got "
                f"{self.train.method!r}"
            )
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.score == "gain" and not self.zero_shot:
            raise ValueError("score 'gain' needs zero_shot: true")
        if self.n_boot < 1 or not 0 < self.confidence < 1:
            raise ValueError("n_boot must be >= 1 and confidence in (0, 1)")


#: what the stage writes, for the run README
FILES = """
    similarity_config.json: similarity knobs, score sources and provenance
    correlation: Pearson/Spearman of similarity vs OOD score, p-values, bootstrap CIs
    similarity_pairs: per (training task, test task): mean similarity, score, zero-shot
    similarity_records.json: per-layer similarities and scores of every pair (input of
        `analyze similarity|correlate`)
    figure3_*_without_general: per-layer similarity without the general neurons
    figure3_*_random: per-layer similarity of random sets of the same sizes (control)
    figure3_*: per-layer cosine similarity of training and test tasks' neurons (Figure 3)
"""

STAGE = register(Stage(
    name="similarity", config=SimilarityConfig, order=110, uses=("detect",),
    run=".similarity:run_similarity", result=".similarity:SimilarityResult", files=FILES,
    title="per-layer parameter similarity of task neurons; correlation with OOD scores "
    "(Fig. 3, Table 4)",
))  # fmt: skip
