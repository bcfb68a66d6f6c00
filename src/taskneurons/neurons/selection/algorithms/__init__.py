"""The selection methods, one module each: a config (registered by name) and its function.

Imported on the first lookup of a method name through
:class:`~taskneurons.neurons.selection.selection_config.SelectionConfig`; only method modules
belong here, so adding a selection is adding one module (and its test).
"""
