"""Tiny, randomly initialised causal LMs of every family in the adapter table (for tests).

Each config builds a 2-layer model with ``d_model = 32``, ``d_ff = 80`` (BLOOM: ``4 * d_model =
128``, fixed by the architecture), vocabulary 128, every dropout 0, biases on wherever the family
has them, and ``d_ff != d_model`` so a transposed weight cannot go unnoticed. Weights are drawn
with ``initializer_range = 0.2`` (instead of 0.02) and every bias is drawn from ``N(0, 0.2^2)``
(Transformers initialises biases to 0) so that removing one neuron, or one bias entry, visibly
changes the logits. Models are returned in eval mode, float32, with eager attention.

Keys of :data:`TINY_CONFIGS` are ``config.model_type`` values: one per family of
:data:`taskneurons.models.adapters.ADAPTER_TABLE` (each family name is also its main model
type) plus the aliases the table lists (``qwen3``, ``gemma2``, ``codegen``, ...).

Import from a test module (``tests/`` is on ``sys.path`` under pytest)::

    from tiny_models import tiny_model, tiny_model_types

    model = tiny_model("gpt2", seed=0)  # GPT2LMHeadModel, 2 layers, d_ff 80
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    logits = model(input_ids=ids).logits  # [2, 7, 128]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers as tf
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from taskneurons.models.adapters import ADAPTER_TABLE

#: Sizes shared by every tiny config.
VOCAB = 128
D_MODEL = 32
D_FF = 80
N_LAYERS = 2
N_HEADS = 4
N_KV_HEADS = 2
HEAD_DIM = D_MODEL // N_HEADS
MAX_POS = 64
INIT_STD = 0.2

# token ids inside the tiny vocabulary (several configs default to ids >= 32000)
_TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def _gated_kwargs(**extra) -> dict:
    """Arguments shared by the Llama-like configs (gate/up/down FFN, ``model.layers``)."""
    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=D_FF,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_KV_HEADS,
        max_position_embeddings=MAX_POS,
        initializer_range=INIT_STD,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        **_TOKENS,
    )
    kwargs.update(extra)
    return kwargs


def _gpt2_kwargs(**extra) -> dict:
    """Arguments shared by the GPT-2-like configs (``n_embd``, ``n_inner``, ``transformer.h``)."""
    kwargs = dict(
        vocab_size=VOCAB,
        n_embd=D_MODEL,
        n_inner=D_FF,
        n_layer=N_LAYERS,
        n_head=N_HEADS,
        n_positions=MAX_POS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=INIT_STD,
        bos_token_id=1,
        eos_token_id=2,
    )
    kwargs.update(extra)
    return kwargs


#: model_type -> zero-argument factory of a tiny config of that architecture.
TINY_CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    # -- gated (act(x Wg) * (x Wu)) -----------------------------------------------------------
    "llama": lambda: tf.LlamaConfig(**_gated_kwargs(hidden_act="silu", mlp_bias=True)),
    "granite": lambda: tf.GraniteConfig(**_gated_kwargs(hidden_act="silu", mlp_bias=True)),
    "olmo": lambda: tf.OlmoConfig(**_gated_kwargs(hidden_act="silu")),
    "olmo2": lambda: tf.Olmo2Config(**_gated_kwargs(hidden_act="silu")),
    "mistral": lambda: tf.MistralConfig(
        **_gated_kwargs(hidden_act="silu", sliding_window=None, head_dim=HEAD_DIM)
    ),
    "qwen2": lambda: tf.Qwen2Config(**_gated_kwargs(hidden_act="silu")),
    "qwen3": lambda: tf.Qwen3Config(**_gated_kwargs(hidden_act="silu", head_dim=HEAD_DIM)),
    "gemma": lambda: tf.GemmaConfig(
        **_gated_kwargs(hidden_act="gelu_pytorch_tanh", head_dim=HEAD_DIM)
    ),
    "gemma2": lambda: tf.Gemma2Config(
        **_gated_kwargs(hidden_activation="gelu_pytorch_tanh", head_dim=HEAD_DIM)
    ),
    "gemma3_text": lambda: tf.Gemma3TextConfig(
        **_gated_kwargs(hidden_activation="gelu_pytorch_tanh", head_dim=HEAD_DIM)
    ),
    "stablelm": lambda: tf.StableLmConfig(
        **_gated_kwargs(hidden_act="silu", use_qkv_bias=True, hidden_dropout=0.0)
    ),
    "phi3": lambda: tf.Phi3Config(
        **_gated_kwargs(hidden_act="silu", resid_pdrop=0.0, embd_pdrop=0.0)
    ),
    # -- plain (act(x W1 + b1)) ---------------------------------------------------------------
    "gpt2": lambda: tf.GPT2Config(**_gpt2_kwargs(activation_function="gelu_new")),
    "gpt_bigcode": lambda: tf.GPTBigCodeConfig(
        **_gpt2_kwargs(activation_function="gelu_pytorch_tanh", multi_query=True)
    ),
    "gptj": lambda: tf.GPTJConfig(**_gpt2_kwargs(activation_function="gelu_new", rotary_dim=4)),
    "codegen": lambda: tf.CodeGenConfig(
        **_gpt2_kwargs(activation_function="gelu_new", rotary_dim=4, n_ctx=MAX_POS)
    ),
    "starcoder2": lambda: tf.Starcoder2Config(
        **_gated_kwargs(
            hidden_act="gelu_pytorch_tanh",
            use_bias=True,
            residual_dropout=0.0,
            embedding_dropout=0.0,
            sliding_window=None,
        )
    ),
    "gpt_neox": lambda: tf.GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=D_FF,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        max_position_embeddings=MAX_POS,
        hidden_act="gelu",
        hidden_dropout=0.0,
        attention_dropout=0.0,
        initializer_range=INIT_STD,
        tie_word_embeddings=False,
        **_TOKENS,
    ),
    "bloom": lambda: tf.BloomConfig(  # d_ff is 4 * hidden_size by construction
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        n_layer=N_LAYERS,
        n_head=N_HEADS,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        initializer_range=INIT_STD,
        **_TOKENS,
    ),
    "opt": lambda: tf.OPTConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        word_embed_proj_dim=D_MODEL,
        ffn_dim=D_FF,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        max_position_embeddings=MAX_POS,
        activation_function="relu",
        enable_bias=True,
        dropout=0.0,
        attention_dropout=0.0,
        layerdrop=0.0,
        init_std=INIT_STD,
        **_TOKENS,
    ),
    "falcon": lambda: tf.FalconConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        ffn_hidden_size=D_FF,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        max_position_embeddings=MAX_POS,
        activation="gelu",
        bias=True,
        new_decoder_architecture=False,
        multi_query=True,
        parallel_attn=True,
        alibi=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        initializer_range=INIT_STD,
        **_TOKENS,
    ),
    "phi": lambda: tf.PhiConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=D_FF,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        max_position_embeddings=MAX_POS,
        hidden_act="gelu_new",
        partial_rotary_factor=0.5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        initializer_range=INIT_STD,
        **_TOKENS,
    ),
}


def _model_type_of(family: str) -> str:
    """``family`` itself if it is a key of :data:`TINY_CONFIGS`, else the family's first type."""
    if family in TINY_CONFIGS:
        return family
    for spec in ADAPTER_TABLE:
        if spec.family == family:
            return spec.model_types[0]
    raise KeyError(f"no tiny config for {family!r}; known model types: {sorted(TINY_CONFIGS)}")


def tiny_model_types() -> list[str]:
    """Every ``config.model_type`` with a tiny config, families' main types first (table order).

    Example:
        >>> tiny_model_types()[:3]
        ['llama', 'mistral', 'qwen2']
    """
    main = [spec.family for spec in ADAPTER_TABLE if spec.family in TINY_CONFIGS]
    return main + sorted(set(TINY_CONFIGS) - set(main))


def tiny_model(family: str, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised tiny causal LM of ``family`` (a family or ``config.model_type``).

    Weights are drawn under ``torch.manual_seed(seed)`` (the global RNG state is restored
    afterwards), so the same ``(family, seed)`` always gives the same model. Returns the model in
    eval mode, float32, eager attention: ``model(input_ids=ids).logits`` is
    ``[batch, pos, vocab=128]``.

    Example:
        >>> tiny_model("phi3").model.layers[0].mlp.gate_up_proj.weight.shape
        torch.Size([160, 32])
    """
    config = TINY_CONFIGS[_model_type_of(family)]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.float32, attn_implementation="eager"
        )
        # Transformers initialises biases to 0; draw them so tests see a bias that matters
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(".bias"):
                    param.normal_(0.0, INIT_STD)
    return model.eval()
