"""Deactivation: activation hooks vs parameter zeroing, reversibility, equivalence, errors.

Also: the deactivation experiment's Deactivate-Task row is ``evaluate`` under ``deactivate``.
"""

from __future__ import annotations

import pytest
import torch

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.tasks import Example, Task
from taskneurons.experiments.run_context import RunContext
from taskneurons.neurons.intervention import Deactivation, deactivate, zero_neurons
from taskneurons.neurons.neuron_set import NeuronSet, NeuronSetMismatchError
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection.ranking import top_k
from taskneurons.neurons.space import NeuronSpace

from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

# gated + biases (llama, mlp_bias=True), Conv1D (gpt2), biases (opt, gpt_neox), fused gate_up (phi3)
FAMILIES = ["llama", "gpt2", "opt", "gpt_neox", "phi3"]

_MODELS: dict[str, torch.nn.Module] = {}


def _model(family: str) -> torch.nn.Module:
    if family not in _MODELS:
        _MODELS[family] = tiny_model(family, seed=0)
    return _MODELS[family]


def _ids(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.config.vocab_size, (2, 7), generator=g)


def _random_set(model, definition: str, k: float = 20, seed: int = 0) -> NeuronSet:
    space = NeuronSpace(model, definition)
    g = torch.Generator().manual_seed(seed)
    scores = {m: torch.rand(space.shape(m), generator=g) for m in space.modules}
    return top_k(NeuronScores(definition, scores), k=k)


def _hooks(model) -> dict:
    return {
        name: (dict(m._forward_pre_hooks), dict(m._forward_hooks))
        for name, m in model.named_modules()
    }


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"parameter {k} was not restored bit-exactly"


@torch.no_grad()
def _logits(model, ids) -> torch.Tensor:
    return model(input_ids=ids).logits


@pytest.mark.parametrize("definition", ["ffn", "linear"])
@pytest.mark.parametrize("family", FAMILIES)
def test_activation_and_parameter_modes_agree(family, definition):
    model = _model(family)
    ids = _ids(model)
    neurons = _random_set(model, definition)
    base = _logits(model, ids)
    before = _state(model)
    with deactivate(model, neurons, mode="activation") as h:
        assert h.active and h.n_hooks > 0 and h.n_values == 0
        act = _logits(model, ids)
    with deactivate(model, neurons, mode="parameters") as h:
        assert h.n_hooks == 0 and h.n_values > 0
        par = _logits(model, ids)
    assert not h.active
    torch.testing.assert_close(act, par, atol=1e-5, rtol=0)
    assert (act - base).abs().max() > 1e-3, "deactivating 20% of the neurons changed nothing"
    _assert_same_state(model, before)
    torch.testing.assert_close(_logits(model, ids), base, atol=0, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_parameter_mode_restores_bit_exactly_after_an_exception(family):
    model = _model(family)
    neurons = _random_set(model, "ffn", k=30, seed=1)
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        with deactivate(model, neurons, mode="parameters"):
            changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
            assert changed, "parameter mode zeroed nothing"
            raise RuntimeError("boom")
    _assert_same_state(model, before)


def test_parameter_mode_zeroes_exactly_the_owned_slices():
    model = _model("gpt2")  # Conv1D: W1 is [d, d_ff], W2 is [d_ff, d]
    space = NeuronSpace(model, "ffn")
    neurons = NeuronSet.from_neurons(space, [(0, "ffn", 3), (1, "ffn", 7), (1, "ffn", 79)])
    before = _state(model)
    with deactivate(model, neurons, mode="parameters") as h:
        mlp0 = model.transformer.h[0].mlp
        assert torch.all(mlp0.c_fc.weight[:, 3] == 0) and mlp0.c_fc.bias[3] == 0
        assert torch.all(mlp0.c_proj.weight[3, :] == 0)
        assert torch.equal(mlp0.c_fc.weight[:, 4], before["transformer.h.0.mlp.c_fc.weight"][:, 4])
        # 3 neurons x (W1 column of d + its bias + W2 row of d)
        d = model.config.n_embd
        assert h.n_values == 3 * (d + 1 + d)
        n_changed = sum(
            int((v != before[k]).sum()) for k, v in model.state_dict().items() if k in before
        )
        assert 0 < n_changed <= h.n_values
    _assert_same_state(model, before)


@pytest.mark.parametrize("definition", ["ffn", "linear"])
def test_activation_hooks_are_removed_on_exit_and_on_exception(definition):
    model = _model("llama")
    neurons = _random_set(model, definition)
    sentinel = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, a, o: None)
    try:
        hooks = _hooks(model)
        with deactivate(model, neurons):
            assert _hooks(model) != hooks
            _logits(model, _ids(model))
        assert _hooks(model) == hooks
        with pytest.raises(ValueError, match="inside"):
            with deactivate(model, neurons):
                raise ValueError("inside")
        assert _hooks(model) == hooks
    finally:
        sentinel.remove()


def test_activation_mode_zeroes_exactly_the_selected_units():
    model = _model("llama")
    space = NeuronSpace(model, "ffn")
    neurons = NeuronSet.from_neurons(space, [(1, "ffn", 0), (1, "ffn", 42)])
    seen = {}
    down = model.model.layers[1].mlp.down_proj
    with deactivate(model, neurons):
        # registered after the deactivation hook, so it sees the modified input
        probe = down.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
        try:
            _logits(model, _ids(model))
        finally:
            probe.remove()
    x = seen["x"]  # [batch, pos, d_ff]
    assert torch.all(x[..., [0, 42]] == 0)
    assert torch.all(x[..., 1:42].abs().sum(dim=-1) > 0)


def test_activation_mode_keeps_gradients_flowing():
    model = _model("opt")
    neurons = _random_set(model, "ffn")
    ids = _ids(model)
    with deactivate(model, neurons):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    assert grads and torch.isfinite(loss)


def test_empty_set_is_a_no_op():
    model = _model("gpt_neox")
    ids = _ids(model)
    base = _logits(model, ids)
    hooks = _hooks(model)
    empty = NeuronSet.empty(NeuronSpace(model, "ffn"))
    for mode in ("activation", "parameters"):
        with deactivate(model, empty, mode=mode) as h:
            assert h.n_hooks == 0 and h.n_values == 0
            assert _hooks(model) == hooks
            assert torch.equal(_logits(model, ids), base)


def test_nested_deactivations_undo_in_order():
    model = _model("phi3")
    ids = _ids(model)
    before = _state(model)
    a = _random_set(model, "ffn", seed=1)
    b = _random_set(model, "ffn", seed=2)
    with deactivate(model, a, mode="parameters"):
        with deactivate(model, b, mode="parameters"):
            both = _logits(model, ids)
    _assert_same_state(model, before)
    with deactivate(model, a | b, mode="activation"):
        torch.testing.assert_close(_logits(model, ids), both, atol=1e-5, rtol=0)


def test_zero_neurons_handle_undo_is_idempotent():
    model = _model("gpt2")
    before = _state(model)
    h = zero_neurons(model, _random_set(model, "linear"), mode="parameters")
    assert isinstance(h, Deactivation) and h.active and "parameters" in repr(h)
    h.undo()
    h.undo()
    assert not h.active
    _assert_same_state(model, before)
    with zero_neurons(model, _random_set(model, "ffn")) as h2:
        assert h2.n_hooks > 0
    assert h2.n_hooks == 0


def test_mismatched_set_or_mode_is_refused():
    model = _model("llama")
    other = _random_set(_model("gpt2"), "linear")  # gpt2 linear: modules up/down
    hooks = _hooks(model)
    before = _state(model)
    with pytest.raises(NeuronSetMismatchError, match="neuron set has .* model has"):
        with deactivate(model, other):
            pass
    wrong_shape = NeuronSet("ffn", {"ffn": torch.ones(30, 1536, dtype=torch.bool)})
    with pytest.raises(NeuronSetMismatchError, match="30 layers x 1536 units.*2 layers x 80"):
        with deactivate(model, wrong_shape, mode="parameters"):
            pass
    with pytest.raises(ValueError, match="mode"):
        with deactivate(model, _random_set(model, "ffn"), mode="weights"):
            pass
    with pytest.raises(NeuronSetMismatchError, match="another model"):
        with deactivate(model, _random_set(model, "ffn"), space=NeuronSpace(_model("opt"))):
            pass
    assert _hooks(model) == hooks
    _assert_same_state(model, before)


def tiny_tasks(n: int = 12) -> list[Task]:
    """Two classification tasks in the tiny tokenizer's vocabulary, ``n`` train and test examples."""
    adj = {"positive": ["good", "great", "fun"], "negative": ["bad", "awful", "boring"]}
    nouns = ["movie", "film", "book", "food", "story", "plot"]
    mood, answer = [], []
    for i in range(n):
        label = ["positive", "negative"][i % 2]
        word, noun = adj[label][i % 3], nouns[i % 6]
        mood.append(Example(f"the {noun} was very {word}", label))
        answer.append(Example(f"I {word} this {noun}", ["yes", "no"][i % 2]))
    common = dict(kind="classification", instruction="Classify the text", metric="accuracy")
    return [
        Task(id="mood", labels=["positive", "negative"], train=mood, test=mood[::-1], **common),
        Task(id="answer", labels=["yes", "no"], train=answer, test=answer[::-1], **common),
    ]


@pytest.mark.parametrize("mode", ["activation", "parameters"])
def test_deactivate_task_row_is_evaluate_under_deactivate(tmp_path, mode):
    """Deactivate-Task of the experiment == ``evaluate`` inside ``deactivate`` by hand.

    Same test subset (``eval_examples`` with the config's ``n_test`` and ``seed``), same
    evaluation config: the accuracy and the gold-label NLL must be equal, and the NLL must
    differ from Original's (the deactivation changes something) and from Deactivate-Random's.
    """
    from taskneurons.data.prompt_config import PromptConfig
    from taskneurons.evaluation.dispatch import evaluate
    from taskneurons.evaluation.eval_config import EvalConfig
    from taskneurons.experiments.common import eval_examples
    from taskneurons.experiments.specificity.deactivate_stage import DeactivateConfig
    from taskneurons.experiments.specificity.deactivation import deactivation_experiment

    model, tok, tasks = tiny_model("llama"), tiny_tokenizer(), tiny_tasks()
    sets = {t.id: _random_set(model, "ffn", k=10, seed=i) for i, t in enumerate(tasks)}
    eval_cfg = EvalConfig(prompt=PromptConfig(max_length=48), batch_size=4)
    config = DeactivateConfig(mode=mode, n_test=6, seed=3, eval=eval_cfg)
    ctx = RunContext.of(model, tok, tasks, progress=False, sets=sets)
    res = deactivation_experiment(ctx, config, tmp_path)
    assert res.nll is not None
    for t in tasks:
        examples = eval_examples(t, config.n_test, config.seed)
        assert len(examples) == 6 and examples != t.test[:6]  # a seeded subset
        with deactivate(model, sets[t.id], mode=mode):
            by_hand = evaluate(model, tok, t, examples, config=eval_cfg, progress=False)
        assert res.table.row("Deactivate-Task")[t.id] == by_hand.score
        assert res.table.matrix[t.id][t.id] == by_hand.score
        assert res.nll.row("Deactivate-Task")[t.id] == by_hand.gold_nll()
        assert res.nll.row("Original")[t.id] != by_hand.gold_nll()
        assert res.nll.row("Deactivate-Random")[t.id] != by_hand.gold_nll()


@pytest.mark.slow
def test_embedded_model_modes_agree():
    from taskneurons.models.loading import load_model

    model, tok = load_model("smollm2-135m")
    ids = tok(["The capital of France is"], return_tensors="pt").input_ids
    neurons = _random_set(model, "ffn", k=10)
    assert len(neurons) == 4608
    base = _logits(model, ids)
    before = {k: v.clone() for k, v in model.state_dict().items() if ".mlp." in k}
    with deactivate(model, neurons, mode="activation"):
        act = _logits(model, ids)
    with deactivate(model, neurons, mode="parameters"):
        par = _logits(model, ids)
    torch.testing.assert_close(act, par, atol=1e-4, rtol=1e-4)
    assert (act - base).abs().max() > 1e-2
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())


def test_the_deactivate_stage_offers_exactly_the_intervention_modes():
    import typing

    from taskneurons.experiments.specificity.deactivate_stage import DeactivationMode
    from taskneurons.neurons.intervention import MODES

    assert typing.get_args(DeactivationMode) == MODES


def test_mean_mode_holds_the_selected_units_at_their_values():
    model = _model("llama")
    space = NeuronSpace(model, "ffn")
    neurons = NeuronSet.from_neurons(space, [(1, "ffn", 0), (1, "ffn", 42)])
    values = space.zeros(torch.float32)
    values["ffn"][1, 0], values["ffn"][1, 42], values["ffn"][1, 5] = 0.75, -2.0, 9.0
    means = NeuronScores("ffn", values)
    seen = {}
    down = model.model.layers[1].mlp.down_proj
    probe = down.register_forward_pre_hook(lambda m, a: seen.__setitem__("plain", a[0]))
    _logits(model, _ids(model))
    probe.remove()
    before = _state(model)
    with deactivate(model, neurons, mode="mean", values=means):
        probe = down.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
        try:
            _logits(model, _ids(model))
        finally:
            probe.remove()
    x, plain = seen["x"], seen["plain"]  # [batch, pos, d_ff]
    assert torch.all(x[..., 0] == 0.75) and torch.all(x[..., 42] == -2.0)
    keep = [u for u in range(x.shape[-1]) if u not in (0, 42)]  # unit 5 is not in the set
    assert torch.equal(x[..., keep], plain[..., keep])
    _assert_same_state(model, before)
    assert _hooks(model) == _hooks(_model("llama"))  # nothing left behind
    zeros = NeuronScores("ffn", space.zeros(torch.float32))
    ids = _ids(model)
    with deactivate(model, neurons, mode="mean", values=zeros):
        held_at_zero = _logits(model, ids)
    with deactivate(model, neurons):
        torch.testing.assert_close(held_at_zero, _logits(model, ids))  # = zero ablation
    with pytest.raises(ValueError, match="mode 'mean' needs"):
        zero_neurons(model, neurons, mode="mean")
    wrong = NeuronScores("ffn", {"ffn": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match="do not fit"):
        zero_neurons(model, neurons, mode="mean", values=wrong)


def test_mean_activation_is_the_average_over_the_tokens():
    from taskneurons.data.prompts import iter_batches
    from taskneurons.neurons.activation_probability import mean_activation

    model, tok = _model("llama"), tiny_tokenizer()
    task = tiny_tasks(6)[0]
    space = NeuronSpace(model, "ffn")
    batches = list(iter_batches(tok, task, task.train, PromptConfig(max_length=48), 16))
    means = mean_activation(model, batches, space)
    acts = []  # oracle: the W2 inputs of every layer over every real token, averaged by hand
    hooks = [
        layer.mlp.down_proj.register_forward_pre_hook(lambda m, a, i=i: acts.append((i, a[0])))
        for i, layer in enumerate(model.model.layers)
    ]
    batch = batches[0]
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for h in hooks:
        h.remove()
    real = batch["attention_mask"].bool()  # [batch, pos]
    for layer, x in acts:  # x: [batch, pos, d_ff]
        expected = x[real].mean(dim=0)  # [d_ff]
        torch.testing.assert_close(means.scores["ffn"][layer], expected, rtol=1e-5, atol=1e-6)
    assert means.meta["kind"] == "mean_activation"
