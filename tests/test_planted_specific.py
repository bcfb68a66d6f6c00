"""Planted shared and task-only neurons in a tiny Llama: top-k finds the shared core, the
multi-task selections find the task-only neurons (real relevance scores and activation
probabilities, no hand-made scores)."""

from __future__ import annotations

import pytest
import torch

from taskneurons.data.tasks import Example, Task
from taskneurons.neurons.activation_probability import activation_probability
from taskneurons.neurons.attribution import relevance_scores
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.neurons.selection.algorithms.contrastive import select_contrastive
from taskneurons.neurons.selection.algorithms.lape import select_lape
from taskneurons.neurons.selection.algorithms.specific import select_specific
from taskneurons.neurons.selection.algorithms.topk import select_topk
from taskneurons.neurons.space import NeuronSpace

from tiny_models import D_FF, tiny_model
from tiny_tokenizer import tiny_tokenizer

WORDS = {
    "A": ["good", "bad", "great", "awful"],
    "B": ["cat", "dog", "sat", "mat"],
    "C": ["red", "blue", "one", "two"],
}
ANSWER = {"A": "positive", "B": "yes", "C": "maybe"}
TASK_DIM = {"A": 1, "B": 2, "C": 3}  # embedding dim of a task's words (dim 0: all tasks)
OUT_DIM = {"A": 4, "B": 5, "C": 6}  # residual dim the LM head reads each answer from
SHARED = list(range(0, 8))  # layer-1 units that read dim 0: on for every task
ONLY = {"A": list(range(10, 18)), "B": list(range(20, 28)), "C": list(range(30, 38))}


def _planted_llama(tok, seed: int = 0, noise: float = 0.25):
    """``tiny_model("llama")`` rewired so that layer 1's FFN sees which task a prompt is.

    * layer 0 writes nothing (attention output and W2 zeroed; its gate/up scaled by ``noise``);
    * a task's words embed as ``e_0 + e_task`` (dims 0..3); every other token lives in dims
      16..31, so dims 0..15 carry only task identity;
    * layer 1's attention is uniform (``W_q = 0``) and copies dims 0..15 (``W_v``, ``W_o``
      identity there), so the answer-predicting position holds the mean of the prompt's
      task directions;
    * layer 1's FFN: the ``SHARED`` units read ``e_0`` (gain 2) and write every answer's
      direction; each task's ``ONLY`` units read ``e_task`` (gain 1) and write that task's
      answer direction; the other units are random, scaled by ``noise``;
    * W2's bias puts 50 in dim 31, so the final RMSNorm is nearly constant and the logits are
      nearly linear in the planted writes (small writes, 0.01, keep the softmax unsaturated).

    Shared units then score ~4x the task-only ones for every task.
    """
    model = tiny_model("llama", seed=seed)
    ids = {w: tok.convert_tokens_to_ids(w) for ws in WORDS.values() for w in ws}
    with torch.no_grad():
        l0, l1 = model.model.layers
        l0.self_attn.o_proj.weight.zero_()
        l0.mlp.down_proj.weight.zero_()
        l0.mlp.down_proj.bias.zero_()
        mlp = l1.mlp
        for lin in (l0.mlp.gate_proj, l0.mlp.up_proj, mlp.gate_proj, mlp.up_proj):
            lin.weight.mul_(noise)
            lin.bias.mul_(noise)
        mlp.down_proj.weight.mul_(noise)
        mlp.down_proj.bias.zero_()
        mlp.down_proj.bias[31] = 50.0
        attn = l1.self_attn
        attn.q_proj.weight.zero_()
        attn.v_proj.weight.zero_()
        attn.v_proj.weight[:, :16] = torch.eye(16)
        attn.o_proj.weight.zero_()
        attn.o_proj.weight[0:8, 0:8] = torch.eye(8)  # query heads 0, 1 read kv head 0
        attn.o_proj.weight[8:16, 16:24] = torch.eye(8)  # query heads 2, 3 read kv head 1
        emb = model.model.embed_tokens.weight
        emb[:, :16] = 0
        for t, words in WORDS.items():
            for w in words:
                emb[ids[w]] = 0
                emb[ids[w], [0, TASK_DIM[t]]] = 1.0
            answer = tok.convert_tokens_to_ids(ANSWER[t])
            model.lm_head.weight[answer] = 0
            model.lm_head.weight[answer, OUT_DIM[t]] = 3.0
        units = [(u, 0, 2.0, list(OUT_DIM.values())) for u in SHARED]
        units += [(u, TASK_DIM[t], 1.0, [OUT_DIM[t]]) for t in ONLY for u in ONLY[t]]
        for u, read, gain, writes in units:
            for lin in (mlp.gate_proj, mlp.up_proj):
                lin.weight[u] = 0
                lin.weight[u, read] = gain
                lin.bias[u] = 0
            mlp.down_proj.weight[:, u] = 0
            mlp.down_proj.weight[writes, u] = 0.01
    return model


def _task(t: str, n: int = 16, seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    exs = []
    for _ in range(n):
        words = [WORDS[t][int(i)] for i in torch.randint(0, 4, (5,), generator=g)]
        exs.append(Example(" ".join(words), ANSWER[t]))
    return Task(t, "generation", "write", None, "rougeL", train=exs, test=exs)


@pytest.fixture(scope="module")
def planted():
    tok = tiny_tokenizer()
    model = _planted_llama(tok)
    space = NeuronSpace(model, "ffn")
    cfg = AttributionConfig(n_examples=None, batch_size=8)
    tasks = {t: _task(t, seed=i) for i, t in enumerate(WORDS)}
    scores = {
        t: relevance_scores(model, task, space, tokenizer=tok, config=cfg, progress=False)
        for t, task in tasks.items()
    }
    probs = {
        t: activation_probability(model, task, space, tokenizer=tok, threshold=0.5, config=cfg)
        for t, task in tasks.items()
    }
    return scores, probs


def _ids(units) -> set[int]:
    return {D_FF + u for u in units}  # layer 1


def _precision(found: set[int], planted: set[int]) -> float:
    return len(found & planted) / max(1, len(found))


def _recall(found: set[int], planted: set[int]) -> float:
    return len(found & planted) / len(planted)


def test_topk_returns_the_shared_core(planted):
    scores, _ = planted
    # 5 % of 160 = 8 neurons: the shared units, for every task, and no task-only one
    for t, s in select_topk(scores, k=5).items():
        assert set(s.ids().tolist()) == _ids(SHARED), t
    # 10 % = 16: half of every set is the shared core
    for t, s in select_topk(scores, k=10).items():
        found = set(s.ids().tolist())
        assert _ids(SHARED) <= found and _precision(found, _ids(ONLY[t])) <= 0.5


@pytest.mark.parametrize("normalize", [None, "layer"])
def test_specific_recovers_the_task_only_neurons(planted, normalize):
    scores, _ = planted
    sel = select_specific(scores, k=10, normalize=normalize)
    general = set(sel.general.ids().tolist())
    assert _precision(general, _ids(SHARED)) >= 0.9 and _recall(general, _ids(SHARED)) >= 0.9
    for t, s in sel.items():
        found = set(s.ids().tolist())
        assert _precision(found, _ids(ONLY[t])) >= 0.9, (t, sorted(found))
        assert _recall(found, _ids(ONLY[t])) >= 0.9, (t, sorted(found))
    # at 5 %, where top-k holds only the core, fill finds the task-only neurons instead
    for t, s in select_specific(scores, k=5, fill=True, normalize=normalize).items():
        assert _precision(set(s.ids().tolist()), _ids(ONLY[t])) >= 0.9, t


@pytest.mark.parametrize("mode", ["difference", "ratio"])
def test_contrastive_recovers_the_task_only_neurons(planted, mode):
    scores, _ = planted
    for t, s in select_contrastive(scores, k=5, mode=mode).items():
        assert _precision(set(s.ids().tolist()), _ids(ONLY[t])) >= 0.9, t


def test_lape_recovers_the_task_only_neurons(planted):
    _, probs = planted
    only = set().union(*(_ids(u) for u in ONLY.values()))
    for t, p in probs.items():  # task-only units fire on their own task only, shared on all
        assert float(p.scores["ffn"][1, ONLY[t]].min()) == 1.0
        other = [u for o in ONLY if o != t for u in ONLY[o]]
        assert float(p.scores["ffn"][1, other].max()) == 0.0
        assert float(p.scores["ffn"][1, SHARED].min()) == 1.0
    sel = select_lape(probs, k=15)  # 24 neurons: the 3 x 8 lowest-entropy ones
    for t, s in sel.items():
        found = set(s.ids().tolist())
        assert _precision(found, _ids(ONLY[t])) >= 0.9, (t, sorted(found))
        assert _recall(found, _ids(ONLY[t])) >= 0.9, (t, sorted(found))
        assert not found & _ids(SHARED)
    assert sel["A"].meta["selection"]["n_kept"] == len(only)
