"""Every result file that is read back carries a checksum, verified on load (issue 22).

Each kind of file is written by the code that writes it in a run (tiny models), then one byte of
its tensor data is flipped or one value of its JSON record changed, and reading it back must be
refused with a message that names the file: through the command line where a command reads it
(one line ``taskneurons CMD: error: ...``, exit 2), else through the library. An untouched file
still loads, and so does a file written before checksums (none recorded).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from taskneurons._io import CHECKSUM_KEY, ChangedFileError, check_record, checksum, seal_record
from taskneurons.cli import main
from taskneurons.models.loading import load_model
from taskneurons.models.saving import FILES_KEY, MODEL_META
from taskneurons.neurons.scores import NeuronScores
from taskneurons.training.loop import TrainOptions, train
from taskneurons.training.neuron_delta import NeuronDelta
from taskneurons.training.train_checkpoint import CHECKPOINT
from taskneurons.training.train_config import TrainConfig
from test_training import random_set, toy_task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"lr": 0.01, "batch_size": 2}
DEACT = {"n_test": 4, "n_boot": 20, "n_permutations": 10}
DETECT = {"k": 20, "attribution": {"n_examples": 4}}
CHANGED = (
    "was changed after it was written: its {} does not match the checksum saved {}; the file "
    "is damaged or was edited, so it cannot be trusted: make it again"
)


# -- helpers ------------------------------------------------------------------------------------
def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``(exit status, stderr)`` of ``taskneurons argv``."""
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def finished_run(root: Path, model: Path, tasks, **data) -> tuple[Path, Path]:
    """``(run folder, experiment file)``: ``taskneurons run`` of an experiment file of ``data``
    (and the model, tasks, seed 0) into ``root/run``."""
    body = {"model": str(model), "tasks": [str(t) for t in tasks], "seed": 0, **data}
    exp = root / "experiment.yaml"
    exp.write_text(yaml.safe_dump({**body, "out": str(root / "run")}))
    assert main(["run", str(exp)]) == 0
    return root / "run", exp


def copy_run(src: Path, dest: Path, experiment: Path | None = None, **changes) -> Path:
    """``src`` copied to ``dest``; with ``experiment``, also that file with ``out: dest``."""
    shutil.copytree(src, dest)
    if experiment is not None:
        data = {**yaml.safe_load(experiment.read_text()), "out": str(dest), **changes}
        (dest.parent / f"{dest.name}.yaml").write_text(yaml.safe_dump(data))
    return dest


def flip_last_byte(path: Path) -> None:
    """Flip the lowest bit of the file's last byte (tensor data in a safetensors file)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def change_json(path: Path, change) -> None:
    """Apply ``change`` to the JSON object in ``path`` and write it back."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def drop_json_checksum(path: Path) -> None:
    """Make ``path`` a record as written before checksums."""
    change_json(path, lambda d: d.pop(CHECKSUM_KEY))


def drop_header_checksum(path: Path) -> None:
    """Make the safetensors file ``path`` one written before checksums."""
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert header.pop(CHECKSUM_KEY).startswith("sha256:")
    save_file(tensors, str(path), metadata=header)


def refused(err: str, command: str, path: Path, what="content", where="in it") -> bool:
    """Whether ``err`` is the one-line refusal of the changed file ``path``."""
    return err == f"taskneurons {command}: error: {path} {CHANGED.format(what, where)}\n"


# -- the mechanism ------------------------------------------------------------------------------
def test_a_checksum_covers_values_and_the_stored_bytes_of_tensors():
    t = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    assert checksum({"t": t, "a": [1, 2.5]}) == checksum({"a": (1, 2.5), "t": t.clone()})
    u = t.clone()
    u.view(torch.int16)[0, 0] ^= 1  # one bit of the stored bytes
    assert checksum({"t": u}) != checksum({"t": t})
    assert checksum(t.float()) != checksum(t)  # the dtype (and its bytes) count
    assert checksum({"x": 1}) != checksum({"x": 1.0}) != checksum({"x": True})
    record = seal_record({"score": 50.0, "path": Path("p")})
    assert check_record(record, "r.json") == {"score": 50.0, "path": "p"}
    with pytest.raises(ChangedFileError, match=r"^r\.json was changed after it was written"):
        check_record({**record, "score": 87.5}, "r.json")
    assert check_record({"score": 87.5}, "r.json") == {"score": 87.5}  # an old record


# -- relevance scores and activation probabilities (sweep) ---------------------------------------
@pytest.fixture(scope="module")
def detected(tmp_path_factory, tiny_folder, task_folders):
    """A detect folder (neuron sets and relevance scores) written by ``taskneurons detect``."""
    out = tmp_path_factory.mktemp("detected") / "detect"
    tasks = ",".join(str(t) for t in task_folders)
    argv = ["detect", "--model", str(tiny_folder), "--tasks", tasks, "--k", "20"]
    assert main([*argv, "--n-examples", "4", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_folder, task_folders):
    """``(run folder, experiment file)`` of a sweep (topk and lape: scores, probabilities, one
    ``evaluations.json`` per cell)."""
    sweep = {"k": [20], "selections": ["topk", "lape"]}
    return finished_run(
        tmp_path_factory.mktemp("swept"), tiny_folder, task_folders, experiment="sweep",
        detect=DETECT, deactivate=DEACT, sweep=sweep,
    )  # fmt: skip


def _sweep_neurons(detect: Path, tiny_folder, task_folders, out: Path) -> list[str]:
    tasks = ",".join(str(t) for t in task_folders)
    return ["sweep", "--model", str(tiny_folder), "--tasks", tasks, "--neurons", str(detect),
            "--k", "20", "--n-test", "2", "--out", str(out)]  # fmt: skip


def test_changed_scores_given_through_neurons_are_refused(
    detected, tiny_folder, task_folders, tmp_path, capsys
):
    detect = copy_run(detected, tmp_path / "detect")
    scores = detect / "mood" / "scores.safetensors"
    flip_last_byte(scores)
    argv = _sweep_neurons(detect, tiny_folder, task_folders, tmp_path / "out")
    code, err = run_cli(argv, capsys)
    assert code == 2 and refused(err, "sweep", scores, "tensor data or header"), err
    with pytest.raises(ChangedFileError, match="scores.safetensors was changed"):
        NeuronScores.load(scores)


def test_scores_untouched_or_without_a_checksum_load(detected, tmp_path):
    detect = copy_run(detected, tmp_path / "detect")
    path = detect / "mood" / "scores.safetensors"
    saved = NeuronScores.load(path)
    assert CHECKSUM_KEY not in saved.meta and saved.meta["task"] == "mood"
    drop_header_checksum(path)  # as written before checksums
    old = NeuronScores.load(path)
    assert old.meta == saved.meta
    assert all(torch.equal(old.scores[m], saved.scores[m]) for m in saved.scores)


def test_a_changed_scores_header_is_refused(detected, tmp_path):
    path = copy_run(detected, tmp_path / "detect") / "mood" / "scores.safetensors"
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta = json.loads(header["meta"])
    header["meta"] = json.dumps({**meta, "task": "answer"})  # the checksum kept
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(ChangedFileError, match="tensor data or header does not match"):
        NeuronScores.load(path)


@pytest.mark.parametrize("name", ["scores.safetensors", "activation_probability.safetensors"])
def test_changed_scores_or_probabilities_stop_a_resumed_sweep(swept, tmp_path, capsys, name):
    run, exp = swept
    copy = copy_run(run, tmp_path / "run", exp, resume=True)
    path = copy / "scores" / "answer" / name
    flip_last_byte(path)
    code, err = run_cli(["run", str(tmp_path / "run.yaml")], capsys)
    assert code == 2 and refused(err, "run", path, "tensor data or header"), err


# -- deactivation evaluations --------------------------------------------------------------------
def test_changed_evaluations_stop_a_resumed_sweep_and_its_analysis(swept, tmp_path, capsys):
    run, exp = swept
    copy = copy_run(run, tmp_path / "run", exp, resume=True)
    path = copy / "topk-k20" / "evaluations.json"

    def more_accurate(data):
        runs = data["runs"]["Original"]
        task = next(iter(runs))
        runs[task]["score"] = runs[task]["score"] + 37.5

    change_json(path, more_accurate)
    code, err = run_cli(["run", str(tmp_path / "run.yaml")], capsys)
    assert code == 2 and refused(err, "run", path), err
    code, err = run_cli(["analyze", "sweep", str(copy), "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and refused(err, "analyze", path), err


def test_a_sweep_resumes_from_untouched_and_old_files(swept, tmp_path, capsys):
    run, exp = swept
    copy = copy_run(run, tmp_path / "run", exp, resume=True)
    drop_json_checksum(copy / "lape-k20" / "evaluations.json")
    drop_header_checksum(copy / "scores" / "mood" / "activation_probability.safetensors")
    drop_header_checksum(copy / "scores" / "mood" / "scores.safetensors")
    code, err = run_cli(["run", str(tmp_path / "run.yaml")], capsys)
    assert code == 0, err
    before = json.loads((run / "sweep.json").read_text())["rows"]
    assert json.loads((copy / "sweep.json").read_text())["rows"] == before


# -- continual runs: stage checkpoints, the reference cache, suite.json ---------------------------
@pytest.fixture(scope="module")
def continual_run(tmp_path_factory, tiny_folder, task_folders):
    """``(run folder, experiment file)`` of a finished continual run of ``seqft``."""
    section = {"methods": ["seqft"], "n_train": 4, "n_test": 4, "train": TRAIN,
               "single_train": TRAIN}  # fmt: skip
    root = tmp_path_factory.mktemp("continual")
    return finished_run(root, tiny_folder, task_folders, experiment="continual", continual=section)


def test_a_changed_stage_checkpoint_is_not_resumed(continual_run, tmp_path, capsys):
    run, exp = continual_run
    copy = copy_run(run, tmp_path / "run", exp, resume=True)
    state = copy / "seqft" / "checkpoint" / "state.safetensors"
    flip_last_byte(state)  # the weights the next stage would start from
    code, err = run_cli(["run", str(tmp_path / "run.yaml")], capsys)
    assert code == 2 and refused(err, "run", state, "tensor data or header"), err


def test_a_changed_stage_record_is_not_resumed(continual_run, tmp_path, capsys):
    run, exp = continual_run
    copy = copy_run(run, tmp_path / "run", exp, resume=True)
    record = copy / "seqft" / "checkpoint" / "checkpoint.json"
    change_json(record, lambda d: d["record"]["matrix"][0].__setitem__(0, 87.5))
    code, err = run_cli(["run", str(tmp_path / "run.yaml")], capsys)
    assert code == 2 and refused(err, "run", record), err


def test_a_continual_run_resumes_from_untouched_and_old_checkpoints(
    continual_run, tmp_path, capsys
):
    run, exp = continual_run  # resumed where it ran (its folder is part of its config)
    data = {**yaml.safe_load(exp.read_text()), "out": str(tmp_path / "run"), "resume": True}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    result = tmp_path / "run" / "seqft" / "result.json"
    for resumed_from in (None, 2):  # a fresh run, then one resumed from its last checkpoint
        code, err = run_cli(["run", str(tmp_path / "run.yaml")], capsys)
        assert code == 0, err
        assert json.loads(result.read_text())["resumed_from"] == resumed_from
        result.unlink()  # as a run cut off after its last checkpoint, before its result
    ckpt = tmp_path / "run" / "seqft" / "checkpoint"
    drop_json_checksum(ckpt / "checkpoint.json")  # as written before checksums
    drop_header_checksum(ckpt / "state.safetensors")
    code, err = run_cli(["run", str(tmp_path / "run.yaml")], capsys)
    assert code == 0, err
    assert json.loads(result.read_text())["resumed_from"] == 2
    before = json.loads((run / "suite.json").read_text())["rows"]
    assert json.loads((tmp_path / "run" / "suite.json").read_text())["rows"] == before


def test_a_changed_reference_cache_is_refused(continual_run, tmp_path, capsys):
    run, exp = continual_run
    cache = copy_run(run, tmp_path / "first") / "reference_cache.json"

    def better_single(data):
        entry = next(e for e in data["entries"].values() if e["record"]["kind"] == "single")
        entry["score"] = 87.5

    change_json(cache, better_single)
    data = yaml.safe_load(exp.read_text())
    data["out"] = str(tmp_path / "second")
    data["continual"]["reference_cache"] = str(cache)
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(data))
    code, err = run_cli(["run", str(tmp_path / "second.yaml")], capsys)
    assert code == 2 and refused(err, "run", cache), err
    drop_json_checksum(cache)  # a cache written before checksums is read as it is
    assert run_cli(["run", str(tmp_path / "second.yaml")], capsys)[0] == 0


def test_a_changed_suite_is_refused_by_table5(continual_run, tmp_path, capsys):
    run, _ = continual_run
    copy = copy_run(run, tmp_path / "run")
    argv = ["analyze", "table5", str(copy), "--out", str(tmp_path / "t5")]
    assert run_cli(argv, capsys)[0] == 0
    suite = copy / "suite.json"
    change_json(suite, lambda d: d["rows"][0].__setitem__(3, 87.5))  # the CL column
    code, err = run_cli(argv, capsys)
    assert code == 2 and refused(err, "analyze", suite), err
    drop_json_checksum(suite)
    assert run_cli(argv, capsys)[0] == 0


# -- per-example evaluations of the generalization stages ----------------------------------------
@pytest.fixture(scope="module")
def generalization_run(tmp_path_factory, tiny_folder, task_folders):
    """A run of the generalization and similarity stages (one train, one test task)."""
    sizes = {"n_train": 4, "n_test": 4, "train": TRAIN}
    run, _ = finished_run(
        tmp_path_factory.mktemp("generalization"), tiny_folder, task_folders,
        experiment=["generalization", "similarity"], detect=DETECT,
        groups=[{"name": "g", "train": ["mood"], "test": ["answer"]}],
        generalization={"proportions": [100], **sizes}, similarity={"n_boot": 20, **sizes},
    )  # fmt: skip
    return run


@pytest.mark.parametrize(
    "analysis, stage, name",
    [("figure2", "generalization", "evaluation_examples.json"),
     ("similarity", "similarity", "similarity_records.json")],
)  # fmt: skip
def test_changed_per_example_records_are_refused_by_analyze(
    generalization_run, tmp_path, capsys, analysis, stage, name
):
    copy = copy_run(generalization_run, tmp_path / "run")
    argv = ["analyze", analysis, str(copy), "--out", str(tmp_path / "a")]
    assert run_cli(argv, capsys)[0] == 0
    path = copy / stage / name
    change_json(path, lambda d: d["records"][0].__setitem__("score", 87.5))
    code, err = run_cli(argv, capsys)
    assert code == 2 and refused(err, "analyze", path), err
    drop_json_checksum(path)  # a record written before checksums is read as it is
    assert run_cli(argv, capsys)[0] == 0


# -- a saved fine-tuned model --------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_folder, task_folders):
    """The model folder a multitask run with ``save_model: true`` wrote."""
    section = {"n_train": 4, "save_model": True, "train": TRAIN, "detect": DETECT,
               "deactivate": DEACT}  # fmt: skip
    root = tmp_path_factory.mktemp("multitask")
    run, _ = finished_run(
        root, tiny_folder, task_folders, experiment="multitask", multitask=section
    )
    return run / "model"


def test_a_changed_saved_model_is_refused(saved_model, tmp_path, capsys):
    folder = copy_run(saved_model, tmp_path / "model")
    assert run_cli(["info", str(folder)], capsys)[0] == 0
    weights = folder / "model.safetensors"
    flip_last_byte(weights)
    code, err = run_cli(["info", str(folder)], capsys)
    assert code == 2 and refused(err, "info", weights, where=f"in {folder / MODEL_META}"), err

    def saved_before_checksums(record):
        del record[CHECKSUM_KEY], record[FILES_KEY]

    change_json(folder / MODEL_META, saved_before_checksums)  # loads as it is
    assert run_cli(["info", str(folder)], capsys)[0] == 0


def test_a_changed_model_record_is_refused(saved_model, tmp_path, capsys):
    folder = copy_run(saved_model, tmp_path / "model")
    sums = folder / MODEL_META
    gone = folder / "generation_config.json"
    gone.unlink()
    code, err = run_cli(["info", str(folder)], capsys)
    assert code == 2 and err == (
        f"taskneurons info: error: {gone} is missing; {sums} lists it among the files of the "
        "saved model, so the folder is incomplete: save the model again\n"
    )
    change_json(sums, lambda d: d[FILES_KEY].pop("config.json"))  # hide an edit of config.json
    with pytest.raises(ChangedFileError, match=f"^{sums} was changed after it was written"):
        load_model(str(folder))
    load_model(str(copy_run(saved_model, tmp_path / "untouched")))


# -- neuron deltas and training checkpoints (read by the library only) ---------------------------
@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, tok):
    """A neuron-training run's folder: ``delta/`` and ``checkpoint.pt`` (after 2 of 2 steps)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    model = tiny_model("llama")
    config = TrainConfig(method="neurons", max_steps=2, batch_size=4, lr=1e-2, checkpoint_every=2)
    train(model, tok, toy_task(n=8), config, neurons=random_set(model, "ffn"), out_dir=out,
          progress=False)  # fmt: skip
    return out, config


def test_a_changed_neuron_delta_is_refused(trained_dir, tmp_path):
    out, _ = trained_dir
    delta = copy_run(out / "delta", tmp_path / "delta")
    NeuronDelta.load(delta, tiny_model("llama"))  # untouched
    flip_last_byte(delta / "delta.safetensors")
    with pytest.raises(ChangedFileError, match="delta.safetensors was changed after it"):
        NeuronDelta.load(delta, tiny_model("llama"))
    fresh = copy_run(out / "delta", tmp_path / "fresh")
    change_json(fresh / "delta.json", lambda d: d["params"][next(iter(d["params"]))].update(n=1))
    with pytest.raises(ChangedFileError, match="delta.json was changed after it"):
        NeuronDelta.load(fresh, tiny_model("llama"))
    old = copy_run(out / "delta", tmp_path / "old")
    drop_header_checksum(old / "delta.safetensors")
    drop_json_checksum(old / "delta.json")
    a = NeuronDelta.load(old, tiny_model("llama")).state_dict()
    b = NeuronDelta.load(out / "delta", tiny_model("llama")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


def _resume(out: Path, config: TrainConfig, tok):
    model = tiny_model("llama")
    return train(model, tok, toy_task(n=8), config, neurons=random_set(model, "ffn"),
                 out_dir=out, progress=False, options=TrainOptions(resume=True))  # fmt: skip


def test_a_changed_training_checkpoint_is_not_resumed(trained_dir, tmp_path, tok):
    out, config = trained_dir
    copy = copy_run(out, tmp_path / "run")
    path = copy / CHECKPOINT
    state = torch.load(path, weights_only=True)
    assert state[CHECKSUM_KEY].startswith("sha256:")
    stored = next(iter(state["trainable"].values())).numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = bytes(data).find(stored)
    assert at > 0
    data[at] ^= 0x01  # one bit of a trained tensor (torch.load does not notice)
    path.write_bytes(bytes(data))
    with pytest.raises(
        ChangedFileError, match=f"^{path} was changed after it was written: its state"
    ):
        _resume(copy, config, tok)


def test_a_training_checkpoint_untouched_or_without_a_checksum_resumes(trained_dir, tmp_path, tok):
    out, config = trained_dir
    copy = copy_run(out, tmp_path / "run")
    assert _resume(copy, config, tok).resumed_from == 2
    state = torch.load(copy / CHECKPOINT, weights_only=True)
    del state[CHECKSUM_KEY]  # as written before checksums
    torch.save(state, copy / CHECKPOINT)
    assert _resume(copy, config, tok).resumed_from == 2
