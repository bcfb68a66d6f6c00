"""Named LoRA adapters on one model through one PEFT ``PeftModel`` (SeqLoRA, O-LoRA, EPI).

PEFT holds several adapters in every targeted linear (``lora_A[name]``, ``lora_B[name]``);
``set_adapter([names])`` chooses the ones that take part in the forward pass (their outputs
add up). :class:`AdapterStack` keeps the adapter names in the order they were added, chooses
which are active and which one trains (:meth:`AdapterStack.train_adapter`, through the one
training loop :func:`~taskneurons.training.loop.train`), and reads and writes their tensors
for checkpoints. PEFT itself is used as is.

Example:
    >>> stack = AdapterStack(model, TrainConfig(lora_r=8))  # doctest: +SKIP
    >>> stack.add("task0", seed=0)  # doctest: +SKIP
    >>> stack.activate(["task0"], trainable="task0")  # doctest: +SKIP
    >>> stack.train_adapter("task0", tok, sst2, TrainConfig(max_steps=10))["final_loss"]  # doctest: +SKIP
    0.52
    >>> A, B = stack.matrices("task0")["model.layers.0.self_attn.q_proj"]  # [r, in], [out, r]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from taskneurons.data.tasks import Task
from taskneurons.training.loop import TrainOptions, train
from taskneurons.training.methods import lora_config
from taskneurons.training.step import Regulariser
from taskneurons.training.train_config import TrainConfig


class AdapterStack:
    """LoRA adapters of one model, added one at a time, in one ``PeftModel``.

    Args:
        model: the base causal LM (PEFT injects the LoRA layers into it in place and freezes
            its parameters).
        train: the LoRA knobs (``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_targets``).

    Attributes:
        names: adapter names, in the order they were added.
        peft: the ``PeftModel`` (``None`` until the first :meth:`add`).
    """

    def __init__(self, model: nn.Module, train: TrainConfig) -> None:
        self.base = model
        self.train = train
        self.names: list[str] = []
        self.peft = None

    @property
    def model(self) -> nn.Module:
        """The causal LM with the LoRA layers in it (the base model before any adapter)."""
        return self.base if self.peft is None else self.peft.get_base_model()

    def add(self, name: str, seed: int) -> None:
        """Add adapter ``name`` (B = 0, A drawn under ``seed``); it is not activated."""
        from peft import get_peft_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.peft is None:
                self.peft = get_peft_model(self.base, lora_config(self.train), adapter_name=name)
            else:
                self.peft.add_adapter(name, lora_config(self.train))
        self.names.append(name)

    def activate(self, names: Sequence[str], trainable: str | None = None) -> None:
        """Make ``names`` the active adapters (outputs summed), all frozen but ``trainable``."""
        assert self.peft is not None
        self.peft.base_model.set_adapter(list(names), inference_mode=True)
        if trainable is not None:
            for p in self.parameters(trainable).values():
                p.requires_grad_(True)

    def train_adapter(
        self,
        name: str,
        tokenizer,
        task: Task,
        config: TrainConfig,
        regulariser: Regulariser | None = None,
        progress: bool = False,
    ) -> dict:
        """Train adapter ``name`` on ``task`` (the active adapters in the forward); a summary.

        Args:
            name: the adapter to train (made trainable by :meth:`activate`).
            tokenizer: the model's tokenizer.
            task: the task (its train split, pooled and shuffled with ``config.seed``).
            config: lr, steps/epochs, batch size, accumulation, schedule, clipping, prompt
                (``method`` and the LoRA knobs are not read: the adapter exists).
            regulariser: added to the loss once per optimizer step (O-LoRA's penalty).
            progress: show a progress bar.

        Returns:
            ``{"steps", "final_loss", "final_regulariser", "n_trainable", "wall_s"}``; losses
            in nats (mean per-example answer NLL).
        """
        options = TrainOptions(params=self.parameters(name), regulariser=regulariser)
        res = train(self.model, tokenizer, [task], config, progress=progress, options=options)
        return {
            "steps": res.steps,
            "final_loss": res.final_loss,
            "final_regulariser": res.final_regulariser,
            "n_trainable": res.n_trainable,
            "wall_s": round(res.wall_s, 3),
        }

    def parameters(self, name: str) -> dict[str, nn.Parameter]:
        """The LoRA tensors of adapter ``name`` by ``named_parameters`` name."""
        assert self.peft is not None
        tag = f".{name}."
        return {n: p for n, p in self.peft.named_parameters() if ".lora_" in n and tag in n}

    def matrices(self, name: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Module name -> ``(A [r, in], B [out, r])`` of adapter ``name``, in module order."""
        assert self.peft is not None
        out = {}
        for mod_name, module in self.peft.get_base_model().named_modules():
            lora_a = getattr(module, "lora_A", None)
            if isinstance(lora_a, nn.ModuleDict) and name in lora_a:
                out[mod_name] = (lora_a[name].weight, module.lora_B[name].weight)
        return out

    @contextlib.contextmanager
    def disabled(self) -> Iterator[nn.Module]:
        """Yield the model with every adapter off (the base model's outputs)."""
        if self.peft is None:
            yield self.base
            return
        with self.peft.disable_adapter():
            yield self.peft.get_base_model()

    def state(self, prefix: str = "lora.") -> dict[str, torch.Tensor]:
        """Every adapter's tensors (detached copies), keys ``prefix + parameter name``."""
        out = {}
        for name in self.names:
            for n, p in self.parameters(name).items():
                out[prefix + n] = p.detach().clone()
        return out

    def load(self, names: Sequence[str], state: dict, prefix: str = "lora.") -> None:
        """Add ``names`` (in order) and copy their tensors from :meth:`state`'s dict."""
        for name in names:
            self.add(name, seed=0)
        with torch.no_grad():
            for name in names:
                for n, p in self.parameters(name).items():
                    p.copy_(state[prefix + n])

    def bytes_of(self, name: str) -> int:
        """Bytes of adapter ``name``'s tensors."""
        return int(sum(p.numel() * p.element_size() for p in self.parameters(name).values()))
