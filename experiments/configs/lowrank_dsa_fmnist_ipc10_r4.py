"""DSA on Fashion-MNIST at a budget of 10 pixel images per class: low-rank factors, rank 4, SVD init of real images (jaxdd extension, NOT the paper's init), 35 stored image(s) per class.

Command: python experiments/run.py lowrank_dsa_fmnist_ipc10_r4
Runtime: see experiments/results/lowrank_dsa_fmnist_ipc10_r4.json (seconds_distill, seconds_eval) on the 2-core CPU.
Paper: see experiments/configs/_lowrank_common.py (the plugin claim; published pixel numbers).
Settings: experiments/configs/_lowrank_common.py (the reduced CPU protocol shared by every lowrank_* row).
"""
from _lowrank_common import cell

CONFIG = cell('dsa', 10, rank=4, init="real")
