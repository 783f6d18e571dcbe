"""DSA (gradient matching with Siamese augmentation) on Fashion-MNIST, 1 image per class, CPU budget.

Command: python experiments/run.py dsa_fmnist_ipc1
Runtime: see experiments/results/dsa_fmnist_ipc1.json (seconds_distill, seconds_eval) on the shared 2-core CPU.
Budget: 40 steps (= 40 paper iterations at IPC 1, of 1000), 16 real images/class per step (paper 256), init real,
lr_img 0.1, momentum 0.5; evaluation 3 ConvNets x 300 epochs with DSA augmentation (paper: 1000 epochs).
Paper: DSA FashionMNIST IPC 1 70.6 +- 0.6 [code: DC readme].
"""
CONFIG = {
    "method": "dsa", "dataset": "fashion_mnist", "ipc": 1, "iterations": 40, "seed": 0,
    "method_options": {"real_per_class": 16},
    "eval": {"models": 3, "epochs": 300, "augment": True},
    "tiny": {"method_options": {"real_per_class": 4}},
}
