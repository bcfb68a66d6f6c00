"""Multi-task selections (topk, specific, contrastive, LAPE) on hand-made scores, and the
activation probabilities LAPE ranks."""

from __future__ import annotations

import math

import pytest
import torch

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import iter_batches
from taskneurons.data.tasks import Example, Task
from taskneurons.neurons.activation_probability import (
    activation_probability,
    lape_entropy,
    probability_quantile,
    token_mask,
)
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection.algorithms.contrastive import (
    contrastive_scores,
    select_contrastive,
)
from taskneurons.neurons.selection.algorithms.lape import select_lape
from taskneurons.neurons.selection.algorithms.specific import select_specific
from taskneurons.neurons.selection.algorithms.topk import select_topk
from taskneurons.neurons.selection.ranking import top_k
from taskneurons.neurons.selection.task_selection import TaskSelection, normalize_layers, select
from taskneurons.neurons.space import NeuronSpace

from test_attribution import random_batches
from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer


def ffn(rows, task=None) -> NeuronScores:
    """Scores of ``ffn`` neurons ``[layers, units]`` (ids are layer-major: layer * units + unit)."""
    meta = {"task": task, "model_fingerprint": {"arch": "x", "weights": "y"}} if task else {}
    return NeuronScores("ffn", {"ffn": torch.tensor(rows, dtype=torch.float32)}, meta)


def ids(s: NeuronSet) -> set[int]:
    return set(s.ids().tolist())


# three tasks, 2 layers x 5 units; at k = 30 % each keeps 3 of 10
THREE = {
    "a": ffn([[9, 8, 7, 1, 0], [6, 0, 0, 0, 0]], "a"),  # top 3: 0, 1, 2
    "b": ffn([[9, 0, 7, 8, 0], [0, 0, 0, 0, 1]], "b"),  # top 3: 0, 3, 2
    "c": ffn([[9, 0, 0, 0, 0], [8, 7, 0, 0, 0]], "c"),  # top 3: 0, 5, 6
}


def test_topk_is_the_papers_top_k():
    sel = select_topk(THREE, k=30)
    assert isinstance(sel, TaskSelection) and sel.general is None and list(sel) == ["a", "b", "c"]
    assert [ids(sel[t]) for t in sel] == [{0, 1, 2}, {0, 2, 3}, {0, 5, 6}]
    for t in THREE:
        assert sel[t] == top_k(THREE[t], 30)
        meta = sel[t].meta
        assert meta["task"] == t and meta["k"] == 30.0 and meta["count"] == 3
        assert meta["selection"] == {
            "method": "topk",
            "k": 30.0,
            "scope": "model",
            "rank_modules": "together",
            "normalize": None,
            "tasks": ["a", "b", "c"],
        }


def test_specific_removes_the_core_exactly():
    # m = 3: general = in all three top-3 sets = {0}
    sel = select_specific(THREE, k=30)
    assert ids(sel.general) == {0}
    assert [ids(sel[t]) for t in "abc"] == [{1, 2}, {2, 3}, {5, 6}]
    # m = 2: neuron 2 is in the sets of a and b, so it is general too
    sel2 = select_specific(THREE, k=30, m=2)
    assert ids(sel2.general) == {0, 2}
    assert [ids(sel2[t]) for t in "abc"] == [{1}, {3}, {5, 6}]
    # pairwise disjoint with m = 2
    assert not (ids(sel2["a"]) & ids(sel2["b"]))


def test_specific_meta():
    sel = select_specific(THREE, k=30, m=2)
    g = sel.general.meta
    assert g["kind"] == "general" and g["count"] == 2 and g["size"] == 10
    assert g["model_fingerprint"] == {"arch": "x", "weights": "y"} and "task" not in g
    meta = sel["b"].meta
    assert meta["kind"] == "specific" and meta["task"] == "b" and meta["count"] == 1
    assert meta["k"] == 30.0 and meta["scope"] == "model"  # what top_k records
    assert meta["selection"] == {
        "method": "specific",
        "k": 30.0,
        "m": 2,
        "fill": False,
        "scope": "model",
        "rank_modules": "together",
        "normalize": None,
        "tasks": ["a", "b", "c"],
        "n_general": 2,
    }


def test_specific_fill_keeps_k_percent():
    # general {0}: a ranks 1 (8), 2 (7), 5 (6); b: 3 (8), 2 (7), 9 (1); c: 5 (8), 6 (7), then
    # the lowest id among the zeros, 1
    sel = select_specific(THREE, k=30, fill=True)
    assert [ids(sel[t]) for t in "abc"] == [{1, 2, 5}, {2, 3, 9}, {1, 5, 6}]
    # general {0, 2}: a: 1, 5, 3; b: 3, 9, then zeros -> 1; c: 5, 6, 1
    sel = select_specific(THREE, k=30, m=2, fill=True)
    assert [ids(sel[t]) for t in "abc"] == [{1, 3, 5}, {1, 3, 9}, {1, 5, 6}]
    assert all(len(sel[t]) == 3 and not (ids(sel[t]) & {0, 2}) for t in "abc")


def test_specific_per_layer():
    # k = 40 % per layer = 2 of 5: a {0, 1 | 5, 6}, b {0, 3 | 9, 5}, c {0, 1 | 5, 6}
    sel = select_specific(THREE, k=40, scope="layer")
    assert ids(sel.general) == {0, 5}
    assert [ids(sel[t]) for t in "abc"] == [{1, 6}, {3, 9}, {1, 6}]


def test_normalize_layers():
    s = ffn([[40, 30, 20, 10], [4, 3, 2, 1]])
    torch.testing.assert_close(
        normalize_layers(s, "layer").scores["ffn"], torch.tensor([[1.6, 1.2, 0.8, 0.4]] * 2)
    )
    z = normalize_layers(s, "layer_z").scores["ffn"]
    expected = torch.tensor([1.5, 0.5, -0.5, -1.5]) / math.sqrt(1.25)
    torch.testing.assert_close(z, torch.stack([expected, expected]))
    assert normalize_layers(ffn([[0, 0], [1, 1]]), "layer").scores["ffn"].tolist() == [
        [0, 0],
        [1, 1],
    ]
    assert normalize_layers(ffn([[2, 2], [1, 3]]), "layer_z").scores["ffn"].tolist() == [
        [0, 0],
        [-1, 1],
    ]
    # layer 0 scores 10x layer 1's: raw top-k stays in layer 0, normalised it spreads
    two = {"a": s, "b": ffn([[10, 20, 30, 40], [1, 2, 3, 4]])}
    assert ids(select_topk(two, k=50)["a"]) == {0, 1, 2, 3}
    assert ids(select_topk(two, k=50, normalize="layer")["a"]) == {0, 1, 4, 5}
    assert ids(select_topk(two, k=50, normalize="layer_z")["b"]) == {2, 3, 6, 7}
    sel = select_specific(two, k=50, normalize="layer")
    assert sel["a"].meta["selection"]["normalize"] == "layer"
    assert sel["a"].meta["scores_meta"]["normalize"] == "layer"
    with pytest.raises(ValueError, match="normalize"):
        select_topk(two, k=10, normalize="model")


PLANTED = {  # neuron 0 matters to every task, 1 only to a, 2 only to b, 3 only to c
    "a": ffn([[10, 8, 0.2, 0.1, 0.3], [0.2, 0.1, 0.3, 0.2, 0.1]], "a"),
    "b": ffn([[10, 0.3, 8, 0.2, 0.1], [0.1, 0.2, 0.1, 0.3, 0.2]], "b"),
    "c": ffn([[10, 0.1, 0.3, 8, 0.2], [0.3, 0.1, 0.2, 0.1, 0.3]], "c"),
}


def test_contrastive_scores_by_hand():
    s = {"a": ffn([[3, 3, 0]]), "b": ffn([[1, 0, 2]])}  # means 2 and 1
    c = contrastive_scores(s)
    assert c["a"].scores["ffn"].tolist() == [[0.5, 1.5, -2.0]]  # [1.5, 1.5, 0] - [1, 0, 2]
    assert c["b"].scores["ffn"].tolist() == [[-0.5, -1.5, 2.0]]
    r = contrastive_scores(s, mode="ratio", eps=0.5)
    torch.testing.assert_close(r["a"].scores["ffn"], torch.tensor([[1.5 / 1.5, 1.5 / 0.5, 0.0]]))
    # z-scored: a -> [1, 1, -2] / sqrt(2), b -> [0, -1, 1] * sqrt(3/2)
    z = contrastive_scores(s, task_norm="z")["a"].scores["ffn"]
    za = torch.tensor([1.0, 1.0, -2.0]) / math.sqrt(2)
    zb = torch.tensor([0.0, -1.0, 1.0]) * math.sqrt(1.5)
    torch.testing.assert_close(z, (za - zb)[None].float())
    # a task whose scores are 100x larger counts the same after normalisation
    big = {"a": s["a"], "b": ffn([[100, 0, 200]])}
    assert contrastive_scores(big)["a"].scores["ffn"].tolist() == [[0.5, 1.5, -2.0]]


@pytest.mark.parametrize("mode", ["difference", "ratio"])
def test_contrastive_picks_the_task_only_neuron(mode):
    # k = 10 % = 1 neuron: top-k picks the shared neuron 0 for every task
    assert [ids(select_topk(PLANTED, k=10)[t]) for t in "abc"] == [{0}, {0}, {0}]
    sel = select_contrastive(PLANTED, k=10, mode=mode)
    assert [ids(sel[t]) for t in "abc"] == [{1}, {2}, {3}]
    meta = sel["a"].meta
    assert meta["kind"] == "contrastive" and meta["task"] == "a"
    assert meta["selection"]["method"] == "contrastive" and meta["selection"]["mode"] == mode
    assert meta["selection"]["eps"] == 0.1 and meta["selection"]["task_norm"] == "mean"
    # and specific with fill does too
    assert [ids(select_specific(PLANTED, k=10, fill=True)[t]) for t in "abc"] == [{1}, {2}, {3}]


def test_contrastive_bad_options():
    with pytest.raises(ValueError, match="ratio"):
        select_contrastive(PLANTED, k=10, mode="ratio", task_norm="z")
    with pytest.raises(ValueError, match="mode"):
        select_contrastive(PLANTED, k=10, mode="minus")


def test_lape_entropy_and_quantile():
    h = lape_entropy(torch.tensor([[1.0, 0.5, 0.0, 0.6], [0.0, 0.5, 0.0, 0.3]]))
    expected = [0.0, math.log(2), math.log(2), -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))]
    torch.testing.assert_close(h, torch.tensor(expected, dtype=torch.float64))
    p = torch.tensor([[[0.9, 0.0], [0.02, 0.0]], [[0.0, 0.9], [0.0, 0.02]]])  # [T, layers, units]
    assert probability_quantile(p, 0.75, False).item() == pytest.approx(0.02)  # sorted[5] of 8
    torch.testing.assert_close(
        probability_quantile(p, 0.75, True).reshape(-1), torch.tensor([0.9, 0.02])
    )


LAPE = {  # 1 layer x 6 units
    "a": ffn([[0.9, 0.5, 0.0, 0.05, 0.0, 0.6]], "a"),
    "b": ffn([[0.0, 0.5, 0.8, 0.0, 0.0, 0.3]], "b"),
}
# entropies: 0, log 2, 0, 0 (but rare), never active, 0.64; sorted P values:
# [0, 0, 0, 0, 0, 0.05, 0.3, 0.5, 0.5, 0.6, 0.8, 0.9]


def test_lape_by_hand():
    # eligible (max P >= 0.2): 0, 1, 2, 5; k = 50 % = 3 lowest entropies: 0, 2, 5
    sel = select_lape(LAPE, k=50, filter_quantile=None, min_prob=0.2, assign="top")
    assert (ids(sel["a"]), ids(sel["b"])) == ({0, 5}, {2})
    assert sel["a"].meta["selection"]["n_kept"] == 3 and sel["a"].meta["kind"] == "lape"
    # assign by bar = quantile 0.95 of all P = sorted[10] = 0.8: neuron 5 (0.6) goes nowhere
    sel = select_lape(LAPE, k=50, filter_quantile=None, min_prob=0.2, bar_quantile=0.95)
    assert (ids(sel["a"]), ids(sel["b"])) == ({0}, {2})
    # bar = quantile 0.9 = sorted[9] = 0.6
    sel = select_lape(LAPE, k=50, filter_quantile=None, min_prob=0.2, bar_quantile=0.9)
    assert (ids(sel["a"]), ids(sel["b"])) == ({0, 5}, {2})
    # filter quantile 0.5 = sorted[5] = 0.05: the rare neuron 3 (entropy 0) is eligible and
    # beats 5; the never-active neuron 4 is never chosen
    sel = select_lape(LAPE, k=50, filter_quantile=0.5, assign="top")
    assert (ids(sel["a"]), ids(sel["b"])) == ({0, 3}, {2})
    sel = select_lape(LAPE, k=100, filter_quantile=0.0, assign="top")
    assert 4 not in ids(sel["a"]) | ids(sel["b"])
    assert sel["a"].meta["selection"] == {
        "method": "lape",
        "k": 100.0,
        "filter_quantile": 0.0,
        "min_prob": 0.0,
        "assign": "top",
        "bar_quantile": 0.95,
        "scope": "model",
        "normalize": None,
        "tasks": ["a", "b"],
        "n_kept": 5,
    }


def test_lape_per_layer_quantiles():
    # layer 1 fires ~50x less: a model-wide filter (quantile 0.75 = 0.5) drops it
    probs = {
        "a": ffn([[0.9, 0.0, 0.5], [0.02, 0.0, 0.01]], "a"),
        "b": ffn([[0.0, 0.9, 0.5], [0.0, 0.02, 0.01]], "b"),
    }
    sel = select_lape(probs, k=4 / 6 * 100, filter_quantile=0.75, assign="top")
    assert (ids(sel["a"]), ids(sel["b"])) == ({0, 2}, {1, 2})  # only 3 eligible, 2 is shared
    sel = select_lape(probs, k=4 / 6 * 100, filter_quantile=0.75, assign="top", normalize="layer")
    assert (ids(sel["a"]), ids(sel["b"])) == ({0, 3}, {1, 4})


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        select_specific({"a": THREE["a"]}, k=10)
    with pytest.raises(ValueError, match="m must"):
        select_specific(THREE, k=10, m=4)
    with pytest.raises(ValueError, match="m must"):
        select_specific(THREE, k=10, m=1)
    with pytest.raises(ValueError, match="layout"):
        select_topk({"a": ffn([[1, 2]]), "b": ffn([[1, 2, 3]])}, k=10)
    with pytest.raises(ValueError, match="k must"):
        select_topk(THREE, k=0)
    with pytest.raises(ValueError, match="unknown selection"):
        select("best", THREE, k=10)
    with pytest.raises(ValueError, match="assign"):
        select_lape(LAPE, k=10, assign="all")
    assert ids(select("specific", THREE, k=30)["a"]) == {1, 2}


def test_linear_definition_ranks_modules_together():
    def lin(task, gate, down):
        t = {"gate": torch.tensor(gate), "down": torch.tensor(down)}
        return NeuronScores("linear", t, {"task": task})

    scores = {
        "a": lin("a", [[5.0, 1.0]], [[4.0, 0.0, 0.0]]),
        "b": lin("b", [[5.0, 0.0]], [[0.0, 4.0, 0.0]]),
    }
    sel = select_specific(scores, k=40)  # 2 of 5: a {gate 0, down 0}, b {gate 0, down 1}
    assert sel.general.masks["gate"].tolist() == [[True, False]]
    assert sel["a"].masks["down"].tolist() == [[True, False, False]]
    assert sel["b"].masks["down"].tolist() == [[False, True, False]]


# -- activation probability --------------------------------------------------------------------------
def _reference_probability(model, batches, space, threshold, tokens):
    """Count firing tokens with plain hooks on the full-width forward."""
    counts = torch.zeros(space.shape("ffn"), dtype=torch.float64)
    n = 0
    for batch in batches:
        mask = token_mask(batch, tokens)  # [batch, pos]
        acts = {}
        handles = [
            space.site_module(layer, "ffn").register_forward_pre_hook(
                lambda mod, args, layer=layer, acts=acts: acts.__setitem__(layer, args[0])
            )
            for layer in range(space.n_layers)
        ]
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        for h in handles:
            h.remove()
        for layer, a in acts.items():
            a = a.reshape(mask.shape[0], mask.shape[1], -1)
            counts[layer] += ((a > threshold) & mask[..., None]).sum(dim=(0, 1)).double()
        n += int(mask.sum())
    return counts / n, n


@pytest.mark.parametrize("family", ["llama", "opt"])
@pytest.mark.parametrize("tokens", ["answer", "all"])
def test_activation_probability_matches_reference(family, tokens):
    model = tiny_model(family)
    space = NeuronSpace(model, "ffn")
    batches = random_batches(model.config.vocab_size, n_batches=2, batch=3)
    p = activation_probability(model, batches, space, threshold=0.05, tokens=tokens)
    ref, n = _reference_probability(model, batches, space, 0.05, tokens)
    assert p.meta["n_tokens"] == n and p.meta["tokens"] == tokens
    assert p.meta["kind"] == "activation_probability" and p.meta["threshold"] == 0.05
    assert p.scores["ffn"].shape == space.shape("ffn") and p.scores["ffn"].dtype == torch.float32
    torch.testing.assert_close(p.scores["ffn"].double(), ref, atol=1e-6, rtol=0)
    assert 0 < float(p.scores["ffn"].mean()) < 1
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_activation_probability_of_a_task():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    exs = [Example("the movie was good", "positive"), Example("the food was bad", "negative")]
    task = Task("s", "classification", "Classify", ["positive", "negative"], "accuracy", exs, exs)
    p = activation_probability(model, task, tokenizer=tok)
    assert p.meta["task"] == "s" and p.meta["n_examples"] == 2 and p.meta["n_tokens"] == 2
    batches = list(iter_batches(tok, task, exs, PromptConfig(), 8))
    q = activation_probability(model, batches, NeuronSpace(model, "ffn"))
    torch.testing.assert_close(p.scores["ffn"], q.scores["ffn"])
    with pytest.raises(ValueError, match="tokenizer"):
        activation_probability(model, task)
    with pytest.raises(ValueError, match="tokens"):
        token_mask(batches[0], "prompt")
