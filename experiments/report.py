"""Print the README results table from experiments/results/*.json (the files experiments/run.py writes).

    python experiments/report.py            # markdown table of every config result
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _augments(method: str, ev: dict) -> bool:
    """Whether the evaluation trained with DSA: True means the method's own protocol (its eval_augment)."""
    if ev.get("augment") is True:
        from jaxdd.methods import get_method

        return bool(get_method(method).defaults.get("eval_augment"))
    return bool(ev.get("augment"))


def distill_seconds(r: dict) -> float:
    """A resumed run's seconds_distill counts only its last session; the driver logs "time" cumulatively."""
    return max(r["seconds_distill"], float((r.get("final_metrics") or {}).get("time", 0.0)))


def rows() -> list[dict]:
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        r = json.loads(path.read_text())
        if not isinstance(r, dict) or "accuracy_mean" not in r:
            continue
        c, ev = r["config"], r["eval"]
        param = c.get("param", "pixels")
        if param != "pixels":
            param += f" r={c.get('param_options', {}).get('rank')}"
        base = r.get("random_subset")
        out.append({
            "config": path.stem, "method": c["method"], "param": param, "ipc": c["ipc"],
            "model": c.get("model", "ConvNet"), "iterations": c.get("iterations"),
            "eval": f"{ev['models']} nets x {ev['epochs']} ep" + (", DSA" if _augments(c["method"], ev) else ""),
            "acc": f"{100 * r['accuracy_mean']:.1f} +- {100 * r['accuracy_std']:.1f}",
            "random": f"{100 * base['mean']:.1f} +- {100 * base['std']:.1f}" if base else "-",
            "minutes": f"{(distill_seconds(r) + r['seconds_eval']) / 60:.0f}",
        })
    return out


def main() -> None:
    cols = ["config", "method", "param", "ipc", "model", "iterations", "eval", "acc", "random", "minutes"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in sorted(rows(), key=lambda r: (r["ipc"], r["method"], r["param"])):
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
