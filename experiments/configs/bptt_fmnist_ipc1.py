"""BPTT performance matching (Wang et al. 2018) on Fashion-MNIST, 1 image per class, CPU budget.

Command: python experiments/run.py bptt_fmnist_ipc1
Runtime: see experiments/results/bptt_fmnist_ipc1.json on the shared 2-core CPU.
Budget: 200 Adam steps (paper: 400 epochs), T = 1 step x 3 epochs unrolled on ConvNet-3 (paper: LeNet, 10 steps x 3
epochs, 1 image/class/step), learned per-step lrs, 100 real images/class per outer loss (paper 1024 in all);
evaluation under the common protocol, 3 ConvNets x 300 epochs, lr 0.01, no augmentation (NOT the paper's replay of
the learned lrs, so the number understates what the images do under their own schedule).
Paper: no Fashion-MNIST number (MNIST 93.8 with fixed init, 79.5 with random inits, LeNet; [U]).
"""
CONFIG = {
    "method": "bptt", "dataset": "fashion_mnist", "ipc": 1, "iterations": 200, "seed": 0,
    "method_options": {"real_per_class": 100},
    "eval": {"models": 3, "epochs": 300, "augment": True},
    "tiny": {"method_options": {"real_per_class": 4, "epochs": 1}},
}
