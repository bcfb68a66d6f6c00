"""Helper for test_masked_step: masked neuron training from 1 process or torchrun's 2.

``TN_MODE=train``: ``train()`` with ``neuron_update="masked"`` through Accelerate (gradients
summed across processes). ``TN_MODE=fsdp``: the model wrapped in FSDP (``use_orig_params=True``,
gloo, CPU), the masks cut to each shard (``MaskedNeuronsMethod.shard``), SGD steps by hand on
each process's half of the examples. Writes ``$TN_OUT/<mode>_<processes>.pt``: the full
parameters after training (and, for ``train``, the delta).
"""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from taskneurons.losses import per_example_loss  # noqa: E402
from taskneurons.training.loop import TrainConfig, TrainOptions, train  # noqa: E402
from taskneurons.training.methods import make_method  # noqa: E402
from test_precision import _batches  # noqa: E402
from test_training import PROMPT, random_set, toy_task  # noqa: E402

from tiny_models import tiny_model  # noqa: E402
from tiny_tokenizer import tiny_tokenizer  # noqa: E402

MODE = os.environ["TN_MODE"]
OUT = Path(os.environ["TN_OUT"])
CFG = dict(lr=0.2, max_steps=3, batch_size=3, grad_accum=2, prompt=PROMPT, optimizer="sgd",
           neuron_update="masked")  # fmt: skip


def run_train():
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = tiny_model("llama")
    res = train(model, tiny_tokenizer(), toy_task(n=10), TrainConfig(**CFG),
                neurons=random_set(model, "ffn"), options=TrainOptions(accelerator=acc),
                progress=False)  # fmt: skip
    if acc.is_main_process:
        out = {"delta": res.delta.state_dict(), "params": dict(model.named_parameters())}
        torch.save({k: {n: t.detach() for n, t in v.items()} for k, v in out.items()},
                   OUT / f"train_{acc.num_processes}.pt")  # fmt: skip
    acc.wait_for_everyone()
    acc.end_training()


def run_fsdp():
    import torch.distributed as dist
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    model = tiny_model("llama")
    neurons = random_set(model, "ffn")
    method = make_method(TrainConfig(**CFG), neurons)
    params = [p for _, p in method.setup(model, neurons)]
    if world > 1:
        model = FSDP(model, use_orig_params=True, device_id=torch.device("cpu"))
        method.shard(model)
    opt = torch.optim.SGD(params, lr=0.2)
    batches = _batches()  # 2 batches of 3 examples: each process one batch
    n = sum(int(b["input_ids"].shape[0]) for b in batches)
    mine = batches[rank::world]
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        loss = sum(per_example_loss(model, b).sum() for b in mine) / n
        (loss * world).backward()  # FSDP averages the gradients over the processes
        method.grad_filter()
        opt.step()
    if world > 1:
        full = FullStateDictConfig(rank0_only=True)
        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, full):
            state = model.state_dict()
    else:
        state = model.state_dict()
    if rank == 0:
        torch.save({n: t.detach().clone() for n, t in state.items()}, OUT / f"fsdp_{world}.pt")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


run_train() if MODE == "train" else run_fsdp()
