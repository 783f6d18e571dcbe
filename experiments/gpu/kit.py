"""The kit's driver: arguments, the result file of a stage (resume), the time guard, and the Markdown tables.

The stages themselves are in experiments/gpu/stages.py. Nothing here imports jax before the arguments are read:
``--deterministic`` must reach XLA_FLAGS before JAX initialises its backend.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("check", "dm", "mtt", "dc", "theory")
DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


def add_xla_flag(flag: str, environ=None) -> None:
    """Appends ``flag`` to XLA_FLAGS (before JAX starts); a flag already there is kept as it is."""
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    if flag.split("=")[0] not in flags:
        env["XLA_FLAGS"] = (flags + " " + flag).strip()


class Guard:
    """The time budget of one command: ``fits(need_s)`` says whether a cell that needs ``need_s`` may start."""

    def __init__(self, budget_s: float):
        self.budget_s = float(budget_s)
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def fits(self, need_s: float) -> bool:
        return self.remaining() >= need_s


class Stage:
    """The record of one stage: cells already done (resumed) and this call's, written after every cell."""

    def __init__(self, name: str, out: Path, resume: Path | None, smoke: bool, settings: dict):
        self.name, self.out, self.smoke = name, Path(out), smoke
        self.out.mkdir(parents=True, exist_ok=True)
        self.cells: dict[str, dict] = {}
        self.resumed_from = None
        for cand in ([resume] if resume else [RESULTS / f"{name}.json", self.out / f"{name}.json"]):
            if cand is not None and Path(cand).is_file():
                old = json.loads(Path(cand).read_text())
                if bool(old.get("smoke")) == smoke:  # a smoke record never stands in for a real run, nor back
                    self.cells = {k: v for k, v in old.get("cells", {}).items() if v.get("status") == "done"}
                    self.resumed_from = str(cand)
                break
        self.record = {"stage": name, "smoke": smoke, "settings": settings, "calls": [],
                       "resumed_from": self.resumed_from}
        if self.resumed_from:
            self.record["calls"] = json.loads(Path(self.resumed_from).read_text()).get("calls", [])

    def done(self, cell: str) -> bool:
        return cell in self.cells

    def put(self, cell: str, rec: dict) -> None:
        self.cells[cell] = rec
        self.write()

    def write(self) -> None:
        from experiments.gpu import tables

        rec = {**self.record, "cells": self.cells}
        (self.out / f"{self.name}.json").write_text(json.dumps(rec, indent=1, default=_jsonable))
        (self.out / f"{self.name}.md").write_text(tables.markdown(rec))


def _jsonable(x):
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(x)


def environment() -> dict:
    """Where a call ran: backend, devices, versions, XLA_FLAGS (the first JAX call happens here)."""
    import jax
    import jaxlib

    devs = jax.local_devices()
    return {"backend": jax.default_backend(), "device_kind": devs[0].device_kind, "device_count": len(devs),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpu_count": os.cpu_count(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def parse(argv=None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python3 -m experiments.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=STAGES + ("_probe",))
    p.add_argument("--out", required=True, help="where STAGE.json and STAGE.md go (e.g. $OUT/STAGE)")
    p.add_argument("--smoke", action="store_true", help="tiny budgets on scikit-learn's digits: a CPU check in CI")
    p.add_argument("--data-dir", default=None, help="directory with fashion_mnist/ IDX files (e.g. .data)")
    p.add_argument("--work", default=None, help="checkpoints and experts (default /tmp/jaxdd-gpu/STAGE)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting cells after this many seconds (default 450; smoke 300)")
    p.add_argument("--resume", default=None, help="a previous STAGE.json whose done cells are kept")
    p.add_argument("--cells", default=None, help="comma-separated cells to run (default: all of the stage)")
    p.add_argument("--deterministic", action="store_true",
                   help=f"XLA_FLAGS += {DETERMINISTIC_FLAG} (deterministic GPU kernels, no autotuning)")
    p.add_argument("--distill-s", type=float, default=None,
                   help="dm/mtt/dc: seconds of distillation per cell (iterations: as many as fit, up to the paper's)")
    p.add_argument("--models", type=int, default=None, help="evaluation networks per cell (default 20)")
    p.add_argument("--experts", type=int, default=None, help="mtt: expert trajectories (default 5)")
    p.add_argument("--expert-epochs", type=int, default=None, help="mtt: epochs per expert (default 25)")
    args, rest = p.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if rest and args.stage != "theory":
        p.error(f"unknown arguments {rest} (only the theory stage passes arguments on, after --)")
    return args, rest


def main(argv=None) -> int:
    args, rest = parse(argv)
    if args.deterministic:
        add_xla_flag(DETERMINISTIC_FLAG)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from experiments.gpu import stages

    if args.stage == "_probe":
        return stages.probe_main(args)
    budget = args.budget_s if args.budget_s is not None else (300.0 if args.smoke else 450.0)
    guard = Guard(budget)
    work = Path(args.work or f"/tmp/jaxdd-gpu/{args.stage}{'_smoke' if args.smoke else ''}")
    work.mkdir(parents=True, exist_ok=True)
    only = None if args.cells is None else [c.strip() for c in args.cells.split(",") if c.strip()]
    fn = getattr(stages, f"stage_{args.stage}")
    settings = stages.settings(args)
    stage = Stage(args.stage, Path(args.out), Path(args.resume) if args.resume else None, args.smoke, settings)
    call = {"environment": environment(), "budget_s": budget, "command": " ".join(sys.argv),
            "ran": [], "pending": {}}
    stage.record["calls"].append(call)
    stage.write()
    fn(args, rest, stage, guard, work, only, call)
    call["seconds"] = guard.elapsed()
    stage.write()
    print(f"{args.stage}: {len(call['ran'])} cells run, {len(call['pending'])} pending, "
          f"{len(stage.cells)} done in all; {guard.elapsed():.0f} s -> {stage.out}/{args.stage}.json", flush=True)
    failed = [c for c in call["ran"] if stage.cells.get(c, {}).get("status") != "done"]
    return 1 if failed else 0
