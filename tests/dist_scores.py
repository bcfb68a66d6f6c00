"""Helper for test_attribution: scores of a tiny model from 1 process or from torchrun's 2."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from accelerate import Accelerator  # noqa: E402

from taskneurons.neurons.attribution import relevance_scores  # noqa: E402

from test_attribution import random_batches  # noqa: E402
from tiny_models import tiny_model  # noqa: E402

accelerator = Accelerator(cpu=True)
model = tiny_model("llama")
batches = random_batches(model.config.vocab_size, n_batches=4, batch=3)
scores = relevance_scores(model, batches, accelerator=accelerator, progress=False)
if accelerator.is_main_process:
    out = Path(os.environ["TN_OUT"]) / f"scores_{accelerator.num_processes}.pt"
    torch.save(scores.scores, out)
    assert scores.meta["n_scored"] == 12, scores.meta
accelerator.wait_for_everyone()
