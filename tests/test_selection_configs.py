"""Selection configs: one per method, found by name, holding only their own options.

A new selection is one module (here: one fixture) defining a config and its function; it is
found by name through ``SelectionConfig``, read from an experiment file's ``detect.selection``
and run by ``select``, with no other change.
"""

from __future__ import annotations

import dataclasses
import doctest
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from taskneurons.cli import main
from taskneurons.config import ConfigError, build
from taskneurons.experiments.common import detect_settings
from taskneurons.experiments.experiment_file import ExperimentFile, with_defaults
from taskneurons.experiments.specificity.detect import select_sets
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.experiments.specificity.sweep_stage import SweepConfig
from taskneurons.neurons import scoring
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.scoring import ScoredTasks
from taskneurons.neurons.selection import percent, selection_config, task_selection
from taskneurons.neurons.selection.algorithms import contrastive, lape, specific, topk
from taskneurons.neurons.selection.algorithms.lape import LapeSelection
from taskneurons.neurons.selection.algorithms.specific import SpecificSelection
from taskneurons.neurons.selection.algorithms.topk import TopkSelection
from taskneurons.neurons.selection.ranking import top_k
from taskneurons.neurons.selection.selection_config import SelectionConfig, own_keys
from taskneurons.neurons.selection.task_selection import TaskSelection, select

#: each method's own options, written out here (the oracle the configs are checked against)
OWN = {
    "topk": set(),
    "specific": {"m", "fill"},
    "contrastive": {"mode", "task_norm", "eps"},
    "lape": {
        "threshold",
        "tokens",
        "filter_quantile",
        "min_prob",
        "assign",
        "bar_quantile",
    },
}
#: the keys of the one config that held every method's options before
UNION = {"method", "normalize", *set().union(*OWN.values())}


def ffn(rows, task=None) -> NeuronScores:
    meta = {"task": task, "model_fingerprint": {"arch": "x", "weights": "y"}} if task else {}
    return NeuronScores("ffn", {"ffn": torch.tensor(rows, dtype=torch.float32)}, meta)


TWO = {"a": ffn([[9.0, 8.0, 1.0, 0.0]], "a"), "b": ffn([[9.0, 0.0, 8.0, 1.0]], "b")}


@pytest.fixture
def toy():
    """A selection defined in a test: the ``last`` units of each task, registered by its
    definition alone; taken out of the registry afterwards."""

    @dataclass
    class LastUnits(SelectionConfig, name="last_units"):
        method: str = "last_units"
        count: int = 1

        def select(self, inputs, k, scope="model"):
            return select_last_units(inputs, self.count)

    def select_last_units(inputs, count):
        sets = {}
        for t, s in inputs.items():
            masks = {}
            for m, x in s.scores.items():  # x: [layers, units]
                mask = torch.zeros(x.shape, dtype=torch.bool)
                mask[:, -count:] = True
                masks[m] = mask
            sets[t] = NeuronSet(s.definition, masks, {"kind": "last_units", "task": t})
        return TaskSelection(sets, None, "last_units")

    yield LastUnits
    del SelectionConfig.variants["last_units"]


def test_doctests_pass():
    for module in (percent, selection_config, task_selection, topk, specific, contrastive, lape):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_a_selection_defined_in_one_place_is_found_by_name_and_runs(toy):
    assert SelectionConfig.variant("last_units") is toy
    assert SelectionConfig.names() == ["topk", "specific", "contrastive", "lape", "last_units"]
    detect = DetectConfig.from_dict({"k": 10, "selection": {"method": "last_units", "count": 2}})
    assert detect.selection == toy(count=2)
    assert DetectConfig.from_dict(detect.to_dict()) == detect  # its record reads back
    chosen = select(detect.selection, TWO, detect.k)
    assert chosen["a"].masks["ffn"].tolist() == [[False, False, True, True]]
    assert select("last_units", TWO, 10, count=1)["b"].masks["ffn"].tolist() == [
        [False, False, False, True]
    ]
    sets, general = select_sets(ScoredTasks(scores=dict(TWO)), detect)
    assert general is None and sets["b"].masks["ffn"].tolist() == [[False, False, True, True]]
    with pytest.raises(ConfigError, match=r"x.yaml: unknown key 'selection.m'; known: count,"):
        DetectConfig.from_dict({"selection": {"method": "last_units", "m": 2}}, where="x.yaml")
    assert SweepConfig(selections=["topk", "last_units"]).cells(detect.selection)[1] is (
        detect.selection
    )


@pytest.mark.parametrize("method", sorted(OWN))
def test_each_method_holds_its_own_options_and_refuses_the_others(method):
    cls = SelectionConfig.variant(method)
    assert {f.name for f in dataclasses.fields(cls)} == {"method", "normalize", *OWN[method]}
    assert build(SelectionConfig, {"method": method}) == cls()
    for other in sorted(UNION - {"method", "normalize"} - OWN[method]):
        section = {"selection": {"method": method, other: None}}
        with pytest.raises(ConfigError) as err:
            DetectConfig.from_dict(section, where="exp.yaml")
        message = str(err.value)
        assert message.startswith(f"exp.yaml: unknown key 'selection.{other}'; known: ")
        assert "\n" not in message


def test_experiment_files_choose_the_method_and_refuse_another_ones_key():
    def read(selection):
        data = {"experiment": "detect", "tasks": ["t"], "detect": {"selection": selection}}
        return ExperimentFile.from_dict(with_defaults(data), where="exp.yaml")

    assert read({"method": "specific", "m": 3}).detect.selection == SpecificSelection(m=3)
    assert read({"normalize": "layer"}).detect.selection == TopkSelection(normalize="layer")
    assert read({"method": "lape", "threshold": 0.5}).detect.selection.threshold == 0.5
    with pytest.raises(ConfigError, match=r"exp.yaml: unknown key 'detect.selection.m'"):
        read({"method": "contrastive", "m": 3})
    with pytest.raises(ConfigError, match=r"detect.selection.method: unknown selection 'best'"):
        read({"method": "best"})
    with pytest.raises(ConfigError, match=r"detect.selection.normalize: expected one of"):
        read({"method": "lape", "normalize": "layer_z"})


def test_the_family_base_and_check_k_load_without_torch():
    code = (
        "import sys\n"
        "from taskneurons.neurons.selection.selection_config import SelectionConfig\n"
        "from taskneurons.neurons.selection.percent import check_k, count_for\n"
        "import taskneurons.neurons.selection\n"
        "assert check_k(10) == 10.0 and SelectionConfig.default == 'topk'\n"
        "assert 'torch' not in sys.modules, 'torch loaded'\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's package
    env = {**os.environ, "PYTHONPATH": src}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)


def test_topk_gives_the_papers_sets_with_their_metas():
    # oracle: top_k of each task's scores, as detection made them before selections existed
    for scope in ("model", "layer"):
        chosen = TopkSelection().select(TWO, 50, scope)
        for t, s in TWO.items():
            plain = top_k(s, 50, scope=scope)
            assert chosen[t] == plain and chosen[t].meta == plain.meta
            assert "selection" not in chosen[t].meta
    normed = TopkSelection(normalize="layer").select(TWO, 50)
    assert normed["a"].meta["selection"]["normalize"] == "layer"


def test_what_a_method_ranks_and_records():
    lape_cfg = LapeSelection(threshold=0.25, tokens="all", min_prob=0.1)
    assert lape_cfg.ranks == "probabilities" and TopkSelection().ranks == "scores"
    assert lape_cfg.measurement() == {"threshold": 0.25, "tokens": "all"}
    assert lape_cfg.record("layer") == {
        "method": "lape",
        "scope": "layer",
        "normalize": None,
        "filter_quantile": 0.95,
        "min_prob": 0.1,
        "assign": "bar",
        "bar_quantile": 0.95,
    }
    probs = {"a": ffn([[0.5]]), "b": ffn([[0.5]])}
    assert lape_cfg.inputs(TWO, probs) is probs and TopkSelection().inputs(TWO, probs) is TWO
    with pytest.raises(ValueError, match="needs the tasks' activation probabilities"):
        lape_cfg.inputs(TWO, {})
    assert scoring.probability_settings([TopkSelection(), lape_cfg]) == lape_cfg.measurement()
    assert scoring.probability_settings(TopkSelection()) is None
    with pytest.raises(ValueError, match="two ways"):
        scoring.probability_settings([lape_cfg, LapeSelection()])


def test_with_method_keeps_the_section_of_its_own_method():
    spec = SpecificSelection(m=2, normalize="layer")
    assert spec.with_method("specific") is spec
    assert spec.with_method("topk") == TopkSelection(normalize="layer")
    assert spec.with_method("contrastive").to_dict() == {
        "method": "contrastive",
        "normalize": "layer",
        "mode": "difference",
        "task_norm": "mean",
        "eps": 0.1,
    }
    with pytest.raises(ValueError, match="unknown selection 'best'"):
        spec.with_method("best")


def test_a_sweep_takes_names_or_sections_once_each():
    cfg = SweepConfig.from_dict(
        {"k": [1], "selections": ["topk", {"method": "specific", "m": 2}, "lape"]}
    )
    detect = DetectConfig.from_dict({"selection": {"method": "lape", "threshold": 0.5}})
    cells = cfg.cells(detect.selection)
    assert [c.method for c in cells] == ["topk", "specific", "lape"]
    assert cells[1] == SpecificSelection(m=2) and cells[2] is detect.selection
    assert SweepConfig.from_dict(cfg.to_dict()) == cfg
    assert SweepConfig().selections == ["topk", "specific", "contrastive", "lape"]
    with pytest.raises(ValueError, match="listed twice"):
        SweepConfig(selections=["specific", SpecificSelection(m=2)])
    with pytest.raises(ConfigError, match=r"selections\[0\]"):
        SweepConfig.from_dict({"selections": [{"method": "topk", "m": 2}]})


def test_records_written_when_one_config_held_every_option_read_back():
    old = {
        "method": "specific",
        "normalize": None,
        "m": 2,
        "fill": False,
        "mode": "difference",
        "task_norm": "mean",
        "eps": 0.1,
        "threshold": 0.0,
        "tokens": "answer",
        "filter_quantile": 0.95,
        "min_prob": 0.0,
        "assign": "bar",
        "bar_quantile": 0.95,
    }
    assert set(old) == UNION
    assert own_keys(old) == {"method": "specific", "normalize": None, "m": 2, "fill": False}
    assert build(SelectionConfig, own_keys(old)) == SpecificSelection(m=2)
    assert own_keys({"method": "gone", "x": 1}) == {"method": "gone", "x": 1}
    # a detection folder recorded before: the same settings as the one config of now
    new = DetectConfig.from_dict({"selection": {"method": "specific", "m": 2}}).to_dict()
    assert detect_settings({**new, "selection": old}, None) == detect_settings(new, None)
    assert detect_settings({**new, "selection": {**old, "m": 3}}, None) != detect_settings(
        new, None
    )


def test_the_command_line_names_the_method_and_sets_its_options(
    tiny_folder, task_folders, tmp_path, capsys
):
    out = tmp_path / "detect"
    tasks = ",".join(str(t) for t in task_folders)
    argv = ["detect", "--model", str(tiny_folder), "--tasks", tasks, "--k", "30"]
    argv += ["--n-examples", "4", "--selection", "specific", "--set", "detect.selection.m=2"]
    assert main([*argv, "--out", str(out)]) == 0
    recorded = json.loads((out / "detect_config.json").read_text())["config"]["selection"]
    assert recorded == {"method": "specific", "normalize": None, "m": 2, "fill": False}
    assert (out / "general_neurons.safetensors").is_file()  # the specific method's general set
    bad = [*argv[:-2], "--set", "detect.selection.mode=ratio", "--out", str(tmp_path / "x")]
    capsys.readouterr()
    assert main(bad) == 2  # contrastive's key with method specific: refused, naming it
    assert "unknown key 'detect.selection.mode'" in capsys.readouterr().err
