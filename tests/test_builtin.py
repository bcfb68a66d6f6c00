"""Built-in demo tasks: deterministic, disjoint splits, valid labels (no model)."""

from __future__ import annotations

from collections import Counter

import pytest

from taskneurons.data.builtin import builtin_task, builtin_task_names
from taskneurons.data.load import load_task
from taskneurons.data.tasks import TaskFormatError, examples_hash

NAMES = builtin_task_names()


def test_at_least_four_tasks_of_both_kinds():
    tasks = [builtin_task(n) for n in NAMES]
    assert len(set(NAMES)) == len(NAMES) >= 4
    kinds = Counter(t.kind for t in tasks)
    assert kinds["classification"] >= 3 and kinds["generation"] >= 1
    for t in tasks:
        assert t.id in NAMES and t.name and t.instruction
        if t.kind == "classification":
            assert t.metric == "accuracy" and t.instruction.endswith("Choose one from the option.")
        else:
            assert t.metric == "rougeL" and t.labels is None


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name):
    a, b = builtin_task(name, seed=0), builtin_task(name, seed=0)
    assert a.train == b.train and a.test == b.test
    c = builtin_task(name, seed=1)
    assert examples_hash(c.train) != examples_hash(a.train)
    assert examples_hash(c.test) != examples_hash(a.test)


@pytest.mark.parametrize("name", NAMES)
def test_sizes_disjoint_and_labels_valid(name):
    t = builtin_task(name)
    assert len(t.train) == 200 and len(t.test) == 100
    train_inputs = {e.input for e in t.train}
    test_inputs = {e.input for e in t.test}
    assert len(train_inputs) == 200 and len(test_inputs) == 100  # no duplicates
    assert not train_inputs & test_inputs
    for e in t.train + t.test:
        assert e.input.strip() and e.output.strip()
        if t.kind == "classification":
            assert e.output in t.labels
    if t.kind == "classification":
        assert len(t.labels) == len(set(t.labels)) >= 2
        for split in (t.train, t.test):
            counts = Counter(e.output for e in split)
            assert len(counts) >= 2  # not a single-label split
            assert max(counts.values()) <= 0.6 * len(split)


def test_custom_sizes_and_limits():
    t = builtin_task("sentiment", seed=2, n_train=30, n_test=20)
    assert (len(t.train), len(t.test)) == (30, 20)
    with pytest.raises(ValueError, match="n_test must be a positive integer"):
        builtin_task("sentiment", n_test=0)
    with pytest.raises(ValueError, match="could not draw 5000 distinct train inputs"):
        builtin_task("animal_plant", n_train=5000)


def test_unknown_name_lists_the_names():
    with pytest.raises(TaskFormatError) as err:
        builtin_task("sentimnet")
    msg = str(err.value)
    assert "'sentimnet'" in msg and all(n in msg for n in NAMES)


def test_task_content():
    for ex in builtin_task("past_tense").test:
        assert ex.input.startswith("Sentence: ")
        present, past = ex.input.removeprefix("Sentence: ").split(), ex.output.split()
        assert len(present) == len(past) and present != past
        assert sum(a != b for a, b in zip(present, past, strict=True)) == 1  # only the verb changes
    for ex in builtin_task("arithmetic").test:
        a, op, b = ex.input.removeprefix("Question: ").split()
        assert int(ex.output) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
    for ex in builtin_task("sentiment").test:
        assert ex.input.startswith("Review: ") and ex.input.endswith(".")


def test_country_city_split_by_country():
    from taskneurons.data.builtin_text import _COUNTRIES

    country_of = {c: country for country, cities in _COUNTRIES for c in (country, *cities)}
    kind_of = {country: "country" for country, _ in _COUNTRIES}
    t = builtin_task("country_city")

    def countries(split):
        out = set()
        for e in split:
            place = e.input.removeprefix("Place: ")
            assert kind_of.get(place, "city") == e.output
            out.add(country_of[place])
        return out

    assert not countries(t.train) & countries(t.test)


def test_animal_plant_split_by_item():
    from taskneurons.data.builtin_text import _ANIMALS, _PLANTS

    t = builtin_task("animal_plant")

    def things(split):
        names = sorted(_ANIMALS + _PLANTS, key=len, reverse=True)  # "apple tree" before "ant"
        out = set()
        for e in split:
            hit = next(n for n in names if f" {n} " in e.input)
            assert (hit in _ANIMALS) == (e.output == "animal")
            out.add(hit)
        return out

    assert not things(t.train) & things(t.test)


def test_load_task_overrides_builtin():
    t = load_task("arithmetic", name="sums", instruction="Check it. Choose one from the option.")
    assert t.name == "sums" and t.instruction.startswith("Check it.")
    assert t.train == builtin_task("arithmetic").train
