"""The paper-scale experiment files (issue 26, build 6): valid, and their first stage runs.

Each ``experiments/*paper-scale*.yaml`` is read against the schema as it is, and must carry
the estimate in its header. Then its first stage runs on a tiny model of the same family (a
tiny Llama for the Llama-2-7b files), in the file's own dtype (bfloat16) on the CPU, with every
size cut to a few examples; everything else (tasks, groups, methods, k) as in the file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from taskneurons.experiments.estimate.shapes import model_shape
from taskneurons.experiments.experiment_file import ExperimentFile
from taskneurons.experiments.runner import run_experiment

from tiny_models import TINY_CONFIGS
from tiny_tokenizer import tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "experiments").glob("*paper-scale*.yaml"))
SCRIPT = ROOT / "scripts" / "estimate_headers.py"
#: per first stage: the size overrides that make it run in seconds
SMALL = {
    "detect": ["detect.attribution.n_examples=2"],
    "overlap": ["detect.attribution.n_examples=2"],
    "continual": [
        "continual.n_train=2",
        "continual.n_test=2",
        "continual.method.attribution.n_examples=2",
        "continual.method.n_vector_samples=2",
        "continual.train.batch_size=2",
        "continual.single_train.batch_size=2",
        "continual.eval.max_new_tokens=2",
    ],  # fmt: skip
}


def test_there_are_paper_scale_files():
    assert len(FILES) == 3, FILES


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_valid_with_estimate_header(path):
    config = ExperimentFile.read(path)
    assert config.dtype == "bfloat16" and config.device == "cuda"
    assert model_shape(config.model).n_params > 6e9
    head = path.read_text().split("\n# PAPER.md")[0]
    assert "taskneurons estimate" in head and "| **total** |" in head


def test_headers_and_readme_tables_are_what_estimate_gives_now():
    """``scripts/estimate_headers.py check``: every header and README table as ``estimate``
    prints it today (a cost-model change must be followed by ``... write``)."""
    spec = importlib.util.spec_from_file_location("estimate_headers", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["check"]) == 0
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in FILES:  # the README shows each file's total as the header does
        total = path.read_text().split("| **total** |")[1].split("\n")[0]
        assert f"| **total** |{total}" in text, path.name


@pytest.fixture(scope="module")
def tiny_llama_512(tmp_path_factory):
    """A tiny Llama with 512 positions (the long tasks' instructions need more than 64)."""
    folder = tmp_path_factory.mktemp("tiny-llama-512")
    config = TINY_CONFIGS["llama"]()
    config.max_position_embeddings = 512
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_first_stage_runs_on_a_tiny_model_of_the_family(
    path, tmp_path, tiny_llama_512, shared_data
):
    config = ExperimentFile.read(path)
    assert "llama" in config.model.lower()  # a tiny Llama stands in
    tiny_folder = tiny_llama_512
    first = config.stages()[0]
    overrides = [f"model={tiny_folder}", "device=cpu", f"out={tmp_path / 'run'}",
                 f"experiment={first}", *SMALL[first]]  # fmt: skip
    small = ExperimentFile.read(path, overrides)
    assert small.dtype == "bfloat16"
    run = run_experiment(small, str(path), progress=False, echo=None, fit_max_length=True)
    assert first in run.results
    assert (tmp_path / "run").is_dir()
