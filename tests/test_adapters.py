"""Adapter table and NeuronSpace on a tiny random model of every family (see tiny_models.py).

The oracles here do not come from the adapter: the intermediate activation is recomputed by hand
from the FFN input and the activation function named in the config, and zeroing a neuron's
parameters is compared with zeroing its activation through a hook.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, T5Config, T5ForConditionalGeneration
from transformers.activations import ACT2FN

from taskneurons.models.adapters import (
    ADAPTER_TABLE,
    UnsupportedModelError,
    get_adapter,
    supported_families,
)
from taskneurons.neurons.space import Neuron, NeuronSpace

from tiny_models import D_FF, D_MODEL, N_LAYERS, VOCAB, tiny_model, tiny_model_types

MODEL_TYPES = tiny_model_types()
ATOL = 1e-5
#: a neuron's removal must move some logit by more than this (logits have std ~1)
MIN_EFFECT = 1e-4

# Which config attribute names the FFN activation, per model type (from the modeling files).
_ACT_ATTR = {
    "gpt2": "activation_function",
    "gpt_bigcode": "activation_function",
    "gptj": "activation_function",
    "codegen": "activation_function",
    "opt": "activation_function",
    "falcon": "activation",
    "gemma2": "hidden_activation",
    "gemma3_text": "hidden_activation",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls: one intra-op thread is ~50x faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bloom_gelu(x: torch.Tensor) -> torch.Tensor:
    # BLOOM hard-codes its tanh-approximated GELU (modeling_bloom.bloom_gelu_forward)
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def ffn_activation(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The FFN activation function of ``model``, read from its config."""
    model_type = model.config.model_type
    if model_type == "bloom":
        return _bloom_gelu
    return ACT2FN[getattr(model.config, _ACT_ATTR.get(model_type, "hidden_act"))]


def expected_d_ff(model_type: str) -> int:
    return 4 * D_MODEL if model_type == "bloom" else D_FF


def random_ids(seed: int = 0, batch: int = 2, pos: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, pos), generator=g)  # [batch, pos]


@torch.no_grad()
def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits  # [batch, pos, vocab]


def random_units(n_units: int, k: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_units, generator=g)[:k].tolist()


@torch.no_grad()
def logits_with_zeroed_slices(model, slices, unit: int, ids: torch.Tensor) -> torch.Tensor:
    """Logits with ``s.param.narrow(s.dim, s.offset + unit, 1)`` zeroed for every slice."""
    saved = [(s, s.param.narrow(s.dim, s.offset + unit, 1).clone()) for s in slices]
    try:
        for s in slices:
            s.param.narrow(s.dim, s.offset + unit, 1).zero_()
        return logits_of(model, ids)
    finally:
        for s, old in saved:
            s.param.narrow(s.dim, s.offset + unit, 1).copy_(old)


def _zero_input_unit(unit, module, args):
    (h, *rest) = args  # h: [batch, pos, d_ff]
    h = h.clone()
    h[..., unit] = 0.0
    return (h, *rest)


def _zero_output_unit(unit, module, args, output):
    output = output.clone()  # [batch, pos, out_features]
    output[..., unit] = 0.0
    return output


def w1_parts_from_slices(space: NeuronSpace, layer: int) -> list[tuple[torch.Tensor, Any]]:
    """``(weight [d_ff, d_model], bias [d_ff] or None)`` of each W1 part, read off the slices.

    Slices are grouped by owning linear and offset, in the order ``parameter_slices`` gives.
    """
    d_ff = space.units["ffn"]
    w2_weight = space.adapter.w2(layer).weight
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for s in space.parameter_slices(layer, "ffn"):
        if s.param is w2_weight:
            continue
        owner, which = s.name.rsplit(".", 1)
        block = s.param.narrow(s.dim, s.offset, d_ff)
        if which == "weight" and s.dim == 1:  # units are columns: stored [in, out]
            block = block.t()
        groups.setdefault((owner, s.offset), {})[which] = block
    return [(g["weight"], g.get("bias")) for g in groups.values()]


# -- activation site --------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_w2_input_is_the_hand_computed_intermediate(model_type):
    model = tiny_model(model_type)
    adapter = get_adapter(model)
    space = NeuronSpace(model, "ffn", adapter=adapter)
    act = ffn_activation(model)
    assert (adapter.n_layers, adapter.d_ff, adapter.d_model) == (
        N_LAYERS,
        expected_d_ff(model_type),
        D_MODEL,
    )
    first_w1 = adapter.spec.w1[0][0]
    seen: dict[tuple[str, int], list[torch.Tensor]] = {}

    def store(key, module, args):
        seen.setdefault(key, []).append(args[0].detach().clone())

    handles = []
    for layer in range(adapter.n_layers):
        handles.append(
            adapter.linear(layer, first_w1).register_forward_pre_hook(partial(store, ("x", layer)))
        )
        handles.append(adapter.w2(layer).register_forward_pre_hook(partial(store, ("h", layer))))
    try:
        logits_of(model, random_ids())
    finally:
        for h in handles:
            h.remove()

    for layer in range(adapter.n_layers):
        assert len(seen[("h", layer)]) == 1, "W2 must run exactly once per layer and forward"
        x = seen[("x", layer)][0]  # [batch, pos, d_model]
        h = seen[("h", layer)][0]  # [batch, pos, d_ff]
        assert x.shape[-1] == D_MODEL
        parts = []
        for name, chunk in adapter.spec.w1:
            w = adapter.weight_out_in(layer, name).narrow(0, chunk * adapter.d_ff, adapter.d_ff)
            bias = getattr(adapter.linear(layer, name), "bias", None)
            if bias is not None:
                bias = bias.narrow(0, chunk * adapter.d_ff, adapter.d_ff)
            parts.append(F.linear(x, w, bias))  # [batch, pos, d_ff]
        expected = act(parts[0]) * parts[1] if adapter.spec.gated else act(parts[0])
        assert len(parts) == (2 if adapter.spec.gated else 1)
        torch.testing.assert_close(h, expected, atol=ATOL, rtol=ATOL)
        # the W1 slices that NeuronSpace says neurons 0..d_ff-1 own give the same parts
        slice_parts = [
            F.linear(x, w, b) for w, b in w1_parts_from_slices(space, layer)
        ]  # [batch, pos, d_ff] each
        assert len(slice_parts) == len(parts)
        for got, want in zip(slice_parts, parts, strict=True):
            torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)


# -- ffn definition: a neuron's parameters are its activation -------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_zeroing_ffn_neuron_parameters_equals_zeroing_its_activation(model_type):
    model = tiny_model(model_type)
    space = NeuronSpace(model, "ffn")
    adapter = space.adapter
    ids = random_ids()
    base = logits_of(model, ids)
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}

    for layer in range(space.n_layers):
        slices = space.parameter_slices(layer, "ffn")
        for s in slices:  # names are real and point at this layer's tensors
            assert params[s.name] is s.param
            assert f".{layer}." in s.name
        w2_weight = adapter.w2(layer).weight
        w1_slices = [s for s in slices if s.param is not w2_weight]
        w2_slices = [s for s in slices if s.param is w2_weight]
        assert len(w2_slices) == 1 and w1_slices
        for unit in random_units(space.units["ffn"], 3, seed=layer):
            module = space.site_module(layer, "ffn")
            handle = module.register_forward_pre_hook(partial(_zero_input_unit, unit))
            try:
                hooked = logits_of(model, ids)
            finally:
                handle.remove()
            assert (hooked - base).abs().max() > MIN_EFFECT
            # all slices, W1 rows alone (act(0) = 0), W2 column alone: each removes neuron `unit`
            for subset in (slices, w1_slices, w2_slices):
                zeroed = logits_with_zeroed_slices(model, subset, unit, ids)
                torch.testing.assert_close(zeroed, hooked, atol=ATOL, rtol=0)

    for n, p in model.named_parameters():  # restored
        assert torch.equal(p, before[n]), n


# -- linear definition: output unit u owns its row and bias entry ---------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_zeroing_linear_output_unit_parameters_equals_zeroing_the_output(model_type):
    model = tiny_model(model_type)
    space = NeuronSpace(model, "linear")
    ids = random_ids(seed=1)
    base = logits_of(model, ids)
    params = dict(model.named_parameters())
    for layer in range(space.n_layers):
        for i, name in enumerate(space.modules):
            module = space.site_module(layer, name)
            assert module is space.adapter.linear(layer, name)
            slices = space.parameter_slices(layer, name)
            has_bias = getattr(module, "bias", None) is not None
            assert len(slices) == (2 if has_bias else 1)
            for s in slices:
                assert params[s.name] is s.param
            for unit in random_units(space.units[name], 2, seed=10 * layer + i):
                handle = module.register_forward_hook(partial(_zero_output_unit, unit))
                try:
                    hooked = logits_of(model, ids)
                finally:
                    handle.remove()
                assert (hooked - base).abs().max() > MIN_EFFECT
                zeroed = logits_with_zeroed_slices(model, slices, unit, ids)
                torch.testing.assert_close(zeroed, hooked, atol=ATOL, rtol=0)
    torch.testing.assert_close(logits_of(model, ids), base, atol=0, rtol=0)


# -- counting and ids -----------------------------------------------------------------------

_EXPECTED_MODULES = {
    "gated": ["gate", "up", "down"],
    "fused": ["gate_up", "down"],
    "plain": ["up", "down"],
}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_neuron_space_counts_and_ids(model_type):
    model = tiny_model(model_type)
    d_ff = expected_d_ff(model_type)

    ffn = NeuronSpace(model, "ffn")
    assert ffn.modules == ["ffn"]
    assert ffn.shape("ffn") == (N_LAYERS, d_ff)
    assert ffn.size == N_LAYERS * d_ff
    assert ffn.counts() == {"ffn": N_LAYERS * d_ff, "total": N_LAYERS * d_ff}
    assert ffn.site("ffn").kind == "input"
    assert ffn.site_module(1, "ffn") is ffn.adapter.w2(1)

    linear = NeuronSpace(model, "linear")
    kind = "fused" if model_type == "phi3" else ("gated" if ffn.adapter.spec.gated else "plain")
    assert linear.modules == _EXPECTED_MODULES[kind]
    width = {"gate": d_ff, "up": d_ff, "gate_up": 2 * d_ff, "down": D_MODEL}
    assert linear.units == {m: width[m] for m in linear.modules}
    assert linear.size == N_LAYERS * sum(width[m] for m in linear.modules)
    assert {m: linear.shape(m) for m in linear.modules} == {
        m: (N_LAYERS, width[m]) for m in linear.modules
    }
    assert {m: z.shape for m, z in linear.zeros().items()} == {
        m: torch.Size([N_LAYERS, width[m]]) for m in linear.modules
    }

    for space in (ffn, linear):
        ids = list(range(space.size))
        coords = [space.coord(i) for i in ids]
        assert [space.neuron_id(*c) for c in coords] == ids
        assert len(set(coords)) == space.size
        assert space.coord(space.per_layer) == Neuron(1, space.modules[0], 0)  # layer-major
        last = space.modules[-1]
        assert space.coord(space.size - 1) == Neuron(N_LAYERS - 1, last, space.units[last] - 1)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_neuron_space_rejects_bad_coordinates(model_type):
    model = tiny_model(model_type)
    with pytest.raises(ValueError, match="unknown neuron definition 'neurons'"):
        NeuronSpace(model, "neurons")
    for definition in ("ffn", "linear"):
        space = NeuronSpace(model, definition)
        module = space.modules[0]
        n_units = space.units[module]
        for layer, unit in [(N_LAYERS, 0), (-1, 0), (0, n_units), (0, -1)]:
            with pytest.raises(IndexError, match="outside"):
                space.neuron_id(layer, module, unit)
        with pytest.raises(KeyError, match="not in"):
            space.neuron_id(0, "attn", 0)
        with pytest.raises(TypeError, match="integer"):
            space.neuron_id(0, module, 1.5)
        for bad in (space.size, -1):
            with pytest.raises(IndexError, match="neuron id"):
                space.coord(bad)
        with pytest.raises(TypeError, match="integer"):
            space.coord(2.0)
        for layer in (N_LAYERS, -1):
            with pytest.raises(IndexError, match=f"layer {layer} outside"):
                space.parameter_slices(layer, module)
            with pytest.raises(IndexError, match=f"layer {layer} outside"):
                space.site_module(layer, module)
        with pytest.raises(KeyError, match="not in"):
            space.parameter_slices(0, "attn")
        with pytest.raises(KeyError, match="not in"):
            space.site_module(0, "attn")
        with pytest.raises(KeyError, match="not in"):
            space.shape("attn")


# -- unsupported architectures ----------------------------------------------------------------


def _assert_names_all_families(message: str) -> None:
    for family in supported_families():
        assert family in message


def test_unsupported_architecture_names_supported_families():
    config = T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, dropout_rate=0.0
    )
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(config)
    with pytest.raises(UnsupportedModelError, match="unsupported architecture 't5'") as err:
        get_adapter(t5)
    _assert_names_all_families(str(err.value))
    for model_type in (t for spec in ADAPTER_TABLE for t in spec.model_types):
        assert model_type in str(err.value)
    assert isinstance(err.value, ValueError)


def test_model_without_config_is_unsupported():
    with pytest.raises(UnsupportedModelError, match="Linear has no config.model_type") as err:
        get_adapter(nn.Linear(4, 4))
    _assert_names_all_families(str(err.value))


def test_model_declaring_a_family_without_its_layers_is_unsupported():
    class Impostor(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = LlamaConfig(
                vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_attention_heads=2
            )
            self.body = nn.Linear(4, 4)

    with pytest.raises(
        UnsupportedModelError, match="has no 'model.layers' module list; pass the causal LM"
    ):
        get_adapter(Impostor())


def test_bare_backbone_is_rejected_with_a_hint():
    backbone = tiny_model("llama").model  # LlamaModel: layers at .layers, not .model.layers
    with pytest.raises(UnsupportedModelError, match=r"LlamaModel .* pass the causal LM"):
        get_adapter(backbone)


def test_bloom_slow_but_exact_tensor_parallel_is_rejected():
    model = tiny_model("bloom")
    model.config.pretraining_tp, model.config.slow_but_exact = 2, True
    with pytest.raises(UnsupportedModelError, match="slow_but_exact=False"):
        get_adapter(model)
    model.config.slow_but_exact = False
    assert get_adapter(model).d_ff == 4 * D_MODEL


def test_every_table_model_type_has_a_tiny_model():
    table_types = {t for spec in ADAPTER_TABLE for t in spec.model_types}
    assert table_types == set(MODEL_TYPES)
    assert set(supported_families()) <= set(MODEL_TYPES)


# -- Conv1D (GPT-2) ---------------------------------------------------------------------------


def test_conv1d_weight_view_is_the_transpose_and_writes_through():
    model = tiny_model("gpt2")
    adapter = get_adapter(model)
    for name, shape in [("up", (D_FF, D_MODEL)), ("down", (D_MODEL, D_FF))]:
        stored = adapter.linear(0, name).weight  # Conv1D: [in, out]
        view = adapter.weight_out_in(0, name)  # [out, in]
        assert adapter.is_transposed(name)
        assert tuple(stored.shape) == shape[::-1] and tuple(view.shape) == shape
        assert (adapter.out_features(0, name), adapter.in_features(0, name)) == shape
        assert torch.equal(view, stored.t())
        assert view.data_ptr() == stored.data_ptr()
        with torch.no_grad():
            view[3, 5] = 7.0
        assert stored[5, 3].item() == 7.0
    # output unit u of c_fc is column u of its stored weight; input unit j of c_proj is row j
    (w_slice, b_slice) = adapter.output_slices(0, "up")
    assert (w_slice.dim, b_slice.dim) == (1, 0)
    (in_slice,) = adapter.input_slices(0, "down")
    assert in_slice.dim == 0
    assert in_slice.name == "transformer.h.0.mlp.c_proj.weight"


# -- PEFT-wrapped models ------------------------------------------------------------------------


def test_peft_wrapped_model_slices_name_real_parameters():
    peft = pytest.importorskip("peft")
    model = tiny_model("llama")
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=2, target_modules=["gate_proj", "down_proj"], lora_dropout=0.0)
    )
    space = NeuronSpace(lora, "ffn")
    params = dict(lora.named_parameters())
    for s in space.parameter_slices(1, "ffn"):
        assert params[s.name] is s.param, s.name
    assert space.size == N_LAYERS * D_FF
