"""The training loop's hooks (TrainOptions): given tensors, a regulariser, a failed run."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from taskneurons.continual.lora import AdapterStack
from taskneurons.training.loop import TrainOptions, train
from taskneurons.training.methods import lora_config
from test_training import cfg, random_set, toy_task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def lora_tensors(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_given_params_train_like_the_lora_method(tok):
    """``params`` = the LoRA tensors of a PEFT model built as the lora method builds it: the
    same training, bit for bit (same seed, data order, optimizer and steps)."""
    config = cfg(method="lora", lora_r=2, max_steps=3, batch_size=3, grad_accum=2, lr=1e-2)
    task = toy_task(n=10)
    ref = train(tiny_model("llama"), tok, task, config, progress=False)

    torch.manual_seed(config.seed)  # what the lora method does before get_peft_model
    peft = get_peft_model(tiny_model("llama"), lora_config(config))
    params = {n: p for n, p in peft.named_parameters() if p.requires_grad}
    res = train(peft, tok, task, config, progress=False, options=TrainOptions(params=params))
    assert res.n_trainable == ref.n_trainable and res.steps == ref.steps == 3
    assert [r["loss"] for r in res.history] == [r["loss"] for r in ref.history]
    expected = lora_tensors(ref.model)
    assert expected.keys() == lora_tensors(peft).keys()
    for n, t in lora_tensors(peft).items():
        assert torch.equal(t, expected[n]), n
    assert res.final_regulariser is None and "regulariser" not in res.history[-1]


def test_one_adapter_of_a_stack_trains_alone(tok):
    stack = AdapterStack(tiny_model("llama"), cfg(lora_r=2))
    stack.add("task0", seed=0)
    stack.add("task1", seed=1)
    stack.activate(["task0", "task1"], trainable="task1")
    with torch.no_grad():  # B = 0 at init: give task0 a visible output
        for p in stack.parameters("task0").values():
            p.normal_(0, 0.1)
    before = {n: p.detach().clone() for n, p in stack.peft.named_parameters()}
    summary = stack.train_adapter("task1", tok, toy_task(n=8), cfg(max_steps=2, lr=5e-2))
    assert summary["steps"] == 2 and summary["final_regulariser"] is None
    assert summary["n_trainable"] == sum(p.numel() for p in stack.parameters("task1").values())
    own = stack.parameters("task1")
    for n, p in stack.peft.named_parameters():
        if n not in own:  # task0 and the base weights: untouched
            assert torch.equal(p, before[n]), n
    assert all(not torch.equal(p, before[n]) for n, p in own.items() if "lora_B" in n)


def test_regulariser_equals_sgd_weight_decay(tok):
    """``regulariser = wd/2 * sum ||p||^2`` adds ``wd * p`` to every gradient, as SGD's
    ``weight_decay`` does: the two runs agree (torch's optimizer is the oracle)."""
    wd, task = 0.3, toy_task(n=8)
    base = dict(method="full", optimizer="sgd", lr=5e-2, max_steps=3, max_grad_norm=None)
    decayed = tiny_model("gpt2")
    train(decayed, tok, task, cfg(**base, weight_decay=wd), progress=False)

    model = tiny_model("gpt2")
    params = list(model.parameters())

    def penalty():
        return wd / 2 * sum(p.pow(2).sum() for p in params)  # scalar

    res = train(
        model, tok, task, cfg(**base), progress=False, options=TrainOptions(regulariser=penalty)
    )
    for (n, p), q in zip(model.named_parameters(), decayed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
    assert res.final_regulariser == pytest.approx(res.history[-1]["regulariser"])
    assert res.final_regulariser > 0
    # and without the penalty the weights end elsewhere
    plain = tiny_model("gpt2")
    train(plain, tok, task, cfg(**base), progress=False)
    assert not all(
        torch.allclose(p, q) for p, q in zip(plain.parameters(), decayed.parameters(), strict=True)
    )


def test_params_exclude_neurons(tok):
    model = tiny_model("llama")
    params = dict(model.named_parameters())
    with pytest.raises(ValueError, match="exclude each other"):
        train(
            model, tok, toy_task(), cfg(), neurons=random_set(model, "ffn"),
            options=TrainOptions(params=params),
        )  # fmt: skip


class _Stop(Exception):
    pass


def test_a_failed_neuron_run_leaves_the_base_model(tok):
    """A run that raises (here in on_step) takes its NeuronDelta hooks off again."""
    model = tiny_model("llama")
    ids = torch.tensor([[1, 5, 9, 17]])
    with torch.no_grad():
        before = model(input_ids=ids).logits  # [1, 4, vocab]

    def stop(step, record):
        raise _Stop

    with pytest.raises(_Stop):
        train(
            model, tok, toy_task(n=8), cfg(max_steps=3), neurons=random_set(model, "ffn"),
            progress=False, options=TrainOptions(on_step=stop),
        )  # fmt: skip
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)


def test_one_lora_config_for_the_method_and_the_stack(tok):
    config = cfg(method="lora", lora_r=3, lora_alpha=6.0, lora_dropout=0.1, max_steps=1)
    built = lora_config(config)
    assert (built.r, built.lora_alpha, built.lora_dropout) == (3, 6.0, 0.1)
    assert built.target_modules == "all-linear" and built.bias == "none"
    assert built.task_type == "CAUSAL_LM"
    assert set(lora_config(config.replace(lora_targets=["q_proj"])).target_modules) == {"q_proj"}
    res = train(tiny_model("llama"), tok, toy_task(n=4), config, progress=False)
    stack = AdapterStack(tiny_model("llama"), config)
    stack.add("task0", seed=0)
    ours, theirs = res.model.peft_config["default"], stack.peft.peft_config["task0"]
    for key in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "task_type"):
        assert getattr(ours, key) == getattr(theirs, key), key
    wrapped = {n for n, m in res.model.get_base_model().named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(stack.matrices("task0"))
