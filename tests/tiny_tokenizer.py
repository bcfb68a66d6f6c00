"""A tiny word-level tokenizer that matches ``tiny_models`` (vocabulary 128, pad 0, BOS 1, EOS 2).

Words, punctuation and newlines are tokens (``\\n`` is one token, so newline handling can be
tested); unknown words map to ``[UNK]``. Like Llama's tokenizer it puts a BOS token before
every sequence when ``add_special_tokens=True``. Decoding joins tokens with spaces.

Import from a test module (``tests/`` is on ``sys.path`` under pytest)::

    from tiny_tokenizer import tiny_tokenizer

    tok = tiny_tokenizer()
    tok("the movie was good")["input_ids"]  # [1, 5, ...]
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL = ["[PAD]", "<s>", "</s>", "[UNK]"]
WORDS = (
    "\n : , . ! ? ' - "
    "Answer Option Text Classify classify the a an of this that it is was were be "
    "sentiment text review movie film book food story plot acting music and but or not no so "
    "very really quite too at all good bad great awful fine boring fun great funny sad happy "
    "loved hated liked enjoyed I you we they he she one two three "
    "positive negative neutral yes maybe cat dog sat on mat is in red blue "
    "summarize sentence write short about with for to from by"
).split(" ")


def _vocab() -> dict[str, int]:
    vocab: dict[str, int] = {}
    for word in SPECIAL + WORDS:
        if word and word not in vocab:
            vocab[word] = len(vocab)
    if len(vocab) > 128:
        raise AssertionError(f"tiny vocabulary has {len(vocab)} entries, more than 128")
    return vocab


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny word-level tokenizer (ids < 128; ``[PAD]`` 0, ``<s>`` 1, ``</s>`` 2).

    Example:
        >>> tok = tiny_tokenizer()
        >>> tok.convert_ids_to_tokens(tok("good\\nbad")["input_ids"])
        ['<s>', 'good', '\\n', 'bad']
    """
    vocab = _vocab()
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    # keep newlines, words and punctuation runs; drop spaces and tabs
    tok.pre_tokenizer = pre_tokenizers.Split(
        Regex(r"\n|\w+|[^\w\s]"), behavior="removed", invert=True
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="<s>",
        eos_token="</s>",
    )
