"""The continual-learning methods, one module each: its config (a ``MethodConfig`` variant) and
its :class:`~taskneurons.continual.base.ContinualMethod`, found by name on first use."""
