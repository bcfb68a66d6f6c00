"""Helper for test_attribution: scores of a tiny model from 1 process or from torchrun's 2.

Scores twice: from ready-made batches (each process takes every other batch) and through a
``Task`` (each process tokenizes and scores its shard of the examples). Writes
``$TN_OUT/scores_<processes>.pt``: ``{"batches": scores, "task": scores, "task_meta": {...}}``.
"""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from accelerate import Accelerator  # noqa: E402

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.neurons.attribution import relevance_scores
from taskneurons.neurons.attribution_config import AttributionConfig

from test_attribution import _ragged_task, random_batches  # noqa: E402
from tiny_models import tiny_model  # noqa: E402
from tiny_tokenizer import tiny_tokenizer  # noqa: E402

accelerator = Accelerator(cpu=True)
model = tiny_model("llama")
batches = random_batches(model.config.vocab_size, n_batches=4, batch=3)
scores = relevance_scores(model, batches, accelerator=accelerator, progress=False)
assert scores.meta["n_scored"] == 12, scores.meta

task = _ragged_task(11)  # 11 examples: shards of 6 and 5
config = AttributionConfig(n_examples=None, batch_size=2, prompt=PromptConfig(max_length=64))
by_task = relevance_scores(
    model, task, tokenizer=tiny_tokenizer(), config=config, accelerator=accelerator, progress=False
)
task_meta = {k: by_task.meta[k] for k in ("n_scored", "n_examples", "n_tokens", "data_hash")}
if accelerator.is_main_process:
    out = Path(os.environ["TN_OUT"]) / f"scores_{accelerator.num_processes}.pt"
    torch.save({"batches": scores.scores, "task": by_task.scores, "task_meta": task_meta}, out)
accelerator.wait_for_everyone()
accelerator.end_training()  # destroys the process group: no abort at interpreter exit
