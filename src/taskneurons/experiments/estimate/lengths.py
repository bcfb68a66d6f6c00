"""Each task's token lengths, for the cost model (imports torch: loaded by ``estimate`` only).

The mean (and the longest) prompt and answer lengths of up to 64 examples of a task, tokenized with the model's
tokenizer when one is on this machine (no download), else 4 characters per token.

Example:
    >>> size = task_size(task, local_tokenizer("smollm2-135m"), PromptConfig())  # doctest: +SKIP
    >>> size.prompt, size.answer  # mean tokens  # doctest: +SKIP
    (41.3, 1.0)
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from taskneurons.data.prompts import user_text
from taskneurons.evaluation.eval_config import GENERATION_MAX_NEW_TOKENS, LABEL_SLACK_TOKENS
from taskneurons.experiments.estimate.work import TaskSize
from taskneurons.models.gguf import cache_root
from taskneurons.models.loading import EMBEDDED_MODELS

#: characters per token when no tokenizer is at hand (English text, Llama/GPT-style BPE)
CHARS_PER_TOKEN = 4.0
#: examples of a task tokenized to measure its lengths
SAMPLE = 64


def local_tokenizer(spec: str):
    """The model's tokenizer if it is on this machine (no download), else ``None``."""
    try:
        if spec in EMBEDDED_MODELS:
            stem = Path(EMBEDDED_MODELS[spec].file).stem
            found = sorted(cache_root().glob(f"gguf/{stem}-*/tokenizer.json"))
            return AutoTokenizer.from_pretrained(found[0].parent) if found else None
        if Path(spec).is_dir():
            return AutoTokenizer.from_pretrained(spec)
        return AutoTokenizer.from_pretrained(spec, local_files_only=True)
    except Exception:  # not on this machine: lengths from characters
        return None


def _tokens(tokenizer, text: str) -> int:
    if tokenizer is None:
        return max(1, round(len(text) / CHARS_PER_TOKEN))
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def task_size(task, tokenizer, prompt_config) -> TaskSize:
    """Measure ``task``'s prompt and answer lengths (``tokenizer=None``: 4 chars per token).

    Prompts are the instruction and input as the prompt renders them, capped at the prompt
    config's ``max_length``.
    """
    sample = (task.train or task.test)[:SAMPLE]
    cap = prompt_config.max_length
    prompts = [
        min(cap, _tokens(tokenizer, user_text(task, ex.input) + "\nAnswer:")) for ex in sample
    ]
    answers = [_tokens(tokenizer, " " + ex.output) for ex in sample]
    labels = [_tokens(tokenizer, " " + lab) for lab in (task.labels or [])]
    longest = max(labels) if labels else 0
    default = longest + LABEL_SLACK_TOKENS if labels else GENERATION_MAX_NEW_TOKENS
    return TaskSize(
        id=task.id,
        kind=task.kind,
        n_train=len(task.train),
        n_test=len(task.test),
        prompt=sum(prompts) / max(len(prompts), 1),
        answer=sum(answers) / max(len(answers), 1),
        n_labels=len(labels),
        label_tokens=longest,
        max_new_default=default,
        answer_longest=float(max(answers, default=0)),
        exact_match=task.metric == "accuracy",
        prompt_longest=float(max(prompts, default=0)),
    )
