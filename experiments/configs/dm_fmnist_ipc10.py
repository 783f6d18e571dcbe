"""DM on Fashion-MNIST, 10 images per class, CPU budget.

Command: python experiments/run.py dm_fmnist_ipc10
Runtime: see seconds_distill / seconds_eval in experiments/results/dm_fmnist_ipc10.json (300 iterations, 64 real
images/class; 3 nets x 300 epochs with DSA, and the random-subset baseline under the same protocol).
Paper: DM FashionMNIST IPC 10 83.5 +- 0.3 [U] (20000 iterations, 256 real/class, 1000-epoch DSA evaluation).
"""
CONFIG = {
    "method": "dm", "dataset": "fashion_mnist", "ipc": 10, "iterations": 300, "seed": 0,
    "method_options": {"real_per_class": 64},
    "eval": {"models": 3, "epochs": 300, "augment": True},
    "baseline": True,
}
