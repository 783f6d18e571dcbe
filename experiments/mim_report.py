"""Tables and the MI-bound plot of the MIM4DD experiments (experiments/configs/mim_*).

    python experiments/mim_report.py      # after running the mim_* configs with experiments/run.py

Reads experiments/results/mim_*.json (accuracies) and runs/mim_*/metrics.jsonl (the logged mim_mi_lb diagnostic),
writes experiments/results/mim_summary.json, mim_summary.md and mim_mi_lb.png. Seeds are aggregated as the mean
and std (ddof 0) over the per-seed means of the 3 evaluation networks; the seed count is printed next to each row.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _cell(name: str):
    m = re.match(r"mim_(base_dm|dm|base_dsa|dsa|abl_\w+?)_fmnist_ipc(\d+)(?:_s(\d+))?$", name)
    if not m:
        return None
    kind, ipc, seed = m.group(1), int(m.group(2)), int(m.group(3) or 0)
    label = {"base_dm": "DM", "dm": "DM + MIM4DD", "base_dsa": "DSA", "dsa": "DSA + MIM4DD"}.get(kind, kind)
    return label, ipc, seed


def collect(results=RESULTS):
    rows = {}
    for path in sorted(results.glob("mim_*.json")):
        if path.stem.startswith("mim_summary"):
            continue
        rec = json.loads(path.read_text())
        cell = _cell(rec["name"])
        if cell is None:
            continue
        label, ipc, seed = cell
        rows.setdefault((label, ipc), []).append({"seed": seed, "acc": rec["accuracy_mean"],
                                                  "accs": rec["accuracies"], "name": rec["name"],
                                                  "seconds_distill": rec["seconds_distill"],
                                                  "final_metrics": rec.get("final_metrics", {}),
                                                  "options": rec["config"].get("method_options", {})})
    return rows


def table(rows) -> tuple[list[dict], str]:
    out, lines = [], ["| method | IPC | test acc. % (mean +- std over seeds) | seeds | per-seed |",
                      "|---|---|---|---|---|"]
    rank = {"DM": 0, "DM + MIM4DD": 1, "DSA": 2, "DSA + MIM4DD": 3}
    order = sorted(rows, key=lambda k: (k[1], rank.get(k[0], 4), k[0]))
    for label, ipc in order:
        rs = sorted(rows[(label, ipc)], key=lambda r: r["seed"])
        accs = np.array([r["acc"] for r in rs]) * 100
        entry = {"method": label, "ipc": ipc, "mean": float(accs.mean()), "std": float(accs.std()),
                 "seeds": [r["seed"] for r in rs], "per_seed": accs.tolist(),
                 "final_mi_lb": [r["final_metrics"].get("mim_mi_lb") for r in rs]}
        out.append(entry)
        per = ", ".join(f"s{r['seed']}: {a:.2f}" for r, a in zip(rs, accs))
        lines.append(f"| {label} | {ipc} | {accs.mean():.2f} +- {accs.std():.2f} | {len(rs)} | {per} |")
    return out, "\n".join(lines)


def plot(rows, runs=Path("runs"), path=RESULTS / "mim_mi_lb.png"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("mim_mi_lb", "mim_nce")):
        ax.set_prop_cycle(color=plt.cm.tab20(np.linspace(0, 1, 20)))  # up to 20 runs, each its own colour
        for run_dir in sorted(runs.glob("mim_*")):  # every MIM run with logged metrics (finished or not)
            f, cell = run_dir / "metrics.jsonl", _cell(run_dir.name)
            if cell is None or not f.exists():
                continue
            hist = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            hist = [h for h in hist if key in h]
            if hist:
                ax.plot([h["step"] for h in hist], [h[key] for h in hist],
                        label=f"{cell[0]} IPC {cell[1]} s{cell[2]}")
        ax.set_xlabel("distillation step")
        ax.set_ylabel({"mim_mi_lb": "MI lower bound (nats, mean over blocks)",
                       "mim_nce": "NCE loss (sum over blocks)"}[key])
        if key == "mim_mi_lb":
            ax.axhline(np.log(10), color="k", ls=":", lw=1, label="log K (saturation)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ablation(rows) -> str:
    """IPC-1 DM + MIM4DD at seed 0 under each (weight, temperature, negatives) setting: the main cell and the
    mim_abl_* cells, against DM at the same seed."""
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


def main() -> int:
    rows = collect()
    plot(rows)
    if not rows:
        print("no experiments/results/mim_*.json yet; run python experiments/run.py mim_dm_fmnist_ipc1 first")
        return 1
    entries, md = table({k: v for k, v in rows.items() if not k[0].startswith("abl")})
    md += "\n\nAblation (DM + MIM4DD, IPC 1, seed 0; defaults weight 20, temperature 0.1, in-batch negatives):\n\n"
    md += ablation(rows)
    (RESULTS / "mim_summary.json").write_text(json.dumps(entries, indent=2))
    (RESULTS / "mim_summary.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
