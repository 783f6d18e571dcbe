"""DSA + MIM4DD on Fashion-MNIST, IPC 1, seed 1 (weight 20, temperature 0.1, blocks 1-3, in-batch negatives).

Paper: MIM4DD reports gains over its base methods; no Fashion-MNIST number is known to us (METHODS.md 10).

Command: python experiments/run.py mim_dsa_fmnist_ipc1_s1
Runtime: the measured seconds_distill / seconds_eval are in experiments/results/mim_dsa_fmnist_ipc1_s1.json.
Settings: experiments/configs/_mim_common.py (the budget per IPC; eval 3 x 300 ep DSA).
"""
from _mim_common import cell

CONFIG = cell("dsa+mim", 1, seed=1)
