"""Run one experiment config end to end: distil, evaluate on the test split, write experiments/results/<name>.json.

    python experiments/run.py dm_fmnist_ipc10            # the config's own budget
    python experiments/run.py dm_fmnist_ipc10 --tiny     # a seconds-long smoke run (tests use it)
    python experiments/run.py --list

A config is a module experiments/configs/<name>.py whose docstring states the exact command, the expected runtime on
the 2-core CPU and the paper number it aims at, and which defines ``CONFIG`` (a dict):

    method, dataset, ipc, iterations, seed, [model, param, param_options, init, method_options, config_overrides,
    zca], eval: {models, epochs, augment (True = the method's protocol, or a strategy, or False)},
    [baseline: bool]   (also evaluate a random real subset of the same size)
    [tiny: {...}]      (overrides for --tiny)
    [experts: {...}]   (MTT: keyword arguments of jaxdd.experts.make_experts, e.g. out_dir, num_experts, epochs;
                        the buffer is built or resumed first, and reused when complete)

Runs write to runs/<name>/ (ignored by git; rerunning resumes). Results carry the full config and the measured
times so a number in README can be traced to the command that produced it.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
RESULTS = HERE / "results"


def load_config(name: str) -> dict:
    path = CONFIGS / f"{name}.py"
    if not path.exists():
        raise SystemExit(f"no config {name!r}; available: {', '.join(list_configs())}")
    if str(CONFIGS) not in sys.path:  # configs import their shared settings: from _mim_common import cell
        sys.path.insert(0, str(CONFIGS))
    spec = importlib.util.spec_from_file_location(f"jaxdd_config_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return copy.deepcopy(mod.CONFIG)


def list_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.py") if not p.stem.startswith("_"))


TINY = {"iterations": 2, "eval": {"models": 1, "epochs": 1}, "method_options": {}}


def run(name: str, tiny: bool = False, out_root: str = "runs", results_dir: Path | None = RESULTS) -> dict:
    import jaxdd

    cfg = load_config(name)
    if tiny:
        over = {**TINY, **cfg.get("tiny", {})}
        for k, v in over.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k] = {**cfg[k], **v}
            else:
                cfg[k] = v
    ev = {"models": 3, "epochs": 300, "augment": True, **cfg.get("eval", {})}
    out_dir = str(Path(out_root) / (name + ("_tiny" if tiny else "")))
    t_experts = 0.0
    if "experts" in cfg:  # MTT: build (or resume, or reuse) the expert buffer the config names, first
        from jaxdd.experts import make_experts

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
    t_eval = time.perf_counter() - t0
    record = {
        "name": name, "tiny": tiny, "config": cfg, "eval": ev,
        "accuracy_mean": res["synthetic"]["mean"], "accuracy_std": res["synthetic"]["std"],
        "accuracies": res["synthetic"]["accuracies"],
        "random_subset": res.get("random_subset"),
        "images_per_class": summary["images_per_class"], "floats_stored": summary["floats_stored"],
        "floats_budget": summary["floats_budget"],
        "seconds_distill": t_distill, "seconds_eval": t_eval, "seconds_experts": t_experts,
        "final_metrics": summary["final_metrics"], "jaxdd_version": jaxdd.__version__,
    }
    if results_dir is not None and not tiny:
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / f"{name}.json").write_text(json.dumps(record, indent=2))
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="config names (experiments/configs/<name>.py)")
    p.add_argument("--tiny", action="store_true", help="smoke mode: a couple of iterations, one short evaluation")
    p.add_argument("--out-root", default="runs")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    if args.list or not args.names:
        print("\n".join(list_configs()))
        return 0
    for name in args.names:
        rec = run(name, tiny=args.tiny, out_root=args.out_root)
        print(f"{name}: {100 * rec['accuracy_mean']:.2f} +- {100 * rec['accuracy_std']:.2f} % "
              f"(distill {rec['seconds_distill']:.0f} s, eval {rec['seconds_eval']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
