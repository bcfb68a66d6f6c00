"""Relevance scores: exact against a naive reference, first-order faithful, recover planted neurons."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import EncodedExample, collate, iter_batches
from taskneurons.data.tasks import Example, Task
from taskneurons.neurons.attribution import relevance_scores
from taskneurons.neurons.attribution_config import AGGREGATES, AttributionConfig
from taskneurons.neurons.space import NeuronSpace
from taskneurons.testing.oracles import reference_relevance_scores

from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

FAMILIES = ["llama", "gpt2", "opt", "phi3"]


def random_batches(
    vocab: int, n_batches: int = 2, batch: int = 3, seed: int = 0, answer_len: int = 2
):
    """Right-padded batches of random prompts with ``answer_len`` answer tokens each."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        enc = []
        for _ in range(batch):
            n_prompt = int(torch.randint(3, 9, (1,), generator=g))
            ids = torch.randint(3, vocab, (n_prompt + answer_len,), generator=g).tolist()
            enc.append(EncodedExample(tuple(ids), n_prompt))
        out.append(collate(enc, pad_id=0))
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("definition", ["ffn", "linear"])
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_scores_equal_naive_reference(family, definition, aggregate):
    model = tiny_model(family)
    space = NeuronSpace(model, definition)
    batches = random_batches(model.config.vocab_size)
    cfg = AttributionConfig(definition=definition, aggregate=aggregate)
    ours = relevance_scores(model, batches, space, config=cfg, progress=False)
    ref = reference_relevance_scores(model, batches, space, aggregate)
    assert set(ours.scores) == set(space.modules)
    for m in space.modules:
        assert ours.scores[m].shape == space.shape(m)
        assert ours.scores[m].dtype == torch.float32
        # 1e-5 relative; for "task", signed sums can cancel to ~0, so entries far below the
        # module's largest score are compared at 1e-5 of that scale instead
        scale = float(ref[m].abs().max())
        assert scale > 0  # the test compares something non-trivial
        torch.testing.assert_close(ours.scores[m].double(), ref[m], rtol=1e-5, atol=1e-5 * scale)


def test_no_parameter_gradients_and_flags_restored():
    model = tiny_model("llama")
    model.lm_head.weight.requires_grad_(True)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    relevance_scores(model, random_batches(model.config.vocab_size), progress=False)
    assert all(p.grad is None for p in model.parameters())
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    # no hook left behind
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_scores_independent_of_batching():
    model = tiny_model("llama")
    b1 = random_batches(model.config.vocab_size, n_batches=1, batch=6)
    enc = []
    for row in range(6):
        n = int(b1[0]["attention_mask"][row].sum())
        enc.append(
            EncodedExample(
                tuple(b1[0]["input_ids"][row, :n].tolist()), int(b1[0]["answer_start"][row])
            )
        )
    b2 = [collate(enc[i : i + 2], pad_id=0) for i in range(0, 6, 2)]
    s1 = relevance_scores(model, b1, progress=False).scores["ffn"]
    s2 = relevance_scores(model, b2, progress=False).scores["ffn"]
    torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-8)


def _ragged_task(n: int = 11) -> Task:
    """Examples whose lengths differ a lot and are not in length order."""
    words = "the movie was very good and the story was fun but the acting was bad".split()
    lengths = [(i * 7) % 13 + 1 for i in range(n)]
    exs = [
        Example(" ".join(words[:k]), ["positive", "negative"][i % 2]) for i, k in enumerate(lengths)
    ]
    return Task(
        id="ragged",
        kind="classification",
        instruction="Classify the sentiment of the text",
        labels=["positive", "negative"],
        metric="accuracy",
        train=exs,
        test=exs[:2],
    )


def test_group_by_length_batches_longest_first_with_less_padding():
    tok, task = tiny_tokenizer(), _ragged_task()
    cfg = PromptConfig(max_length=64)
    plain = list(iter_batches(tok, task, task.train, cfg, batch_size=3))
    grouped = list(iter_batches(tok, task, task.train, cfg, batch_size=3, group_by_length=True))
    assert [b["input_ids"].shape[0] for b in grouped] == [3, 3, 3, 2]
    widths = [b["input_ids"].shape[1] for b in grouped]
    assert widths == sorted(widths, reverse=True)

    def rows(batches):
        out = []
        for b in batches:
            for ids, mask, labels in zip(
                b["input_ids"], b["attention_mask"], b["labels"], strict=True
            ):
                n = int(mask.sum())
                out.append((tuple(ids[:n].tolist()), tuple(labels[:n].tolist())))
        return sorted(out)

    assert rows(grouped) == rows(plain)  # the same examples, the same loss tokens
    padded = sum(b["input_ids"].numel() for b in grouped)
    assert padded < sum(b["input_ids"].numel() for b in plain)


def test_group_by_length_gives_the_same_scores():
    model, tok, task = tiny_model("llama"), tiny_tokenizer(), _ragged_task()
    prompt = PromptConfig(max_length=64)
    common = dict(batch_size=3, n_examples=None, prompt=prompt)
    grouped = relevance_scores(
        model, task, tokenizer=tok, config=AttributionConfig(**common), progress=False
    )
    plain = relevance_scores(
        model,
        task,
        tokenizer=tok,
        config=AttributionConfig(**common, group_by_length=False),
        progress=False,
    )
    assert grouped.meta["config"]["group_by_length"] is True
    assert grouped.meta["data_hash"] == plain.meta["data_hash"]
    torch.testing.assert_close(grouped.scores["ffn"], plain.scores["ffn"], rtol=1e-5, atol=1e-8)


def test_loss_width_and_trailing_positions_do_not_matter():
    from taskneurons.losses import loss_width, per_example_loss

    assert loss_width(torch.tensor([[-100, -100, 7, 8, -100]])) == 3
    assert loss_width(torch.tensor([[-100, 5, -100], [-100, -100, -100]])) == 1
    assert loss_width(torch.full((2, 4), -100)) == 4  # no loss: left for the caller to report
    model = tiny_model("llama")
    (batch,) = random_batches(model.config.vocab_size, n_batches=1, batch=4)
    assert loss_width(batch["labels"]) == batch["input_ids"].shape[1] - 1
    wide = {  # four more columns of right padding
        k: torch.nn.functional.pad(v, (0, 4), value=-100 if k == "labels" else 0)
        if v.dim() == 2
        else v
        for k, v in batch.items()
    }
    with torch.no_grad():
        torch.testing.assert_close(per_example_loss(model, wide), per_example_loss(model, batch))
    a = relevance_scores(model, [batch], progress=False).scores["ffn"]
    b = relevance_scores(model, [wide], progress=False).scores["ffn"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def _loss_per_example(model, batch) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.double()[:, :-1], dim=-1)
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * valid
    return nll.sum(1) / valid.sum(1)  # [batch]


def test_first_order_estimate_matches_exact_zeroing():
    """Score ≈ |ΔL| of actually zeroing the neuron, where the loss is near-linear.

    With the default init (std 0.02) one unit's activation moves the residual stream by a
    small amount, so the second-order term is small: we require the exact ``|ΔL_e|`` and the
    first-order ``|g·a|`` to agree within 10 % + 1e-7 for most neurons, and their rankings to
    agree with Spearman >= 0.9 over 64 neurons.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).eval()
    space = NeuronSpace(model, "ffn")
    batch = random_batches(64, n_batches=1, batch=1, seed=3)
    scores = relevance_scores(model, batch, space, progress=False).scores["ffn"]
    base = _loss_per_example(model, batch[0])[0]
    exact, approx = [], []
    for layer in range(2):
        for unit in range(0, 64, 2):

            def zero(module, args, u=unit):
                x = args[0].clone()
                x[..., u] = 0
                return (x,)

            h = space.site_module(layer, "ffn").register_forward_pre_hook(zero)
            changed = _loss_per_example(model, batch[0])[0]
            h.remove()
            exact.append(abs(float(changed - base)))
            approx.append(float(scores[layer, unit]))
    exact_t, approx_t = torch.tensor(exact), torch.tensor(approx)
    close = (approx_t - exact_t).abs() <= 0.1 * exact_t + 1e-7
    assert close.float().mean() >= 0.9, (exact_t, approx_t)
    rho = spearmanr(exact, approx).statistic
    assert rho >= 0.9, rho


def _planted_model(seed: int = 0):
    """Tiny Llama where units A carry task A's signal and units B task B's (layer 1), with decoys.

    Task A: inputs from tokens 10..13, answer token 40; task B: inputs 20..23, answer 50.
    Embeddings of a task's input tokens share a direction e_T; planted units read e_T (gate and
    up rows) and write the LM-head row of the task's answer (down column). The weights are
    moderate (read 1.0, write 0.2) so the answer is not predicted with probability ~1: a
    saturated softmax has a vanishing gradient and no attribution method can see the units.

    Decoys (units 10..15 for A, 40..45 for B) read e_T three times as strongly, so their
    activations are far larger than the planted units', but their down column is zero: they
    never reach the output, and a ranking by activation size alone picks them.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
        attn_implementation="eager",
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    units = {"A": list(range(0, 6)), "B": list(range(30, 36))}
    decoys = {"A": list(range(10, 16)), "B": list(range(40, 46))}
    spec = {"A": (range(10, 14), 40), "B": (range(20, 24), 50)}
    with torch.no_grad():
        for name, (tokens, answer) in spec.items():
            direction = torch.randn(32, generator=g)
            direction /= direction.norm()
            for t in tokens:
                model.model.embed_tokens.weight[t] = direction * 1.0 + 0.01 * torch.randn(
                    32, generator=g
                )
            out_dir = model.lm_head.weight[answer] / model.lm_head.weight[answer].norm()
            mlp = model.model.layers[1].mlp
            for u in units[name]:
                mlp.gate_proj.weight[u] = 1.0 * direction
                mlp.up_proj.weight[u] = 1.0 * direction
                mlp.down_proj.weight[:, u] = 0.2 * out_dir
            for u in decoys[name]:
                mlp.gate_proj.weight[u] = 3.0 * direction
                mlp.up_proj.weight[u] = 3.0 * direction
                mlp.down_proj.weight[:, u] = 0.0
    return model, units, decoys, spec


def _mean_abs_activation(model, batches, layer: int) -> torch.Tensor:
    """Mean |activation| of each ffn unit of ``layer`` over the unpadded tokens, ``[d_ff]``."""
    site = NeuronSpace(model, "ffn").site_module(layer, "ffn")
    total, count = 0.0, 0
    seen: list[torch.Tensor] = []
    handle = site.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            for b in batches:
                seen.clear()
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                mask = b["attention_mask"][..., None].to(seen[0].dtype)  # [batch, pos, 1]
                total = total + (seen[0].abs() * mask).sum(dim=(0, 1))
                count += int(b["attention_mask"].sum())
    finally:
        handle.remove()
    return total / count


def test_planted_neurons_are_recovered():
    model, units, decoys, spec = _planted_model()
    space = NeuronSpace(model, "ffn")
    g = torch.Generator().manual_seed(1)
    for name, (tokens, answer) in spec.items():
        toks = list(tokens)
        enc = []
        for _ in range(16):
            prompt = [toks[int(i)] for i in torch.randint(0, len(toks), (5,), generator=g)]
            enc.append(EncodedExample(tuple(prompt + [answer]), 5))
        batches = [collate(enc[i : i + 8], pad_id=0) for i in range(0, 16, 8)]
        scores = relevance_scores(model, batches, space, progress=False).scores["ffn"]
        top = torch.topk(scores.reshape(-1), k=len(units[name])).indices
        planted = {1 * 64 + u for u in units[name]}
        precision = len(planted & set(top.tolist())) / len(units[name])
        assert precision >= 0.9, (name, precision, top)
        # every planted unit outranks every decoy, though the decoys are far more active ...
        assert scores[1, units[name]].min() > scores[1, decoys[name]].max(), name
        # ... so much that ranking by mean |activation| alone would pick exactly the decoys
        act = _mean_abs_activation(model, batches, layer=1)
        assert act[decoys[name]].min() > 2 * act[units[name]].max(), name
        by_act = torch.topk(act, k=len(units[name])).indices.tolist()
        assert set(by_act) == set(decoys[name]), (name, by_act)


def test_bad_inputs():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="aggregate"):
        AttributionConfig(aggregate="max")
    with pytest.raises(ValueError, match="no examples"):
        relevance_scores(model, [], progress=False)
    task = Task("empty", "classification", "x", ["a", "b"], "accuracy", train=[], test=[])
    with pytest.raises(ValueError, match="no train examples"):
        relevance_scores(model, task, tokenizer=object(), progress=False)
    no_loss = collate([EncodedExample((5, 6, 7), 3)], pad_id=0)
    with pytest.raises(ValueError, match="no loss tokens"):
        relevance_scores(model, [no_loss], progress=False)


DIST_SCRIPT = Path(__file__).with_name("dist_scores.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    """torchrun --nproc_per_node 2 (Accelerate, gloo) gives the scores of one process.

    Both ways of feeding the scores: ready-made batches (every other batch per process) and a
    Task (11 examples, sharded 6 + 5 between the processes, tokenized and batched there).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TN_OUT": str(tmp_path)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(DIST_SCRIPT),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    two = torch.load(tmp_path / "scores_2.pt")
    res1 = subprocess.run(
        [sys.executable, str(DIST_SCRIPT)], env=env, capture_output=True, text=True, timeout=300
    )
    assert res1.returncode == 0, res1.stderr[-3000:]
    one = torch.load(tmp_path / "scores_1.pt")
    assert one.keys() == two.keys() == {"batches", "task", "task_meta"}
    for path in ("batches", "task"):
        assert one[path].keys() == two[path].keys() == {"ffn"}
        assert float(one[path]["ffn"].max()) > 0
        torch.testing.assert_close(two[path]["ffn"], one[path]["ffn"], rtol=1e-6, atol=1e-8)
    assert one["task_meta"] == two["task_meta"]
    assert one["task_meta"]["n_scored"] == 11


def test_activations_freed_without_garbage_collector():
    """No reference cycle keeps a batch's activations alive (they would pile up over batches)."""
    import gc
    import weakref

    model = tiny_model("llama")
    space = NeuronSpace(model, "ffn")
    refs = []

    def keep_ref(module, args, output):
        refs.append(weakref.ref(args[0]))

    handles = [space.site_module(i, "ffn").register_forward_hook(keep_ref) for i in range(2)]
    gc.disable()
    try:
        relevance_scores(model, random_batches(model.config.vocab_size), space, progress=False)
        assert refs and all(r() is None for r in refs)
    finally:
        gc.enable()
        for h in handles:
            h.remove()
