"""DM on Fashion-MNIST at a budget of 1 pixel image(s) per class: low-rank factors, rank 2 (the paper's noise init), 7 stored image(s) per class.

Command: python experiments/run.py lowrank_dm_fmnist_ipc1_r2
Runtime: see experiments/results/lowrank_dm_fmnist_ipc1_r2.json (seconds_distill, seconds_eval) on the shared 2-core CPU.
Paper: the plugin's claim is that low rank beats pixels at equal memory (LoDM, METHODS.md 9; the paper's tables were
not available). Published pixel DM FashionMNIST: IPC 1 70.7, IPC 10 83.5 (full protocol, not comparable).
Reduced CPU protocol shared by every lowrank_* config (so rows compare at equal memory AND equal protocol):
ConvNetW32 (width 32, depth 3, instance norm) for distillation and evaluation instead of the width-128 ConvNet,
100 distillation iterations, 64 real images per class per iteration, evaluation 3 networks x 100
epochs with DSA augmentation, full Fashion-MNIST test split.
"""
CONFIG = {"method": "dm", "dataset": "fashion_mnist", "ipc": 1, "iterations": 100, "seed": 0, "model": "ConvNetW32", "method_options": {"real_per_class": 64}, "eval": {"models": 3, "epochs": 100, "augment": True}, "param": "low_rank", "param_options": {"rank": 2}, "init": "noise"}
