"""How examples become token sequences: :class:`PromptConfig` (no torch, so the CLI reads it fast).

Example:
    >>> PromptConfig(max_length=256).replace(chat_template=True).max_length
    256
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taskneurons.config import Config
from taskneurons.config_fields import flag


@dataclass(frozen=True)
class PromptConfig(Config):
    """How examples become token sequences.

    Attributes:
        chat_template: wrap the prompt in the tokenizer's chat template (a tokenizer without
            one gives the plain prompt, with a ``UserWarning``).
        loss_on: ``answer`` (loss on answer tokens only) or ``all`` (every non-pad token).
        max_length: maximum tokens per sequence (prompt + answer); the input is truncated.
        add_eos: append the EOS token to the answer (useful for training generation).
        answer_prefix: the cue before the answer.
    """

    chat_template: bool = field(
        default=False,
        metadata=flag("--chat-template", help="wrap prompts in the tokenizer's chat template"),
    )
    loss_on: Literal["answer", "all"] = "answer"
    max_length: int = field(
        default=512,
        metadata=flag(
            "--max-length",
            kind="max_length",
            help="max tokens per sequence (the model's context length if shorter)",
        ),
    )
    add_eos: bool = False
    answer_prefix: str = "Answer:"

    def validate(self) -> None:
        if self.loss_on not in ("answer", "all"):
            raise ValueError(f"loss_on must be 'answer' or 'all', got {self.loss_on!r}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
