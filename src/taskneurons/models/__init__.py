"""models stage of taskneurons."""
