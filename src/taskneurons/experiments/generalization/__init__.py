"""experiments/generalization"""
