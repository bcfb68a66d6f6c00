"""HTML pages of finished runs: one self-contained report per run folder (or several side by
side), rendered from the stages' result objects with Jinja2 (:mod:`.html_report`)."""
