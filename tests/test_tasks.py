"""Task loaders, validation messages, subsets and Task.limit (no model)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from taskneurons.data.hf import load_hf_task
from taskneurons.data.load import load_task
from taskneurons.data.tasks import Example, Task, TaskFormatError, examples_hash, subset

LABELS = ["Good", "Bad"]


def write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_folder(tmp_path: Path, meta: dict | None = None, train=None, test=None) -> Path:
    """A valid classification task folder; override parts to break it."""
    folder = tmp_path / "toy"
    folder.mkdir(exist_ok=True)
    meta = meta or {
        "id": "toy",
        "name": "Toy sentiment",
        "kind": "classification",
        "labels": LABELS,
        "instruction": "What is the sentiment? Choose one from the option.",
        "metric": "accuracy",
    }
    (folder / "task.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    write_jsonl(
        folder / "train.jsonl",
        train
        if train is not None
        else [{"input": f"Text: good {i}", "output": LABELS[i % 2]} for i in range(6)],
    )
    write_jsonl(
        folder / "test.jsonl",
        test
        if test is not None
        else [{"input": f"Text: other {i}", "output": LABELS[i % 2]} for i in range(4)],
    )
    return folder


# ------------------------------------------------------------------------------ task folders


def test_task_folder_classification(tmp_path):
    folder = make_folder(tmp_path)
    task = load_task(folder)
    assert task.id == "toy" and task.name == "Toy sentiment"
    assert task.kind == "classification" and task.metric == "accuracy"
    assert task.labels == LABELS
    assert len(task.train) == 6 and len(task.test) == 4
    assert task.train[1] == Example("Text: good 1", "Bad")
    assert task.source["format"] == "task-folder"
    # task.json itself, and overrides
    again = load_task(folder / "task.json", name="renamed", instruction="Do it.")
    assert again.name == "renamed" and again.instruction == "Do it."
    assert examples_hash(again.train) == examples_hash(task.train)


def test_task_folder_generation_references(tmp_path):
    meta = {"id": "gen", "kind": "generation", "instruction": "Write a sentence."}
    rows = [
        {"input": "Concepts: a b", "output": "A b.", "references": ["A b.", "B a."]},
        {"input": "Concepts: c d", "output": "C d."},
        {"input": "Concepts: e f", "output": "E f.", "references": ["F e."]},
    ]
    folder = make_folder(tmp_path, meta=meta, train=rows, test=rows[:1])
    task = load_task(folder)
    assert task.kind == "generation" and task.labels is None and task.metric == "rougeL"
    assert task.name == "gen"
    assert task.train[0].all_references == ("A b.", "B a.")
    assert task.train[1].all_references == ("C d.",)
    assert task.train[2].references == ("E f.", "F e.")  # output is kept as the first reference


def test_blank_lines_are_skipped(tmp_path):
    folder = make_folder(tmp_path)
    text = (folder / "train.jsonl").read_text()
    (folder / "train.jsonl").write_text("\n" + text.replace("\n", "\n\n"))
    assert len(load_task(folder).train) == 6


def test_jsonl_strings_keep_unicode_line_separators(tmp_path):
    """U+0085, U+2028, U+2029 (and other splitlines breaks) are valid inside JSON strings."""
    odd = ["caf\u00e9\u0085great", "line\u2028sep", "para\u2029sep", "ff\x0cvt\x0bgs\x1d"]
    train = [{"input": f"Text: {s}", "output": LABELS[i % 2]} for i, s in enumerate(odd)]
    test = [{"input": f"Review\u2028{odd[0]}\u2029end", "output": "Good"}]
    folder = make_folder(tmp_path)
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (folder / name).write_bytes(text.encode("utf-8"))
    assert "\u2028" in (folder / "train.jsonl").read_text(encoding="utf-8")  # written raw
    task = load_task(folder)
    assert [ex.input for ex in task.train] == [r["input"] for r in train]
    assert [ex.output for ex in task.train] == [r["output"] for r in train]
    assert task.test == [Example(test[0]["input"], "Good")]


def test_jsonl_crlf_lines_and_line_numbers(tmp_path):
    folder = make_folder(tmp_path)
    good = '{"input": "fine\u2028still line 1", "output": "Good"}'
    (folder / "train.jsonl").write_bytes(f"{good}\r\n\r\n{good}\r\n".encode())
    task = load_task(folder)
    assert [ex.input for ex in task.train] == ["fine\u2028still line 1"] * 2
    bad = '{"input": "x", "output": "Neutral"}'
    (folder / "train.jsonl").write_bytes(f"{good}\r\n\r\n{good}\r\n{bad}\r\n".encode())
    with pytest.raises(TaskFormatError, match=r"train\.jsonl:4: label 'Neutral'"):
        load_task(folder)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"input": "x", "output": "Good"', "train.jsonl:3: invalid JSON"),
        ('["x", "Good"]', "train.jsonl:3: expected a JSON object, got a list"),
        ('{"output": "Good"}', 'train.jsonl:3: missing "input"'),
        ('{"input": "x"}', 'train.jsonl:3: missing "output"'),
        ('{"input": 5, "output": "Good"}', 'train.jsonl:3: "input" must be a string, got 5'),
        ('{"input": "x", "output": 1}', 'train.jsonl:3: "output" must be a string, got 1'),
        (
            '{"input": "x", "output": "Neutral"}',
            "train.jsonl:3: label 'Neutral' is not one of the task's labels ['Good', 'Bad']",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, expected):
    folder = make_folder(tmp_path)
    good = '{"input": "fine", "output": "Good"}'
    (folder / "train.jsonl").write_text(f"{good}\n{good}\n{line}\n{good}\n")
    with pytest.raises(TaskFormatError) as err:
        load_task(folder)
    assert expected in str(err.value)
    assert str(folder / "train.jsonl") in str(err.value)


def test_bad_references(tmp_path):
    meta = {"id": "gen", "kind": "generation", "instruction": "Write."}
    rows = [{"input": "a", "output": "b"}, {"input": "c", "output": "d", "references": "d"}]
    folder = make_folder(tmp_path, meta=meta, train=rows, test=rows[:1])
    with pytest.raises(
        TaskFormatError, match=r"train\.jsonl:2: \"references\" must be a non-empty"
    ):
        load_task(folder)
    rows[1]["references"] = ["d", 3]
    folder = make_folder(tmp_path, meta=meta, train=rows, test=rows[:1])
    with pytest.raises(TaskFormatError, match=r"train\.jsonl:2: \"references\""):
        load_task(folder)


def test_empty_split_and_missing_files(tmp_path):
    folder = make_folder(tmp_path, test=[])
    with pytest.raises(TaskFormatError, match=r"test\.jsonl: no examples"):
        load_task(folder)
    folder = make_folder(tmp_path)
    (folder / "test.jsonl").unlink()
    with pytest.raises(TaskFormatError, match=r"toy/test\.jsonl: missing \(a task folder needs"):
        load_task(folder)
    (folder / "task.json").unlink()
    with pytest.raises(TaskFormatError, match="not a task folder"):
        load_task(folder)  # only train.jsonl left: neither layout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"kind": None}, "missing required key(s) ['kind']"),
        ({"kind": "regression"}, "unknown kind 'regression'"),
        ({"labels": None}, "a classification task needs labels"),
        ({"labels": ["Good", "Bad", "Good"]}, "duplicate label 'Good'"),
        ({"labels": "Good,Bad"}, "labels must be a list of strings"),
        ({"metric": "bleu"}, "unknown metric 'bleu'"),
    ],
)
def test_bad_task_json(tmp_path, change, expected):
    meta = {
        "id": "toy",
        "kind": "classification",
        "labels": LABELS,
        "instruction": "Classify.",
    }
    for key, value in change.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    folder = make_folder(tmp_path, meta=meta)
    with pytest.raises(TaskFormatError) as err:
        load_task(folder)
    assert expected in str(err.value)
    assert str(folder / "task.json") in str(err.value)


def test_task_json_invalid_json_names_line(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "task.json").write_text('{\n  "id": "toy",\n  "kind": classification\n}\n')
    with pytest.raises(TaskFormatError, match=r"task\.json:3: invalid JSON"):
        load_task(folder)


# ------------------------------------------------------------------------------ O-LoRA layout


def make_olora(tmp_path: Path, train=None) -> Path:
    folder = tmp_path / "SST-2"
    folder.mkdir(exist_ok=True)
    (folder / "labels.json").write_text('["Good", "Bad"]')
    train = train or [{"sentence": f"s{i}", "label": LABELS[i % 2]} for i in range(5)]
    (folder / "train.json").write_text(json.dumps(train, indent=2))
    (folder / "test.json").write_text(json.dumps([{"sentence": "t", "label": "Bad"}]))
    return folder


def test_olora_folder(tmp_path):
    folder = make_olora(tmp_path)
    task = load_task(folder)
    assert task.id == "SST-2" and task.labels == LABELS and task.kind == "classification"
    assert task.instruction.endswith("Choose one from the option.")
    assert [e.output for e in task.train] == ["Good", "Bad", "Good", "Bad", "Good"]
    assert task.test == [Example("t", "Bad")]
    custom = load_task(folder, instruction="What is the sentiment? Choose one from the option.")
    assert custom.instruction.startswith("What is the sentiment?")


def test_olora_bad_label_names_line(tmp_path):
    rows = [{"sentence": "a", "label": "Good"}, {"sentence": "b", "label": "Meh"}]
    folder = make_olora(tmp_path, train=rows)
    # json.dumps(indent=2): the second object starts on line 6
    with pytest.raises(TaskFormatError) as err:
        load_task(folder)
    msg = str(err.value)
    assert f"{folder / 'train.json'}:6:" in msg and "'Meh'" in msg and "['Good', 'Bad']" in msg


def test_olora_missing_key_and_duplicate_labels(tmp_path):
    folder = make_olora(tmp_path, train=[{"sentence": "a", "label": "Good"}, {"text": "b"}])
    with pytest.raises(TaskFormatError, match=r'train\.json:6: missing "sentence"'):
        load_task(folder)
    folder = make_olora(tmp_path)
    (folder / "labels.json").write_text('["Good", "Good"]')
    with pytest.raises(TaskFormatError, match=r"labels\.json: duplicate label 'Good'"):
        load_task(folder)


# ------------------------------------------------------------------------------ Hugging Face


datasets = pytest.importorskip("datasets")


def test_hf_saved_to_disk_with_classlabel(tmp_path):
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
        }
    )
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"sentence": ["good", "bad", "fine"], "label": [1, 0, 1]}, features=features
            ),
            "test": datasets.Dataset.from_dict(
                {"sentence": ["awful"], "label": [0]}, features=features
            ),
        }
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    task = load_hf_task(tmp_path / "saved", input_field="sentence", output_field="label")
    assert task.labels == ["negative", "positive"] and task.id == "saved"
    assert [e.output for e in task.train] == ["positive", "negative", "positive"]
    assert task.test == [Example("awful", "negative")]
    assert task.source["format"] == "hf-disk"
    # through load_task, with labels renamed by a mapping
    renamed = load_task(
        f"hf:{tmp_path / 'saved'}",
        input_field="sentence",
        output_field="label",
        labels={"positive": "Good", "negative": "Bad"},
        instruction="Sentiment? Choose one from the option.",
    )
    assert renamed.labels == ["Good", "Bad"]
    assert [e.output for e in renamed.train] == ["Good", "Bad", "Good"]
    with pytest.raises(
        TaskFormatError, match=r"no split 'validation' \(splits: \['test', 'train'\]\)"
    ):
        load_hf_task(
            tmp_path / "saved",
            input_field="sentence",
            output_field="label",
            test_split="validation",
        )
    with pytest.raises(TaskFormatError, match="has no column 'text'"):
        load_hf_task(tmp_path / "saved", input_field="text", output_field="label")


def test_hf_classlabel_unlabelled_row(tmp_path):
    features = datasets.Features(
        {"s": datasets.Value("string"), "label": datasets.ClassLabel(names=["no", "yes"])}
    )
    data = {"s": ["a", "b"], "label": [1, -1]}  # -1: an unlabelled row (GLUE test splits)
    dd = datasets.DatasetDict(
        {k: datasets.Dataset.from_dict(data, features=features) for k in ("train", "test")}
    )
    dd.save_to_disk(str(tmp_path / "unl"))
    with pytest.raises(TaskFormatError, match=r"split 'train' row 1: class index -1 outside"):
        load_hf_task(tmp_path / "unl", input_field="s", output_field="label")


def test_hf_local_json_files(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl", [{"q": f"q{i}", "a": ["x", "y"][i % 2]} for i in range(4)]
    )
    write_jsonl(tmp_path / "test.jsonl", [{"q": "z", "a": "y"}])
    task = load_hf_task(
        {"train": tmp_path / "train.jsonl", "test": tmp_path / "test.jsonl"},
        input_field="q",
        output_field="a",
        cache_dir=tmp_path / "cache",
    )
    assert task.labels == ["x", "y"]  # sorted distinct outputs
    assert [e.output for e in task.train] == ["x", "y", "x", "y"]
    assert task.test == [Example("z", "y")]
    # a single file has only a train split
    with pytest.raises(TaskFormatError, match=r"no split 'test' \(splits: \['train'\]\)"):
        load_task(
            f"hf:{tmp_path / 'train.jsonl'}",
            input_field="q",
            output_field="a",
            cache_dir=tmp_path / "cache",
        )
    # a label outside the given labels names the split and row
    with pytest.raises(TaskFormatError, match=r"split 'train' row 1: label 'y' is not one"):
        load_hf_task(
            {"train": tmp_path / "train.jsonl", "test": tmp_path / "test.jsonl"},
            input_field="q",
            output_field="a",
            labels=["x", "w"],
            cache_dir=tmp_path / "cache",
        )


def test_hf_generation_with_references(tmp_path):
    dd = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"src": ["a b"], "tgt": ["A b."], "refs": [["A b.", "B a."]]}
            )
            for split in ("train", "test")
        }
    )
    dd.save_to_disk(str(tmp_path / "gen"))
    task = load_hf_task(
        tmp_path / "gen",
        input_field="src",
        output_field="tgt",
        references_field="refs",
        kind="generation",
    )
    assert task.metric == "rougeL" and task.labels is None
    assert task.train[0].all_references == ("A b.", "B a.")


def test_hf_hub_offline_is_a_short_error(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TaskFormatError) as err:
        load_task("hf:no-such-owner/no-such-dataset", input_field="x", output_field="y")
    msg = str(err.value)
    assert msg.startswith("hf:no-such-owner/no-such-dataset: could not load")
    assert "\n" not in msg and err.value.__cause__ is None


def test_hf_missing_local_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(TaskFormatError, match="no such file or folder"):
        load_hf_task(str(tmp_path / "nope.jsonl"), input_field="x", output_field="y")


def test_missing_datasets_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r'pip install "taskneurons\[hf\]"'):
        load_hf_task("x", input_field="a", output_field="b")


# ------------------------------------------------------------------------------ dispatch


def test_unknown_spec_lists_builtins(tmp_path):
    with pytest.raises(TaskFormatError) as err:
        load_task("no_such_task_xyz")
    assert "sentiment" in str(err.value) and "no_such_task_xyz" in str(err.value)
    (tmp_path / "data.jsonl").write_text("")
    with pytest.raises(TaskFormatError, match="hf:"):
        load_task(tmp_path / "data.jsonl")


def test_json_data_file_is_not_a_spec_file_and_bare_hf_needs_fields(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps([{"hf": "x"}]))
    with pytest.raises(TaskFormatError, match=r"for a data file write one, e\.g\. \{hf: "):
        load_task(tmp_path / "rows.json")  # a JSON list is data, not a task spec file
    with pytest.raises(TaskFormatError, match="needs output_field, which a task name"):
        load_task("hf:some/name", input_field="x")


def test_builtin_through_load_task():
    task = load_task("sentiment", seed=3, n_train=10, n_test=5)
    assert task.source == {
        "format": "builtin",
        "name": "sentiment",
        "seed": 3,
        "n_train": 10,
        "n_test": 5,
    }
    assert len(task.train) == 10 and len(task.test) == 5


# ------------------------------------------------------------------------------ subsets


def pool(n_a: int, n_b: int, n_c: int = 0) -> list[Example]:
    outs = ["a"] * n_a + ["b"] * n_b + ["c"] * n_c
    return [Example(f"x{i}", o) for i, o in enumerate(outs)]


def test_subset_stratified_proportional():
    exs = pool(60, 30, 10)
    picked = subset(exs, 20, seed=0, labels=["a", "b", "c"])
    assert Counter(e.output for e in picked) == {"a": 12, "b": 6, "c": 2}
    assert len({e.input for e in picked}) == 20
    # original relative order is kept
    idx = [exs.index(e) for e in picked]
    assert idx == sorted(idx)


def test_subset_every_label_present_and_remainders():
    exs = pool(97, 2, 1)
    picked = subset(exs, 5, seed=0, labels=["a", "b", "c"])
    assert Counter(e.output for e in picked) == {"a": 3, "b": 1, "c": 1}
    picked = subset(pool(5, 5), 3, seed=0, labels=["a", "b"])  # tie -> first label
    assert Counter(e.output for e in picked) == {"a": 2, "b": 1}


def test_subset_seeded():
    exs = pool(50, 50)
    one = subset(exs, 10, seed=1, labels=["a", "b"])
    assert one == subset(exs, 10, seed=1, labels=["a", "b"])
    assert one != subset(exs, 10, seed=2, labels=["a", "b"])
    plain = subset(exs, 10, seed=1)
    assert plain == subset(exs, 10, seed=1) and plain != subset(exs, 10, seed=2)


def test_subset_all_and_bad_sizes():
    exs = pool(3, 2)
    assert subset(exs, 5, seed=0, labels=["a", "b"]) == exs
    assert subset(exs, 50, seed=9) == exs
    for bad in (0, -1):
        with pytest.raises(ValueError, match="must be > 0"):
            subset(exs, bad)
    with pytest.raises(ValueError, match="integer"):
        subset(exs, 2.5)  # type: ignore[arg-type]


def test_task_limit():
    task = Task(
        id="t",
        kind="classification",
        instruction="Classify.",
        labels=["a", "b"],
        metric="accuracy",
        train=pool(40, 20),
        test=pool(10, 10),
        source={"format": "test"},
    )
    small = task.limit(n_train=6, seed=5)
    assert Counter(e.output for e in small.train) == {"a": 4, "b": 2}
    assert small.test == task.test and small.test is not task.test
    assert small.source == {
        "format": "test",
        "limit": {"n_train": 6, "n_test": None, "seed": 5},
    }
    assert task.source == {"format": "test"} and len(task.train) == 60  # original untouched
    assert small.train == task.limit(n_train=6, seed=5).train
    with pytest.raises(ValueError):
        task.limit(n_test=0)


# ------------------------------------------------------------------------------ real data


@pytest.mark.slow
def test_shared_data_sst2_and_commongen(shared_data):
    sst2 = load_task(shared_data / "sst2")
    assert sst2.kind == "classification" and sst2.labels == ["Good", "Bad"]
    assert len(sst2.train) == 1000 and len(sst2.test) == 500
    small = sst2.limit(n_train=100, n_test=50, seed=0)
    assert Counter(e.output for e in small.train) == {"Good": 50, "Bad": 50}
    gen = load_task(shared_data / "commongen")
    assert gen.kind == "generation" and gen.metric == "rougeL" and gen.labels is None
    assert len(gen.test) == 300
    assert all(len(e.all_references) >= 1 for e in gen.test)
    assert any(len(e.references) > 1 for e in gen.test)
    assert all(e.references[0] == e.output for e in gen.test if e.references)
