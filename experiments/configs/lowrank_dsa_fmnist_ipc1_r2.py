"""DSA on Fashion-MNIST at a budget of 1 pixel image per class: low-rank factors, rank 2 (the paper's noise init), 7 stored image(s) per class.

Command: python experiments/run.py lowrank_dsa_fmnist_ipc1_r2
Runtime: see experiments/results/lowrank_dsa_fmnist_ipc1_r2.json on the shared 2-core CPU.
Paper: LoDSA keeps the (outer, inner) loops of the ORIGINAL IPC, here (1, 1), for every rank (METHODS.md 9).
Published pixel DSA FashionMNIST IPC 1: 70.6 (full protocol, not comparable).
Reduced CPU protocol: ConvNetW32 (width 32) for distillation and evaluation, 100 iterations (paper 1000), 64 real
images per class per step, evaluation 3 networks x 300 epochs with DSA, full Fashion-MNIST test split.
"""
CONFIG = {"method": "dsa", "dataset": "fashion_mnist", "ipc": 1, "iterations": 100, "seed": 0, "model": "ConvNetW32", "method_options": {"real_per_class": 64, "outer_loop": 1, "inner_loop": 1}, "eval": {"models": 3, "epochs": 300, "augment": True}, "param": "low_rank", "param_options": {"rank": 2}, "init": "noise"}
