"""MIM4DD against its base at the same budget (Fashion-MNIST; DM and DSA; IPC 1 and 10; seeds 0-2), and an ablation.

Command: python experiments/run.py mim [CELL ...]; then python experiments/report.py mim (writes
         experiments/results/mim/summary.{json,md} and mi_lb.png from the results and runs/mim/*/metrics.jsonl)
Runtime: 4-13 minutes a cell on the 2-core CPU (each cell's seconds are in experiments/results/mim/CELL.json).
Paper: MIM4DD (Shang et al., NeurIPS 2023; docs/methods.md section 10) reports gains over its base methods; no
       Fashion-MNIST number is known to us.

A base cell and its +mim cell differ only in the NCE term (weight 20, temperature 0.1, blocks 1-3, in-batch
negatives). Budget: 16 real images per class for the base objective, 8 for the NCE term, evaluation 3 networks x 300
epochs with DSA on the full test split;
- IPC 1: ConvNet (width 128) for distillation and evaluation; DM and DSA 100 iterations (DSA loops (1, 1));
- IPC 10: ConvNetW32 (a width-128 evaluation of 100 images costs ~18 minutes per cell on one core here); DM 100
  iterations; DSA 20 rounds of its (10, 50) loops (= 2 paper iterations).
Ablation (DM + MIM4DD, IPC 1, seed 0): weight 5 and 80, temperature 0.5, a memory bank of real negatives.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GRID = {"method": ("dm", "dm+mim", "dsa", "dsa+mim"), "ipc": (1, 10), "seed": (0, 1, 2)}
MIM = {"mutual_info_weight": 20.0, "mutual_info_temperature": 0.1, "mutual_info_real_per_class": 8}
ABLATIONS = {"abl_w5": {"mutual_info_weight": 5.0}, "abl_w80": {"mutual_info_weight": 80.0},
             "abl_t05": {"mutual_info_temperature": 0.5}, "abl_bank": {"mutual_info_negatives": "bank"}}
LABELS = {"dm": "DM", "dm+mim": "DM + MIM4DD", "dsa": "DSA", "dsa+mim": "DSA + MIM4DD"}


def get_config(method: str, ipc: int, seed: int = 0, name: str | None = None, **options) -> dict:
    mim = method.endswith("+mim")
    opts = {"real_per_class": 16, **(MIM if mim else {}), **options}
    tiny = {"real_per_class": 4, **({"mutual_info_real_per_class": 2, "mutual_info_head_dim": 8} if mim else {})}
    return {"name": name or f"{method}_ipc{ipc}_seed{seed}", "method": method, "dataset": "fashion_mnist",
            "ipc": ipc, "iterations": 20 if (ipc == 10 and method.startswith("dsa")) else 100, "seed": seed,
            "model": "ConvNetW32" if ipc == 10 else "ConvNet", "method_options": opts,
            "eval": {"models": 3, "epochs": 300, "augment": True}, "tiny": {"method_options": tiny}}


def sweep() -> list[dict]:
    grid = [get_config(m, i, s) for i in GRID["ipc"] for m in GRID["method"] for s in GRID["seed"]]
    return grid + [get_config("dm+mim", 1, 0, name=n, **o) for n, o in ABLATIONS.items()]


def _collect(results: Path) -> dict:
    """(label, ipc) -> per-seed records; ablation cells are labelled by their cell name."""
    rows = {}
    for path in sorted(results.glob("*.json")):
        rec = json.loads(path.read_text())
        if "accuracy_mean" not in rec:
            continue
        c, cell = rec["config"], path.stem
        label = cell if cell.startswith("abl_") else LABELS[c["method"]]
        rows.setdefault((label, c["ipc"]), []).append({
            "seed": c.get("seed", 0), "acc": rec["accuracy_mean"], "accs": rec["accuracies"], "name": cell,
            "final_metrics": rec.get("final_metrics", {}), "options": c.get("method_options", {})})
    return rows


def _table(rows) -> tuple[list[dict], str]:
    """Seeds aggregated as mean and std (ddof 0) of the per-seed means of the evaluation networks."""
    out, lines = [], ["| method | IPC | test acc. % (mean +- std over seeds) | seeds | per-seed |",
                      "|---|---|---|---|---|"]
    rank = {label: i for i, label in enumerate(LABELS.values())}
    for label, ipc in sorted(rows, key=lambda k: (k[1], rank.get(k[0], 9), k[0])):
        rs = sorted(rows[(label, ipc)], key=lambda r: r["seed"])
        accs = np.array([r["acc"] for r in rs]) * 100
        out.append({"method": label, "ipc": ipc, "mean": float(accs.mean()), "std": float(accs.std()),
                    "seeds": [r["seed"] for r in rs], "per_seed": accs.tolist(),
                    "final_mi_lb": [r["final_metrics"].get("mim_mi_lb") for r in rs]})
        per = ", ".join(f"s{r['seed']}: {a:.2f}" for r, a in zip(rs, accs))
        lines.append(f"| {label} | {ipc} | {accs.mean():.2f} +- {accs.std():.2f} | {len(rs)} | {per} |")
    return out, "\n".join(lines)


def _ablation(rows) -> str:
    """IPC-1 DM + MIM4DD at seed 0 under each setting, against DM at seed 0."""
    cells = [r for (label, ipc), rs in rows.items() if ipc == 1 and (label == "DM + MIM4DD" or label.startswith("abl"))
             for r in rs if r["seed"] == 0]
    base = [r for r in rows.get(("DM", 1), []) if r["seed"] == 0]
    lines = ["| weight | temperature | negatives | test acc. % (3 nets) | vs DM (seed 0) |", "|---|---|---|---|---|"]
    for r in sorted(cells, key=lambda r: (r["options"].get("mutual_info_weight", 0),
                                          r["options"].get("mutual_info_temperature", 0))):
        o, acc = r["options"], 100 * r["acc"]
        gap = f"{acc - 100 * base[0]['acc']:+.2f}" if base else "-"
        lines.append(f"| {o.get('mutual_info_weight')} | {o.get('mutual_info_temperature')} | "
                     f"{o.get('mutual_info_negatives', 'batch')} | {acc:.2f} +- {100 * np.std(r['accs']):.2f} | "
                     f"{gap} |")
    return "\n".join(lines)


def _plot(path: Path, runs: Path = Path("runs") / "mim") -> None:
    """The logged MI lower bound and NCE loss of every MIM run found under runs/mim/ (finished or not)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("mim_mi_lb", "mim_nce")):
        for run_dir in sorted(runs.glob("*+mim*")) + sorted(runs.glob("abl_*")):
            f = run_dir / "metrics.jsonl"
            if not f.exists():
                continue
            hist = [h for h in (json.loads(x) for x in f.read_text().splitlines() if x.strip()) if key in h]
            if hist:
                ax.plot([h["step"] for h in hist], [h[key] for h in hist], label=run_dir.name)
        ax.set_xlabel("distillation step")
        ax.set_ylabel({"mim_mi_lb": "MI lower bound (nats, mean over blocks)", "mim_nce": "NCE loss (sum)"}[key])
        if key == "mim_mi_lb":
            ax.axhline(np.log(10), color="k", ls=":", lw=1, label="log K (saturation)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report() -> str:
    from studies import results_dir

    results = results_dir("mim")
    rows = _collect(results)
    if not rows:
        return "no experiments/results/mim/*.json yet: run python experiments/run.py mim first"
    entries, md = _table({k: v for k, v in rows.items() if not k[0].startswith("abl")})
    md += "\n\nAblation (DM + MIM4DD, IPC 1, seed 0; defaults weight 20, temperature 0.1, in-batch negatives):\n\n"
    md += _ablation(rows)
    (results / "summary").mkdir(exist_ok=True)
    (results / "summary" / "summary.json").write_text(json.dumps(entries, indent=2))
    (results / "summary" / "summary.md").write_text(md + "\n")
    if (Path("runs") / "mim").exists():
        _plot(results / "summary" / "mi_lb.png")
    return md
