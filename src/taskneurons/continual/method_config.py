"""The knobs of a continual-learning method: :class:`MethodConfig` (no torch, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taskneurons.config import Config, flag
from taskneurons.neurons.attribution_config import AttributionConfig

#: the method names, in the order of the paper's tables
METHOD_NAMES: tuple[str, ...] = ("seqft", "seqlora", "olora", "epi", "pertask", "ncft", "wncft")


@dataclass
class MethodConfig(Config):
    """A continual-learning method: its name and its options (unused options are ignored).

    Attributes:
        name: one of :data:`METHOD_NAMES`.
        k: NCFT/W-NCFT: percentage of neurons per task (top ``k`` % by relevance).
        scope: NCFT/W-NCFT: rank over the whole model (``"model"``) or per layer.
        selection: NCFT/W-NCFT: how neurons are chosen; ``"topk"`` (the only one so far).
        attribution: NCFT/W-NCFT: the relevance knobs (definition, examples, aggregation).
        mode: W-NCFT: ``"given"`` (the test task's vector) or ``"inferred"`` (each test input's
            own feature; no task id).
        temperature: W-NCFT: softmax temperature of the cosine similarities (1.0 = the paper's
            plain softmax of cosines).
        n_vector_samples: W-NCFT task vectors / EPI prototypes: train inputs per task (seeded).
        lambda_orth, lambda_l2: O-LoRA: weights of the orthogonality and L2 terms (the O-LoRA
            repository's scripts use 0.5 and 0).
        loss_form: O-LoRA: ``"repo"`` (the repository's code: ``|A_old A_new^T|`` summed, and
            the sum of the new LoRA tensors' Frobenius norms) or ``"paper"`` (squared entries
            and squared norms).
        feature_batch_size, feature_max_length: inputs per forward and tokens per input when
            computing features (W-NCFT, EPI).
        seed: seed of the feature subsets.

    Example:
        >>> MethodConfig(name="wncft", mode="inferred", temperature=0.05).mode
        'inferred'
    """

    name: str = "ncft"
    k: float = field(
        default=10.0,
        metadata=flag("--k", kind="percent", help="NCFT/W-NCFT: percent of neurons per task"),
    )
    scope: Literal["model", "layer"] = "model"
    selection: Literal["topk"] = "topk"
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    mode: Literal["given", "inferred"] = "given"
    temperature: float = 1.0
    n_vector_samples: int = 1000
    lambda_orth: float = 0.5
    lambda_l2: float = 0.0
    loss_form: Literal["repo", "paper"] = "repo"
    feature_batch_size: int = 8
    feature_max_length: int = 256
    seed: int = 0

    def validate(self) -> None:
        if isinstance(self.attribution, dict):
            self.attribution = AttributionConfig(**self.attribution)
        checks = [
            (self.name in METHOD_NAMES, f"method must be one of {METHOD_NAMES}, got {self.name!r}"),
            (0 < self.k <= 100, f"k must be in (0, 100], got {self.k}"),
            (self.mode in ("given", "inferred"), f"mode must be given/inferred, got {self.mode!r}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (self.n_vector_samples >= 1, "n_vector_samples must be >= 1"),
            (self.lambda_orth >= 0 and self.lambda_l2 >= 0, "O-LoRA lambdas must be >= 0"),
            (self.loss_form in ("repo", "paper"), f"loss_form: repo/paper, not {self.loss_form!r}"),
            (self.feature_batch_size >= 1, "feature_batch_size must be >= 1"),
            (self.feature_max_length >= 2, "feature_max_length must be >= 2"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
