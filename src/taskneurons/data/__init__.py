"""data stage of taskneurons."""
