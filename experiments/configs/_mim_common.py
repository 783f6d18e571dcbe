"""Shared settings of the mim_* configs (MIM4DD vs its base at the same budget; not a config itself).

Every mim_* config is ``cell(...)`` with its method, IPC, seed and options. The CPU budget (a 2-core machine
shared by several jobs): 100 distillation iterations, 16 real images/class for DM, 8 real images/class for the NCE
term, the common evaluation (ConvNet, 3 networks, 300 epochs, DSA) on the full test split.
"""
ITERATIONS = 100
REAL_PER_CLASS = 16
MIM = {"mutual_info_weight": 20.0, "mutual_info_temperature": 0.1, "mutual_info_real_per_class": 8}


def cell(method: str, ipc: int, seed: int = 0, **options) -> dict:
    opts = {"real_per_class": REAL_PER_CLASS, **(MIM if method.endswith("+mim") else {}), **options}
    tiny = {"real_per_class": 4, **({"mutual_info_real_per_class": 2, "mutual_info_head_dim": 8}
                                    if method.endswith("+mim") else {})}
    return {"method": method, "dataset": "fashion_mnist", "ipc": ipc, "iterations": ITERATIONS, "seed": seed,
            "method_options": opts, "eval": {"models": 3, "epochs": 300, "augment": True},
            "tiny": {"method_options": tiny}}

