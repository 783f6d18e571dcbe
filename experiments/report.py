"""Print the results tables of docs/results.md from experiments/results/STUDY/*.json (what experiments/run.py writes).

    python experiments/report.py              # one row per distilled cell of every study
    python experiments/report.py STUDY        # the study's own tables (lowrank, mim, continual), else its rows
"""
from __future__ import annotations

import json
import sys

import studies


def _augments(method: str, ev: dict) -> bool:
    """Whether the evaluation trained with DSA: True means the method's own protocol (its eval_augment)."""
    if ev.get("augment") is True:
        from jaxdd.methods import get_method

        return bool(get_method(method).defaults.get("eval_augment"))
    return bool(ev.get("augment"))


def distill_seconds(r: dict) -> float:
    """A resumed run's seconds_distill counts only its last session; the driver logs "time" cumulatively."""
    return max(r["seconds_distill"], float((r.get("final_metrics") or {}).get("time", 0.0)))


def rows(study_names=studies.STUDIES) -> list[dict]:
    out = []
    for study in study_names:
        for path in sorted(studies.results_dir(study).glob("*.json")):
            r = json.loads(path.read_text())
            if not isinstance(r, dict) or "accuracy_mean" not in r:
                continue
            c, ev = r["config"], r["eval"]
            param = c.get("param", "pixels")
            if param != "pixels":
                param += f" r={c.get('param_options', {}).get('rank')}"
            base = r.get("random_subset")
            out.append({
                "cell": f"{study}/{path.stem}", "method": c["method"], "param": param, "ipc": c["ipc"],
                "model": c.get("model", "ConvNet"), "iterations": c.get("iterations"),
                "eval": f"{ev['models']} nets x {ev['epochs']} ep" + (", DSA" if _augments(c["method"], ev) else ""),
                "acc": f"{100 * r['accuracy_mean']:.1f} +- {100 * r['accuracy_std']:.1f}",
                "random": f"{100 * base['mean']:.1f} +- {100 * base['std']:.1f}" if base else "-",
                "minutes": f"{(distill_seconds(r) + r['seconds_eval']) / 60:.0f}",
            })
    return out


def table(study_names=studies.STUDIES) -> str:
    cols = ["cell", "method", "param", "ipc", "model", "iterations", "eval", "acc", "random", "minutes"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows(study_names), key=lambda r: (r["ipc"], r["method"], r["param"], r["cell"])):
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(table())
        return 0
    mod = studies.load(argv[0])
    print(mod.report() if hasattr(mod, "report") else table([argv[0]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
