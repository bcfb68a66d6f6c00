"""experiments/continual"""
