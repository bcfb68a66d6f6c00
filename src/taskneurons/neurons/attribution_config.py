"""Every knob of a relevance computation: :class:`AttributionConfig` (no torch).

Example:
    >>> AttributionConfig(n_examples=64).to_dict()["aggregate"]
    'example'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from taskneurons.config import Config
from taskneurons.config_fields import flag
from taskneurons.data.prompt_config import PromptConfig

Aggregate = Literal["example", "task", "token_abs"]


AGGREGATES: tuple[str, ...] = ("example", "task", "token_abs")


@dataclass
class AttributionConfig(Config):
    """Every knob of a relevance computation (saved as JSON beside the scores).

    Attributes:
        definition: neuron definition, ``ffn`` or ``linear``.
        loss: ``answer`` (answer tokens only) or ``all`` (every token after the first).
        aggregate: ``example``, ``task`` or ``token_abs`` (see the module docstring).
        batch_size: examples per forward/backward.
        split: which split of a task to score.
        n_examples: how many examples (``None``: all), drawn label-stratified with ``seed``.
        seed: seed of the example subset.
        prompt: how examples become tokens.
        exclude_tuned: leave out of the scored examples those the model records it was
            fine-tuned on (a model fine-tuned and saved by this tool records them), so that the
            data that selects neurons is disjoint from the data that trained them; the sets
            record the overlap (``tuned_overlap``). Where every example of the split was used
            for fine-tuning, they are scored anyway and the overlap says so.
        group_by_length: when scoring a task, batch its examples longest first so that
            little compute goes to padding (the scores are sums over examples, so the order
            only changes float rounding). Batches passed in ready-made are used as given.
        checkpointing: run the decoder layers under activation checkpointing: each layer
            keeps only its input during the forward and runs again in the backward (about one
            more forward of compute for much less activation memory: 7B attribution in 17 GiB
            instead of 32 GiB on an H200, the issue's reference figures). Same scores.
    """

    definition: Literal["ffn", "linear"] = field(
        default="ffn", metadata=flag("--definition", help="neuron definition: ffn or linear")
    )
    loss: Literal["answer", "all"] = field(
        default="answer", metadata=flag("--loss", help="answer tokens only, or all tokens")
    )
    aggregate: Aggregate = field(
        default="example", metadata=flag("--aggregate", help="how per-token scores are pooled")
    )
    batch_size: int = field(
        default=8, metadata=flag("--batch-size", kind="count", help="examples per batch")
    )
    split: str = "train"
    n_examples: int | None = field(
        default=128,
        metadata=flag(
            "--n-examples", "--n-detect", kind="count", help="train examples scored per task"
        ),
    )
    seed: int = 0
    prompt: PromptConfig = field(default_factory=PromptConfig)
    group_by_length: bool = True
    exclude_tuned: bool = True
    checkpointing: bool = False

    def validate(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        if self.loss not in ("answer", "all"):
            raise ValueError(f"loss must be 'answer' or 'all', got {self.loss!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if isinstance(self.prompt, dict):
            self.prompt = PromptConfig(**self.prompt)

    def scoring_prompt(self) -> PromptConfig:
        """The prompt the scored examples are encoded with: :attr:`prompt`, its loss on
        :attr:`loss`'s tokens."""
        return dataclasses.replace(self.prompt, loss_on=self.loss)
