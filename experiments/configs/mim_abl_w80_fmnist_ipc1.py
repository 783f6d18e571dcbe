"""Ablation of DM + MIM4DD at Fashion-MNIST IPC 1, seed 0: weight 80 (else as mim_dm_fmnist_ipc1).

Paper: none (ablation).

Command: python experiments/run.py mim_abl_w80_fmnist_ipc1
Runtime: the measured seconds_distill / seconds_eval are in experiments/results/mim_abl_w80_fmnist_ipc1.json.
Settings: experiments/configs/_mim_common.py (100 iterations, 16 real/class, NCE on 8 real/class; eval 3 x 300 ep DSA).
"""
from _mim_common import cell

CONFIG = cell("dm+mim", 1, seed=0, mutual_info_weight=80.0)
