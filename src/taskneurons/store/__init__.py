"""Run folders read back: the layout the runner writes, and the one settings record.

* :mod:`~taskneurons.store.run_folder` — :class:`~taskneurons.store.run_folder.RunFolder`: the
  run folder, its ``config.yaml`` and ``README.md``, a folder per stage when several ran, each
  stage's record (``<stage>_config.json``) and result files; what a finished folder holds.
* :mod:`~taskneurons.store.settings` — :class:`~taskneurons.store.settings.SettingsKey`: the key
  of the settings a result depends on (config, model fingerprint, data hashes), compared with
  the recorded one on resume, naming the keys that differ.
* :mod:`~taskneurons.store.cache` — :class:`~taskneurons.store.cache.SettingsCache`: a JSON file
  of results keyed by the digest of their settings.
"""
