"""Neuron cards: what one FFN neuron is, which tasks use it, what it reads and what it writes.

A card holds the neuron's layer and unit; its relevance rank in each task (1 = the most
relevant of all neurons); which tasks' sets (and the general set) hold it; its activation on a
few test examples of each task (a histogram and quantiles); the examples that activate it most,
their tokens shaded by activation; and the tokens its down-projection column promotes and
suppresses (:mod:`.logit_lens`). The cost is kept small: a few neurons, a few examples per task,
one forward pass per task with a pre-hook on the layers' down projections.

Example:
    >>> cards = neuron_cards(CardInputs(model, tok, tasks, sets), CardOptions(per_task=2))  # doctest: +SKIP
    >>> cards[0].layer, cards[0].unit, cards[0].in_sets  # doctest: +SKIP
    (12, 803, ['sst2'])
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import collate, encode_example, pad_id_of
from taskneurons.data.tasks import Task, subset
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.space import NeuronSpace
from taskneurons.pages.logit_lens import logit_lens
from taskneurons.report.plots import layer_distribution

#: histogram bins of a card's activation distribution
BINS = 12


@dataclass
class CardOptions:
    """How many cards and how much work each: ``per_task`` top neurons of each task (by its
    relevance scores), the ``neurons`` asked for (``(layer, unit)``), ``n_examples`` test
    examples per task scanned, ``n_shown`` shown per card, ``n_vocab`` tokens each way."""

    per_task: int = 2
    neurons: tuple[tuple[int, int], ...] = ()
    n_examples: int = 6
    n_shown: int = 2
    n_vocab: int = 8
    seed: int = 0


@dataclass
class CardInputs:
    """The model, tokenizer, tasks, each task's set and scores, the general set, the prompt."""

    model: nn.Module
    tokenizer: Any
    tasks: list[Task]
    sets: Mapping[str, NeuronSet]
    scores: Mapping[str, NeuronScores] = field(default_factory=dict)
    general: NeuronSet | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)


@dataclass
class Distribution:
    """One task's activations of the neuron: quantiles and histogram counts."""

    task: str
    quantiles: dict[str, float]
    counts: list[int]

    def bars(self) -> list[tuple[float, float]]:
        """``(x, height)`` of each bar of a 120 x 30 px histogram."""
        top = max(self.counts) or 1
        width = 120 / len(self.counts)
        return [(i * width, 30 * c / top) for i, c in enumerate(self.counts)]


@dataclass
class TopExample:
    """An example that activates the neuron: its task, largest activation, tokens."""

    task: str
    peak: float
    tokens: list[tuple[str, float]]

    def shaded(self) -> list[tuple[str, str]]:
        """``(token text, inline style)``: orange by positive activation, blue by negative."""
        scale = max((abs(a) for _, a in self.tokens), default=1.0) or 1.0
        out = []
        for text, a in self.tokens:
            alpha = round(min(abs(a) / scale, 1.0), 2)
            colour = "255,140,0" if a >= 0 else "40,110,220"
            out.append((text, f"background:rgba({colour},{alpha})"))
        return out


@dataclass
class NeuronCard:
    """Everything one card shows (see the module docstring)."""

    layer: int
    unit: int
    ranks: dict[str, str]
    in_sets: list[str]
    distributions: list[Distribution]
    examples: list[TopExample]
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    promoted_ids: list[int]
    lens_note: str


def relevance_rank(scores: NeuronScores, layer: int, unit: int) -> int:
    """1 + the number of neurons with a higher relevance score (``ffn`` scores)."""
    s = scores.scores["ffn"]  # [layers, units]
    return 1 + int((s > s[layer, unit]).sum())


def chosen_neurons(inputs: CardInputs, options: CardOptions) -> list[tuple[int, int]]:
    """The asked-for neurons, then each task's ``per_task`` most relevant neurons of its set
    (its first ones when no scores are at hand), without repeats."""
    out = list(dict.fromkeys(options.neurons))
    for task in inputs.tasks:
        neurons = inputs.sets.get(task.id)
        if neurons is None or options.per_task < 1:
            continue
        mask = neurons.masks["ffn"]  # [layers, units]
        ids = mask.reshape(-1).nonzero().reshape(-1)  # [n]
        scores = inputs.scores.get(task.id)
        if scores is not None and ids.numel():
            values = scores.scores["ffn"].reshape(-1)[ids]  # [n]
            ids = ids[torch.argsort(values, descending=True, stable=True)]
        for i in ids[: options.per_task].tolist():
            pair = (i // mask.shape[1], i % mask.shape[1])
            if pair not in out:
                out.append(pair)
    return out


def check_neurons(space: NeuronSpace, neurons: list[tuple[int, int]]) -> None:
    """``ValueError`` naming a ``--neuron L.U`` outside the model's layers or units."""
    for layer, unit in neurons:
        if not 0 <= layer < space.n_layers or not 0 <= unit < space.units["ffn"]:
            raise ValueError(
                f"--neuron {layer}.{unit}: outside the model's {space.n_layers} layers x "
                f"{space.units['ffn']} units"
            )


def task_activations(
    inputs: CardInputs, task: Task, neurons: list[tuple[int, int]], options: CardOptions
) -> list[tuple[list[str], torch.Tensor]]:
    """Per scanned test example: its token texts and the neurons' activations
    ``[tokens, neurons]`` (one forward pass, pre-hooks on the down projections)."""
    space = NeuronSpace(inputs.model, "ffn")
    examples = list(task.test)
    if len(examples) > options.n_examples:
        examples = subset(examples, options.n_examples, seed=options.seed)
    encoded = [
        encode_example(inputs.tokenizer, task, ex.input, ex.output, inputs.prompt)
        for ex in examples
    ]
    batch = collate(encoded, pad_id_of(inputs.tokenizer))
    layers = sorted({layer for layer, _ in neurons})
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        space.site_module(layer, "ffn").register_forward_pre_hook(
            lambda _m, args, layer=layer: seen.__setitem__(layer, args[0].detach().float())
        )
        for layer in layers
    ]
    try:
        with torch.no_grad():
            device = next(inputs.model.parameters()).device
            inputs.model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            )
    finally:
        for h in hooks:
            h.remove()
    acts = torch.stack([seen[layer][..., unit].cpu() for layer, unit in neurons], -1)
    out = []
    for row, e in enumerate(encoded):  # right padding: the first len(ids) positions
        texts = [inputs.tokenizer.decode([i]) for i in e.input_ids]
        out.append((texts, acts[row, : len(e.input_ids)]))  # [tokens, neurons]
    return out


def _distribution(task: str, values: torch.Tensor, lo: float, hi: float) -> Distribution:
    q = torch.quantile(values, torch.tensor([0.5, 0.9]))
    quantiles = {"mean": float(values.mean()), "median": float(q[0]), "p90": float(q[1])}
    quantiles["max"] = float(values.max())
    counts = torch.histc(values, bins=BINS, min=lo, max=hi if hi > lo else lo + 1.0)
    return Distribution(task, quantiles, [int(c) for c in counts])


def neuron_cards(inputs: CardInputs, options: CardOptions | None = None) -> list[NeuronCard]:
    """The cards of the chosen neurons (``ffn`` neurons; see :func:`chosen_neurons`)."""
    options = options or CardOptions()
    neurons = chosen_neurons(inputs, options)
    check_neurons(NeuronSpace(inputs.model, "ffn"), neurons)
    if not neurons:
        return []
    scanned = {t.id: task_activations(inputs, t, neurons, options) for t in inputs.tasks}
    return [_card(inputs, options, scanned, neurons, i) for i in range(len(neurons))]


def _card(inputs: CardInputs, options: CardOptions, scanned: dict, neurons: list, i: int):
    layer, unit = neurons[i]
    every = torch.cat([a[:, i] for rows in scanned.values() for _, a in rows])
    lo, hi = float(every.min()), float(every.max())
    distributions, examples = [], []
    for task, rows in scanned.items():
        distributions.append(_distribution(task, torch.cat([a[:, i] for _, a in rows]), lo, hi))
        examples += [
            TopExample(task, float(a[:, i].max()), list(zip(t, a[:, i].tolist(), strict=True)))
            for t, a in rows
        ]
    examples.sort(key=lambda e: -e.peak)
    ranks = {
        t: f"{relevance_rank(s, layer, unit)} of {s.scores['ffn'].numel()}"
        for t, s in inputs.scores.items()
    }
    holders = [t for t, s in inputs.sets.items() if bool(s.masks["ffn"][layer, unit])]
    if inputs.general is not None and bool(inputs.general.masks["ffn"][layer, unit]):
        holders.append("general")
    lens = logit_lens(inputs.model, inputs.tokenizer, layer, unit, options.n_vocab)
    return NeuronCard(layer, unit, ranks, holders, distributions, examples[: options.n_shown],
                      lens.promoted, lens.suppressed, lens.promoted_ids, lens.note)  # fmt: skip


def layer_count_chart(sets: Mapping[str, NeuronSet], general: NeuronSet | None) -> str:
    """A data URI of the per-layer count of every set (the general set too)."""
    counts = {t: s.counts_per_layer()[s.modules[0]].tolist() for t, s in sets.items()}
    if general is not None:
        counts["general"] = general.counts_per_layer()[general.modules[0]].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        path = layer_distribution(counts, Path(tmp) / "counts.png", "Neurons per layer, every set")
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
