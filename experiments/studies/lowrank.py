"""The low-rank plugin: pixels against rank-r factors at equal memory (Fashion-MNIST, DM and DSA, IPC 1 and 10).

Command: python experiments/run.py lowrank [CELL ...]; then python experiments/report.py lowrank
Runtime: each cell's seconds are in experiments/results/lowrank/CELL.json; 3-30 minutes a cell on the 2-core CPU.
Paper: the plugin (Yang et al., NeurIPS 2023; docs/methods.md section 9) claims that low rank beats pixels at equal
       memory; its tables were not available to us. Published pixel numbers (full protocol, not comparable): DM
       Fashion-MNIST IPC 1 70.7, IPC 10 83.5; DSA IPC 1 70.6.

Every cell of a (method, IPC) group has the same memory (floats stored never exceed the pixel budget), the same
networks (ConvNetW32 for distillation and evaluation), 64 real images per class per step, and one protocol:
- DM: IPC 1 100 iterations, evaluation 3 networks x 100 epochs with DSA; IPC 10 200 iterations, 3 x 300 epochs.
- DSA: the (outer, inner) loops of the ORIGINAL IPC for every rank. IPC 1: loops (1, 1), 100 iterations, 3 x 300
  epochs. IPC 10: loops (10, 50), 20 rounds (= 2 paper iterations), 2 networks x 150 epochs; the low-rank rows start
  from the SVD init (from noise, 2 paper iterations leave noise).
Inits: pixels from real images (the DM pixel rows also evaluate the random real subset); factors from noise (the
paper's init) unless the cell says svd (the rank-r truncated SVD of real images, a jaxdd extension).
"""
from __future__ import annotations

import json

PROTOCOL = {
    ("dm", 1): {"iterations": 100, "eval": {"models": 3, "epochs": 100, "augment": True}},
    ("dm", 10): {"iterations": 200, "eval": {"models": 3, "epochs": 300, "augment": True}},
    ("dsa", 1): {"iterations": 100, "eval": {"models": 3, "epochs": 300, "augment": True},
                 "method_options": {"outer_loop": 1, "inner_loop": 1}},
    ("dsa", 10): {"iterations": 20, "eval": {"models": 2, "epochs": 150, "augment": True},
                  "method_options": {"outer_loop": 10, "inner_loop": 50}},
}
# (method, ipc) -> the parameterizations compared: "pixels", "r<rank>" (noise init) or "r<rank>_svd"
GRID = {
    ("dm", 1): ("pixels", "r2", "r4", "r2_svd"),
    ("dm", 10): ("pixels", "r2", "r4"),
    ("dsa", 1): ("pixels", "r2", "r4"),
    ("dsa", 10): ("pixels", "r2_svd", "r4_svd"),
}


def get_config(method: str, ipc: int, param: str) -> dict:
    proto = PROTOCOL[(method, ipc)]
    cfg = {"name": f"{method}_ipc{ipc}_{param}", "method": method, "dataset": "fashion_mnist", "ipc": ipc,
           "iterations": proto["iterations"], "seed": 0, "model": "ConvNetW32",
           "method_options": {"real_per_class": 64, **proto.get("method_options", {})}, "eval": dict(proto["eval"])}
    if param == "pixels":
        if method == "dm":
            cfg.update(init="real", baseline=True)
    else:
        rank = int(param[1:].split("_")[0])
        cfg.update(param="low_rank", param_options={"rank": rank}, init="real" if param.endswith("_svd") else "noise")
    return cfg


def sweep() -> list[dict]:
    return [get_config(m, i, p) for (m, i), params in GRID.items() for p in params]


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} +- {100 * std:.2f}"


def report() -> str:
    """One row per result, grouped by (method, IPC budget): pixels first, then by rank."""
    from report import distill_seconds  # experiments/ is on sys.path (run as python experiments/report.py)
    from studies import results_dir

    rows = ["| method | IPC budget | param | init | images/class | floats stored / budget | test acc (%) | "
            "random subset (%) | distill s | eval s |", "|---|---|---|---|---|---|---|---|---|---|"]
    recs = [json.loads(p.read_text()) for p in sorted(results_dir("lowrank").glob("*.json"))]

    def order(r):
        c = r["config"]
        return c["method"], c["ipc"], (c.get("param_options") or {}).get("rank") or 0, c.get("init") or ""

    for r in sorted(recs, key=order):
        c = r["config"]
        param, rank = c.get("param", "pixels"), (c.get("param_options") or {}).get("rank")
        init = c.get("init") or "real"
        if param == "low_rank":
            init = "noise (paper)" if init == "noise" else "SVD (jaxdd)"
        base = r.get("random_subset")
        rows.append(f"| {c['method'].upper()} | {c['ipc']} | {param}{f' r={rank}' if rank else ''} | {init} | "
                    f"{r['images_per_class']} | {r['floats_stored']} / {r['floats_budget']} | "
                    f"{_pct(r['accuracy_mean'], r['accuracy_std'])} | {_pct(base['mean'], base['std']) if base else ''} | "
                    f"{distill_seconds(r):.0f} | {r['seconds_eval']:.0f} |")
    return "\n".join(rows)
