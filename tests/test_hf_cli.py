"""hf: tasks from the command line through task spec files (YAML/JSON), and their errors."""

from __future__ import annotations

import json

import pytest

from taskneurons.cli import main
from taskneurons.data.load import load_task
from taskneurons.data.tasks import TaskFormatError

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny DatasetDict with a ClassLabel column, saved with save_to_disk."""
    root = tmp_path_factory.mktemp("hfdata")
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
        }
    )
    rows = {
        "sentence": ["the movie was good", "the film was bad", "I loved it", "I hated it"],
        "label": [1, 0, 1, 0],
    }
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows, features=features),
            "test": datasets.Dataset.from_dict(rows, features=features),
        }
    )
    dd.save_to_disk(str(root / "moods"))
    return root / "moods"


def _spec(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_spec_file_loads_relative_to_its_folder(saved):
    spec = _spec(
        saved.parent / "mood.yaml",
        "hf: ./moods\ninput_field: sentence\noutput_field: label\n"
        "labels: {0: Bad, 1: Good}\ninstruction: Sentiment? Choose one from the option.\n",
    )
    task = load_task(spec)
    assert task.id == "mood" and task.labels == ["Bad", "Good"]
    assert task.instruction == "Sentiment? Choose one from the option."
    assert [e.output for e in task.train] == ["Good", "Bad", "Good", "Bad"]
    assert task.source["format"] == "hf-disk" and task.source["spec_file"] == str(spec.resolve())
    # load_task's own arguments override the file's
    assert load_task(str(spec), id="other", name="Other").id == "other"
    # a .json spec (an object with an "hf" key)
    js = saved.parent / "mood_spec.json"
    js.write_text(
        json.dumps({"hf": str(saved), "input_field": "sentence", "output_field": "label"})
    )
    assert load_task(js).labels == ["negative", "positive"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("hf: ./moods\ninput_field: sentence\n", "missing key(s) ['output_field']"),
        (
            "hf: ./moods\ninput_field: sentence\noutput_field: label\ninptu_field: x\n",
            "unknown key 'inptu_field'",
        ),
        ("hf: ./moods\ninput_field: 5\noutput_field: label\n", "input_field: expected a string"),
        (
            "hf: ./moods\ninput_field: sentence\noutput_field: label\nkind: regression\n",
            "kind: expected one of 'classification', 'generation'",
        ),
        ("hf: ./moods\ninput_field: sentense\noutput_field: label\n", "has no column 'sentense'"),
        ("- hf\n- moods\n", "a task spec file is a mapping of settings, got list"),
        ("hf: [./moods\n", "invalid YAML"),
        ("hf: ./nope\ninput_field: sentence\noutput_field: label\n", "no such file or folder"),
    ],
)
def test_bad_spec_files_name_the_file_and_key(saved, text, message):
    spec = _spec(saved.parent / "bad.yaml", text)
    with pytest.raises(TaskFormatError) as err:
        load_task(spec)
    msg = str(err.value)
    assert msg.startswith(str(spec)) and message in msg and "\n" not in msg


def test_bare_hf_name_says_to_write_a_spec_file():
    with pytest.raises(TaskFormatError) as err:
        load_task("hf:glue")
    msg = str(err.value)
    assert msg.startswith("hf:glue: an hf: task needs input_field and output_field")
    assert "task spec file" in msg and "{hf: glue, input_field:" in msg and "\n" not in msg


def test_bare_hf_name_on_the_command_line_is_a_one_line_error(tiny_folder, tmp_path, capsys):
    argv = ["eval", "--model", str(tiny_folder), "--task", "hf:glue", "--limit", "2"]
    assert main([*argv, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert "TypeError" not in err and len(err.splitlines()) == 1
    assert "write a task spec file" in err
    code = main(
        ["detect", "--model", str(tiny_folder), "--tasks", "hf:glue", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "tasks[0]: hf:glue: an hf: task needs" in capsys.readouterr().err


def test_eval_and_detect_with_a_spec_file(tiny_folder, saved, tmp_path, capsys):
    spec = _spec(
        tmp_path / "mood.yaml",
        f"hf: {saved}\ninput_field: sentence\noutput_field: label\n"
        "labels: {negative: bad, positive: good}\n",
    )
    argv = ["eval", "--model", str(tiny_folder), "--task", str(spec), "--limit", "2"]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 0
    assert "mood" in capsys.readouterr().out
    out = tmp_path / "detect"
    argv = ["detect", "--model", str(tiny_folder), "--tasks", str(spec), "--n-examples", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "mood" / "neurons.safetensors").is_file()
    record = json.loads((out / "detect_config.json").read_text())
    assert record["tasks"] == ["mood"]


def test_relative_spec_path_resolves_against_its_folder(saved, monkeypatch):
    monkeypatch.chdir(saved.parent)
    _spec(saved.parent / "rel.yaml", "hf: moods\ninput_field: sentence\noutput_field: label\n")
    assert load_task("rel.yaml").source["path"] == str(saved.resolve())
    _spec(saved.parent / "rel.yaml", "hf: ./nope\ninput_field: sentence\noutput_field: label\n")
    with pytest.raises(TaskFormatError, match=r"^rel\.yaml: .*nope: no such file or folder$"):
        load_task("rel.yaml")  # a local path, never sent to the Hub
