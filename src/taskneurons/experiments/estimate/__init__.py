"""``taskneurons estimate``: predicted time, peak memory and disk of an experiment file."""
