"""Tasks recast to yes/no: one label set across skills, balanced, splits kept (data/recast.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from taskneurons.data.load import load_task
from taskneurons.data.tasks import TaskFormatError

SUITE = Path(__file__).resolve().parents[1] / "experiments" / "tasks" / "shared-label"


def _source(folder: Path, kind: str, rows: list[tuple[str, str]], labels=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    info = {"id": folder.name, "name": folder.name, "kind": kind, "instruction": "Do it.",
            "metric": "accuracy" if kind == "classification" else "rougeL"}  # fmt: skip
    if labels:
        info["labels"] = labels
    (folder / "task.json").write_text(json.dumps(info))
    for split, part in (("train", rows[: len(rows) // 2]), ("test", rows[len(rows) // 2 :])):
        lines = [json.dumps({"input": x, "output": y}) for x, y in part]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_labels_are_mapped_balanced_and_kept_in_their_split(tmp_path):
    rows = [(f"text {i}", ["a", "b", "c"][i % 3]) for i in range(60)]  # a: 1 in 3
    _source(tmp_path / "src", "classification", rows, ["a", "b", "c"])
    spec = tmp_path / "is_a.yaml"
    spec.write_text("recast: src\ninstruction: Is it a?\nyes_labels: [a]\nn_test: 100\n")
    task = load_task(spec)
    assert (task.id, task.labels, task.kind) == ("is_a", ["yes", "no"], "classification")
    truth = dict(rows)
    for split, source_rows in (("train", rows[:30]), ("test", rows[30:])):
        examples = getattr(task, split)
        assert Counter(e.output for e in examples) == {"yes": 10, "no": 10}  # 10 "a" per split
        inputs = {x for x, _ in source_rows}
        for e in examples:  # every example from its own split, answered as its label says
            assert e.input in inputs and e.output == ("yes" if truth[e.input] == "a" else "no")
    assert load_task(spec).test == task.test  # seeded
    spec.write_text(spec.read_text() + "seed: 1\n")
    assert load_task(spec).test != task.test


def test_pairs_show_an_example_with_its_own_output_or_another(tmp_path):
    rows = [(f"Concepts: c{i}", f"sentence {i}") for i in range(40)]
    _source(tmp_path / "gen", "generation", rows)
    spec = tmp_path / "fits.yaml"
    spec.write_text("recast: gen\ninstruction: Does it fit?\npair: Sentence\n")
    task = load_task(spec)
    for e in task.train + task.test:
        concept, shown = e.input.split("\nSentence: ")
        own = shown == f"sentence {concept.removeprefix('Concepts: c')}"
        assert e.output == ("yes" if own else "no")
    assert Counter(e.output for e in task.test) == {"yes": 10, "no": 10}
    seen = [e.input.split("\n")[0] for e in task.train]
    assert len(seen) == len(set(seen))  # each input once: no pair of one input in both answers


@pytest.mark.parametrize(
    "text, message",
    [
        ("recast: src\ninstruction: Q?\nyes_labels: [z]\n", r"yes_labels: \['z'\] are not labels"),
        ("recast: src\ninstruction: Q?\n", "either `yes_labels`"),
        ("recast: src\ninstruction: Q?\nyes_labels: [a]\npair: X\n", "either `yes_labels`"),
        (
            "recast: src\ninstruction: Q?\nyes: [a]\n",
            "unknown key 'True'",
        ),  # YAML reads yes: as true
    ],
)
def test_bad_recasts_name_the_file(tmp_path, text, message):
    _source(tmp_path / "src", "classification", [("x", "a"), ("y", "b")] * 4, ["a", "b"])
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(TaskFormatError, match=message) as err:
        load_task(spec)
    assert str(spec) in str(err.value)


def test_the_shared_label_suite_has_one_label_set_and_balanced_labels(shared_data):
    tasks = [load_task(p) for p in sorted(SUITE.glob("*.yaml"))]
    assert len(tasks) >= 6 and len({t.source["source_task"] for t in tasks}) == len(tasks)
    for task in tasks:
        assert task.labels == ["yes", "no"]
        for split in (task.train, task.test):
            counts = Counter(e.output for e in split)
            assert counts["yes"] == counts["no"] > 0 and set(counts) == {"yes", "no"}
        assert not {e.input for e in task.train} & {e.input for e in task.test}
