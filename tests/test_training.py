"""Training loop: NeuronDelta training == masked full training, resume, LoRA/full, bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import iter_batches
from taskneurons.data.tasks import Example, Task
from taskneurons.losses import per_example_loss
from taskneurons.neurons.neuron_set import NeuronSet, NeuronSetMismatchError
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint
from taskneurons.testing.oracles import masked_gradient_hooks
from taskneurons.training.loop import TrainOptions, train
from taskneurons.training.methods import TRAIN_METHODS, make_method
from taskneurons.training.neuron_delta import NeuronDelta, selection_masks
from taskneurons.training.train_config import METHODS, TrainConfig

from tiny_models import tiny_model

# one torch thread (conftest.py): tiny models run far faster so on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = PromptConfig(max_length=48)
_ADJ = {
    "positive": ["good", "great", "fun", "funny"],
    "negative": ["bad", "awful", "boring", "sad"],
}
_NOUN = ["movie", "film", "book", "food", "story", "plot", "acting", "music"]


def toy_task(task_id: str = "toy", n: int = 10, seed: int = 0, kind: str = "sentiment") -> Task:
    """A tiny classification task in the tiny tokenizer's vocabulary."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        label = ["positive", "negative"][i % 2]
        adj = _ADJ[label][int(torch.randint(4, (1,), generator=g))]
        noun = _NOUN[int(torch.randint(8, (1,), generator=g))]
        if kind == "sentiment":
            examples.append(Example(f"the {noun} was very {adj}", label))
        else:  # a second task with other answers
            examples.append(Example(f"I {adj} this {noun}", "yes" if i % 2 else "no"))
    labels = ["positive", "negative"] if kind == "sentiment" else ["yes", "no"]
    return Task(
        id=task_id,
        kind="classification",
        instruction="Classify the sentiment of the text",
        labels=labels,
        metric="accuracy",
        train=examples,
        test=examples[:2],
    )


def random_set(model, definition: str, frac: float = 0.3, seed: int = 0) -> NeuronSet:
    space = NeuronSpace(model, definition)
    g = torch.Generator().manual_seed(seed)
    masks = {m: torch.rand(space.shape(m), generator=g) < frac for m in space.modules}
    masks[space.modules[0]][0, 0] = True
    return NeuronSet(definition, masks, {"model_fingerprint": model_fingerprint(model)})


def clone_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def param_state(model) -> dict[str, torch.Tensor]:
    """Parameters by ``named_parameters`` name (tied weights once)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def cfg(**kw) -> TrainConfig:
    base = dict(lr=3e-2, epochs=1, batch_size=4, prompt=PROMPT, warmup_ratio=0.0)
    base.update(kw)
    return TrainConfig(**base)


ORACLE_CASES = [
    ("gpt2", "ffn", "adamw"),
    ("gpt2", "linear", "sgd"),
    ("llama", "ffn", "sgd"),
    ("llama", "linear", "adamw"),
    ("opt", "ffn", "adamw"),
    ("phi3", "ffn", "sgd"),
    ("phi3", "linear", "adamw"),
]


@pytest.mark.parametrize(("family", "definition", "optimizer"), ORACLE_CASES)
def test_neuron_training_equals_masked_full_training(tok, family, definition, optimizer):
    """Oracle: full training with gradients masked to the NeuronSet's slices, same data/seed.

    AdamW runs with weight_decay=0: its decoupled decay would also shrink the masked (frozen)
    entries of a full parameter, and on a delta it decays towards the base weights, not 0.
    Clipping is on (small max_grad_norm) and sees the same global norm in both runs, since the
    masked gradients are exactly the deltas' gradients.
    """
    task = toy_task(n=10)
    config = cfg(
        optimizer=optimizer,
        lr=3e-2 if optimizer == "adamw" else 0.5,
        momentum=0.9 if optimizer == "sgd" else 0.0,
        weight_decay=0.0,
        max_grad_norm=0.5,
        epochs=2,
        grad_accum=2,
        batch_size=2,
        schedule="cosine",
        warmup_ratio=0.2,
    )
    a = tiny_model(family)
    base = param_state(a)
    neurons = random_set(a, definition)
    res_a = train(a, tok, task, config, neurons=neurons, progress=False)
    assert res_a.delta is not None and res_a.delta.attached
    # before merging, the base weights are untouched
    assert all(torch.equal(base[n], p) for n, p in a.named_parameters())
    res_a.delta.merge()

    b = tiny_model(family)
    handles = masked_gradient_hooks(b, neurons)
    res_b = train(
        b, tok, task, TrainConfig(**{**config.to_dict(), "method": "full"}), progress=False
    )
    for h in handles:
        h.remove()
    assert res_a.steps == res_b.steps == 6  # 10 examples, 4 per step, 2 epochs
    torch.testing.assert_close(res_a.final_loss, res_b.final_loss, rtol=1e-4, atol=1e-5)

    masks = selection_masks(a, neurons)
    changed = 0
    for n, pa in a.named_parameters():
        pb = dict(b.named_parameters())[n]
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-5, msg=n)
        keep = ~masks[n] if n in masks else torch.ones_like(pa, dtype=torch.bool)
        # every entry outside the NeuronSet is bit-identical in both runs
        assert torch.equal(pa[keep], base[n][keep]), n
        assert torch.equal(pb[keep], base[n][keep]), n
        if n in masks:
            changed += int((pa[masks[n]] != base[n][masks[n]]).sum())
    assert (
        changed > 0.5 * res_a.n_trainable
    )  # training moved the selected entries (ReLU: dead units stay)
    assert res_a.n_trainable == sum(int(m.sum()) for m in masks.values())


def test_unselected_parameters_bit_identical_and_outputs_reproduced(tok, tmp_path):
    """After training and after merge nothing outside the set moves; saved deltas reproduce."""
    task = toy_task(n=8)
    model = tiny_model("llama")
    before = clone_state(model)
    neurons = random_set(model, "ffn", frac=0.2)
    res = train(model, tok, task, cfg(epochs=2), neurons=neurons, out_dir=tmp_path, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    batch = next(iter_batches(tok, task, task.train, PROMPT, batch_size=4))
    with torch.no_grad():
        trained = model(input_ids=batch["input_ids"]).logits
        res.delta.merge()
        merged = model(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(trained, merged, rtol=1e-5, atol=1e-5)
    masks = selection_masks(model, neurons)
    for k, v in model.state_dict().items():
        keep = ~masks[k] if k in masks else torch.ones_like(v, dtype=torch.bool)
        assert torch.equal(v[keep], before[k][keep]), k
    res.delta.unmerge()
    res.delta.detach()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    # the delta saved by train() applied to a fresh model gives the trained outputs
    fresh = tiny_model("llama")
    NeuronDelta.load(tmp_path / "delta", fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=batch["input_ids"]).logits, trained)
    # files beside the results
    config = json.loads((tmp_path / "train_config.json").read_text())
    assert config["config"]["method"] == "neurons" and config["tasks"][0]["id"] == "toy"
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["grad_norm"] is not None for r in log)
    summary = json.loads((tmp_path / "train_result.json").read_text())
    assert summary["steps"] == 4 and summary["n_trainable"] == res.n_trainable


class _Interrupt(RuntimeError):
    pass


@pytest.mark.parametrize(
    ("method", "family", "optimizer"),
    [("neurons", "gpt2", "adamw"), ("full", "opt", "sgd"), ("lora", "llama", "adamw")],
)
def test_resume_equals_uninterrupted_run(tok, tmp_path, method, family, optimizer):
    task = toy_task(n=12)
    config = cfg(
        method=method,
        optimizer=optimizer,
        momentum=0.9 if optimizer == "sgd" else 0.0,
        lr=1e-2,
        max_steps=6,
        batch_size=3,
        warmup_ratio=0.3,
        schedule="cosine",
        checkpoint_every=3,
        lora_dropout=0.1 if method == "lora" else 0.0,  # exercises the RNG state
    )

    def run(model, out, **kw):
        neurons = random_set(model, "ffn") if method == "neurons" else None
        options = TrainOptions(**kw)
        return train(
            model, tok, task, config, neurons=neurons, out_dir=out, progress=False, options=options
        )

    ref = run(tiny_model(family), tmp_path / "ref")

    def stop_at_4(step, record):
        if step == 4:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run(tiny_model(family), tmp_path / "cut", on_step=stop_at_4)
    resumed = run(tiny_model(family), tmp_path / "cut", resume=True)
    assert resumed.resumed_from == 3 and resumed.steps == 6
    assert [r["step"] for r in resumed.history] == [4, 5, 6]
    if method == "neurons":
        for n, t in ref.delta.state_dict().items():
            assert torch.equal(resumed.delta.state_dict()[n], t), n
    else:
        ref_state, res_state = ref.model.state_dict(), resumed.model.state_dict()
        assert all(torch.equal(ref_state[k], v) for k, v in res_state.items())
    assert resumed.final_loss == ref.final_loss
    log = [json.loads(x) for x in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]  # step 4 of the cut run dropped
    # a config change that matters is refused
    other = TrainConfig(**{**config.to_dict(), "lr": 5e-2})
    with pytest.raises(ValueError, match="config differs"):
        train(
            tiny_model(family),
            tok,
            task,
            other,
            out_dir=tmp_path / "cut",
            options=TrainOptions(resume=True),
            neurons=random_set(tiny_model(family), "ffn") if method == "neurons" else None,
        )


def test_full_and_lora_change_the_model(tok):
    from peft import PeftModel

    task = toy_task(n=8)
    batch = next(iter_batches(tok, task, task.train, PROMPT, batch_size=4))

    full = tiny_model("gpt2")
    base_logits = full(input_ids=batch["input_ids"]).logits.detach()
    res = train(full, tok, task, cfg(method="full", epochs=2, lr=1e-2), progress=False)
    assert res.n_trainable == res.n_params == sum(p.numel() for p in full.parameters())
    assert res.delta is None
    after = full(input_ids=batch["input_ids"]).logits.detach()
    assert not torch.allclose(after, base_logits, atol=1e-3)
    assert res.history[-1]["loss"] < res.history[0]["loss"]

    model = tiny_model("llama")
    base = clone_state(model)
    res = train(model, tok, task, cfg(method="lora", epochs=2, lora_r=2, lr=2e-2), progress=False)
    peft_model = res.model
    assert isinstance(peft_model, PeftModel)
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert res.n_trainable == trainable > 0
    # r=2 on every linear but the LM head: q,k,v,o,gate,up,down of 2 layers
    wrapped = {n.split(".")[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert res.n_trainable < 0.2 * res.n_params
    lora_logits = peft_model(input_ids=batch["input_ids"]).logits.detach()
    merged = peft_model.merge_and_unload()
    assert not isinstance(merged, PeftModel)
    torch.testing.assert_close(merged(input_ids=batch["input_ids"]).logits, lora_logits)
    assert not torch.allclose(lora_logits, tiny_model("llama")(input_ids=batch["input_ids"]).logits)
    assert any(not torch.equal(base[k], v) for k, v in merged.state_dict().items())

    # merge=True returns the merged plain model
    res = train(
        tiny_model("phi3"),
        tok,
        task,
        cfg(method="lora", lora_r=2, lora_targets=["down_proj"], merge=True),
        progress=False,
    )
    assert not isinstance(res.model, PeftModel)
    assert res.n_trainable == 2 * 2 * (80 + 32)  # 2 layers x r=2 x (in + out) of down_proj


def test_multitask_pools_and_seeds(tok):
    tasks = [toy_task("a", n=6), toy_task("b", n=5, kind="other")]
    config = cfg(method="full", batch_size=4, lr=1e-2)
    r1 = train(tiny_model("opt"), tok, tasks, config, progress=False)
    assert r1.steps == 3 and sum(r["examples"] for r in r1.history) == 11
    r2 = train(tiny_model("opt"), tok, tasks, config, progress=False)
    assert [r["loss"] for r in r1.history] == [r["loss"] for r in r2.history]
    r3 = train(
        tiny_model("opt"),
        tok,
        tasks,
        TrainConfig(**{**config.to_dict(), "seed": 1}),
        progress=False,
    )
    assert [r["loss"] for r in r1.history] != [r["loss"] for r in r3.history]


def test_per_example_loss_is_answer_token_mean(tok):
    model = tiny_model("llama")
    task = toy_task(n=3)
    batch = next(iter_batches(tok, task, task.train, PROMPT, batch_size=3))
    losses = per_example_loss(model, batch)
    assert losses.shape == (3,)
    for i in range(3):
        n = int(batch["attention_mask"][i].sum())
        out = model(
            input_ids=batch["input_ids"][i : i + 1, :n], labels=batch["labels"][i : i + 1, :n]
        )
        torch.testing.assert_close(losses[i], out.loss, rtol=1e-5, atol=1e-6)


def test_bad_input(tok):
    model = tiny_model("llama")
    task = toy_task(n=4)
    no_train = Task(
        "empty", "classification", "x", ["a", "b"], "accuracy", train=[], test=task.test
    )
    with pytest.raises(ValueError, match="'empty' has no train split"):
        train(model, tok, no_train, cfg(method="full"), progress=False)
    with pytest.raises(NeuronSetMismatchError):  # a set for another model (layout)
        train(model, tok, task, cfg(), neurons=random_set(tiny_model("gpt2"), "ffn"))
    with pytest.raises(NeuronSetMismatchError, match="another model"):  # other weights
        train(model, tok, task, cfg(), neurons=random_set(tiny_model("llama", seed=2), "ffn"))
    with pytest.raises(ValueError, match="selects no neurons"):
        train(model, tok, task, cfg(), neurons=NeuronSet.empty(NeuronSpace(model, "ffn")))
    with pytest.raises(ValueError, match="needs a NeuronSet"):
        train(model, tok, task, cfg())
    with pytest.raises(ValueError, match="only used by method 'neurons'"):
        train(model, tok, task, cfg(method="full"), neurons=random_set(model, "ffn"))
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        train(model, tok, task, cfg(method="full"), options=TrainOptions(resume=True))
    for bad in (
        {"method": "adapter"},
        {"optimizer": "adam"},
        {"schedule": "step"},
        {"lr": 0},
        {"warmup_ratio": 1.0},
        {"grad_accum": 0},
        {"delta_dtype": "int8"},
        {"save_dtype": "int64"},
    ):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown key 'learning_rate'"):
        TrainConfig.from_dict({"lr": 1e-3, "learning_rate": 1e-3})
    # nothing above touched the model
    assert all(p.requires_grad for p in model.parameters())


def test_method_table_dispatch_and_restore():
    """One class per TrainConfig method; full/neurons set-ups undo their requires_grad flags."""
    assert tuple(TRAIN_METHODS) == METHODS
    for name in METHODS:
        neurons = random_set(tiny_model("llama"), "ffn") if name == "neurons" else None
        method = make_method(cfg(method=name), neurons)
        assert type(method) is TRAIN_METHODS[name] and method.name == name
    model = tiny_model("llama")
    model.get_input_embeddings().weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    for name, neurons in (("full", None), ("neurons", random_set(model, "ffn"))):
        method = make_method(cfg(method=name), neurons)
        named = method.setup(model, neurons)
        assert named and all(p.requires_grad for _, p in named)
        method.restore()
        assert [p.requires_grad for p in model.parameters()] == flags
        if method.delta is not None:
            method.delta.detach()


DIST_SCRIPT = """
import os, sys
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from accelerate import Accelerator
from taskneurons.training.loop import TrainConfig, TrainOptions, train
from test_training import PROMPT, random_set, toy_task
from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

acc = Accelerator(cpu=True)
tok = tiny_tokenizer()
task = toy_task(n=10)
# steps of 6 examples in micro-batches of 3: the last step's second micro-batch has 1 example,
# so one process has nothing to do in it
cfg = dict(lr=0.2, max_steps=3, batch_size=3, grad_accum=2, prompt=PROMPT, optimizer="sgd")
out = {{}}
model = tiny_model("llama")
res = train(model, tok, task, TrainConfig(**cfg), neurons=random_set(model, "ffn"),
            options=TrainOptions(accelerator=acc), progress=False)
out["delta"] = res.delta.state_dict()
out["loss"] = [r["loss"] for r in res.history]
model = tiny_model("gpt2")
res = train(model, tok, task, TrainConfig(method="full", **cfg),
            options=TrainOptions(accelerator=acc), progress=False)
out["full"] = dict(model.state_dict())
if acc.is_main_process:
    torch.save(out, Path(os.environ["TN_OUT"]) / f"train_{{acc.num_processes}}.pt")
acc.wait_for_everyone()
acc.end_training()  # destroys the process group: no abort at interpreter exit
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    """torchrun --nproc_per_node 2 (Accelerate, gloo) trains like one process."""
    script = tmp_path / "dist_train.py"
    script.write_text(textwrap.dedent(DIST_SCRIPT.format(tests=str(Path(__file__).parent))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TN_OUT": str(tmp_path)}
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    two += ["--master_port", str(_free_port()), str(script)]
    for cmd in (two, [sys.executable, str(script)]):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    one, two_ = (torch.load(tmp_path / f"train_{n}.pt") for n in (1, 2))
    torch.testing.assert_close(two_["loss"], one["loss"], rtol=1e-5, atol=1e-6)
    for key in ("delta", "full"):
        assert one[key].keys() == two_[key].keys()
        for n, t in one[key].items():
            torch.testing.assert_close(two_[key][n], t, rtol=1e-5, atol=1e-6, msg=f"{key} {n}")
    assert any(t.abs().sum() > 0 for t in one["delta"].values())


@pytest.mark.slow
def test_embedded_model_neuron_training(tmp_path, shared_data):
    """SmolLM2-135M, 10% of its ffn neurons, 1 step on 4 real sst2 examples."""
    from taskneurons.data.load import load_task
    from taskneurons.models.loading import load_model

    model, tok = load_model("smollm2-135m")
    task = load_task(shared_data / "sst2").limit(n_train=4, n_test=1, seed=0)
    space = NeuronSpace(model, "ffn")
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(space.size, generator=g)[: space.size // 10]
    neurons = NeuronSet.from_ids(space, pick, {"model_fingerprint": model_fingerprint(model)})
    before = {k: v.clone() for k, v in model.state_dict().items() if ".mlp." in k}
    config = TrainConfig(lr=1e-3, max_steps=1, batch_size=4, prompt=PromptConfig(max_length=96))
    res = train(model, tok, task, config, neurons=neurons, out_dir=tmp_path, progress=False)
    assert res.n_trainable == len(neurons) * 3 * 576  # gate row + up row + down column
    assert res.final_loss is not None and 0 < res.final_loss < 20
    size = (tmp_path / "delta" / "delta.safetensors").stat().st_size
    assert 4 * res.n_trainable < size < 4 * res.n_trainable + 2_000_000  # float32 deltas
    # bfloat16 storage: 2 bytes per value (16 MB for 10 % of the neurons)
    half = res.delta.save(tmp_path / "delta-bf16", dtype=torch.bfloat16).stat().st_size
    assert abs(size - half - 2 * res.n_trainable) <= 64
    print(f"delta file: {size / 1e6:.1f} MB float32, {half / 1e6:.1f} MB bfloat16")
    ids = tok(["The movie was great. Sentiment:"], return_tensors="pt").input_ids
    with torch.no_grad():
        hooked = model(input_ids=ids).logits
        res.delta.merge()
        merged = model(input_ids=ids).logits
        res.delta.unmerge()
    torch.testing.assert_close(hooked, merged, rtol=1e-4, atol=1e-4)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
