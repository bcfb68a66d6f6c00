"""Training under activation checkpointing (``TrainConfig(checkpointing=True)``, issue 26).

* The trained values with checkpointing are **bit-identical** to those without, for the
  ``neurons`` (delta and masked update), ``full`` and ``lora`` methods and given tensors
  (``TrainOptions.params``, as the continual methods train their adapters): on CPU the recomputed
  forward of a layer runs the same kernels on the same inputs in the same order, so it gives
  the same bits, and the backward then runs the same operations on them (dropout is 0 in the
  tiny models; under dropout PyTorch's checkpoint replays the RNG state).
* The layers really run twice (a forward pre-hook on a layer's down projection counts 2
  calls per micro-batch instead of 1), and the NeuronDelta's hooks are registered once: the
  recomputed forward fires the same hook again, not a second copy of it.
* Untrained parameters stay bit-identical; after the run, and after ``trained(...)``, the model
  is as before: tensors, ``requires_grad`` flags, attributes, the modules' checkpointing flags
  and the embeddings' forward hooks (Transformers' ``enable_input_require_grads`` ones removed).
* A model that cannot be checkpointed is refused with one line before training.
* ``taskneurons estimate`` counts a checkpointed training job at the checkpointed
  attribution rate (0.73x) and with each layer's input kept instead of its activations.
"""

from __future__ import annotations

import pytest
import torch

from taskneurons.experiments.estimate.cost_model import job_peak, job_seconds
from taskneurons.experiments.estimate.devices import CHECKPOINT_SLOWDOWN, device
from taskneurons.experiments.estimate.shapes import model_shape
from taskneurons.experiments.estimate.work import TaskSize, training_job
from taskneurons.models.adapters import get_adapter
from taskneurons.training.loop import TrainOptions, train
from taskneurons.training.train_config import TrainConfig
from taskneurons.training.trained import trained
from test_trained import assert_same, everything
from test_training import cfg, random_set, toy_task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

#: (method, family, extra config)
CASES = [
    ("neurons", "llama", {}),
    ("neurons", "gpt2", {"optimizer": "sgd", "lr": 0.5}),
    ("neurons", "llama", {"neuron_update": "masked"}),
    ("full", "llama", {}),
    ("lora", "gpt2", {"lora_r": 2}),
    ("params", "llama", {}),
]


def checkpoint_state(model) -> list:
    """Every module's checkpointing attributes and the embeddings' forward hooks."""
    attrs = ("gradient_checkpointing", "_gradient_checkpointing_func")
    state = [(n, a, vars(m)[a]) for n, m in model.named_modules() for a in attrs if a in vars(m)]
    return state + [list(model.get_input_embeddings()._forward_hooks)]


def _trained_values(family: str, method: str, extra: dict, checkpointing: bool):
    """``(trained tensors, forward calls of layer 0's W2, untrained params equal)``."""
    model = tiny_model(family)
    before, ckpt_before = everything(model), checkpoint_state(model)
    neurons = random_set(model, "ffn") if method == "neurons" else None
    options = None
    if method == "params":  # given tensors (the continual methods' adapters): layer 1's FFN
        method, params = "full", {n: p for n, p in model.named_parameters() if ".1.mlp." in n}
        options = TrainOptions(params=params)
    config = cfg(method=method, max_steps=3, checkpointing=checkpointing, **extra)
    calls = []
    # a pre-hook: PyTorch stops a recomputation once it has what the backward needs
    # (early stop), which may be before a module's forward hooks would run
    handle = get_adapter(model).w2(0).register_forward_pre_hook(lambda *a: calls.append(1))
    task = toy_task(n=12)
    with trained(
        model, _tok(), task, config, neurons=neurons, progress=False, options=options
    ) as res:
        assert checkpoint_state(model) == ckpt_before  # checkpointing is off again
        if res.delta is not None:
            values = {k: v.clone() for k, v in res.delta.state_dict().items()}
            untouched = all(
                torch.equal(p, before["params"][n]) for n, p in model.named_parameters()
            )
        else:
            values = {n: p.detach().clone() for n, p in res.model.named_parameters()}
            untouched = options is None or all(
                torch.equal(p, before["params"][n])
                for n, p in model.named_parameters()
                if n not in options.params
            )
    handle.remove()
    assert_same(model, before)
    assert checkpoint_state(model) == ckpt_before
    return values, len(calls), untouched


def _tok():
    from tiny_tokenizer import tiny_tokenizer

    return tiny_tokenizer()


@pytest.mark.parametrize(("method", "family", "extra"), CASES)
def test_checkpointed_training_gives_the_same_bits(method, family, extra):
    plain, n_plain, untouched_plain = _trained_values(family, method, extra, False)
    ckpt, n_ckpt, untouched_ckpt = _trained_values(family, method, extra, True)
    assert n_plain == 3 and n_ckpt == 6  # 3 micro-batches; each layer runs again in backward
    assert untouched_plain and untouched_ckpt
    assert plain.keys() == ckpt.keys()
    assert any(float(v.abs().max()) > 0 for v in plain.values())
    for name, value in plain.items():
        assert torch.equal(ckpt[name], value), name


def test_delta_hooks_registered_once_under_recomputation(tok):
    model = tiny_model("llama")
    neurons = random_set(model, "ffn")
    config = cfg(max_steps=1, checkpointing=True)
    down = get_adapter(model).w2(0)
    res = train(model, tok, toy_task(n=4), config, neurons=neurons, progress=False)
    assert len(down._forward_hooks) == 1  # the delta's hook, once
    res.delta.detach()
    assert len(down._forward_hooks) == 0


def test_caller_checkpointing_kept(tok):
    model = tiny_model("llama")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    state = checkpoint_state(model)
    with trained(model, tok, toy_task(n=4), cfg(method="full", max_steps=1, checkpointing=True)):
        pass
    assert checkpoint_state(model) == state
    assert model.is_activation_checkpointing


def test_model_without_checkpointing_refused(tok):
    model = tiny_model("llama")
    model.supports_gradient_checkpointing = False
    before = everything(model)
    config = cfg(method="full", max_steps=1, checkpointing=True)
    with pytest.raises(ValueError) as err:
        train(model, tok, toy_task(n=4), config, progress=False)
    assert str(err.value) == (  # docs/bad-inputs.md
        "checkpointing: LlamaForCausalLM does not support activation checkpointing "
        "(supports_gradient_checkpointing is not set); train it with checkpointing: false"
    )
    assert_same(model, before)


def test_estimate_counts_checkpointed_training():
    """A training job with ``train.checkpointing``: the attribution rate ratio, less memory."""
    shape = model_shape("meta-llama/Llama-2-7b-hf")
    size = TaskSize("t", "classification", 1000, 100, 400.0, 2.0, 2, 1, 3)
    dev = device("h100")
    for method in ("neurons", "full", "lora"):
        jobs = {
            flag: training_job([size], None, TrainConfig(method=method, checkpointing=flag), 10**6)
            for flag in (False, True)
        }
        assert jobs[True].checkpointing and not jobs[False].checkpointing
        t = {f: job_seconds(j, shape, dev, 2) - j.n * dev.rates[j.kind].overhead_s
             for f, j in jobs.items()}  # fmt: skip
        assert t[True] == pytest.approx(t[False] / CHECKPOINT_SLOWDOWN)
        assert job_peak(jobs[True], shape, 2) < job_peak(jobs[False], shape, 2) / 4
