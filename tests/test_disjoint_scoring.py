"""Relevance scoring leaves out the examples the model was fine-tuned on (issue 23, build 4).

The oracle: the fine-tuning examples are those ``Task.limit(n_train, seed)`` draws (the
multitask stage's documented draw), their keys computed here with ``examples_hash``; the scored
examples are read back from each set's ``data_hash``.
"""

from __future__ import annotations

import json

import pytest

from taskneurons.data.load import load_task
from taskneurons.data.tasks import Example, Task, examples_hash
from taskneurons.experiments.runner import run_file
from taskneurons.models.loading import load_model
from taskneurons.models.saving import MODEL_META, mark_tuned, tuned_on
from taskneurons.neurons.attribution import scoring_examples, tuned_overlap
from taskneurons.neurons.attribution_config import AttributionConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(n=10):
    labels = ["good", "bad"]
    train = [Example(f"text {i}", labels[i % 2]) for i in range(n)]
    return Task("t", "classification", "Say.", labels, "accuracy", train=train, test=train[:2])


def _key(ex):
    return examples_hash([ex])


def test_scoring_examples_leave_out_tuned_ones():
    task = _task()
    tuned = frozenset(_key(ex) for ex in task.train[:6])
    cfg = AttributionConfig(n_examples=3)
    exs = scoring_examples(task, cfg, tuned)
    assert len(exs) == 3 and not {_key(e) for e in exs} & tuned
    assert tuned_overlap(exs, tuned) == {"tuned_overlap": 0}
    # fewer left than asked: all that are left
    assert {_key(e) for e in scoring_examples(task, AttributionConfig(n_examples=8), tuned)} == {
        _key(e) for e in task.train[6:]
    }
    # the option off: drawn from every example, as before
    off = scoring_examples(task, AttributionConfig(n_examples=3, exclude_tuned=False), tuned)
    assert off == scoring_examples(task, AttributionConfig(n_examples=3), None)
    # all tuned on: scored anyway, and the overlap says so
    every = frozenset(_key(e) for e in task.train)
    exs = scoring_examples(task, cfg, every)
    assert tuned_overlap(exs, every) == {"tuned_overlap": 3}
    # a model that records nothing: no overlap key (unknown, not zero)
    assert tuned_overlap(exs, None) == {}


def test_mark_tuned_accumulates(tiny_folder):
    model, _ = load_model(str(tiny_folder))
    assert tuned_on(model) is None  # a plain folder records no fine-tuning
    mark_tuned(model, ["a"])
    mark_tuned(model, ["b"])
    assert tuned_on(model) == {"a", "b"}


def _write(tmp_path, name, body):
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


def _scored_hashes(folder):
    sets = json.loads((folder / "deactivate" / "deactivate_config.json").read_text())
    return {
        t: (s["data_hash"], s["n_examples"], s["tuned_overlap"])
        for t, s in sets["neuron_sets"].items()
    }


@pytest.mark.parametrize("exclude", [True, False])
def test_multitask_scores_on_examples_it_did_not_train_on(
    tiny_folder, task_folders, tmp_path, exclude
):
    out = tmp_path / "mt"
    run_file(
        _write(
            tmp_path, "mt",
            f"experiment: multitask\nmodel: {tiny_folder}\nout: {out}\n"
            f"tasks: [{task_folders[0]}, {task_folders[1]}]\n"
            f"detect: {{k: 20, attribution: {{n_examples: 4, exclude_tuned: {str(exclude).lower()}}}}}\n"
            "deactivate: {n_test: 4}\n"
            "multitask: {n_train: 4, save_model: true, train: {method: full, lr: 0.01, epochs: 1, batch_size: 2}}\n",
        ),
        progress=False,
        echo=None,
    )  # fmt: skip
    tuned_keys = set()
    for folder in task_folders[:2]:
        task = load_task(str(folder))
        used = task.limit(n_train=4, seed=0).train  # what the fine-tuning trained on
        tuned_keys |= {_key(e) for e in used}
        fresh = [e for e in task.train if _key(e) not in {_key(u) for u in used}]
        data_hash, n, overlap = _scored_hashes(out)[task.id]
        if exclude:  # 6 train examples, 4 tuned on: the other 2 are scored
            assert (n, overlap) == (2, 0) and data_hash in _orders(fresh)
        else:  # the old draw: 4 of 6, the same subset the fine-tuning drew
            assert n == 4 and overlap == 4
    record = json.loads((out / "model" / MODEL_META).read_text())
    assert set(record["tuned_on"]) == tuned_keys
    reloaded, _ = load_model(str(out / "model"))
    assert tuned_on(reloaded) == tuned_keys


def _orders(examples):
    """Hashes of the examples in any order (the scored order is the subset's)."""
    from itertools import permutations

    return {examples_hash(list(p)) for p in permutations(examples)}


def test_a_saved_model_scored_later_leaves_its_examples_out(tiny_folder, task_folders, tmp_path):
    out = tmp_path / "mt"
    run_file(
        _write(
            tmp_path, "mt",
            f"experiment: multitask\nmodel: {tiny_folder}\nout: {out}\n"
            f"tasks: [{task_folders[0]}, {task_folders[1]}]\n"
            "detect: {k: 20, attribution: {n_examples: 4}}\ndeactivate: {n_test: 4}\n"
            "multitask: {n_train: 3, save_model: true, train: {method: full, lr: 0.01, epochs: 1, batch_size: 2}}\n",
        ),
        progress=False,
        echo=None,
    )  # fmt: skip
    later = tmp_path / "later"
    run_file(
        _write(
            tmp_path, "later",
            f"experiment: detect\nmodel: {out / 'model'}\nout: {later}\n"
            f"tasks: [{task_folders[0]}]\ndetect: {{k: 20, attribution: {{n_examples: 4}}}}\n",
        ),
        progress=False,
        echo=None,
    )  # fmt: skip
    task = load_task(str(task_folders[0]))
    used = {_key(e) for e in task.limit(n_train=3, seed=0).train}
    meta = json.loads((later / task.id / "neurons.json").read_text())["meta"]
    assert meta["tuned_overlap"] == 0 and meta["n_examples"] == 3  # 6 - 3 left, all scored
    fresh = [e for e in task.train if _key(e) not in used]
    assert meta["data_hash"] in _orders(fresh)


def test_multitask_sweep_runs_every_selection_on_the_fine_tuned_model(
    tiny_folder, task_folders, tmp_path
):
    """``multitask.sweep``: the selection sweep on each seed's fine-tuned model. Oracle: its
    cell of the multitask's own selection and k deactivates the same sets on the same model and
    test examples as the multitask stage, so the two deactivation tables agree to the digit;
    every cell scores only examples the fine-tuning did not use; the seeds summary reads them."""
    from taskneurons.experiments.specificity.multitask import MultitaskResult

    out = tmp_path / "mts"
    run_file(
        _write(
            tmp_path, "mts",
            f"experiment: multitask\nmodel: {tiny_folder}\nout: {out}\nseeds: [0, 1]\n"
            f"tasks: [{task_folders[0]}, {task_folders[1]}]\n"
            "detect: {k: 20, attribution: {n_examples: 2}, selection: {method: specific, m: null}}\n"
            "deactivate: {n_test: 4, n_boot: 20}\n"
            "multitask: {n_train: 4, train: {method: full, lr: 0.01, epochs: 1, batch_size: 2},\n"
            "            sweep: {k: [20], selections: [topk, specific]}}\n",
        ),
        progress=False,
        echo=None,
    )  # fmt: skip
    for seed in (0, 1):
        folder = out / f"seed-{seed}"
        result = MultitaskResult.load(folder)
        assert sorted(result.sweep.cells) == [("specific", 20.0), ("topk", 20.0)]
        same = result.sweep.cells[("specific", 20.0)]
        mine = result.deactivation
        assert same.meta["neuron_sets"] == mine.meta["neuron_sets"]  # the same sets and data
        rows = {k: v for k, v in same.table.rows.items() if k != "Deactivate-General"}
        assert rows == mine.table.rows and same.table.matrix == mine.table.matrix
        assert same.nll.matrix == mine.nll.matrix  # (the sweep also turns the general set off)
        scores = result.sweep.meta["scores"]  # detect/'s scores of this model, not made again
        assert {s["origin"] for s in scores.values()} == {"loaded"}
        assert all(s["path"].startswith("../detect/") for s in scores.values())
        for cell in ("topk-k20", "specific-k20"):
            record = json.loads((folder / "sweep" / cell / "deactivate_config.json").read_text())
            assert all(s["tuned_overlap"] == 0 for s in record["neuron_sets"].values())
    summary = json.loads((out / "seeds.json").read_text())
    cells = {row[1] for row in summary["rows"]}
    assert {"", "sweep/topk-k20", "sweep/specific-k20"} <= cells
