"""BPTT performance matching on Fashion-MNIST, 10 images per class (10 steps x 1 image/class, 3 epochs: the paper's
synthetic-set shape), CPU budget.

Command: python experiments/run.py bptt_fmnist_ipc10
Runtime: see experiments/results/bptt_fmnist_ipc10.json on the shared 2-core CPU.
Budget: 100 Adam steps (paper: 400 epochs), T = 30 unrolled steps on ConvNet-3 with remat every 5 steps, 50 real
images/class per outer loss; evaluation 3 ConvNets x 300 epochs under the common protocol (no lr replay).
Paper: no Fashion-MNIST number.
"""
CONFIG = {
    "method": "bptt", "dataset": "fashion_mnist", "ipc": 10, "iterations": 100, "seed": 0,
    "method_options": {"real_per_class": 50, "memory": "remat", "remat_every": 5},
    "eval": {"models": 3, "epochs": 300, "augment": True},
    "tiny": {"method_options": {"real_per_class": 4, "epochs": 1, "memory": "remat", "remat_every": 2}},
}
