"""experiments/zero_shot"""
