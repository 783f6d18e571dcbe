"""DC (gradient matching) on Fashion-MNIST, 1 image per class, CPU budget.

Command: python experiments/run.py dc_fmnist_ipc1
Runtime: see experiments/results/dc_fmnist_ipc1.json (seconds_distill, seconds_eval) on the shared 2-core CPU.
Budget: 60 steps (IPC 1: outer_loop 1, so 60 paper iterations of the 1000), 16 real images/class per step (paper
256), init noise, lr_img 0.1, momentum 0.5; evaluation 3 ConvNets x 300 epochs without augmentation (DC's protocol
on Fashion-MNIST).
Paper: DC FashionMNIST IPC 1 70.5 +- 0.6 [code: DC readme] (1000 iterations, 256 real/class, 100 evaluations).
"""
CONFIG = {
    "method": "dc", "dataset": "fashion_mnist", "ipc": 1, "iterations": 60, "seed": 0,
    "method_options": {"real_per_class": 16},
    "eval": {"models": 3, "epochs": 300, "augment": True},
    "tiny": {"method_options": {"real_per_class": 4}},
}
