"""Method name -> class, and :func:`make_method`.

Example:
    >>> sorted(METHODS) == sorted(METHOD_NAMES)
    True
"""

from __future__ import annotations

from torch import nn

from taskneurons.continual.base import ContinualMethod
from taskneurons.continual.epi import EPI
from taskneurons.continual.method_config import METHOD_NAMES, MethodConfig
from taskneurons.continual.ncft import NCFT
from taskneurons.continual.olora import OLoRA
from taskneurons.continual.pertask import PerTaskFT
from taskneurons.continual.seqft import SeqFT
from taskneurons.continual.seqlora import SeqLoRA
from taskneurons.continual.wncft import WNCFT
from taskneurons.training.train_config import TrainConfig

#: ``MethodConfig.name`` -> its :class:`ContinualMethod` class
METHODS: dict[str, type[ContinualMethod]] = {
    cls.name: cls for cls in (SeqFT, SeqLoRA, OLoRA, EPI, PerTaskFT, NCFT, WNCFT)
}
assert tuple(METHODS) == METHOD_NAMES


def make_method(
    config: MethodConfig,
    model: nn.Module,
    tokenizer,
    train: TrainConfig,
    progress: bool = False,
) -> ContinualMethod:
    """The method ``config.name`` on ``model`` (which it trains in place).

    Example:
        >>> method = make_method(MethodConfig(name="olora"), model, tok, TrainConfig())  # doctest: +SKIP
    """
    return METHODS[config.name](model, tokenizer, config, train, progress)
