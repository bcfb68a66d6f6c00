"""training stage of taskneurons."""
