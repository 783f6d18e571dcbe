"""KIP on Fashion-MNIST, 10 images per class, empirical NTK of a finite ConvNet, CPU budget.

Command: python experiments/run.py kip_fmnist_ipc10
Runtime: see experiments/results/kip_fmnist_ipc10.json on the shared 2-core CPU.
Budget: 100 Adam steps (lr 0.04), empirical NTK of a fresh width-32 ConvNet-3 every step, 20 target images/class
per step, fixed labels; evaluation 3 ConvNets (width 128) x 300 epochs, no augmentation.
Paper: KIP -> finite ConvNet FashionMNIST IPC 10 86.8 [text: KIP-ConvNet Table 2].
"""
CONFIG = {
    "method": "kip", "dataset": "fashion_mnist", "ipc": 10, "iterations": 100, "seed": 0,
    "method_options": {"real_per_class": 20, "kernel_width": 32},
    "eval": {"models": 3, "epochs": 300, "augment": True},
    "tiny": {"method_options": {"real_per_class": 2, "kernel_width": 8}},
}
