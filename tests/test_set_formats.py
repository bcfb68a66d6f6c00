"""Neuron sets as LAPE ``.pth`` lists and plain JSON: exact round trips, hand-made files, refusals,
and runs that take an exported file as ``--neurons``."""

from __future__ import annotations

import json

import pytest
import torch

from taskneurons.cli import main
from taskneurons.neurons.neuron_set import NeuronSet, NeuronSetMismatchError
from taskneurons.neurons.set_formats import (
    SetFileError,
    fit_sets,
    from_read,
    read_set_file,
    to_lape,
    write_set_file,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = {"ffn": (3, 8)}


def _random_set(seed: int, shapes=SHAPES, definition="ffn") -> NeuronSet:
    g = torch.Generator().manual_seed(seed)
    masks = {m: torch.rand(s, generator=g) < 0.3 for m, s in shapes.items()}
    meta = {"task": f"t{seed}", "k": 30.0, "scope": "model", "model_fingerprint": {"arch": "x"}}
    return NeuronSet(definition, masks, meta)


def test_json_export_import_round_trips_sets_exactly(tmp_path):
    sets = {"a": _random_set(0), "b": _random_set(1)}
    path = write_set_file(sets, tmp_path / "sets.json")
    found = read_set_file(path)
    back = fit_sets(found, lambda d: SHAPES, ["b", "a"])  # by name, not by order
    for name, s in sets.items():
        assert back[name] == s
        assert back[name].meta == json.loads(json.dumps(s.meta))
    raw = json.loads(path.read_text())
    layer1 = sets["a"].masks["ffn"][1].nonzero().reshape(-1).tolist()
    assert raw["sets"]["a"]["neurons"]["1"] == layer1  # {"layer": [units]}


def test_linear_sets_round_trip_through_json(tmp_path):
    shapes = {"gate": (2, 6), "up": (2, 6), "down": (2, 4)}
    s = _random_set(3, shapes, "linear")
    found = read_set_file(write_set_file({"t": s}, tmp_path / "lin.json"))
    assert fit_sets(found, lambda d: shapes, ["t"])["t"] == s
    with pytest.raises(ValueError, match="LAPE files hold ffn neurons only"):
        write_set_file({"t": s}, tmp_path / "lin.pth")


def test_lape_export_import_round_trips_masks(tmp_path):
    sets = {"a": _random_set(4), "b": _random_set(5)}
    found = read_set_file(write_set_file(sets, tmp_path / "sets.pth"))
    back = fit_sets(found, lambda d: SHAPES, ["a", "b"])  # LAPE: in the tasks' order
    assert back["a"] == sets["a"] and back["b"] == sets["b"]
    raw = torch.load(tmp_path / "sets.pth", weights_only=True)
    assert len(raw) == 2 and len(raw[0]) == 3 and raw[0][0].dtype == torch.long


def test_a_lape_file_made_by_hand_loads_as_the_expected_set(tmp_path):
    # LAPE's activation_mask: one list per language, one tensor of unit indices per layer
    torch.save([torch.tensor([0, 5]), torch.tensor([], dtype=torch.long), torch.tensor([7])],
               tmp_path / "one.pth")  # fmt: skip
    got = fit_sets(read_set_file(tmp_path / "one.pth"), lambda d: SHAPES, ["t"])["t"]
    expected = torch.zeros(3, 8, dtype=torch.bool)
    expected[0, 0] = expected[0, 5] = expected[2, 7] = True
    assert torch.equal(got.masks["ffn"], expected) and len(got) == 3
    assert to_lape(got)[0].tolist() == [0, 5] and to_lape(got)[1].numel() == 0


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a JSON neuron-set file"),
        ('{"0": [1, "x"]}', "layer 0: expected a list of unit indices"),
        ('{"zero": [1]}', "layer keys must be integers"),
        ('{"neurons": {"0": [1]}, "definition": "attn"}', "definition must be"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_json_files_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SetFileError, match=message) as info:
        read_set_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_malformed_lape_files_are_refused(tmp_path):
    torch.save({"a": 1}, tmp_path / "dict.pth")
    with pytest.raises(SetFileError, match="holds a list"):
        read_set_file(tmp_path / "dict.pth")
    torch.save([torch.rand(3)], tmp_path / "float.pth")
    with pytest.raises(SetFileError, match="1-d tensor of unit indices"):
        read_set_file(tmp_path / "float.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(SetFileError, match="not a torch file"):
        read_set_file(tmp_path / "junk.pth")


def test_out_of_range_layers_and_units_are_refused(tmp_path):
    torch.save([torch.tensor([8]), torch.tensor([0]), torch.tensor([0])], tmp_path / "u.pth")
    with pytest.raises(NeuronSetMismatchError, match="unit 8 outside the model's units 0..7"):
        fit_sets(read_set_file(tmp_path / "u.pth"), lambda d: SHAPES, ["t"])
    torch.save([torch.tensor([0])] * 4, tmp_path / "l.pth")
    with pytest.raises(NeuronSetMismatchError, match="covers 4 layers, the model has 3"):
        fit_sets(read_set_file(tmp_path / "l.pth"), lambda d: SHAPES, ["t"])
    (tmp_path / "l.json").write_text('{"5": [0]}')
    with pytest.raises(NeuronSetMismatchError, match="layer 5 outside the model's layers 0..2"):
        from_read(read_set_file(tmp_path / "l.json").sets[0][1], SHAPES, "l.json")
    with pytest.raises(NeuronSetMismatchError, match="holds 1 set"):
        fit_sets(read_set_file(tmp_path / "l.json"), lambda d: SHAPES, ["a", "b"])


def test_deactivate_takes_exported_files_as_neurons(tiny_folder, task_folders, tmp_path, capsys):
    tasks = ",".join(str(f) for f in task_folders)
    base = ["--model", str(tiny_folder), "--tasks", tasks]
    det = tmp_path / "det"
    assert main(["detect", *base, "--k", "20", "--n-examples", "2", "--out", str(det)]) == 0
    tables = {}
    for name in ("sets.pth", "sets.json"):
        assert main(["export", str(det), "--out", str(tmp_path / name)]) == 0
    for source in ("det", "sets.pth", "sets.json"):
        out = tmp_path / f"deact-{source}"
        argv = ["deactivate", *base, "--neurons", str(tmp_path / source), "--n-test", "2"]
        assert main([*argv, "--out", str(out)]) == 0
        tables[source] = json.loads((out / "table1.json").read_text())["rows"]
    assert tables["sets.pth"] == tables["det"] == tables["sets.json"]
    assert "exported 2 set(s) (answer, mood)" in capsys.readouterr().out


def test_bad_neuron_files_stop_before_the_model_loads(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"0": "x"}')
    argv = ["deactivate", "--model", "/nonexistent/model", "--tasks", "sentiment"]
    assert main([*argv, "--neurons", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "layer 0: expected a list of unit indices" in err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x.txt")]) == 2
    assert "name a .pth or .pt file" in capsys.readouterr().err
