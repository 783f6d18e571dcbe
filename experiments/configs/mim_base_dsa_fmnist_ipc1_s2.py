"""DSA on Fashion-MNIST, IPC 1, seed 2: the baseline of mim_dsa_fmnist_ipc1_s2 (same budget).

Paper: DSA FashionMNIST IPC 1 70.6 (1000 iterations, 1000-ep eval, METHODS.md 12); this is a CPU budget.

Command: python experiments/run.py mim_base_dsa_fmnist_ipc1_s2
Runtime: the measured seconds_distill / seconds_eval are in experiments/results/mim_base_dsa_fmnist_ipc1_s2.json.
Settings: experiments/configs/_mim_common.py (the budget per IPC; eval 3 x 300 ep DSA).
"""
from _mim_common import cell

CONFIG = cell("dsa", 1, seed=2)
