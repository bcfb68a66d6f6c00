"""Prompt building pinned against real BPE tokenizers.

A byte-level BPE is trained here with the ``tokenizers`` library (the GPT-2 / SmolLM2 kind:
bytes, learned merges, a regex pre-split), wrapped in ``PreTrainedTokenizerFast`` with a BOS
post-processor and a chat template. A second one is trained without the regex pre-split, so
merges cross word boundaries (``":Ġpositive"`` is one token): there the answer cannot be cut
out of the joint tokenization, and the pinned behaviour is the fallback of
:func:`continuation_ids` (the answer tokenized alone). The slow test pins the same prompts on
the embedded SmolLM2 tokenizer (read from its GGUF file).

Each pin: the exact ids, where the answer starts, that the prompt's ids are the tokenization of
the rendered prompt text, and that the answer ids continue it.
"""

from __future__ import annotations

import copy
import functools

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import (
    collate,
    continuation_ids,
    encode_example,
    render_prompt,
    user_text,
)
from taskneurons.data.tasks import Example, Task

SPECIAL = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CORPUS = [
    "Classify the sentiment of the review\nthe movie was good\n"
    "Option: positive, negative\nAnswer: positive",
    "Classify the sentiment of the review\nthe film was bad\n"
    "Option: positive, negative\nAnswer: negative",
    "the story was fun and the acting was great",
    "the plot was boring and the music was bad",
] * 20

TASK = Task(
    id="mood",
    kind="classification",
    instruction="Classify the sentiment of the review",
    labels=["positive", "negative"],
    metric="accuracy",
    train=[Example("the movie was good", "positive")],
    test=[],
)
SHORT = "the movie was good"
LONG = "the story was fun and the acting was great " * 4


@functools.cache
def trained_bpe(split_words: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE (vocabulary 320) trained on :data:`CORPUS`; BOS first; chat template.

    ``split_words=False`` drops the GPT-2 regex pre-split, so merges may cross word and
    punctuation boundaries. Training is deterministic (same corpus, same merges).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split_words)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", SPECIAL.index("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def ids(tok, text: str, special: bool = False) -> list[int]:
    return list(tok(text, add_special_tokens=special)["input_ids"])


# the trained BPE's ids of the plain prompt of SHORT: BOS, instruction, input, options, cue
PROMPT_IDS = [1, 319, 268, 317, 304, 268, 316, 203]  # <s> Classify Ġthe Ġsentiment ... Ċ
SHORT_IDS = [263, 302, 83, 279, 269, 301, 83, 83, 72]  # the Ġm o vie Ġwas Ġg o o d
TAIL_IDS = [203, 315, 30, 286, 16, 285, 203, 318, 30]  # Ċ Option : Ġpositive , Ġnegative Ċ Answer :
POSITIVE = 286  # Ġpositive


def test_answer_starts_right_after_the_prompt():
    tok = trained_bpe()
    ex = encode_example(tok, TASK, SHORT, "positive", PromptConfig())
    assert list(ex.input_ids) == PROMPT_IDS + SHORT_IDS + TAIL_IDS + [POSITIVE]
    assert ex.answer_start == 26
    prompt = render_prompt(tok, TASK, SHORT, PromptConfig())
    assert prompt == (
        "Classify the sentiment of the review\nthe movie was good\n"
        "Option: positive, negative\nAnswer:"
    )
    # the prompt ids are the tokenizer's own (BOS included); the answer is " positive"
    assert list(ex.input_ids[: ex.answer_start]) == ids(tok, prompt, special=True)
    assert tok.decode(ex.input_ids[ex.answer_start :]) == " positive"
    # segment-wise encoding equals the joint encoding: no merge crosses a boundary here
    assert list(ex.input_ids) == ids(tok, prompt + " positive", special=True)
    # a several-token answer, and the EOS appended after it
    ex2 = encode_example(tok, TASK, SHORT, "the movie", PromptConfig(add_eos=True))
    assert list(ex2.input_ids[ex2.answer_start :]) == [268, 302, 83, 279, 2]  # Ġthe Ġm o vie </s>
    assert ex2.answer_start == 26
    # the loss falls on the answer tokens only
    batch = collate([ex, ex2], pad_id=tok.pad_token_id)
    labels = batch["labels"]
    assert batch["answer_start"].tolist() == [26, 26]
    assert labels[0].tolist() == [-100] * 26 + [POSITIVE, -100, -100, -100, -100]
    assert labels[1, 26:].tolist() == [268, 302, 83, 279, 2]
    assert (labels[1, :26] == -100).all()


def test_long_input_is_truncated_on_the_input_side_only():
    tok = trained_bpe()
    full = encode_example(tok, TASK, LONG, "positive", PromptConfig())
    cut = encode_example(tok, TASK, LONG, "positive", PromptConfig(max_length=24))
    assert len(full.input_ids) == 99 and full.answer_start == 98
    assert len(cut.input_ids) == 24 and cut.answer_start == 23
    # the instruction (with BOS), the options, the cue and the answer survive intact ...
    assert list(cut.input_ids[:8]) == PROMPT_IDS == list(full.input_ids[:8])
    assert list(cut.input_ids[-10:]) == TAIL_IDS + [POSITIVE] == list(full.input_ids[-10:])
    # ... and the input keeps its first 6 tokens: the story was
    assert list(cut.input_ids[8:14]) == [263, 282, 88, 298, 93, 269]
    assert list(cut.input_ids[8:14]) == list(full.input_ids[8:14])
    assert tok.decode(cut.input_ids[8:14]) == "the story was"
    # 18 tokens leave none for the input: it is dropped whole; 17 cannot hold the rest: refused
    bare = encode_example(tok, TASK, LONG, "positive", PromptConfig(max_length=18))
    assert list(bare.input_ids) == PROMPT_IDS + TAIL_IDS + [POSITIVE]
    with pytest.raises(ValueError, match="raise max_length"):
        encode_example(tok, TASK, LONG, "positive", PromptConfig(max_length=17))


def test_chat_template_wraps_the_user_text():
    tok = trained_bpe()
    cfg = PromptConfig(chat_template=True)
    ex = encode_example(tok, TASK, SHORT, "positive", cfg)
    rendered = render_prompt(tok, TASK, SHORT, cfg)
    text = user_text(TASK, SHORT)
    assert rendered == f"<|user|>\n{text}</s>\n<|assistant|>\n"
    assert rendered == tok.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    # <|user|> Ċ, the user text without the cue, </s> Ċ <|assistant|> Ċ; no BOS before it
    user_ids = PROMPT_IDS[1:] + SHORT_IDS + TAIL_IDS[:-3]
    assert list(ex.input_ids[: ex.answer_start]) == [3, 203] + user_ids + [2, 203, 4, 203]
    assert ex.answer_start == 28
    assert list(ex.input_ids[: ex.answer_start]) == ids(tok, rendered)
    # the reply follows "\n": no leading space, so "positive" is p osi tive, not Ġpositive
    assert list(ex.input_ids[ex.answer_start :]) == [84, 277, 270] == ids(tok, "positive")
    assert list(ex.input_ids) == ids(tok, rendered + "positive")


def test_chat_template_without_one_warns_and_uses_the_plain_prompt():
    tok = copy.deepcopy(trained_bpe())  # the cached one keeps its template
    tok.chat_template = None
    with pytest.warns(UserWarning, match="no chat template"):
        chat = render_prompt(tok, TASK, SHORT, PromptConfig(chat_template=True))
    assert chat == render_prompt(tok, TASK, SHORT, PromptConfig())


def test_answer_ids_when_merges_cross_the_boundary():
    """Without a regex pre-split ``": positive"`` is one token, so the answer is tokenized alone.

    The joint tokenization of prompt + answer has no token boundary where the answer starts;
    :func:`continuation_ids` then falls back to the answer's own ids (``Ġ posi tive``), so the
    encoded example is the prompt's ids + the answer's ids, and not the joint tokenization.
    """
    tok = trained_bpe(split_words=False)
    assert ids(tok, ": positive") == [285]  # ':Ġpositive'
    assert continuation_ids(tok, ":", " positive") == ids(tok, " positive") == [225, 279, 270]
    ex = encode_example(tok, TASK, SHORT, "positive", PromptConfig())
    prompt = render_prompt(tok, TASK, SHORT, PromptConfig())
    assert ex.answer_start == 26 == len(ex.input_ids) - 3
    # sw er : | Ġ posi tive
    assert list(ex.input_ids[ex.answer_start - 3 :]) == [303, 293, 30, 225, 279, 270]
    assert tok.decode(ex.input_ids[ex.answer_start :]) == " positive"
    joint = ids(tok, prompt + " positive", special=True)
    assert joint[-1] == 285 and list(ex.input_ids) != joint
    # with the regex pre-split the in-context ids are used, and they are the joint ones
    split = trained_bpe()
    assert continuation_ids(split, ":", " positive") == [POSITIVE] == ids(split, " positive")


@pytest.mark.slow
def test_embedded_smollm2_tokenizer_prompts():
    """SmolLM2's byte-level BPE (from the GGUF file): plain, chat and truncated prompts."""
    from transformers import AutoTokenizer

    from taskneurons.models.loading import embedded_gguf_path

    path = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    plain = encode_example(tok, TASK, SHORT, "positive", PromptConfig())
    # no BOS: Class ify Ġthe Ġsentiment Ġof Ġthe Ġreview Ċ the Ġmovie Ġwas Ġgood Ċ Option : ...
    assert list(plain.input_ids) == [
        8530, 1282, 260, 19025, 282, 260, 2523, 198, 1195, 7704, 436, 1123, 198,
        30129, 42, 2731, 28, 3524, 198, 21350, 42, 2731,
    ]  # fmt: skip
    assert plain.answer_start == 21  # the last token, Ġpositive
    prompt = render_prompt(tok, TASK, SHORT, PromptConfig())
    assert list(plain.input_ids) == ids(tok, prompt + " positive", special=True)

    cfg = PromptConfig(chat_template=True)
    chat = encode_example(tok, TASK, SHORT, "positive", cfg)
    rendered = render_prompt(tok, TASK, SHORT, cfg)
    assert rendered.startswith("<|im_start|>system\n")
    assert rendered.endswith(
        f"<|im_start|>user\n{user_text(TASK, SHORT)}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat.answer_start == 48 and list(chat.input_ids[48:]) == [16185]  # positive
    assert list(chat.input_ids[:3]) == [1, 9690, 198]  # <|im_start|> system Ċ
    # <|im_end|> Ċ <|im_start|> ass istant Ċ before the reply
    assert list(chat.input_ids[-7:-1]) == [2, 198, 1, 520, 9531, 198]
    assert list(chat.input_ids) == ids(tok, rendered + "positive")

    cut = encode_example(tok, TASK, LONG, "positive", PromptConfig(max_length=24))
    assert len(cut.input_ids) == 24 and cut.answer_start == 23
    # the input's first 6 tokens: the Ġstory Ġwas Ġfun Ġand Ġthe
    assert list(cut.input_ids[8:14]) == [1195, 1977, 436, 1037, 284, 260]
    assert list(cut.input_ids[:8]) == list(plain.input_ids[:8])
    assert list(cut.input_ids[14:]) == list(plain.input_ids[12:])
