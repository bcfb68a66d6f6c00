"""analysis stage of taskneurons."""
