"""DM on Fashion-MNIST, IPC 1, seed 1: the baseline of mim_dm_fmnist_ipc1_s1 (same budget).

Paper: DM FashionMNIST IPC 1 70.7 +- 0.6 [U] (20000 it, 1000-ep eval); this is a 100-iteration CPU budget.

Command: python experiments/run.py mim_base_dm_fmnist_ipc1_s1
Runtime: the measured seconds_distill / seconds_eval are in experiments/results/mim_base_dm_fmnist_ipc1_s1.json.
Settings: experiments/configs/_mim_common.py (100 iterations, 16 real/class, NCE on 8 real/class; eval 3 x 300 ep DSA).
"""
from _mim_common import cell

CONFIG = cell("dm", 1, seed=1)
