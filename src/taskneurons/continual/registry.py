"""Method name -> class, and :func:`make_method`.

The methods are the variants of :class:`~taskneurons.continual.method_config.MethodConfig`,
one module each in :mod:`taskneurons.continual.strategies` (a new method is one new module).

Example:
    >>> sorted(METHODS)
    ['epi', 'migu', 'ncft', 'olora', 'pertask', 'seqft', 'seqlora', 'wncft']
"""

from __future__ import annotations

from torch import nn

from taskneurons.continual.base import ContinualMethod
from taskneurons.continual.method_config import MethodConfig
from taskneurons.training.train_config import TrainConfig

#: method name -> its :class:`ContinualMethod` class
METHODS: dict[str, type[ContinualMethod]] = {
    name: MethodConfig.variant(name).method_class for name in MethodConfig.names()
}


def make_method(
    config: MethodConfig,
    model: nn.Module,
    tokenizer,
    train: TrainConfig,
    progress: bool = False,
) -> ContinualMethod:
    """The method ``config.name`` on ``model`` (which it trains in place).

    Example:
        >>> method = make_method(MethodConfig.make("olora"), model, tok, TrainConfig())  # doctest: +SKIP
    """
    return config.build(model, tokenizer, train, progress)
