"""Run the cells of a study end to end: distil, evaluate on the test split, write experiments/results/STUDY/CELL.json.

    python experiments/run.py --list                      # the studies and their cells
    python experiments/run.py baselines dm_ipc10          # one cell at its own budget
    python experiments/run.py mim                         # every cell of a study (finished cells are skipped)
    python experiments/run.py baselines dm_ipc10 --tiny   # a seconds-long smoke run (tests use it)

A study is a module experiments/studies/STUDY.py (its docstring: command, runtime, paper number) whose ``sweep()``
lists its cells. Runs write to runs/STUDY/CELL/ (ignored by git; rerunning resumes). Results carry the full config and
the measured times, so every number in docs/results.md can be traced to the command that produced it.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import studies

TINY = {"iterations": 2, "eval": {"models": 1, "epochs": 1}, "method_options": {}}


def tiny_config(cfg: dict) -> dict:
    """The cell's config with the smoke budget (its own ``tiny`` overrides on top of TINY)."""
    cfg = copy.deepcopy(cfg)
    for k, v in {**TINY, **cfg.get("tiny", {})}.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


def distill_and_evaluate(cfg: dict, tiny: bool, out_dir: str) -> dict:
    """The default cell: (MTT: build or reuse the expert buffer,) distil, evaluate; returns the result record."""
    import jaxdd

    ev = {"models": 3, "epochs": 300, "augment": True, **cfg.get("eval", {})}
    t_experts = 0.0
    if "experts" in cfg:
        from jaxdd.api import make_experts

        t0 = time.perf_counter()
        make_experts(cfg["dataset"], seed=cfg.get("seed", 0), zca=cfg.get("zca", False), progress=not tiny,
                     **cfg["experts"])
        t_experts = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = jaxdd.distill_dataset(
        cfg["method"], cfg["dataset"], cfg["ipc"], out_dir=out_dir, seed=cfg.get("seed", 0),
        iterations=cfg.get("iterations"), model=cfg.get("model", "ConvNet"), param=cfg.get("param", "pixels"),
        param_options=cfg.get("param_options"), init=cfg.get("init"), method_options=cfg.get("method_options"),
        config_overrides=cfg.get("config_overrides"), zca=cfg.get("zca", False), progress=not tiny)
    t_distill = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = jaxdd.evaluate_run(out_dir, num_models=ev["models"], epochs=ev["epochs"], augment=ev["augment"],
                             seed=cfg.get("seed", 0), baseline=cfg.get("baseline", False))
    return {
        "config": cfg, "eval": ev,
        "accuracy_mean": res["synthetic"]["mean"], "accuracy_std": res["synthetic"]["std"],
        "accuracies": res["synthetic"]["accuracies"], "random_subset": res.get("random_subset"),
        "images_per_class": summary["images_per_class"], "floats_stored": summary["floats_stored"],
        "floats_budget": summary["floats_budget"], "seconds_distill": t_distill,
        "seconds_eval": time.perf_counter() - t0, "seconds_experts": t_experts,
        "final_metrics": summary["final_metrics"], "jaxdd_version": jaxdd.__version__,
    }


def run(study: str, name: str, tiny: bool = False, out_root: str = "runs", save: bool = True) -> dict:
    """Run one cell; writes experiments/results/STUDY/NAME.json unless ``tiny`` or not ``save``."""
    cells = studies.cells(study)
    if name not in cells:
        raise SystemExit(f"study {study!r} has no cell {name!r}; its cells: {', '.join(cells)}")
    mod = studies.load(study)
    cfg = tiny_config(cells[name]) if tiny and not hasattr(mod, "run_cell") else cells[name]
    out_dir = str(Path(out_root) / (study + ("_tiny" if tiny else "")) / name)
    if hasattr(mod, "run_cell"):
        record = mod.run_cell(cfg, tiny, out_dir)
        if save and not tiny:
            mod.save(record, out_dir, studies.results_dir(study))
        return record
    record = {"name": f"{study}/{name}", "tiny": tiny, **distill_and_evaluate(cfg, tiny, out_dir)}
    if save and not tiny:
        path = studies.results_dir(study) / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", nargs="?", help=f"one of {', '.join(studies.STUDIES)}")
    p.add_argument("cells", nargs="*", help="cells of the study (default: all that have no result yet)")
    p.add_argument("--tiny", action="store_true", help="smoke mode: a couple of iterations, one short evaluation")
    p.add_argument("--out-root", default="runs")
    p.add_argument("--list", action="store_true", help="list the studies and their cells")
    args = p.parse_args(argv)
    if args.list or not args.study:
        for study in ([args.study] if args.study else studies.STUDIES):
            print(f"{study}: {' '.join(studies.cells(study))}")
        return 0
    names = args.cells or [n for n in studies.cells(args.study)
                           if args.tiny or not (studies.results_dir(args.study) / f"{n}.json").exists()]
    for name in names:
        rec = run(args.study, name, tiny=args.tiny, out_root=args.out_root)
        if "accuracy_mean" in rec:
            print(f"{args.study}/{name}: {100 * rec['accuracy_mean']:.2f} +- {100 * rec['accuracy_std']:.2f} % "
                  f"(distill {rec['seconds_distill']:.0f} s, eval {rec['seconds_eval']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
