"""The prompt-variants stage on a tiny model: scores per variant, paired statistics, files."""

from __future__ import annotations

import json

import pytest

import taskneurons.experiments.zero_shot.prompt_variants as pv
from taskneurons.config import ConfigError
from taskneurons.data.load import load_task
from taskneurons.data.prompt_config import PromptConfig
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.common import eval_examples
from taskneurons.experiments.experiment_file import ExperimentFile, with_defaults
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.runner import run_file
from taskneurons.experiments.zero_shot.prompt_variants import MEAN_ROW, prompt_variants_experiment
from taskneurons.experiments.zero_shot.prompts_stage import PromptVariantsConfig
from taskneurons.models.loading import load_model

from tiny_tokenizer import tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

#: A chat template in the tiny vocabulary's words, so the chat prompt differs from the plain one.
CHAT = (
    "{% for m in messages %}I : {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}you :{% endif %}"
)
VARIANTS = [{"name": "plain"}, {"name": "chat", "chat_template": True}, {"name": "same"}]


@pytest.fixture(scope="module")
def setup(tiny_folder, task_folders):
    model, tok = load_model(str(tiny_folder))
    tok.chat_template = CHAT
    return model, tok, [load_task(str(f)) for f in task_folders]


def _config(variants=VARIANTS, **extra) -> PromptVariantsConfig:
    return PromptVariantsConfig.from_dict(
        {"variants": variants, "n_test": 4, "n_boot": 50, "eval": {"batch_size": 4}, **extra}
    )


def test_scores_differences_and_files(setup, tmp_path):
    model, tok, tasks = setup
    config = _config()
    res = prompt_variants_experiment(
        RunContext.of(model, tok, tasks, progress=False), config, tmp_path
    )
    names = [t.id for t in tasks]
    assert res.variants == ["plain", "chat", "same"]
    assert [r[0] for r in res.rows] == [*names, MEAN_ROW]
    assert "plain-plain" not in " ".join(res.header)  # no difference column of the reference
    assert res.header[:4] == ["task", "plain", "chat", "same"]
    assert res.header[4:] == [
        "chat-plain", "chat-plain low", "chat-plain high", "chat-plain p",
        "same-plain", "same-plain low", "same-plain high", "same-plain p",
    ]  # fmt: skip
    assert set(res.differences) == {"chat", "same"}
    for task in tasks:
        examples = eval_examples(task, 4, 0)
        for name, prompt in (("plain", PromptConfig()), ("chat", PromptConfig(chat_template=True))):
            direct = evaluate(
                model, tok, task, examples, config=EvalConfig(prompt=prompt, batch_size=4),
                progress=False,
            )  # fmt: skip
            assert res.scores[task.id][name] == direct.example_scores(), (task.id, name)
        assert res.scores[task.id]["same"] == res.scores[task.id]["plain"]
    for row in res.rows:  # the variant identical to the reference: exactly 0, p = 1
        assert row[8:] == [0.0, 0.0, 0.0, 1.0], row
    for row in res.rows[:-1]:
        d = res.differences["chat"][row[0]]
        assert row[4:8] == [d.mean, d.low, d.high, d.p_value]
        assert d.mean == pytest.approx(row[2] - row[1]) and d.n == 4
    mean = res.rows[-1]
    assert mean[1:4] == pytest.approx([sum(r[i] for r in res.rows[:-1]) / 2 for i in (1, 2, 3)])
    assert mean[4] == pytest.approx(sum(r[4] for r in res.rows[:-1]) / 2)
    saved = json.loads((tmp_path / "prompt_variants.json").read_text())
    assert saved["header"] == res.header and saved["rows"] == res.rows
    assert saved["meta"]["config"] == config.to_dict()
    assert saved["meta"]["prompts"]["chat"]["chat_template"] is True
    assert "command" in saved["meta"] and "model" in saved["meta"]
    assert (tmp_path / "prompt_variants.md").read_text().startswith("# Zero-shot score")
    assert (tmp_path / "prompt_variants.csv").read_text().startswith("task,plain,chat,same")
    per = json.loads((tmp_path / "per_example.json").read_text())
    assert per["tasks"][names[0]]["scores"] == res.scores[names[0]]
    first = per["tasks"][names[0]]["first_prompt"]
    assert first["chat"].startswith("I :") and first["plain"].endswith("Answer:")
    assert (
        json.loads((tmp_path / "prompt_variants_config.json").read_text())["reference"] == "plain"
    )
    assert "sign-flip" in res.markdown()


def test_unequal_task_sizes_mean_row_is_the_mean_over_tasks():
    scores = {
        "a": {"r": [0.0, 100.0], "v": [100.0, 100.0]},
        "b": {"r": [0.0, 0.0, 0.0, 100.0], "v": [0.0, 0.0, 0.0, 0.0]},
    }
    x, y = pv.mean_row(scores, "v", "r")
    diff = sum(a - b for a, b in zip(x, y, strict=True)) / len(x)
    assert diff == pytest.approx((50.0 + -25.0) / 2)


@pytest.mark.parametrize(
    "variants, message",
    [
        ([{"name": "plain"}], "at least 2 prompt variants"),
        ([{"name": "a"}, {"name": "a"}], "variant name 'a' is used twice"),
        ([{"name": "a"}, {"name": ""}], "non-empty string 'name'"),
        ([{"name": "a"}, {"chat_template": True}], "non-empty string 'name'"),
        (
            [{"name": "a"}, {"name": "b", "chat": True}],
            r"variants\[1\] \('b'\): unknown prompt key 'chat'; allowed: name, chat_template",
        ),
        ([{"name": "a"}, {"name": "b", "max_length": "long"}], "max_length: expected a whole"),
    ],
)
def test_bad_variants_are_refused(variants, message):
    with pytest.raises(ConfigError, match=message):
        PromptVariantsConfig.from_dict({"variants": variants})


def test_experiment_file_names_the_section_and_takes_the_top_level_defaults():
    data = {"experiment": "prompts", "tasks": ["x"], "seed": 3, "prompt": {"max_length": 64}}
    bad = {**data, "prompts": {"variants": [{"name": "a"}, {"name": "b", "foo": 1}]}}
    with pytest.raises(ConfigError, match=r"exp.yaml: prompts: variants\[1\].*'foo'"):
        ExperimentFile.from_dict(bad, where="exp.yaml")
    cfg = ExperimentFile.from_dict(with_defaults(data))
    assert cfg.stages() == ["prompts"]  # no neuron sets needed: no detect added
    assert cfg.prompts.seed == 3 and cfg.prompts.prompt_for("chat").max_length == 64
    assert (
        cfg.prompts.prompt_for("chat").chat_template
        and not cfg.prompts.prompt_for("plain").chat_template
    )


def test_chat_variant_without_a_chat_template_fails_before_evaluating(setup, tmp_path, monkeypatch):
    model, _, tasks = setup
    calls = []
    monkeypatch.setattr(pv, "evaluate", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match=r"\['chat'\] set chat_template: true, but the tokenizer"):
        ctx = RunContext.of(model, tiny_tokenizer(), tasks)
        prompt_variants_experiment(ctx, _config(), tmp_path / "x")
    assert calls == [] and not (tmp_path / "x").exists()


def test_runner_runs_the_prompts_stage(tiny_folder, task_folders, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"experiment: prompts\nmodel: {tiny_folder}\ntasks: [{task_folders[0]}]\n"
        f"out: {tmp_path / 'r'}\nprompt: {{max_length: 64}}\n"
        "prompts: {n_test: 4, n_boot: 10, variants: [{name: plain}, {name: cue, "
        "answer_prefix: 'Option:'}]}\n"
    )
    run = run_file(path, progress=False, echo=None)
    res = run.results["prompts"]
    assert res.header[1:3] == ["plain", "cue"] and [r[0] for r in res.rows][-1] == MEAN_ROW
    assert (tmp_path / "r" / "prompt_variants.csv").is_file()
    assert "`prompt_variants.{" in (tmp_path / "r" / "README.md").read_text()
