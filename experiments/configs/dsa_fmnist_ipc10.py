"""DSA on Fashion-MNIST, 10 images per class, CPU budget.

Command: python experiments/run.py dsa_fmnist_ipc10
Runtime: see experiments/results/dsa_fmnist_ipc10.json (seconds_distill, seconds_eval); ~20 min + ~15 min on one core.
Budget: 20 steps = 2 paper iterations (outer_loop 10, inner_loop 50; the paper runs 1000 iterations = 10000
steps), 16 real images/class per step (paper 256), init real, lr_img 0.1, momentum 0.5; evaluation 3 ConvNets x
300 epochs with DSA augmentation (paper: 1000 epochs).
Paper: DSA FashionMNIST IPC 10 84.6 +- 0.3 [code: DC readme].
"""
CONFIG = {
    "method": "dsa", "dataset": "fashion_mnist", "ipc": 10, "iterations": 20, "seed": 0,
    "method_options": {"real_per_class": 16},
    "eval": {"models": 3, "epochs": 300, "augment": True},
    "tiny": {"method_options": {"real_per_class": 4, "outer_loop": 2, "inner_loop": 1}},
}
