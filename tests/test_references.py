"""Independent references: Captum's gradient x activation on every family, experiment invariants.

* Captum (``LayerGradientXActivation``) computes ``g * a`` at the same sites as
  :func:`relevance_scores`, with a loss written here from the full logits, and must give the
  same scores on a tiny model of every family of the adapter table, for both neuron
  definitions; with frozen parameters too (it needs no parameter gradient).
* A neuron-training experiment leaves every base weight bit-identical.
* CI fails (instead of skipping) the real-data tests when the shared data is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from captum.attr import LayerGradientXActivation

from taskneurons.experiments.run_context import RunContext
from taskneurons.models.adapters import ADAPTER_TABLE, supported_families
from taskneurons.neurons.attribution import relevance_scores
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.neurons.space import NeuronSpace

from test_attribution import random_batches
from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

# one torch thread (conftest.py): tiny models run far faster so on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def answer_nll(model):
    """``f(input_ids, attention_mask, labels)``: each example's mean answer-token NLL, ``[batch]``.

    Written from the full logits (every position, no ``logits_to_keep``), independently of
    ``taskneurons.losses``; Captum differentiates the sum of its entries.
    """

    def forward(input_ids, attention_mask, labels):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [batch, pos-1, vocab]
        targets = labels[:, 1:]  # [batch, pos-1]
        valid = targets != -100
        nll = -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * valid
        return nll.sum(dim=1) / valid.sum(dim=1)  # [batch]

    return forward


def captum_scores(model, batches, definition: str) -> dict[str, torch.Tensor]:
    """``mean_examples |sum_tokens g*a|`` per module, float64 ``[layers, units]``, by Captum.

    The sites come from the adapter table's declarative spec (the W2 input for ``ffn``, each
    FFN linear's output for ``linear``), found with ``get_submodule``, not through NeuronSpace.
    """
    (spec,) = [s for s in ADAPTER_TABLE if model.config.model_type in s.model_types]
    n_layers = len(model.get_submodule(spec.layers))
    if definition == "ffn":
        sites = {"ffn": ([lin for lin in spec.linears if lin.name == spec.w2][0].path, True)}
    else:
        sites = {lin.name: (lin.path, False) for lin in spec.linears}
    forward = answer_nll(model)
    n_examples = sum(int(b["input_ids"].shape[0]) for b in batches)
    out = {}
    for name, (path, to_input) in sites.items():
        layers = [model.get_submodule(f"{spec.layers}.{i}.{path}") for i in range(n_layers)]
        method = LayerGradientXActivation(forward, layers)
        total = None
        for b in batches:
            attrs = method.attribute(
                b["input_ids"],
                additional_forward_args=(b["attention_mask"], b["labels"]),
                attribute_to_layer_input=to_input,
            )
            mask = b["attention_mask"][..., None].double()  # [batch, pos, 1]
            per_layer = []
            for a in attrs:  # one per layer: [batch, pos, units] (OPT: [batch*pos, units])
                a = a[0] if isinstance(a, tuple) else a
                a = a.detach().double().reshape(*mask.shape[:2], -1) * mask
                per_layer.append(a.sum(dim=1).abs().sum(dim=0))  # [units]
            part = torch.stack(per_layer)  # [layers, units]
            total = part if total is None else total + part
        out[name] = total / n_examples
    return out


CASES = [
    # falcon-linear pins the in-place case: Falcon adds the attention output into
    # dense_4h_to_h's output in place, so a shared view of it would be scored wrongly
    pytest.param(family, definition, id=f"{family}-{definition}")
    for family in supported_families()
    for definition in ("ffn", "linear")
]


@pytest.mark.parametrize(("family", "definition"), CASES)
def test_scores_equal_captum(family, definition):
    model = tiny_model(family)
    batches = random_batches(model.config.vocab_size)  # 2 right-padded batches of 3
    space = NeuronSpace(model, definition)
    cfg = AttributionConfig(definition=definition)  # aggregate "example"
    ours = relevance_scores(model, batches, space, config=cfg, progress=False).scores
    with torch.enable_grad():
        trainable = captum_scores(model, batches, definition)
        model.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(False)
        frozen = captum_scores(model, batches, definition)
    assert all(p.grad is None for p in model.parameters())
    assert list(frozen) == space.modules
    for m in space.modules:
        assert frozen[m].shape == space.shape(m)
        scale = float(frozen[m].max())
        assert scale > 0  # something non-trivial is compared
        # Captum needs no trainable parameter: frozen and trainable give the same g * a
        torch.testing.assert_close(frozen[m], trainable[m], rtol=1e-6, atol=1e-9 * scale)
        torch.testing.assert_close(
            ours[m].double(), frozen[m], rtol=1e-4, atol=1e-6 * scale, msg=f"{family} {m}"
        )


def test_neuron_training_experiment_keeps_base_weights(tmp_path, monkeypatch):
    """Every parameter and buffer bit-identical after training each task's neurons (and random)."""
    import taskneurons.experiments.finetuning.table2 as nt
    import taskneurons.training.trained as training_context
    from taskneurons.data.prompt_config import PromptConfig
    from taskneurons.evaluation.eval_config import EvalConfig
    from taskneurons.neurons.selection.ranking import top_k
    from taskneurons.training.train_config import TrainConfig
    from test_intervention import tiny_tasks

    tok, tasks = tiny_tokenizer(), tiny_tasks()
    model = tiny_model("llama")
    prompt = PromptConfig(max_length=48)
    acfg = AttributionConfig(n_examples=8, prompt=prompt)
    sets = {
        t.id: top_k(relevance_scores(model, t, tokenizer=tok, config=acfg, progress=False), k=10)
        for t in tasks
    }
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    trained = []  # the runs' results, to check that training did move the deltas

    def spy(*args, **kwargs):
        trained.append(nt_train(*args, **kwargs))
        return trained[-1]

    nt_train = training_context.train  # table2 trains through trained()
    monkeypatch.setattr(training_context, "train", spy)
    config = nt.NeuronTrainingConfig(
        n_train=8,
        n_test=4,
        train=TrainConfig(lr=0.1, max_steps=2, batch_size=4, prompt=prompt),
        eval=EvalConfig(prompt=prompt, batch_size=4),
    )
    ctx = RunContext.of(model, tok, tasks, progress=False, sets=sets)
    nt.neuron_training_experiment(ctx, config, tmp_path)
    assert len(trained) == 2 * len(tasks)  # random + task neurons per task
    for res in trained:
        assert not res.delta.attached
        assert any(float(t.abs().max()) > 0 for t in res.delta.state_dict().values())
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_missing_shared_data_fails_when_required(tmp_path, monkeypatch):
    """With TASKNEURONS_REQUIRE_SHARED_DATA=1 (CI) a missing data folder fails, not skips."""
    import conftest

    find = conftest.shared_data.__wrapped__  # the fixture's function, outside pytest's cache
    monkeypatch.setenv("TASKNEURONS_SHARED_DATA", str(tmp_path / "missing"))
    monkeypatch.delenv("TASKNEURONS_REQUIRE_SHARED_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception, match="shared task data not found"):
        find()
    monkeypatch.setenv("TASKNEURONS_REQUIRE_SHARED_DATA", "0")
    with pytest.raises(pytest.skip.Exception):
        find()
    monkeypatch.setenv("TASKNEURONS_REQUIRE_SHARED_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="TASKNEURONS_REQUIRE_SHARED_DATA=1"):
        find()
    monkeypatch.setenv("TASKNEURONS_SHARED_DATA", str(tmp_path))
    assert find() == tmp_path


def test_ci_requires_shared_data():
    """.ci/run exports TASKNEURONS_REQUIRE_SHARED_DATA=1 before it runs the tests."""
    lines = (Path(__file__).parents[1] / ".ci" / "run").read_text().splitlines()
    assert lines.index("export TASKNEURONS_REQUIRE_SHARED_DATA=1") < lines.index("make test")
