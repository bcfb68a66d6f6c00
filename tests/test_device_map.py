"""A model spread by a ``device_map`` (issue 26): the same results as the model in one piece.

On CPU, the tiny models are loaded with a device map that keeps the embeddings, the even
layers and the final norm on the CPU and puts the odd layers and an untied LM head on
**disk** (``offload_folder``): their parameters are ``meta`` placeholders between calls,
loaded by Accelerate's ``AlignDevicesHook`` for each forward. Against the same weights loaded
plainly:

* the model fingerprint (which reads offloaded weights through the hook) is the same;
* evaluation (label log-likelihoods, and greedy generation), deactivated evaluation
  (activation and mean modes), relevance scores (plain and checkpointed), activation
  probabilities (LAPE) and mean activations agree within
  ``rtol = 1e-5, atol = 1e-6`` (seen: bit-identical, the same kernels on the same values; the
  tolerance leaves room for a BLAS that splits an offloaded matmul differently);
* Accelerate's hooks are still in place afterwards (checkpointed scoring patches the
  layers' ``forward``, which Accelerate also replaces: the patch puts Accelerate's back);
* deactivation by ``parameters`` (it writes weights) and training are refused in one line,
  and so are, in an experiment file before the model loads, a ``device_map`` with a stage
  that trains, under several processes, with ``mode: parameters``, a GGUF model, ``disk``
  without ``offload_folder`` and a value that is no map;
* a ``detect`` + ``deactivate`` run with the map writes the sets, scores and tables of the
  run without it.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from taskneurons.config import ConfigError
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.experiments import runner
from taskneurons.experiments.experiment_file import ExperimentFile
from taskneurons.models.adapters import get_adapter
from taskneurons.models.device_map import Placement
from taskneurons.models.loading import load_model
from taskneurons.neurons.activation_probability import activation_probability, mean_activation
from taskneurons.neurons.attribution import relevance_scores
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.neurons.intervention import deactivate
from taskneurons.neurons.scores import NeuronScores
from taskneurons.provenance import model_fingerprint
from taskneurons.training.loop import train
from taskneurons.training.train_config import TrainConfig
from test_training import random_set, toy_task

from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = {"rtol": 1e-5, "atol": 1e-6}


def spread(model) -> dict[str, str]:
    """Odd layers and an untied LM head on disk, everything else on the CPU."""
    layers = get_adapter(model).spec.layers
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head is not None and head.weight is emb.weight
    out = {}
    for name, module in model.named_modules():
        if not [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            continue
        if name.startswith(layers + "."):
            i = int(name[len(layers) + 1 :].split(".")[0])
            out[f"{layers}.{i}"] = "disk" if i % 2 else "cpu"
        else:
            out[name] = "disk" if name == "lm_head" and not tied else "cpu"
    return out


def _pair(tmp_path, family: str):
    folder = tmp_path / family
    tiny_model(family).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    plain, tok = load_model(str(folder))
    where = Placement(spread(plain), str(tmp_path / "offload"))
    placed, _ = load_model(str(folder), placement=where)
    return plain, placed, tok


def _likelihoods(model, tok, task) -> torch.Tensor:
    """``[examples, labels]`` label log-likelihoods of the task's test examples."""
    res = evaluate(model, tok, task, task.train, progress=False)
    return torch.tensor([[p["log_likelihoods"][y] for y in task.labels] for p in res.predictions])


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_placed_model_gives_the_plain_results(tmp_path, family):
    plain, placed, tok = _pair(tmp_path, family)
    assert {p.device.type for p in placed.parameters()} == {"cpu", "meta"}  # some on disk
    assert model_fingerprint(placed) == model_fingerprint(plain)
    task = toy_task(n=6)
    ref = _likelihoods(plain, tok, task)
    torch.testing.assert_close(_likelihoods(placed, tok, task), ref, **TOL)
    gen = [evaluate(m, tok, task, mode="generate", progress=False) for m in (plain, placed)]
    assert [p["prediction"] for p in gen[0].predictions] == [
        p["prediction"] for p in gen[1].predictions
    ]
    neurons = random_set(plain, "ffn", frac=0.5)
    means = NeuronScores("ffn", {"ffn": torch.rand(neurons.masks["ffn"].shape)})
    for mode, values in (("activation", None), ("mean", means)):
        off = []
        for model in (plain, placed):
            with deactivate(model, neurons, mode=mode, values=values):
                off.append(_likelihoods(model, tok, task))
        assert not torch.allclose(off[0], ref)  # the deactivation changed the scores
        torch.testing.assert_close(off[1], off[0], **TOL)
    hooked = [n for n, m in placed.named_modules() if "forward" in vars(m)]
    for checkpointing in (False, True):
        config = AttributionConfig(n_examples=6, batch_size=3, checkpointing=checkpointing)
        scores = [
            relevance_scores(m, task, tokenizer=tok, config=config, progress=False).scores["ffn"]
            for m in (plain, placed)
        ]
        assert float(scores[0].max()) > 0
        torch.testing.assert_close(scores[1], scores[0], **TOL)
    config = AttributionConfig(n_examples=6, batch_size=3)
    for measure in (activation_probability, mean_activation):  # LAPE; the mean mode's values
        values = [
            measure(m, task, tokenizer=tok, config=config).scores["ffn"] for m in (plain, placed)
        ]
        torch.testing.assert_close(values[1], values[0], **TOL)
    assert [n for n, m in placed.named_modules() if "forward" in vars(m)] == hooked


def test_parameters_mode_refused_on_offloaded_weights(tmp_path):
    plain, placed, _ = _pair(tmp_path, "llama")
    neurons = random_set(plain, "ffn", frac=0.5)
    with pytest.raises(ValueError) as err:
        with deactivate(placed, neurons, mode="parameters"):
            pass
    assert str(err.value) == (  # docs/bad-inputs.md
        "deactivation mode 'parameters' cannot change weights a device_map offloaded "
        "(model.layers.1.mlp.gate_proj.weight and others); use mode 'activation'"
    )
    with deactivate(plain, neurons, mode="parameters"):  # a layer kept on the CPU: allowed
        pass


def test_training_a_placed_model_refused(tmp_path, tok):
    plain, placed, _ = _pair(tmp_path, "llama")
    with pytest.raises(ValueError) as err:
        train(placed, tok, toy_task(n=4), TrainConfig(method="full", max_steps=1), progress=False)
    assert str(err.value) == (  # docs/bad-inputs.md
        "train: the model was placed by a device_map (Accelerate); training needs all its "
        "weights on one device: load it without device_map"
    )


#: experiment-file settings -> the line each is refused with (docs/bad-inputs.md)
REFUSED = [
    (
        {"experiment": "table2"},
        "device_map: stage 'table2' trains the model, which needs all its weights on one "
        "device; run it in another run without device_map (device: cuda)",
    ),
    (
        {"deactivate": {"mode": "parameters"}},
        "device_map: deactivate.mode: 'parameters' writes the weights, which a device_map may "
        "have offloaded; use mode: activation",
    ),
    (
        {"model": "smollm2-135m"},
        "device_map: smollm2-135m is a GGUF model, loaded whole on one device; use a model "
        "folder or hub id with device_map",
    ),
    (
        {"device_map": {"model": "cpu", "lm_head": "disk"}},
        "device_map: modules on 'disk' need offload_folder (where they go)",
    ),
]


@pytest.mark.parametrize(("change", "message"), REFUSED)
def test_refused_before_the_model_loads(
    tiny_folder, task_folders, tmp_path, monkeypatch, change, message
):
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    data = {
        "experiment": ["detect", "deactivate"],
        "model": str(tiny_folder),
        "tasks": [str(t) for t in task_folders],
        "device_map": "auto",
        "out": str(tmp_path / "run"),
        **change,
    }
    with pytest.raises(ConfigError) as err:
        runner.run_experiment(ExperimentFile.from_dict(data, "exp.yaml"), "exp.yaml", echo=None)
    assert str(err.value) == f"exp.yaml: {message}"


def test_several_processes_and_bad_values_refused(tiny_folder, task_folders, tmp_path, monkeypatch):
    data = {
        "model": str(tiny_folder),
        "tasks": [str(t) for t in task_folders],
        "device_map": "auto",
    }
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError) as err:
        runner.check_placement(ExperimentFile.from_dict(data), "exp.yaml")
    assert str(err.value) == (
        "exp.yaml: device_map: 2 processes: device_map spreads one model over this process's "
        "devices, so run it in one process (not under accelerate launch or torchrun)"
    )
    with pytest.raises(ConfigError) as err:
        ExperimentFile.from_dict({**data, "device_map": "everywhere"}, "exp.yaml")
    assert str(err.value) == (
        "exp.yaml: device_map: 'everywhere' is not a device map; use auto, balanced, "
        "balanced_low_0, sequential or a mapping of module names to devices "
        "(0, 'cuda:1', 'cpu', 'disk')"
    )
    with pytest.raises(ConfigError) as err:
        ExperimentFile.from_dict({**data, "device_map": {"lm_head": 1.5}}, "exp.yaml")
    assert str(err.value) == (
        "exp.yaml: device_map: lm_head: expected a device (0, 'cuda:1', 'cpu', 'disk'), got 1.5"
    )


def _run(folder, tasks, out, **extra):
    data = {
        "experiment": ["detect", "deactivate"],
        "model": str(folder),
        "tasks": [str(t) for t in tasks],
        "detect": {"k": 20, "attribution": {"n_examples": 4, "batch_size": 2}},
        "deactivate": {"n_test": 4},
        "out": str(out),
        **extra,
    }
    runner.run_experiment(ExperimentFile.from_dict(data, "exp.yaml"), "exp.yaml", False, None)


def test_a_run_with_a_device_map_writes_the_plain_results(tiny_folder, task_folders, tmp_path):
    dm = spread(tiny_model("llama"))
    _run(tiny_folder, task_folders, tmp_path / "plain")
    _run(tiny_folder, task_folders, tmp_path / "placed", device_map=dm,
         offload_folder=str(tmp_path / "offload"))  # fmt: skip
    for task in ("mood", "answer"):
        for name in ("neurons.safetensors", "scores.safetensors"):
            a = load_file(tmp_path / "plain" / "detect" / task / name)
            b = load_file(tmp_path / "placed" / "detect" / task / name)
            assert a.keys() == b.keys()
            for key, t in a.items():
                torch.testing.assert_close(b[key], t, **TOL)
    tables = [json.loads((tmp_path / r / "deactivate" / "matrix.json").read_text())
              for r in ("plain", "placed")]  # fmt: skip
    assert tables[1]["rows"] == tables[0]["rows"]
