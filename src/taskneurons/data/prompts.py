"""Prompts and batches: instruction + input (+ options) -> token ids with an answer-only loss mask.

The prompt follows O-LoRA's style (and ``../shared/data``'s README)::

    {instruction}
    {input}
    Option: {label 1}, {label 2}, ...     (classification only)
    Answer: {answer}

With ``PromptConfig(chat_template=True)`` the same user text is wrapped in the tokenizer's chat
template (when it has one) and the answer is the assistant's reply.

Segments are tokenized separately and concatenated, so the answer's first token is known
exactly; when a prompt is too long the *input* is truncated, never the instruction, options or
answer. Every cut is counted per task; :func:`truncation_report` logs the counts (the runner and
``taskneurons eval`` call it after each stage).

Example:
    >>> cfg = PromptConfig(max_length=256)
    >>> enc = encode_example(tokenizer, task, task.test[0].input, task.test[0].output, cfg)  # doctest: +SKIP
    >>> batch = collate([enc], pad_id=tokenizer.pad_token_id)  # doctest: +SKIP
    >>> batch["input_ids"].shape  # [batch, pos]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.tasks import Example, Task

IGNORE_INDEX = -100
_SENTINEL = "\u2063TASKNEURONS_INPUT\u2063"

log = logging.getLogger(__name__)

# (task id, max_length) -> hashes of the inputs cut since the last truncation_report()
_TRUNCATED: dict[tuple[str, int], set[int]] = {}


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one example; ``input_ids[answer_start:]`` are the answer tokens."""

    input_ids: tuple[int, ...]
    answer_start: int


def fit_max_length(
    max_length: int,
    limit: tuple[int, str] | None,
    explicit: bool,
    where: str,
    error: type[ValueError] = ValueError,
) -> int:
    """``max_length`` (tokens) within a model's context ``limit`` = ``(n, config attribute)``.

    A value the user chose (``explicit``) beyond the limit is refused with ``error`` whose
    message starts with ``where``; a default one is lowered to the limit.

    Example:
        >>> fit_max_length(512, (256, "max_position_embeddings"), False, "--max-length")
        256
    """
    if limit is None or max_length <= limit[0]:
        return max_length
    n, attr = limit
    if explicit:
        raise error(
            f"{where} {max_length} is more than the model's context length {n} "
            f"(config.{attr}); use at most {n}"
        )
    return n


def user_text(task: Task, input_text: str) -> str:
    """Instruction + input (+ options for classification), without the answer cue."""
    parts = [task.instruction.strip(), input_text]
    if task.kind == "classification" and task.labels:
        parts.append("Option: " + ", ".join(task.labels))
    return "\n".join(p for p in parts if p is not None)


def _uses_chat(tokenizer, config: PromptConfig) -> bool:
    """Whether the prompt is wrapped in the chat template; warns when one is asked for and the
    tokenizer has none (the plain prompt is used then)."""
    if not config.chat_template:
        return False
    if getattr(tokenizer, "chat_template", None):
        return True
    warnings.warn(
        "prompt.chat_template is true but the tokenizer has no chat template: using the plain "
        "prompt",
        UserWarning,
        stacklevel=3,
    )
    return False


def prompt_segments(
    tokenizer, task: Task, input_text: str, config: PromptConfig
) -> tuple[str, str, str]:
    """The prompt as ``(before_input, input, after_input)`` strings."""
    text = user_text(task, _SENTINEL)
    if _uses_chat(tokenizer, config):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    else:
        rendered = text + "\n" + config.answer_prefix
    before, after = rendered.split(_SENTINEL, 1)
    return before, input_text, after


def render_prompt(tokenizer, task: Task, input_text: str, config: PromptConfig) -> str:
    """The full prompt text (everything before the answer)."""
    return "".join(prompt_segments(tokenizer, task, input_text, config))


def answer_text(tokenizer, answer: str, config: PromptConfig) -> str:
    """The answer as it follows the prompt (a leading space after ``Answer:``)."""
    return answer if _uses_chat(tokenizer, config) else " " + answer


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def continuation_ids(tokenizer, context: str, text: str) -> list[int]:
    """Token ids of ``text`` as it is tokenized right after ``context``.

    Tokenizers that merge a leading space into the next token (SentencePiece, BPE) tokenize
    ``" Good"`` differently alone and after ``"Answer:"``; this returns the in-context ids when
    the context's tokens are a prefix of the joint tokenization, else ``text`` alone.
    """
    if not context:
        return _ids(tokenizer, text)
    ctx = _ids(tokenizer, context)
    full = _ids(tokenizer, context + text)
    if full[: len(ctx)] == ctx and len(full) > len(ctx):
        return full[len(ctx) :]
    return _ids(tokenizer, text)


def leading_special_ids(tokenizer, config: PromptConfig) -> list[int]:
    """BOS-like tokens the tokenizer puts before a sequence (none when a chat template is used)."""
    if _uses_chat(tokenizer, config):
        return []
    ids = list(tokenizer("", add_special_tokens=True)["input_ids"])
    eos = getattr(tokenizer, "eos_token_id", None)
    bos = getattr(tokenizer, "bos_token_id", None)
    # keep only a leading BOS; never an EOS some tokenizers append
    return [i for i in ids if i == bos and i != eos][:1]


def encode_answer(tokenizer, answer: str, config: PromptConfig) -> list[int]:
    """Token ids of the answer as it follows the prompt (plus EOS if ``config.add_eos``)."""
    ids = continuation_ids(
        tokenizer,
        config.answer_prefix[-1:] if not _uses_chat(tokenizer, config) else "\n",
        answer_text(tokenizer, answer, config),
    )
    if config.add_eos and tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return ids


def encode_prompt(
    tokenizer, task: Task, input_text: str, config: PromptConfig, reserve: int = 0
) -> list[int]:
    """Token ids of the prompt, the input truncated so that ``len + reserve <= max_length``.

    Raises:
        ValueError: instruction, options and ``reserve`` answer tokens alone exceed ``max_length``.
    """
    before, inp, after = prompt_segments(tokenizer, task, input_text, config)
    head = leading_special_ids(tokenizer, config) + _ids(tokenizer, before)
    body = continuation_ids(tokenizer, before[-1:], inp)
    tail = continuation_ids(tokenizer, inp[-1:] if inp else before[-1:], after)
    budget = config.max_length - reserve - len(head) - len(tail)
    if budget < 0:
        raise ValueError(
            f"task {task.id!r}: instruction, options and answer need {len(head) + len(tail) + reserve} "
            f"tokens, more than max_length={config.max_length}; raise max_length"
        )
    if len(body) > budget:
        _TRUNCATED.setdefault((task.id, config.max_length), set()).add(hash(input_text))
    return head + body[:budget] + tail


def truncation_report(warn: bool = True) -> dict[str, int]:
    """How many distinct inputs of each task were cut to fit ``max_length`` since the last call.

    Logs one warning per task (when ``warn``) and starts counting afresh.

    Example:
        >>> truncation_report()  # after an evaluation that cut 3 inputs  # doctest: +SKIP
        {'sst2': 3}
    """
    counts: dict[str, int] = {}
    for (task_id, max_length), inputs in sorted(_TRUNCATED.items()):
        counts[task_id] = counts.get(task_id, 0) + len(inputs)
        if warn:
            log.warning(
                "task %r: %d input(s) were cut to fit max_length=%d tokens; raise max_length "
                "(--max-length, prompt.max_length in an experiment file) to keep them whole",
                task_id,
                len(inputs),
                max_length,
            )
    _TRUNCATED.clear()
    return counts


def encode_example(
    tokenizer, task: Task, input_text: str, answer: str | None, config: PromptConfig
) -> EncodedExample:
    """Prompt + answer ids; ``answer=None`` encodes the prompt only (for generation)."""
    ans = encode_answer(tokenizer, answer, config) if answer is not None else []
    prompt = encode_prompt(tokenizer, task, input_text, config, reserve=len(ans))
    return EncodedExample(tuple(prompt + ans), len(prompt))


def pad_id_of(tokenizer) -> int:
    """The padding id: the tokenizer's pad token, else EOS, else 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def collate(
    encoded: Sequence[EncodedExample],
    pad_id: int,
    padding_side: Literal["left", "right"] = "right",
    loss_on: Literal["answer", "all"] = "answer",
) -> dict[str, torch.Tensor]:
    """Pad a list of encoded examples into a batch.

    Returns:
        ``input_ids`` ``[batch, pos]``, ``attention_mask`` ``[batch, pos]`` (1 = token),
        ``labels`` ``[batch, pos]`` (token id where the loss applies, ``-100`` elsewhere; the
        model shifts them, as in Hugging Face), ``answer_start`` ``[batch]`` (position of the
        first answer token in the padded row).
    """
    if not encoded:
        raise ValueError("cannot collate an empty list of examples")
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)  # [batch, pos]
    mask = torch.zeros((len(encoded), width), dtype=torch.long)  # [batch, pos]
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)  # [batch, pos]
    starts = torch.zeros(len(encoded), dtype=torch.long)  # [batch]
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        off = width - n if padding_side == "left" else 0
        seq = torch.tensor(e.input_ids, dtype=torch.long)
        ids[row, off : off + n] = seq
        mask[row, off : off + n] = 1
        first = e.answer_start if loss_on == "answer" else 1
        labels[row, off + first : off + n] = seq[first:]
        starts[row] = off + e.answer_start
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "answer_start": starts}


def iter_batches(
    tokenizer,
    task: Task,
    examples: Sequence[Example],
    config: PromptConfig,
    batch_size: int = 8,
    with_answer: bool = True,
    padding_side: Literal["left", "right"] = "right",
    group_by_length: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``examples`` (see :func:`collate` for the keys and shapes).

    Args:
        group_by_length: encode every example first and batch them longest first (a stable
            sort by token count), so each batch holds examples of similar length and little
            compute goes to padding. Only for order-free work (sums over examples, such as
            relevance scores): the batches no longer follow ``examples``. Default: in order.

    Example:
        >>> batches = list(iter_batches(tok, task, task.train, PromptConfig(), 8))  # doctest: +SKIP
        >>> batches[0]["input_ids"].shape  # [batch, pos]  # doctest: +SKIP
        torch.Size([8, 61])
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pad = pad_id_of(tokenizer)

    def encode(ex: Example) -> EncodedExample:
        return encode_example(tokenizer, task, ex.input, ex.output if with_answer else None, config)

    if group_by_length:
        encoded = sorted((encode(ex) for ex in examples), key=lambda e: -len(e.input_ids))
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i : i + batch_size]
            yield collate(chunk, pad, padding_side=padding_side, loss_on=config.loss_on)
        return
    for i in range(0, len(examples), batch_size):
        enc = [encode(ex) for ex in examples[i : i + batch_size]]
        yield collate(enc, pad, padding_side=padding_side, loss_on=config.loss_on)
