"""Experiments: each chains the stages for one table or figure and returns a typed result.

Run them from experiment files with ``taskneurons run experiments/X.yaml``
(:mod:`taskneurons.experiments.runner`).
"""
