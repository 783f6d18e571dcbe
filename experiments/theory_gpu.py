"""GPU preset of the theory/ benchmark, split into resumable calls of at most 8 minutes on one H100.

    python experiments/theory_gpu.py --dry-run                       # the calls, their points, estimated times
    python experiments/theory_gpu.py --call 0 --out runs/theory_gpu  # one call (resumes; finished points skipped)
    python experiments/theory_gpu.py --report --out runs/theory_gpu  # fits, plots, summary.md

Every call writes runs/theory_gpu/results.json after each point and can be rerun (and committed) on its own; the
calls only partition the points of ``theory.sweep.PRESETS["gpu"]`` (16 seeds x 2 restarts, DR: r = 1..8 with
d = 16 r, 24 r, 32 r and r = 12 (last) with d = 16 r, 24 r, at L = 1024, stage grids run in padded buckets; L: d = 16, r = 1, L = 64..8192; ABL at d = 32, r = 2). The JAX persistent
compilation cache (``--cache``, default runs/jax_cache) is switched on so that a rerun does not pay the compiles
again.

NOT RUN: no GPU was lent to the session that wrote this; the point times are estimates from a FLOP count at an
assumed 5 TFLOP/s sustained float32 and 8 s per compile (theory.sweep.CALIBRATION["gpu"]), not measurements. The
parameter criterion's float64 projection runs on the host CPU (16 cores; at L = 8192 about 10^13 flops over
16 seeds, minutes, not in the estimate). The first call to run on a GPU should be checked against its estimate (its log prints the seconds per point) before
the others are trusted to fit in 8 minutes; re-split with --budget if not.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def split_calls(budget_s: float = 480.0, gflops=None, compile_s=None):
    """Greedy split of the gpu plan, in run order, into calls of at most ``budget_s`` estimated seconds (a point
    estimated above the budget gets a call of its own and is flagged)."""
    from theory import sweep

    pre = sweep.PRESETS["gpu"]
    gf, cs = sweep.CALIBRATION["gpu"]
    gf, cs = gflops or gf, compile_s or cs
    calls, cur, t_cur = [], [], 0.0
    for sw, j, spec in sweep.plan(pre):
        t = sweep.estimate_seconds(pre, sw, spec, gf, cs)
        if cur and t_cur + t > budget_s:
            calls.append((cur, t_cur))
            cur, t_cur = [], 0.0
        cur.append((sw, j, spec, t))
        t_cur += t
    if cur:
        calls.append((cur, t_cur))
    return calls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/theory_gpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--call", type=int, default=None, help="run the points of this call")
    ap.add_argument("--dry-run", action="store_true", help="print the calls and their points, run nothing")
    ap.add_argument("--report", action="store_true", help="fits, plots and summary.md from --out")
    ap.add_argument("--budget", type=float, default=480.0, help="estimated seconds per call (default 8 min)")
    ap.add_argument("--cache", default="runs/jax_cache", help="JAX persistent compilation cache directory")
    args = ap.parse_args(argv)
    calls = split_calls(args.budget)
    if args.dry_run or (args.call is None and not args.report):
        for k, (pts, t) in enumerate(calls):
            flag = "  (OVER BUDGET: a single point)" if t > args.budget else ""
            print(f"call {k}: ~{t:.0f} s{flag}")
            for sw, j, spec, tp in pts:
                print(f"    {sw}/{j} {spec}: ~{tp:.0f} s")
        print(f"{len(calls)} calls, ~{sum(t for _, t in calls) / 60:.1f} min in total (estimates, not measured)")
        return 0
    import jax

    os.makedirs(args.cache, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", args.cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    from theory import report, sweep

    if args.call is not None:
        if not 0 <= args.call < len(calls):
            print(f"error: --call must be in 0..{len(calls) - 1} (see --dry-run)", file=sys.stderr)
            return 2
        pts, _ = calls[args.call]
        t = time.time()
        for sw, j, _, _ in pts:
            sweep.run_sweep("gpu", args.out, key_seed=args.seed, only=(sw,), index=(j,),
                            log=lambda m: print(m, flush=True))
        print(f"call {args.call} done in {time.time() - t:.0f} s", flush=True)
    if args.report or args.call is not None:
        report.make_report(args.out)
        print(f"wrote {args.out}/summary.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
