"""DM on Fashion-MNIST at a budget of 1 pixel image(s) per class: low-rank factors, rank 4 (the paper's noise init), 3 stored image(s) per class.

Command: python experiments/run.py lowrank_dm_fmnist_ipc1_r4
Runtime: see experiments/results/lowrank_dm_fmnist_ipc1_r4.json (seconds_distill, seconds_eval) on the 2-core CPU.
Paper: see experiments/configs/_lowrank_common.py (the plugin claim; published pixel numbers).
Settings: experiments/configs/_lowrank_common.py (the reduced CPU protocol shared by every lowrank_* row).
"""
from _lowrank_common import cell

CONFIG = cell('dm', 1, rank=4)
