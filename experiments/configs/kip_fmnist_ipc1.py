"""KIP (kernel inducing points) on Fashion-MNIST, 1 image per class, empirical NTK of a finite ConvNet, CPU budget.

Command: python experiments/run.py kip_fmnist_ipc1
Runtime: see experiments/results/kip_fmnist_ipc1.json on the shared 2-core CPU.
Budget: 200 Adam steps (lr 0.04), kernel = empirical NTK of a fresh width-32 ConvNet-3 every step (neural-tangents'
infinite-width kernels do not run on the pinned JAX), 20 target images/class per step (Colab: 5000 targets), fixed
labels; evaluation 3 ConvNets (width 128) x 300 epochs, no augmentation.
Paper: KIP -> finite ConvNet FashionMNIST IPC 1 73.8 [text: KIP-ConvNet Table 2] (infinite-width kernels, learned
labels, ZCA variants).
"""
CONFIG = {
    "method": "kip", "dataset": "fashion_mnist", "ipc": 1, "iterations": 200, "seed": 0,
    "method_options": {"real_per_class": 20, "kernel_width": 32},
    "eval": {"models": 3, "epochs": 300, "augment": True},
    "tiny": {"method_options": {"real_per_class": 2, "kernel_width": 8}},
}
