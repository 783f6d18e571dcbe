"""DC (gradient matching) on Fashion-MNIST, 10 images per class, CPU budget.

Command: python experiments/run.py dc_fmnist_ipc10
Runtime: see experiments/results/dc_fmnist_ipc10.json (seconds_distill, seconds_eval); ~20 min + ~15 min on one core.
Budget: 20 steps = 2 paper iterations (outer_loop 10, inner_loop 50: one step is one outer-loop round; the paper
runs 1000 iterations = 10000 steps), 16 real images/class per step (paper 256), init noise, lr_img 0.1,
momentum 0.5; evaluation 3 ConvNets x 300 epochs without augmentation.
Paper: DC FashionMNIST IPC 10 82.3 +- 0.4 [code: DC readme].
"""
CONFIG = {
    "method": "dc", "dataset": "fashion_mnist", "ipc": 10, "iterations": 20, "seed": 0,
    "method_options": {"real_per_class": 16},
    "eval": {"models": 3, "epochs": 300, "augment": True},
    "tiny": {"method_options": {"real_per_class": 4, "outer_loop": 2, "inner_loop": 1}},
}
