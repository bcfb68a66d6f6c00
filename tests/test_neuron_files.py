"""Saved NeuronSets are checked on load (mask checksum, counts, meta), and detect folders hold
one detection: no mixing of sets made with other settings."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from taskneurons.cli import main
from taskneurons.data.load import load_task
from taskneurons.experiments.common import check_detect_out, load_neuron_sets
from taskneurons.models.loading import load_model
from taskneurons.neurons.neuron_files import mask_checksum
from taskneurons.neurons.neuron_set import FORMAT, NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection.ranking import top_k


def _top(k: float = 10.0, seed: int = 0) -> NeuronSet:
    g = torch.Generator().manual_seed(seed)
    scores = NeuronScores("ffn", {"ffn": torch.rand(2, 80, generator=g)}, {"task": "t"})
    return top_k(scores, k=k)  # 16 of 160 neurons at k = 10


def _data_offset(blob: bytes) -> int:
    """Where the tensor bytes of a safetensors file start."""
    return 8 + int.from_bytes(blob[:8], "little")


def _set_mask_byte(path, value: int) -> None:
    """Set the first unselected mask byte of a (one-tensor) safetensors file to ``value``."""
    blob = bytearray(path.read_bytes())
    start = _data_offset(blob)
    blob[blob.index(0, start)] = value
    path.write_bytes(bytes(blob))


def _edit_sidecar(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# -- the file itself ---------------------------------------------------------------------------------
def test_saved_files_record_count_and_checksums(tmp_path):
    s = _top()
    s.save(tmp_path / "s.safetensors")
    side = json.loads((tmp_path / "s.json").read_text())
    assert side["count"] == 16 == side["meta"]["count"]
    assert side["mask_sha256"] == mask_checksum(s.masks) and len(side["meta_sha256"]) == 64
    back = NeuronSet.load(tmp_path / "s.safetensors")
    assert back == s and back.meta["count"] == 16 and back.meta["k"] == 10.0


def test_flipped_mask_bytes_are_refused(tmp_path):
    path = _top().save(tmp_path / "s.safetensors")
    _set_mask_byte(path, 1)
    with pytest.raises(ValueError) as err:
        NeuronSet.load(path)
    assert str(err.value) == (
        f"{path}: the neuron masks do not match the checksum saved with them (17 neurons "
        "selected, 16 saved); the file is damaged or was edited: detect the neurons again"
    )
    _top().save(path)
    _set_mask_byte(path, 0x5A)  # no valid bool
    with pytest.raises(ValueError, match="holds byte values other than 0 and 1"):
        NeuronSet.load(path)


def test_edited_meta_is_refused_unless_its_checksum_is_deleted(tmp_path):
    path = _top().save(tmp_path / "s.safetensors")
    meta_path = tmp_path / "s.json"
    _edit_sidecar(meta_path, lambda d: d["meta"].update(k=50.0))
    with pytest.raises(ValueError) as err:
        NeuronSet.load(path)
    assert str(err.value).startswith(f"{meta_path}: the meta was edited after saving")
    assert '"meta_sha256"' in str(err.value)
    # deleting the checksum accepts a deliberate edit of the meta ...
    _edit_sidecar(meta_path, lambda d: d.pop("meta_sha256"))
    assert NeuronSet.load(path).meta["k"] == 50.0
    # ... but never a count the masks do not have
    _edit_sidecar(meta_path, lambda d: d["meta"].update(count=99))
    with pytest.raises(ValueError) as err:
        NeuronSet.load(path)
    assert str(err.value) == (
        f'{meta_path}: meta "count" is 99 but the masks in {path} select 16 neurons; the file '
        "was edited or damaged: detect the neurons again"
    )


def test_sidecar_of_another_set_is_refused(tmp_path):
    _top(seed=0).save(tmp_path / "a.safetensors")
    _top(seed=1).save(tmp_path / "b.safetensors")
    shutil.copy(tmp_path / "b.json", tmp_path / "a.json")
    with pytest.raises(ValueError, match="the two files do not belong together"):
        NeuronSet.load(tmp_path / "a.safetensors")


def _save_old_format(tmp_path, s: NeuronSet, meta: dict):
    """A file as versions before the checksums wrote it."""
    path = tmp_path / "old.safetensors"
    header = {"format": FORMAT, "definition": "ffn", "modules": json.dumps(s.modules)}
    save_file({m: t.contiguous() for m, t in s.masks.items()}, str(path), metadata=header)
    side = {"format": FORMAT, "definition": "ffn", "meta": meta}
    (tmp_path / "old.json").write_text(json.dumps(side))
    return path


def test_old_files_without_checksums_still_load(tmp_path):
    s = _top()
    path = _save_old_format(tmp_path, s, {"k": 10.0, "count": 16})
    back = NeuronSet.load(path)
    assert back == s and back.meta == {"k": 10.0, "count": 16}
    _set_mask_byte(path, 1)  # the recorded count catches flipped bytes
    with pytest.raises(ValueError, match=r'meta "count" is 16 but the masks in .* select 17'):
        NeuronSet.load(path)
    # without a recorded count the file is accepted, with the count it actually has
    path = _save_old_format(tmp_path, s, {"k": 10.0})
    _set_mask_byte(path, 1)
    assert NeuronSet.load(path).meta["count"] == 17


# -- one detection per folder -------------------------------------------------------------------------
def _record(folder, k=10.0, tasks=("a", "b"), arch="x"):
    folder.mkdir(parents=True, exist_ok=True)
    config = {"k": k, "scope": "model", "attribution": {"definition": "ffn", "seed": 0}}
    record = {"config": config, "tasks": list(tasks), "model": {"arch": arch, "weights": "w"}}
    (folder / "detect_config.json").write_text(json.dumps(record))
    for t in tasks:
        (folder / t).mkdir(exist_ok=True)
        (folder / t / "neurons.safetensors").write_bytes(b"")
    return config


def test_check_detect_out_refuses_other_settings(tmp_path):
    fp = {"arch": "x", "weights": "w"}
    config = _record(tmp_path / "d")
    check_detect_out(tmp_path / "d", config, ["b", "a"], fp)  # same settings: fine
    check_detect_out(tmp_path / "empty", {**config, "k": 5.0}, ["a"], fp)  # no sets: fine
    with pytest.raises(ValueError) as err:
        check_detect_out(tmp_path / "d", {**config, "k": 20.0}, ["a", "b", "c"], fp)
    assert str(err.value) == (
        f"{tmp_path / 'd'} already holds a detection with other settings (k: 10.0 vs 20.0; "
        "tasks: ['a', 'b'] vs ['a', 'b', 'c']; earlier vs now); its sets would be mixed with "
        "the new ones: pass another --out (out: in an experiment file) or delete it"
    )
    with pytest.raises(ValueError, match=r"model\.arch: 'x' vs 'y'"):
        check_detect_out(tmp_path / "d", config, ["a", "b"], {"arch": "y", "weights": "w"})
    (tmp_path / "d" / "detect_config.json").unlink()
    with pytest.raises(ValueError, match=r"holds neuron sets of other tasks \['b'\]"):
        check_detect_out(tmp_path / "d", config, ["a"], fp)


def _detect(tiny_folder, tasks: str, out, k: str = "10") -> int:
    argv = ["detect", "--model", str(tiny_folder), "--tasks", tasks, "--k", k]
    return main([*argv, "--n-examples", "2", "--out", str(out)])


def test_detect_refuses_a_folder_of_another_detection(tiny_folder, task_folders, tmp_path, capsys):
    tasks = ",".join(str(t) for t in task_folders)
    out = tmp_path / "det"
    assert _detect(tiny_folder, tasks, out) == 0
    assert _detect(tiny_folder, tasks, out, k="20") == 2
    err = capsys.readouterr().err
    assert f"{out} already holds a detection with other settings (k: 10.0 vs 20.0;" in err
    assert "pass another --out" in err
    assert _detect(tiny_folder, str(task_folders[0]), out) == 2
    assert "tasks: ['answer', 'mood'] vs ['mood']" in capsys.readouterr().err
    assert _detect(tiny_folder, tasks, out) == 0  # the same detection again is fine

    # a set of another detection copied into the folder is refused when loading
    assert _detect(tiny_folder, tasks, tmp_path / "det20", k="20") == 0
    shutil.rmtree(out / "answer")
    shutil.copytree(tmp_path / "det20" / "answer", out / "answer")
    model, _ = load_model(str(tiny_folder))
    both = [load_task(t) for t in task_folders]
    with pytest.raises(ValueError) as err:
        load_neuron_sets(out, both, model)
    assert str(err.value).startswith(
        f"{out}: the neuron sets of 'mood' and 'answer' were detected with other settings (k: "
        "10.0 vs 20.0"
    )
    with pytest.raises(ValueError) as err:
        load_neuron_sets(out, both[1:], model)
    assert str(err.value).startswith(
        f"{out / 'answer' / 'neurons.safetensors'} does not come from the detection recorded in "
        f"{out / 'detect_config.json'} (k: 20.0 vs 10.0"
    )
    assert load_neuron_sets(tmp_path / "det20", both, model)["answer"].meta["k"] == 20.0


def test_damaged_or_edited_neuron_files_are_refused_by_deactivate(
    tiny_folder, task_folders, tmp_path, capsys
):
    tasks = ",".join(str(t) for t in task_folders)
    out = tmp_path / "det"
    assert _detect(tiny_folder, tasks, out) == 0
    deactivate = ["deactivate", "--model", str(tiny_folder), "--neurons", str(out)]
    deactivate += ["--tasks", tasks, "--n-test", "2", "--out", str(tmp_path / "x")]
    path = out / "mood" / "neurons.safetensors"
    original = path.read_bytes()
    _set_mask_byte(path, 2)  # a byte that is no boolean
    assert main(deactivate) == 2
    err = capsys.readouterr().err
    assert "holds byte values other than 0 and 1" in err and "Traceback" not in err
    path.write_bytes(original)
    _edit_sidecar(path.with_suffix(".json"), lambda d: d["meta"].update(count=99))
    assert main(deactivate) == 2
    err = capsys.readouterr().err
    assert "the meta was edited after saving" in err and "Traceback" not in err
