"""W-NCFT's weighting rules against hand computations; routing accuracy on separable tasks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from taskneurons.continual.registry import make_method
from taskneurons.data.tasks import Task
from taskneurons.experiments.continual.method_run import continual_experiment
from test_continual import TRAIN, _config, animal_task, method_config, mood_task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

PARAM = "model.layers.0.mlp.down_proj.weight"


def _hand_weights() -> tuple[float, float]:
    """cos(q, v1) = 0.8, cos(q, v2) = 0.96, T = 0.5: logits 1.6, 1.92; softmax by hand."""
    e = math.exp(1.92 - 1.6)  # 1.377128
    return 1 / (1 + e), e / (1 + e)  # 0.420676, 0.579324


@pytest.mark.parametrize("rule", ["plain", "renormalised"])
def test_wncft_weighting_matches_a_hand_computation(tok, rule):
    model = tiny_model("llama")
    cfg = method_config(name="wncft", temperature=0.5, weighting=rule)
    method = make_method(cfg, model, tok, TRAIN)
    base = dict(model.named_parameters())[PARAM].detach().clone()  # [d_model, d_ff]
    d = model.config.hidden_size
    vec = lambda *xs: torch.tensor([*xs, *[0.0] * (d - len(xs))])  # noqa: E731
    method.trained = ["a", "b"]
    method.vectors = {"a": vec(1.0, 0.0), "b": vec(0.6, 0.8), "q": vec(0.8, 0.6)}
    v1 = base[:, [0, 1]] + torch.tensor([1.0, 2.0])  # task a trained columns 0, 1
    v2 = base[:, [1, 2]] + torch.tensor([4.0, -8.0])  # task b trained columns 1, 2
    method.versions = [
        {PARAM: (1, torch.tensor([0, 1]), v1)},
        {PARAM: (1, torch.tensor([1, 2]), v2)},
    ]
    query = Task(id="q", kind="classification", instruction="", labels=["x"], metric="accuracy")
    w1, w2 = _hand_weights()
    assert method.weights_for(query) == pytest.approx({"a": 0.420676, "b": 0.579324}, abs=1e-6)
    with method.answering(query) as m:
        got = dict(m.named_parameters())[PARAM].detach()[:, :4].clone()
    if rule == "plain":  # base + sum over all tasks of w_t * delta_t
        want = [base[:, 0] + w1 * 1.0, base[:, 1] + w1 * 2.0 + w2 * 4.0, base[:, 2] - w2 * 8.0]
    else:  # renormalised over the tasks that trained the column
        want = [v1[:, 0], w1 * v1[:, 1] + w2 * v2[:, 0], v2[:, 1]]
    torch.testing.assert_close(got[:, :3], torch.stack(want, 1), rtol=0, atol=1e-5)
    assert torch.equal(got[:, 3], base[:, 3])  # no task trained column 3
    assert torch.equal(dict(model.named_parameters())[PARAM].detach(), base)  # put back


@pytest.mark.parametrize("name,kw", [("wncft", {"mode": "inferred"}), ("epi", {})])
def test_routing_accuracy_is_100_on_separable_tasks(tok, tmp_path, name, kw):
    cfg = _config(name, tmp_path / "cache.json", **kw)
    tasks = [mood_task(), animal_task()]
    res = continual_experiment(tiny_model("llama"), tok, tasks, cfg, tmp_path, progress=False)
    assert res.routing_accuracy() == 100.0
    final = res.routing[-1]
    assert {t: r["routing_accuracy"] for t, r in final.items()} == {"mood": 100.0, "animal": 100.0}
    assert res.routing[0]["animal"]["routing_accuracy"] is None  # not trained yet: no right task
    for task, rec in final.items():
        assert sum(rec["weights"].values()) == pytest.approx(1.0)
        assert max(rec["weights"], key=rec["weights"].get) == task
    saved = json.loads((tmp_path / "routing.json").read_text())
    assert len(saved["rows"]) == 4  # two tasks scored after each of two stages
    from taskneurons.experiments.continual.suite import ContinualSuiteResult

    suite = ContinualSuiteResult(results={name: res}, out_dir=tmp_path / "suite")
    [[label, accuracy, own]] = suite.routing_rows()
    assert (label, accuracy) == (name, 100.0)
    n = sum(r["n"] for r in final.values())
    assert own == pytest.approx(sum(r["weights"][t] * r["n"] for t, r in final.items()) / n)
    assert own > 0.5


@pytest.mark.parametrize("source", ["task", "trained"])
def test_task_vectors_come_from_up_to_n_train_inputs_of_the_source(tok, tmp_path, source):
    from taskneurons.continual.features import mean_features
    from taskneurons.continual.stage_checkpoint import read_checkpoint
    from taskneurons.experiments.common import limited
    from test_continual_tuning import _task

    tasks = [_task("a", ["cat", "dog"]), _task("b", ["red", "blue"])]
    cfg = _config("wncft", tmp_path / "cache.json", vector_source=source, n_vector_samples=1000)
    cfg = cfg.replace(n_test=None)  # all 6 test examples, 2 of whose texts are train texts
    continual_experiment(tiny_model("llama"), tok, tasks, cfg, tmp_path / "r", progress=False)
    state = read_checkpoint(tmp_path / "r" / "checkpoint").state
    for i, task in enumerate(tasks):
        test_inputs = {e.input for e in task.test}
        if source == "task":  # the whole train split but the scored texts: 22 of 24
            inputs = [e.input for e in task.train if e.input not in test_inputs]
            assert len(inputs) == 22
        else:  # only the 8 the stage trains on
            inputs = [e.input for e in limited(task, 8, 0).train]
        want = mean_features(tiny_model("llama"), tok, inputs, batch_size=8).mean(0)
        torch.testing.assert_close(state[f"vector{i}"], want, rtol=0, atol=1e-5)


GATE = "model.layers.1.mlp.gate_proj.weight"


def _plain_by_hand(base: dict, versions: list, weights: list[float]) -> dict:
    """``base + sum_t w_t (V_t - base)`` written slice by slice on full copies of the weights."""
    want = {name: value.clone() for name, value in base.items()}
    for w, version in zip(weights, versions, strict=True):
        for name, (dim, pos, val) in version.items():
            old = want[name].index_select(dim, pos)
            want[name].index_copy_(dim, pos, old + (val - base[name].index_select(dim, pos)) * w)
    return want


def test_wncft_inferred_answers_each_route_with_its_own_weights_bit_for_bit(tok):
    """Many routes in a row (the per-input answering of W-NCFT inferred): each gives exactly
    the plain rule's weights, the model is put back after each, and new versions are used."""
    model = tiny_model("llama")
    method = make_method(method_config(name="wncft", mode="inferred"), model, tok, TRAIN)
    params = dict(model.named_parameters())
    base = {n: params[n].detach().clone() for n in (PARAM, GATE)}
    gen = torch.Generator().manual_seed(0)

    def version(cols: list[int], rows: list[int]) -> dict:
        c, r = torch.tensor(cols), torch.tensor(rows)
        return {
            PARAM: (1, c, base[PARAM][:, c] + torch.randn(len(base[PARAM]), len(c), generator=gen)),
            GATE: (0, r, base[GATE][r] + torch.randn(len(r), base[GATE].shape[1], generator=gen)),
        }

    method.trained = ["a", "b"]
    method.versions = [version([0, 3], [1]), version([3, 5], [1, 2])]
    for step, route in enumerate([(0.9, 0.2), (0.1, 0.7), (0.1, 0.7), (0.5, 0.5, 0.3)]):
        if step == 2:  # b's version is another one now (a reloaded state): so are the answers
            method.versions = [method.versions[0], version([3, 5], [1, 2])]
        if step == 3:  # a third task
            method.trained.append("c")
            method.versions = [*method.versions, version([5, 6], [0])]
        weights = torch.softmax(torch.tensor(route, dtype=torch.float64), 0).tolist()
        want = _plain_by_hand(base, method.versions, weights)
        with method.answering(None, route) as m:
            got = dict(m.named_parameters())
            for name in want:
                assert torch.equal(got[name].detach(), want[name]), (step, name)
        for name in base:
            assert torch.equal(params[name].detach(), base[name])  # put back bit for bit


def test_wncft_inferred_with_one_trained_task_answers_every_input_alike(tok):
    """With one trained task its weight is 1 whatever the input: one route for all inputs."""
    model = tiny_model("llama")
    method = make_method(method_config(name="wncft", mode="inferred"), model, tok, TRAIN)
    method.trained = ["a"]
    method.vectors = {"a": torch.randn(model.config.hidden_size)}
    routes = method.routes(["a cat", "the dog sleeps", "red"])
    assert routes == [(0.0,)] * 3
    assert method.weights_for(None, routes[0]) == {"a": 1.0}
    method.trained = ["a", "b"]
    method.vectors["b"] = torch.randn(model.config.hidden_size)
    assert len(set(method.routes(["a cat", "the dog sleeps", "red"]))) == 3  # own logits again


def test_task_vector_shows_a_bar_over_its_forwards_and_the_same_vector(tok, capsys):
    from taskneurons.continual.features import task_vector
    from test_continual_tuning import _task

    task = _task("a", ["cat", "dog"])
    model = tiny_model("llama")
    quiet = task_vector(model, tok, task, n=20, batch_size=4)
    assert "features of a" not in capsys.readouterr().err
    shown = task_vector(model, tok, task, n=20, batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "features of a" in err and "/5 " in err  # 20 inputs in batches of 4
    assert torch.equal(quiet, shown)


def test_mean_features_are_each_texts_own_mean_last_hidden_state(tok):
    """Oracle: one unpadded forward per text, ``hidden_states[-1]`` averaged over its tokens;
    batching and right padding change nothing but rounding, and the model's mode comes back."""
    from taskneurons.continual.features import mean_features

    model = tiny_model("llama").train()
    texts = ["a cat", "the dog sleeps on the red mat", "blue", "two birds sing"]
    got = mean_features(model, tok, texts, batch_size=3)  # batches of 3 and 1, padded
    assert got.shape == (4, model.config.hidden_size) and not got.requires_grad
    assert model.training
    with torch.no_grad():
        for row, text in zip(got, texts, strict=True):
            ids = torch.tensor([tok(text)["input_ids"]])
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
            torch.testing.assert_close(row, hidden[0].float().mean(0), rtol=0, atol=1e-5)
    assert mean_features(model, tok, [], batch_size=3).numel() == 0
