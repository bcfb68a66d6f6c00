"""General ability kept: a task none of the methods trained on, after the last task."""

from __future__ import annotations

import numpy as np
import pytest

from taskneurons.evaluation.dispatch import evaluate
from taskneurons.experiments.common import eval_examples
from taskneurons.experiments.continual.continual_stage import ContinualSuiteConfig
from taskneurons.experiments.continual.method_run import continual_experiment
from taskneurons.experiments.continual.suite import continual_suite
from taskneurons.experiments.run_context import RunContext
from test_continual import EVAL, TRAIN, animal_task, mood_task, people_task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_held_out_task_scored_after_the_last_task_against_zero_shot(tok, tmp_path):
    tasks = [mood_task(), animal_task(), people_task()]
    fields = dict(train=TRAIN, single_train=TRAIN.replace(method="full"), eval=EVAL)
    suite = ContinualSuiteConfig(methods=["seqft", "pertask"], n_train=8, n_test=6,
                                 order=["mood", "animal"], held_out=["people"], **fields)  # fmt: skip
    suite.check_tasks(tasks)  # people may be left out of order: it is held out
    with pytest.raises(ValueError, match="held_out"):
        suite.replace(order=["mood", "animal", "people"])
    res = continual_suite(RunContext.of(tiny_model("llama"), tok, tasks, progress=False), suite,
                          tmp_path / "s")  # fmt: skip
    people = people_task()
    test = eval_examples(people, 6, 0)
    zero = evaluate(tiny_model("llama"), tok, people, test, config=EVAL).score
    pertask = res.results["pertask"].held_out["people"]
    assert pertask == {"score": zero, "zero_shot": zero, "change": 0.0}  # the base model answers
    # SeqFT's score is that of the model after both tasks, trained without the held-out task
    model = tiny_model("llama")
    alone = continual_experiment(model, tok, tasks[:2], suite.runs()[0][1].replace(held_out=None),
                                 tmp_path / "alone", progress=False)  # fmt: skip
    seqft = res.results["seqft"].held_out["people"]
    assert seqft["score"] == evaluate(model, tok, people, test, config=EVAL).score
    assert seqft["zero_shot"] == zero and seqft["change"] == seqft["score"] - zero
    np.testing.assert_array_equal(res.results["seqft"].matrix, alone.matrix)  # rest unchanged
    assert (tmp_path / "s" / "held_out.md").is_file()
    assert (tmp_path / "s" / "seqft" / "held_out.csv").is_file()
