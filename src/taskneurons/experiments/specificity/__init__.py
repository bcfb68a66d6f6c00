"""experiments/specificity"""
