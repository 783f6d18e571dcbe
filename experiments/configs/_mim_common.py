"""Shared settings of the mim_* configs (MIM4DD vs its base at the same budget; not a config itself).

Every mim_* config is ``cell(...)`` with its method, IPC, seed and options; a base and its +mim cell differ only
in the NCE term. The CPU budget (a 2-core machine): 16 real images/class for the base objective, 8 real
images/class for the NCE term, evaluation 3 networks x 300 epochs with DSA on the full test split, and
- IPC 1: ConvNet (width 128) for distillation and evaluation; DM and DSA 100 iterations (DSA loops (1, 1));
- IPC 10: ConvNetW32 (width 32) for distillation and evaluation (the width-128 evaluation of 100 images costs
  about 18 min per cell on one core here); DM 100 iterations; DSA 20 outer-loop rounds of its (10, 50) loops
  (= 2 paper iterations).
"""
ITERATIONS = 100
REAL_PER_CLASS = 16
MIM = {"mutual_info_weight": 20.0, "mutual_info_temperature": 0.1, "mutual_info_real_per_class": 8}


def cell(method: str, ipc: int, seed: int = 0, **options) -> dict:
    opts = {"real_per_class": REAL_PER_CLASS, **(MIM if method.endswith("+mim") else {}), **options}
    tiny = {"real_per_class": 4, **({"mutual_info_real_per_class": 2, "mutual_info_head_dim": 8}
                                    if method.endswith("+mim") else {})}
    iterations = 20 if (ipc == 10 and method.startswith("dsa")) else ITERATIONS
    return {"method": method, "dataset": "fashion_mnist", "ipc": ipc, "iterations": iterations, "seed": seed,
            "model": "ConvNetW32" if ipc == 10 else "ConvNet",
            "method_options": opts, "eval": {"models": 3, "epochs": 300, "augment": True},
            "tiny": {"method_options": tiny}}

