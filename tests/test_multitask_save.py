"""The multitask stage's ``save_model``: the fine-tuned model as a folder ``model:`` can name."""

from __future__ import annotations

import json
import re

import pytest
import torch
import transformers

from taskneurons.experiments.runner import run_file
from taskneurons.models.loading import load_model
from taskneurons.models.saving import MODEL_META, save_finetuned
from taskneurons.provenance import check_same_model, model_fingerprint

from tiny_models import TINY_CONFIGS
from tiny_tokenizer import tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[1, 5, 9, 17, 33, 2], [1, 40, 41, 42, 43, 44]])


def _experiment(tmp_path, model, task_folders, out, multitask: str = "", method: str = "full"):
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(
        f"experiment: multitask\nmodel: {model}\nout: {out}\n"
        f"tasks: [{task_folders[0]}, {task_folders[1]}]\n"
        "detect: {k: 20, attribution: {n_examples: 4}}\n"
        "deactivate: {n_test: 4}\n"
        f"multitask: {{n_train: 4, train: {{method: {method}, lr: 0.01, epochs: 1, batch_size: 2}}"
        f"{multitask}}}\n"
    )
    return path


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".model"))


def _same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("method", ["full", "lora"])
def test_save_model_writes_a_folder_load_model_reads_back(
    tiny_folder, task_folders, tmp_path, monkeypatch, method
):
    import taskneurons.experiments.specificity.multitask as mt

    saved = {}

    def spy(model, tokenizer, folder, meta):
        saved["model"] = model
        return save_finetuned(model, tokenizer, folder, meta)

    monkeypatch.setattr(mt, "save_finetuned", spy)
    out = tmp_path / "mt"
    run_file(
        _experiment(tmp_path, tiny_folder, task_folders, out, ", save_model: true", method),
        progress=False,
        echo=None,
    )
    folder = out / "model"
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert _leftovers(out) == []
    tuned = saved["model"].eval()
    reloaded, _ = load_model(str(folder))
    base, _ = load_model(str(tiny_folder))
    _same_weights(tuned, reloaded)  # LoRA: merged, a plain model with the base's keys
    assert reloaded.state_dict().keys() == base.state_dict().keys()
    with torch.no_grad():
        assert torch.equal(tuned(input_ids=IDS).logits, reloaded(input_ids=IDS).logits)
    before, after = base.state_dict(), tuned.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)
    # the record: the saved model's own fingerprint, and the base model's
    meta = json.loads((folder / MODEL_META).read_text())
    assert meta["model_fingerprint"]["weights"] == model_fingerprint(tuned)["weights"]
    check_same_model(meta["model_fingerprint"], reloaded, "saved model")  # arch and weights
    assert meta["base_model"]["weights"] == model_fingerprint(base)["weights"]
    assert meta["base_model"]["weights"] != meta["model_fingerprint"]["weights"]
    assert meta["config"]["save_model"] is True and meta["dtype"] == "float32"
    assert "versions" in meta and meta["train"]["steps"] >= 1
    stage = json.loads((out / "multitask_config.json").read_text())
    assert stage["base_model"] == meta["base_model"]
    readme = (out / "README.md").read_text()
    assert re.search(r"\| `model/` \| \d+ files: the fine-tuned model and tokenizer", readme)
    # a later experiment file names the folder as its model
    later = tmp_path / "later.yaml"
    later.write_text(
        f"experiment: detect\nmodel: {folder}\nout: {tmp_path / 'later'}\n"
        f"tasks: [{task_folders[0]}]\ndetect: {{k: 20, attribution: {{n_examples: 4}}}}\n"
    )
    run = run_file(later, progress=False, echo=None)
    assert run.results["detect"].sets


def test_no_model_folder_by_default(tiny_folder, task_folders, tmp_path):
    out = tmp_path / "plain"
    run_file(_experiment(tmp_path, tiny_folder, task_folders, out), progress=False, echo=None)
    assert (out / "multitask_config.json").is_file()
    assert not (out / "model").exists() and _leftovers(out) == []


def test_failed_save_leaves_no_folder(tiny_folder, task_folders, tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", broken)
    out = tmp_path / "broken"
    with pytest.raises(OSError, match="disk full"):
        run_file(
            _experiment(tmp_path, tiny_folder, task_folders, out, ", save_model: true"),
            progress=False,
            echo=None,
        )
    assert not (out / "model").exists() and _leftovers(out) == []


def _tiny_tied(folder, dtype: str):
    """A tiny Llama with tied embeddings, loaded in ``dtype`` the way a run loads its model.

    (``model.to(bfloat16)`` would cast the rotary buffers too, which loading never does.)
    """
    config = TINY_CONFIGS["llama"]()
    config.tie_word_embeddings = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    model, tok = load_model(str(folder), dtype=dtype)
    with torch.no_grad():  # stands in for fine-tuning
        model.get_input_embeddings().weight.add_(0.5)
    return model, tok


@pytest.mark.parametrize(
    "dtype, gguf",
    [("float32", False), ("bfloat16", False), ("float32", True)],
    ids=["float32", "bfloat16", "from-gguf"],
)
def test_save_finetuned_keeps_ties_dtype_and_replaces_only_when_done(
    tmp_path, monkeypatch, dtype, gguf
):
    model, tok = _tiny_tied(tmp_path / "base", dtype)
    if gguf:  # a model straight from a GGUF file refuses save_pretrained
        model.hf_quantizer = object()
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "old.txt").write_text("the earlier model")

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:  # a failure keeps the earlier folder as it was
        m.setattr(type(tok), "save_pretrained", broken)
        with pytest.raises(OSError, match="disk full"):
            save_finetuned(model, tok, folder, {"note": "x"})
    assert [p.name for p in folder.iterdir()] == ["old.txt"] and _leftovers(tmp_path) == []

    save_finetuned(model, tok, folder, {"note": "x"})
    assert not (folder / "old.txt").exists() and _leftovers(tmp_path) == []
    assert json.loads((folder / MODEL_META).read_text()) == {"note": "x"}
    config = json.loads((folder / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["dtype"] == dtype
    reloaded, _ = load_model(str(folder), dtype=dtype)
    _same_weights(model, reloaded)
    emb, head = reloaded.get_input_embeddings(), reloaded.get_output_embeddings()
    assert head.weight.data_ptr() == emb.weight.data_ptr()  # still tied, not two copies
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, reloaded(input_ids=IDS).logits)
