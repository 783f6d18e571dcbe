"""Every matching method on Fashion-MNIST at IPC 1 and 10, on budgets the 2-core CPU affords, plus the digits demo.

Command: python experiments/run.py baselines [CELL ...]     (cells: python experiments/run.py baselines --list)
Runtime: each cell's seconds_distill / seconds_eval are in experiments/results/baselines/CELL.json; 5-70 minutes a
         cell on the 2-core CPU.
Paper: Fashion-MNIST, ConvNet-3, full budgets (docs/methods.md section 12): DC 70.5 / 82.3, DSA 70.6 / 84.6,
       DM 70.7 / 83.5 (unverified), MTT 75.1 / 87.2 (unverified), KIP -> finite ConvNet 73.8 / 86.8 at IPC 1 / 10;
       BPTT has no Fashion-MNIST number. The budgets below are far smaller (stated per cell): compare with care.

Per-method budgets (the paper's in brackets):
- DM: 300 iterations (20 000), 64 real images per class (256), and the random real subset of the same size.
- DC / DSA: IPC 1 60 / 40 rounds of loops (1, 1) (1000 iterations); IPC 10 20 rounds of loops (10, 50), i.e. 2 paper
  iterations (1000); 16 real images per class (256).
- MTT: ConvNetW32, 2 experts x 4 epochs on 300 images per class (100 x 50 on all), 10 student steps, 2 expert epochs,
  max start 2, lr_img 1000, lr_lr 1e-5; IPC 1 100 iterations, IPC 10 20 (5000).
- BPTT: T = 1 step x 3 epochs at IPC 1, 10 x 3 at IPC 10 (remat every 5), 100 / 50 real images per class per outer
  loss (1024 in all); 200 / 100 Adam steps (400 epochs).
- KIP: empirical NTK of a fresh width-32 ConvNet every step, 20 target images per class; 200 / 100 Adam steps.
- Evaluation: 3 ConvNets x 300 epochs under each method's protocol (1000 epochs, 20 networks in the papers).
"""
from __future__ import annotations

EVAL = {"models": 3, "epochs": 300, "augment": True}
_EXPERTS = "runs/experts/fmnist_w32_e4_c300"
_TINY_EXPERTS = "runs/experts_tiny/fmnist_w32"


def _mtt(ipc: int, iterations: int, batch_syn: int, checkpoint_every: int, baseline: bool) -> dict:
    return {
        "model": "ConvNetW32", "iterations": iterations, "baseline": baseline,
        "experts": {"out_dir": _EXPERTS, "num_experts": 2, "epochs": 4, "max_per_class": 300, "group": 2,
                    "model": "ConvNetW32"},
        "method_options": {"experts": _EXPERTS, "syn_steps": 10, "expert_epochs": 2, "max_start_epoch": 2,
                           "batch_syn": batch_syn, "memory": "constant"},
        "config_overrides": {"lr_img": 1000.0, "lrs": (("extras/syn_lr", 1e-5),), "checkpoint_every": checkpoint_every},
        "tiny": {"experts": {"out_dir": _TINY_EXPERTS, "num_experts": 1, "epochs": 2, "max_per_class": 10},
                 "method_options": {"experts": _TINY_EXPERTS, "syn_steps": 2, "expert_epochs": 1,
                                    "max_start_epoch": 1}},
    }


# (method, ipc) -> what differs from {dataset fashion_mnist, seed 0, EVAL}
CELLS = {
    ("dm", 1): {"iterations": 300, "method_options": {"real_per_class": 64}, "baseline": True},
    ("dm", 10): {"iterations": 300, "method_options": {"real_per_class": 64}, "baseline": True},
    ("dc", 1): {"iterations": 60, "method_options": {"real_per_class": 16},
                "tiny": {"method_options": {"real_per_class": 4}}},
    ("dc", 10): {"iterations": 20, "method_options": {"real_per_class": 16},
                 "tiny": {"method_options": {"real_per_class": 4, "outer_loop": 2, "inner_loop": 1}}},
    ("dsa", 1): {"iterations": 40, "method_options": {"real_per_class": 16},
                 "tiny": {"method_options": {"real_per_class": 4}}},
    ("dsa", 10): {"iterations": 20, "method_options": {"real_per_class": 16},
                  "tiny": {"method_options": {"real_per_class": 4, "outer_loop": 2, "inner_loop": 1}}},
    ("mtt", 1): _mtt(1, 100, 0, 50, baseline=True),
    ("mtt", 10): _mtt(10, 20, 50, 10, baseline=False),
    ("bptt", 1): {"iterations": 200, "method_options": {"real_per_class": 100},
                  "tiny": {"method_options": {"real_per_class": 4, "epochs": 1}}},
    ("bptt", 10): {"iterations": 100, "method_options": {"real_per_class": 50, "memory": "remat", "remat_every": 5},
                   "tiny": {"method_options": {"real_per_class": 4, "epochs": 1, "memory": "remat",
                                               "remat_every": 2}}},
    ("kip", 1): {"iterations": 200, "method_options": {"real_per_class": 20, "kernel_width": 32},
                 "tiny": {"method_options": {"real_per_class": 2, "kernel_width": 8}}},
    ("kip", 10): {"iterations": 100, "method_options": {"real_per_class": 20, "kernel_width": 32},
                  "tiny": {"method_options": {"real_per_class": 2, "kernel_width": 8}}},
}

# The `make demo` job as a cell: DM on scikit-learn's 8x8 digits (always available), 5 images per class.
DEMO = {"name": "digits_dm_ipc5", "method": "dm", "dataset": "digits", "ipc": 5, "iterations": 200, "seed": 0,
        "method_options": {"real_per_class": 64}, "eval": {"models": 4, "epochs": 300, "augment": True},
        "baseline": True}


def get_config(method: str, ipc: int, seed: int = 0) -> dict:
    return {"name": f"{method}_ipc{ipc}" + (f"_seed{seed}" if seed else ""), "method": method,
            "dataset": "fashion_mnist", "ipc": ipc, "seed": seed, "eval": dict(EVAL), **CELLS[(method, ipc)]}


def sweep() -> list[dict]:
    return [get_config(m, i) for (m, i) in CELLS] + [dict(DEMO)]
