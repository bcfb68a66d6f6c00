"""The configs of the continual-learning methods: one per method, chosen by ``name`` (no torch).

:class:`MethodConfig` is a :class:`~taskneurons.config.Variant` family, as the neuron
selections are: each method's module in :mod:`taskneurons.continual.strategies` declares its
config (``name="ncft"``, ...) with only the options it reads, so a key of another method is
refused instead of ignored. The option groups several methods share are here:
:class:`NeuronMethodConfig` (NCFT, W-NCFT: which neurons are trained) and
:class:`FeatureOptions` (W-NCFT, EPI: the input features that route a test input).

Example:
    >>> from taskneurons.config import build
    >>> build(MethodConfig, {"name": "wncft", "mode": "inferred", "k": 5}).k
    5.0
    >>> build(MethodConfig, {"name": "seqft", "k": 5})
    Traceback (most recent call last):
    ...
    taskneurons.config.ConfigError: SeqftConfig: unknown key 'k'; known: name
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from taskneurons.config import Variant
from taskneurons.config_fields import flag
from taskneurons.neurons.attribution_config import AttributionConfig


@dataclass
class MethodConfig(Variant):
    """A continual-learning method: its ``name`` and (in each variant) its options.

    Each variant knows its :class:`~taskneurons.continual.base.ContinualMethod` class
    (``method_class``), which :meth:`build` makes.
    """

    tag: ClassVar[str] = "name"
    default: ClassVar[str] = "ncft"
    family: ClassVar[str] = "continual-learning method"
    package: ClassVar[str | None] = "taskneurons.continual.strategies"
    unknown: ClassVar[str] = "method must be one of {known}, got {name!r}"
    method_class: ClassVar[Any] = None

    name: str = ""

    def build(self, model: Any, tokenizer: Any, train: Any, progress: bool = False) -> Any:
        """The method on ``model`` (which it trains in place)."""
        return self.method_class(model, tokenizer, self, train, progress)

    @classmethod
    def keys(cls, name: str) -> set[str]:
        """The option keys of method ``name`` (its config's fields, ``name`` aside)."""
        return {f.name for f in fields(cls.variant(name))} - {cls.tag}


@dataclass
class NeuronMethodConfig(MethodConfig):
    """Options of the methods that train task neurons (NCFT, W-NCFT).

    Attributes:
        k: percentage of neurons per task (top ``k`` % by relevance).
        scope: rank over the whole model (``"model"``) or per layer.
        selection: how neurons are chosen; ``"topk"`` (the only one so far).
        attribution: the relevance knobs (definition, examples, aggregation).
    """

    k: float = field(
        default=10.0,
        metadata=flag("--k", kind="percent", help="NCFT/W-NCFT: percent of neurons per task"),
    )
    scope: Literal["model", "layer"] = "model"
    selection: Literal["topk"] = "topk"
    attribution: AttributionConfig = field(default_factory=AttributionConfig)

    def validate(self) -> None:
        super().validate()
        if not 0 < self.k <= 100:
            raise ValueError(f"k must be in (0, 100], got {self.k}")


@dataclass
class FeatureOptions:
    """Options of the methods that route a test input by its features (W-NCFT, EPI).

    Attributes:
        n_vector_samples: train inputs per task for its vector / prototype (seeded,
            label-stratified; ``min(n_vector_samples, available)``).
        vector_source: where those inputs come from: ``"task"`` (the default; the task's whole
            train split, inputs only, so up to 1000 as in the paper even when a stage trains
            on fewer) or ``"trained"`` (only the ``n_train`` examples the stage trains on).
        feature_batch_size, feature_max_length: inputs per forward and tokens per input when
            computing features.
        seed: seed of the feature subsets.
    """

    n_vector_samples: int = 1000
    vector_source: Literal["task", "trained"] = "task"
    feature_batch_size: int = 8
    feature_max_length: int = 256
    seed: int = 0

    def check_features(self) -> None:
        """``ValueError`` naming the first option out of range."""
        if self.n_vector_samples < 1:
            raise ValueError("n_vector_samples must be >= 1")
        if self.feature_batch_size < 1:
            raise ValueError("feature_batch_size must be >= 1")
        if self.feature_max_length < 2:
            raise ValueError("feature_max_length must be >= 2")
