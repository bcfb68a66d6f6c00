"""neurons/scoring.py: every caller's relevance scores (and lape's probabilities), and the reuse
rules, in one place; NCFT scores through it too."""

from __future__ import annotations

import doctest

import pytest
import torch

from taskneurons.continual.method_config import MethodConfig
from taskneurons.continual.strategies import ncft
from taskneurons.data.load import load_task
from taskneurons.models.loading import load_model
from taskneurons.neurons import scoring
from taskneurons.neurons.attribution import relevance_scores
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.scoring import (
    PROBS_FILE,
    SCORES_FILE,
    MissingProbabilitiesError,
    ScoreReuse,
    load_scored,
    score_tasks,
)
from taskneurons.neurons.selection.algorithms.lape import LapeSelection
from taskneurons.neurons.selection.ranking import top_k
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import ModelMismatchError

ATTRIBUTION = AttributionConfig(n_examples=4)


@pytest.fixture
def setup(tiny_folder, task_folders):
    model, tok = load_model(str(tiny_folder))
    return model, tok, [load_task(str(f)) for f in task_folders]


@pytest.fixture
def counted(monkeypatch):
    """Task ids in the order ``relevance_scores`` / ``activation_probability`` ran on them."""
    calls: dict[str, list[str]] = {"scores": [], "probs": []}
    real_scores, real_probs = scoring.relevance_scores, scoring.activation_probability

    def scores(model, task, *a, **k):
        calls["scores"].append(task.id)
        return real_scores(model, task, *a, **k)

    def probs(model, task, *a, **k):
        calls["probs"].append(task.id)
        return real_probs(model, task, *a, **k)

    monkeypatch.setattr(scoring, "relevance_scores", scores)
    monkeypatch.setattr(scoring, "activation_probability", probs)
    return calls


def test_doctests_pass():
    assert doctest.testmod(scoring).failed == 0


def test_ncft_scores_through_the_scoring_module(setup, monkeypatch, counted):
    model, tok, tasks = setup
    assert not hasattr(ncft, "relevance_scores") and ncft.score_tasks is scoring.score_tasks
    used = []
    monkeypatch.setattr(
        ncft, "score_tasks", lambda *a, **k: used.append(a[2]) or scoring.score_tasks(*a, **k)
    )
    config = MethodConfig.make("ncft", k=20, attribution=ATTRIBUTION)
    neurons = ncft.detect_task_neurons(model, tok, tasks[0], config)
    assert [[t.id for t in u] for u in used] == [[tasks[0].id]]
    assert counted["scores"] == [tasks[0].id]
    # oracle: the relevance and top-k of the attribution module, called directly
    space = NeuronSpace(model, "ffn")
    direct = relevance_scores(
        model, tasks[0], space, tokenizer=tok, config=ATTRIBUTION, progress=False
    )
    assert neurons == top_k(direct, 20, model=model) and len(neurons) > 0


def test_computed_scores_are_saved_then_loaded_or_cached_instead_of_computed(
    setup, tmp_path, counted
):
    model, tok, tasks = setup
    ids = [t.id for t in tasks]
    first = score_tasks(model, tok, tasks, ATTRIBUTION, None, tmp_path / "scores", False)
    assert counted["scores"] == ids and set(first.origin.values()) == {"computed"}
    assert first.paths == {t: tmp_path / "scores" / t / SCORES_FILE for t in ids}
    assert first.probabilities == {}
    for t in ids:
        saved = NeuronScores.load(first.paths[t])
        assert torch.equal(saved.scores["ffn"], first.scores[t].scores["ffn"])
    loaded = score_tasks(
        model, tok, tasks, ATTRIBUTION, None, tmp_path / "b", False, ScoreReuse(source=tmp_path)
    )
    assert counted["scores"] == ids and set(loaded.origin.values()) == {"loaded"}
    assert loaded.paths == first.paths and not (tmp_path / "b").exists()
    part = score_tasks(model, tok, tasks, ATTRIBUTION, reuse=ScoreReuse(cached=loaded))
    assert part.origin == dict.fromkeys(ids, "cached") and counted["scores"] == ids
    unsaved = score_tasks(model, tok, tasks[:1], ATTRIBUTION)
    assert unsaved.paths == {} and unsaved.origin == {ids[0]: "computed"}


def test_loaded_scores_must_be_of_this_model_and_definition(setup, tmp_path):
    model, tok, tasks = setup
    first = score_tasks(model, tok, tasks[:1], ATTRIBUTION, None, tmp_path / "a", False)
    s = first.scores[tasks[0].id]
    other = {**s.meta, "model_fingerprint": {**s.meta["model_fingerprint"], "weights": "x"}}
    NeuronScores(s.definition, s.scores, other).save(tmp_path / "b" / tasks[0].id / SCORES_FILE)
    with pytest.raises(ModelMismatchError):
        score_tasks(model, tok, tasks[:1], ATTRIBUTION, reuse=ScoreReuse(source=tmp_path / "b"))
    linear = AttributionConfig(n_examples=4, definition="linear")
    with pytest.raises(ValueError, match="scores of 'ffn' neurons"):
        score_tasks(model, tok, tasks[:1], linear, reuse=ScoreReuse(source=tmp_path / "a"))


def test_probabilities_are_measured_once_and_found_again_only_if_measured_alike(
    setup, tmp_path, counted
):
    model, tok, tasks = setup
    ids = [t.id for t in tasks]
    lape = LapeSelection(threshold=0.0)
    folder = tmp_path / "scores"
    first = score_tasks(model, tok, tasks, ATTRIBUTION, lape, folder, False)
    assert counted["probs"] == ids and all((folder / t / PROBS_FILE).is_file() for t in ids)
    assert first.inputs(lape) is first.probabilities
    for t in ids:
        assert first.probabilities[t].meta["threshold"] == 0.0
        assert 0 <= float(first.probabilities[t].scores["ffn"].min())
        assert float(first.probabilities[t].scores["ffn"].max()) <= 1
    again = score_tasks(
        model, tok, tasks, ATTRIBUTION, lape, folder, False, ScoreReuse(cached=first)
    )
    assert counted["probs"] == ids  # the saved ones, measured alike
    assert all(again.probabilities[t].meta == first.probabilities[t].meta for t in ids)
    found = load_scored(first.paths, lape, folder, first.scores[ids[0]].meta["model_fingerprint"])
    assert set(found.probabilities) == set(ids) and set(found.origin.values()) == {"loaded"}
    with pytest.raises(MissingProbabilitiesError, match=r"threshold 0.5 and tokens 'answer'"):
        load_scored(first.paths, LapeSelection(threshold=0.5), folder, None)
    # without reuse (a detection) everything is measured again
    score_tasks(model, tok, tasks, ATTRIBUTION, lape, folder, False)
    assert counted["probs"] == ids * 2
