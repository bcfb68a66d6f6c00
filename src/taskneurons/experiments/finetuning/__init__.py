"""experiments/finetuning"""
