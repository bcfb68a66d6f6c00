"""NeuronDelta: hooks == merged weights, exact layout, bit-exact unmerge, save/load, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from taskneurons.neurons.neuron_set import NeuronSet, NeuronSetMismatchError
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint
from taskneurons.training.neuron_delta import NeuronDelta, selection_masks

from tiny_models import D_FF, D_MODEL, tiny_model

# one torch thread (conftest.py): tiny models run far faster so on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ["llama", "gpt2", "opt", "phi3"]
DEFINITIONS = ["ffn", "linear"]


def random_set(model, definition: str, frac: float = 0.3, seed: int = 0) -> NeuronSet:
    """A random NeuronSet with ~``frac`` of the neurons, at least one in the first/last layer."""
    space = NeuronSpace(model, definition)
    g = torch.Generator().manual_seed(seed)
    masks = {m: torch.rand(space.shape(m), generator=g) < frac for m in space.modules}
    first = space.modules[0]
    masks[first][0, 0] = True
    masks[first][-1, 1] = True
    return NeuronSet(definition, masks, {"model_fingerprint": model_fingerprint(model)})


def randomize(delta: NeuronDelta, seed: int = 1, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in delta.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def ids_for(model, seed: int = 0, shape=(2, 7)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.config.vocab_size, shape, generator=g)


def clone_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("definition", DEFINITIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_hooks_equal_merged_weights_and_unmerge_is_bit_exact(family, definition):
    model = tiny_model(family)
    ids = ids_for(model)
    base_logits = model(input_ids=ids).logits
    base_state = clone_state(model)
    delta = NeuronDelta(model, random_set(model, definition))
    randomize(delta)
    delta.attach()
    hooked = model(input_ids=ids).logits
    assert not torch.allclose(hooked, base_logits, atol=1e-2)  # the deltas matter
    # the hooks never wrote the base weights
    assert all(torch.equal(base_state[k], v) for k, v in model.state_dict().items())
    delta.merge()
    assert not delta.attached and delta.merged
    merged = model(input_ids=ids).logits
    torch.testing.assert_close(hooked, merged, rtol=1e-5, atol=1e-5)
    delta.unmerge()
    assert delta.attached and not delta.merged
    assert all(torch.equal(base_state[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(input_ids=ids).logits, hooked, rtol=0, atol=0)
    delta.detach()
    assert torch.equal(model(input_ids=ids).logits, base_logits)


@pytest.mark.parametrize("family", ["gpt2", "llama", "phi3"])
def test_ffn_layout_is_exactly_the_owned_slices(family):
    """Hand-written expectation of which entries one ``ffn`` neuron owns, per family."""
    model = tiny_model(family)
    space = NeuronSpace(model, "ffn")
    neurons = NeuronSet.from_neurons(space, [(0, "ffn", 3), (1, "ffn", 7), (1, "ffn", 2)])
    masks = selection_masks(model, neurons)
    expected: dict[str, torch.Tensor] = {}
    if family == "gpt2":  # Conv1D: weight [in, out]
        w1 = torch.zeros(D_MODEL, D_FF, dtype=torch.bool)
        w1[:, 3] = True
        b1 = torch.zeros(D_FF, dtype=torch.bool)
        b1[3] = True
        w2 = torch.zeros(D_FF, D_MODEL, dtype=torch.bool)
        w2[3, :] = True
        expected = {"c_fc.weight": w1, "c_fc.bias": b1, "c_proj.weight": w2}
        prefix = "transformer.h.0.mlp."
    elif family == "llama":
        rows = torch.zeros(D_FF, D_MODEL, dtype=torch.bool)
        rows[3] = True
        bias = torch.zeros(D_FF, dtype=torch.bool)
        bias[3] = True
        cols = torch.zeros(D_MODEL, D_FF, dtype=torch.bool)
        cols[:, 3] = True
        expected = {
            "gate_proj.weight": rows,
            "gate_proj.bias": bias,
            "up_proj.weight": rows,
            "up_proj.bias": bias,
            "down_proj.weight": cols,
        }
        prefix = "model.layers.0.mlp."
    else:  # phi3: fused gate_up [2*d_ff, d_model], chunk 0 = gate, chunk 1 = up
        rows = torch.zeros(2 * D_FF, D_MODEL, dtype=torch.bool)
        rows[3] = True
        rows[D_FF + 3] = True
        cols = torch.zeros(D_MODEL, D_FF, dtype=torch.bool)
        cols[:, 3] = True
        expected = {"gate_up_proj.weight": rows, "down_proj.weight": cols}
        prefix = "model.layers.0.mlp."
    for short, mask in expected.items():
        assert torch.equal(masks[prefix + short], mask), short
    layer0 = {k for k in masks if k.startswith(prefix)}
    assert layer0 == {prefix + k for k in expected}
    # the delta holds exactly those entries: 2 neurons in layer 1, 1 in layer 0
    delta = NeuronDelta(model, neurons)
    per_neuron = sum(int(m.sum()) for k, m in masks.items() if k.startswith(prefix))
    assert delta.num_trainable() == 3 * per_neuron
    assert delta.num_trainable() == sum(int(m.sum()) for m in masks.values())


@pytest.mark.parametrize(
    ("family", "definition"),
    [("gpt2", "ffn"), ("llama", "ffn"), ("opt", "linear"), ("phi3", "ffn")],
)
def test_delta_gradient_equals_masked_weight_gradient(family, definition):
    """d loss / d delta == the selected slices of d loss / d W at W (with zero deltas)."""
    model = tiny_model(family)
    neurons = random_set(model, definition)
    ids = ids_for(model)
    # reference: plain parameter gradients
    loss = model(input_ids=ids, labels=ids).loss
    ref = dict(
        zip(
            [n for n, _ in model.named_parameters()],
            torch.autograd.grad(loss, list(model.parameters())),
            strict=True,
        )
    )
    for p in model.parameters():
        p.requires_grad_(False)
    delta = NeuronDelta(model, neurons).attach()
    model(input_ids=ids, labels=ids).loss.backward()
    for name, d in delta.named_parameters():
        dim, pos = delta.positions(name)
        torch.testing.assert_close(d.grad, ref[name].index_select(dim, pos), rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_save_load_reproduces_outputs_on_a_fresh_model(tmp_path, family):
    model = tiny_model(family)
    neurons = random_set(model, "ffn")
    delta = NeuronDelta(model, neurons)
    randomize(delta)
    ids = ids_for(model)
    with delta:
        trained = model(input_ids=ids).logits
    path = delta.save(tmp_path / "d", meta={"task": "toy"})
    assert path.name == "delta.safetensors" and path.is_file()
    sidecar = json.loads((tmp_path / "d" / "delta.json").read_text())
    assert sidecar["definition"] == "ffn"
    assert sidecar["num_trainable"] == delta.num_trainable()
    assert sidecar["model_fingerprint"] == model_fingerprint(model)
    assert sidecar["meta"] == {"task": "toy"}
    # deltas + positions + masks: a bit over 4 bytes per trainable value
    assert path.stat().st_size < 4 * delta.num_trainable() + 20_000

    fresh = tiny_model(family)
    loaded = NeuronDelta.load(tmp_path / "d", fresh)
    assert loaded.attached
    torch.testing.assert_close(fresh(input_ids=ids).logits, trained, rtol=0, atol=0)
    assert torch.equal(loaded.neurons.masks["ffn"], neurons.masks["ffn"])
    for name, t in delta.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t)
    # merged into a fresh copy: same outputs to float tolerance
    loaded.merge()
    torch.testing.assert_close(fresh(input_ids=ids).logits, trained, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stored", [torch.bfloat16, torch.float16])
def test_save_in_half_precision_halves_the_file(tmp_path, stored):
    model = tiny_model("llama")
    delta = NeuronDelta(model, random_set(model, "ffn", frac=0.5))
    randomize(delta)
    full = delta.save(tmp_path / "full")
    half = delta.save(tmp_path / "half", dtype=stored)
    sidecar = json.loads((tmp_path / "half" / "delta.json").read_text())
    assert sidecar["dtype"] == "float32"
    assert sidecar["stored_dtype"] == str(stored).replace("torch.", "")
    saved = full.stat().st_size - half.stat().st_size
    assert abs(saved - 2 * delta.num_trainable()) <= 64  # 2 bytes a value (+ header padding)
    loaded = NeuronDelta.load(tmp_path / "half", tiny_model("llama"))
    assert loaded.dtype == torch.float32  # trains on in float32, values rounded once
    for name, t in delta.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t.to(stored).float())
    with pytest.raises(ValueError, match="floating"):
        delta.save(tmp_path / "bad", dtype=torch.int8)


def test_load_refuses_another_or_already_merged_model(tmp_path):
    model = tiny_model("llama")
    delta = NeuronDelta(model, random_set(model, "ffn"))
    randomize(delta)
    delta.save(tmp_path / "d.safetensors")
    assert (tmp_path / "d.json").is_file()
    with pytest.raises(NeuronSetMismatchError, match="weights fingerprint"):
        NeuronDelta.load(tmp_path / "d.safetensors", tiny_model("llama", seed=1))
    with pytest.raises(NeuronSetMismatchError, match="architecture"):
        NeuronDelta.load(tmp_path / "d.safetensors", tiny_model("qwen2"))
    merged = tiny_model("llama")
    NeuronDelta.load(tmp_path / "d.safetensors", merged).merge()
    with pytest.raises(NeuronSetMismatchError, match="merged"):
        NeuronDelta.load(tmp_path / "d.safetensors", merged)
    # strict=False accepts other weights of the same architecture
    other = NeuronDelta.load(tmp_path / "d.safetensors", tiny_model("llama", seed=1), strict=False)
    assert other.num_trainable() == delta.num_trainable()
    with pytest.raises(FileNotFoundError):
        NeuronDelta.load(tmp_path / "missing.safetensors", model)


def test_bf16_base_with_float32_deltas():
    model = tiny_model("llama").to(torch.bfloat16)
    for p in model.parameters():
        p.requires_grad_(False)
    delta = NeuronDelta(model, random_set(model, "ffn"), dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in delta.parameters())
    randomize(delta, std=0.05)
    ids = ids_for(model)
    with delta:
        out = model(input_ids=ids, labels=ids)
        assert out.logits.dtype == torch.bfloat16
        out.loss.backward()
        hooked = out.logits.float()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in delta.parameters())
        base_state = clone_state(model)
        delta.merge()
        merged = model(input_ids=ids).logits.float()
        delta.unmerge()
        assert all(torch.equal(base_state[k], v) for k, v in model.state_dict().items())
    # bf16 rounding of W + Δ: agree to bf16 precision only
    assert (hooked - merged).abs().max() < 0.05 * hooked.abs().max()


def test_context_manager_and_state_errors():
    model = tiny_model("opt")
    ids = ids_for(model)
    base = model(input_ids=ids).logits
    base_state = clone_state(model)
    delta = NeuronDelta(model, random_set(model, "linear"))
    randomize(delta)
    with delta:
        assert delta.attached
        delta.merge()
        with pytest.raises(RuntimeError, match="already merged"):
            delta.merge()
        with pytest.raises(RuntimeError, match="unmerge"):
            delta.detach()
        with pytest.raises(RuntimeError, match="unmerge"):
            delta.attach()
    # leaving the block undoes a merge too: the base model again, bit-exactly
    assert not delta.attached and not delta.merged
    assert all(torch.equal(base_state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(input_ids=ids).logits, base)
    with pytest.raises(RuntimeError, match="not merged"):
        delta.unmerge()
    assert "detached" in repr(delta)


def test_bad_neuron_sets():
    model = tiny_model("llama")
    space = NeuronSpace(model, "ffn")
    with pytest.raises(ValueError, match="selects no neurons"):
        NeuronDelta(model, NeuronSet.empty(space, {"k": 0}))
    with pytest.raises(NeuronSetMismatchError):  # another architecture's layout
        NeuronDelta(tiny_model("gpt2"), random_set(model, "linear"))
    with pytest.raises(NeuronSetMismatchError, match="another model"):
        NeuronDelta(model, random_set(tiny_model("llama", seed=3), "ffn"))
    # same architecture, other weights: accepted with strict=False
    delta = NeuronDelta(model, random_set(tiny_model("llama", seed=3), "ffn"), strict=False)
    assert delta.num_trainable() > 0
    with pytest.raises(TypeError, match="NeuronSet"):
        NeuronDelta(model, {"ffn": torch.ones(2, D_FF, dtype=torch.bool)})
    with pytest.raises(ValueError, match="dtype"):
        NeuronDelta(model, random_set(model, "ffn"), dtype=torch.int64)


def test_state_dict_round_trip_and_errors():
    model = tiny_model("phi3")
    a = NeuronDelta(model, random_set(model, "ffn"))
    randomize(a)
    b = NeuronDelta(model, random_set(model, "ffn"))
    b.load_state_dict(a.state_dict())
    for n, t in a.state_dict().items():
        assert torch.equal(b.state_dict()[n], t)
    bad = dict(a.state_dict())
    bad.pop(next(iter(bad)))
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict(bad)
    other = NeuronDelta(model, random_set(model, "ffn", seed=5))
    with pytest.raises(ValueError):
        other.load_state_dict(a.state_dict())
