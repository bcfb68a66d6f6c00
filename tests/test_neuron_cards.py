"""Neuron cards: the logit lens by hand, ranks, set membership and activations on tiny models."""

from __future__ import annotations

import pytest
import torch

from taskneurons.cli import main
from taskneurons.data.load import load_task
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.pages.neuron_cards import CardInputs, CardOptions, neuron_cards

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _by_hand(model, family: str, layer: int, unit: int, n: int) -> list[int]:
    """W_U @ (final norm weight * the down projection's column ``unit``), top ``n`` ids."""
    if family == "gpt2":
        column = model.transformer.h[layer].mlp.c_proj.weight[unit, :]  # Conv1D: [in, out]
        gain = model.transformer.ln_f.weight
    else:
        column = model.model.layers[layer].mlp.down_proj.weight[:, unit]  # [out, in]
        gain = model.model.norm.weight
    logits = [
        sum(float(model.lm_head.weight[v, d]) * float(gain[d]) * float(column[d])
            for d in range(column.numel()))
        for v in range(model.lm_head.weight.shape[0])
    ]  # fmt: skip
    return sorted(range(len(logits)), key=lambda v: -logits[v])[:n]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_promoted_tokens_match_a_hand_computation(family, tok, task_folders):
    model = tiny_model(family).eval()
    norm = model.transformer.ln_f if family == "gpt2" else model.model.norm
    with torch.no_grad():  # a norm gain that is not all ones, so applying it matters
        norm.weight.copy_(torch.linspace(0.2, 3.0, norm.weight.numel()))
    task = load_task(str(task_folders[0]))
    inputs = CardInputs(model, tok, [task], {})
    options = CardOptions(per_task=0, neurons=((1, 5),), n_examples=2, n_vocab=5)
    (card,) = neuron_cards(inputs, options)
    assert (card.layer, card.unit) == (1, 5)
    assert card.promoted_ids == _by_hand(model, family, 1, 5, 5)
    assert "final norm gain" in card.lens_note


def test_cards_rank_hold_and_read_the_neuron(tok, task_folders):
    model = tiny_model("llama").eval()
    tasks = [load_task(str(f)) for f in task_folders]
    layers, units = 2, model.config.intermediate_size
    scores = {t.id: torch.zeros(layers, units) for t in tasks}
    scores["mood"][1, 7], scores["mood"][0, 3] = 5.0, 4.0  # mood's two best neurons
    scores["answer"][1, 7] = 1.0  # 1.7 ranks first for both tasks
    scored = {t: NeuronScores("ffn", {"ffn": s}) for t, s in scores.items()}
    sets = {
        "mood": NeuronSet("ffn", {"ffn": scores["mood"] > 0}),
        "answer": NeuronSet("ffn", {"ffn": torch.zeros(layers, units, dtype=torch.bool)}),
    }
    inputs = CardInputs(model, tok, tasks, sets, scored)
    cards = neuron_cards(inputs, CardOptions(per_task=2, n_examples=3, n_shown=2))
    assert [(c.layer, c.unit) for c in cards] == [(1, 7), (0, 3)]  # by mood's scores
    first = cards[0]
    assert first.ranks["mood"] == f"1 of {layers * units}" and first.in_sets == ["mood"]
    assert cards[1].ranks["mood"] == f"2 of {layers * units}"
    peaks = [e.peak for e in first.examples]
    assert peaks == sorted(peaks, reverse=True) and len(peaks) == 2
    assert all(e.peak == max(a for _, a in e.tokens) for e in first.examples)
    assert [d.task for d in first.distributions] == ["mood", "answer"]
    assert all(sum(d.counts) > 0 for d in first.distributions)


def test_report_neuron_flag(tiny_folder, task_folders, tmp_path, capsys):
    tasks = ",".join(str(f) for f in task_folders)
    out = tmp_path / "det"
    argv = ["detect", "--model", str(tiny_folder), "--tasks", tasks, "--k", "10"]
    assert main([*argv, "--n-examples", "2", "--out", str(out)]) == 0
    assert "neuron cards" in (out / "report.html").read_text()  # the run's own report
    page = tmp_path / "p.html"
    assert main(["report", str(out), "--neuron", "1.2", "--cards", "0", "--out", str(page)]) == 0
    text = page.read_text()
    assert "neuron 1.2" in text and text.count('<div class="card">') == 1
    assert main(["report", str(out), "--neuron", "1.x"]) == 2
    assert main(["report", str(out), "--neuron", "9.0", "--out", str(page)]) == 2
    assert "outside the model's 2 layers" in capsys.readouterr().err


def test_a_run_whose_cards_fail_still_gets_its_report(tiny_folder, task_folders, tmp_path, capsys,
                                                       monkeypatch):  # fmt: skip
    import taskneurons.cli_report as cli_report

    def refuse(*args):
        raise ValueError("model gone\nsecond line")

    monkeypatch.setattr(cli_report, "with_cards", refuse)
    out = tmp_path / "det"
    argv = ["detect", "--model", str(tiny_folder), "--tasks", str(task_folders[0]), "--k", "10"]
    assert main([*argv, "--n-examples", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "report: no neuron cards (model gone second line)" in printed
    assert printed.strip().endswith(f"report: {out / 'report.html'}")
    assert "neuron cards" not in (out / "report.html").read_text()
