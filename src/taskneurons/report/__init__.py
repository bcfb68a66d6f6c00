"""report stage of taskneurons."""
