"""Tables for the low-rank plugin and continual-learning results (issue 6).

    python experiments/lowrank_report.py [--continual runs/continual_fmnist]

Reads experiments/results/lowrank_*.json (written by experiments/run.py) and, if given, a finished
``jaxdd continual`` run directory; copies the continual record and plot to experiments/results/continual_fmnist.*
and prints markdown tables.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from report import distill_seconds  # experiments/ is the script's directory, so on sys.path

RESULTS = Path(__file__).resolve().parent / "results"


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} +- {100 * std:.2f}"


def lowrank_table() -> str:
    """One row per lowrank_* result, grouped by (method, IPC budget): pixels first, then by rank."""
    from jaxdd.methods import get_method

    rows = ["| method | IPC budget | param | init | images/class | floats stored / budget | test acc (%) | "
            "random subset (%) | distill s | eval s |", "|---|---|---|---|---|---|---|---|---|---|"]
    recs = [json.loads(p.read_text()) for p in RESULTS.glob("lowrank_*.json")]

    def order(r):
        c = r["config"]
        return c["method"], c["ipc"], (c.get("param_options") or {}).get("rank") or 0, c.get("init") or ""

    for r in sorted(recs, key=order):
        c = r["config"]
        param = c.get("param", "pixels")
        rank = (c.get("param_options") or {}).get("rank")
        init = c.get("init") or get_method(c["method"]).defaults.get("init", "real")  # the method's default
        if param == "low_rank":
            init = "noise (paper)" if init == "noise" else "SVD (jaxdd)"
        base = r.get("random_subset")
        rand = _pct(base["mean"], base["std"]) if base else ""
        rows.append(f"| {c['method'].upper()} | {c['ipc']} | {param}{f' r={rank}' if rank else ''} | {init} | "
                    f"{r['images_per_class']} | {r['floats_stored']} / {r['floats_budget']} | "
                    f"{_pct(r['accuracy_mean'], r['accuracy_std'])} | {rand} | "
                    f"{distill_seconds(r):.0f} | {r['seconds_eval']:.0f} |")
    return "\n".join(rows)


def continual_table(run_dir: Path) -> str:
    rec = json.loads((run_dir / "continual.json").read_text())
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "continual.json", RESULTS / "continual_fmnist.json")
    if (run_dir / "continual.png").exists():
        shutil.copy(run_dir / "continual.png", RESULTS / "continual_fmnist.png")
    steps = rec["config"]["steps"]
    rows = ["| memory | " + " | ".join(f"step {s + 1}" for s in range(steps)) + " |",
            "|---|" + "---|" * steps]
    for method, r in rec["results"].items():
        cells = [f"{100 * m:.1f} +- {100 * s:.1f}" for m, s in zip(r["mean"], r["std"])]
        cells += [""] * (steps - len(cells))
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--continual", default=None, help="a finished jaxdd continual --out directory")
    args = p.parse_args()
    print(lowrank_table())
    if args.continual:
        print()
        print(continual_table(Path(args.continual)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
