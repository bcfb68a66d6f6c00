"""A model's shape without its weights: from ``config.json``, the embedded model or a table.

The cost model needs only the sizes: layers, ``d_model``, ``d_ff``, heads, vocabulary,
whether the FFN is gated (three matrices, not two) and the embeddings tied. They come from
(first that works): the embedded model's cached ``config.json`` (or its shape, built in), a
model folder's ``config.json``, the Hugging Face cache (``local_files_only``, no download),
or :data:`KNOWN_SHAPES` (the paper's models, for a machine that has never downloaded them).

Example:
    >>> s = KNOWN_SHAPES["meta-llama/Llama-2-7b-hf"]
    >>> round(s.n_params / 1e9, 2)  # 6.74 B
    6.74
    >>> round(s.flops_per_token(512) / 1e9, 1)  # forward GFLOP per token at 512 positions
    13.1
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only causal LM.

    Attributes:
        name: where the shape came from (model spec).
        n_layers, d_model, d_ff, n_heads, n_kv_heads, vocab: the sizes.
        gated: the FFN has gate, up and down matrices (else up and down).
        tied: the LM head shares the input embedding.
        source: ``config.json`` path, ``"embedded"``, ``"hub cache"`` or ``"known shape"``.
        positions: rows of a learned position embedding (GPT-2, OPT; 0: rotary or ALiBi).
    """

    name: str
    n_layers: int
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    gated: bool
    tied: bool
    source: str = ""
    positions: int = 0

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and of the values) of one layer."""
        return self.d_model // self.n_heads * self.n_kv_heads

    @property
    def layer_params(self) -> int:
        """Weights of one decoder layer (attention + FFN; norms and biases left out)."""
        attn = 2 * self.d_model * self.d_model + 2 * self.d_model * self.kv_dim
        return attn + (3 if self.gated else 2) * self.d_model * self.d_ff

    @property
    def n_params(self) -> int:
        """All weights: layers, input embedding and (untied) LM head."""
        embed = (self.vocab * (1 if self.tied else 2) + self.positions) * self.d_model
        return self.n_layers * self.layer_params + embed

    def flops_per_token(self, context: int) -> float:
        """Forward FLOPs of one token at ``context`` positions, LM head left out.

        ``2 x`` the layer weights, plus attention (scores and weighted values:
        ``4 x d_model x context / 2`` per layer, a causal mask sees half the context on average).
        """
        attn = 2 * self.d_model * context
        return float(self.n_layers * (2 * self.layer_params + attn))

    def head_flops(self) -> float:
        """FLOPs of the LM head at one position."""
        return 2.0 * self.d_model * self.vocab

    def act_values(self) -> int:
        """Activation values one token keeps per layer for a backward: ``8 d_model + 4 d_ff``.

        The inputs of the norms, of q/k/v, o, the FFN matrices, and the gate/up outputs and the
        activation (Llama's layer, counted by hand; 76.8 K at 7B, against 78.8 K from the H200
        reference peak: (31.8 - 12.55) GiB / (4096 tokens x 32 layers) / 2 bytes).
        """
        return 8 * self.d_model + 4 * self.d_ff

    def describe(self) -> str:
        return (
            f"{self.n_layers} layers, d_model {self.d_model}, d_ff {self.d_ff}, "
            f"{self.n_heads} heads ({self.n_kv_heads} kv), vocab {self.vocab}, "
            f"{self.n_params / 1e9:.2f} B parameters ({self.source})"
        )


#: the paper's models and the embedded one, for machines that have not downloaded them
KNOWN_SHAPES: dict[str, ModelShape] = {
    "meta-llama/Llama-2-7b-hf": ModelShape(
        "meta-llama/Llama-2-7b-hf", 32, 4096, 11008, 32, 32, 32000, True, False, "known shape"
    ),
    "bigscience/bloom-7b1": ModelShape(
        "bigscience/bloom-7b1", 30, 4096, 16384, 32, 32, 250880, False, True, "known shape"
    ),
    "smollm2-135m": ModelShape("smollm2-135m", 30, 576, 1536, 9, 3, 49152, True, True, "embedded"),
}

_GATED_TYPES = (
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "granite", "olmo",
    "olmo2", "phi3", "mixtral",
)  # fmt: skip


_LEARNED_POSITIONS = ("gpt2", "gpt_bigcode", "opt")


def shape_from_config(config: dict, name: str, source: str) -> ModelShape:
    """The shape of a ``config.json`` mapping (any family's key names).

    Example:
        >>> shape_from_config({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
        ...                    "vocab_size": 100}, "x", "test").d_ff
        256
    """

    def get(*keys, default=None):
        for key in keys:
            if config.get(key) is not None:
                return int(config[key])
        if default is None:
            raise ValueError(f"{name}: config.json has none of {keys}")
        return default

    d = get("hidden_size", "n_embd", "d_model")
    heads = get("num_attention_heads", "n_head", "num_heads")
    model_type = str(config.get("model_type", ""))
    return ModelShape(
        name=name,
        n_layers=get("num_hidden_layers", "n_layer", "num_layers"),
        d_model=d,
        d_ff=get("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", default=4 * d),
        n_heads=heads,
        n_kv_heads=get("num_key_value_heads", "num_kv_heads", default=heads),
        vocab=get("vocab_size"),
        gated=model_type in _GATED_TYPES,
        tied=bool(config.get("tie_word_embeddings", model_type in ("gpt2", "bloom", "opt"))),
        source=source,
        positions=get("n_positions", "max_position_embeddings") + (2 if model_type == "opt" else 0)
        if model_type in _LEARNED_POSITIONS
        else 0,
    )


def model_shape(spec: str) -> ModelShape:
    """The shape of the model ``spec`` names (an experiment file's ``model:``), no weights read.

    Raises:
        ValueError: no ``config.json`` is found and the name is not in :data:`KNOWN_SHAPES`.
    """
    folder = Path(spec)
    if folder.is_dir() and (folder / "config.json").is_file():
        path = folder / "config.json"
        return shape_from_config(json.loads(path.read_text()), spec, str(path))
    if spec in KNOWN_SHAPES:
        return KNOWN_SHAPES[spec]
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(spec, local_files_only=True).to_dict()
    except Exception as exc:  # not cached, not a folder: nothing to read the shape from
        known = ", ".join(KNOWN_SHAPES)
        raise ValueError(
            f"model {spec!r}: no config.json to read its shape from (a folder, the Hugging "
            f"Face cache, or one of {known})"
        ) from exc
    return shape_from_config(config, spec, "hub cache")
