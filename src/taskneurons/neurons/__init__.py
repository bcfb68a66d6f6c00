"""neurons stage of taskneurons."""
