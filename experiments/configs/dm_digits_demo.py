"""DM on scikit-learn's 8x8 digits (the embedded default), 5 images per class: the `make demo` job.

Command: python experiments/run.py dm_digits_demo
Runtime: ~2 min on the 2-core CPU.
Paper: none (digits is not a DD benchmark); compare with the random-subset baseline it reports.
"""
CONFIG = {
    "method": "dm", "dataset": "digits", "ipc": 5, "iterations": 200, "seed": 0,
    "method_options": {"real_per_class": 64},
    "eval": {"models": 4, "epochs": 300, "augment": True},
    "baseline": True,
}
