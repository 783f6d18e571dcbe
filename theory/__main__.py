"""Command line: ``python -m theory sweep --preset smoke|cpu|gpu --out DIR [--dry-run]`` and
``python -m theory report DIR``.

sweep runs (or resumes: points already in DIR/results.json are skipped) the DR, L and ABL sweeps of the preset,
writes DIR/results.json after every point, then the plots and DIR/summary.md. ``--dry-run`` prints the planned
points with estimated times and runs nothing. report regenerates fits.json, the plots and summary.md.

Unless already set, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false" and OPENBLAS_NUM_THREADS=1 are set (before JAX is
imported). Do NOT add ``intra_op_parallelism_threads=1``: with it, the jitted references (ten vmapped 256 x 256
ridge solves, LAPACK) deadlocked reproducibly (every thread waiting on a futex, no CPU use; the same solves one
seed at a time, or without that flag, finish in a second).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m theory", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sw = sub.add_parser("sweep", help="run (or resume) the sweeps and write results, plots and summary")
    sw.add_argument("--preset", choices=("smoke", "cpu", "gpu"), default="smoke")
    sw.add_argument("--out", default=None, help="output directory (required unless --dry-run)")
    sw.add_argument("--seed", type=int, default=0, help="root key: jax.random.key(seed)")
    sw.add_argument("--only", default="DR,L,ABL", help="comma-separated subset of DR,L,ABL")
    sw.add_argument("--index", default=None, help="comma-separated point indices within each selected sweep")
    sw.add_argument("--dry-run", action="store_true", help="print the planned points and estimated times")
    sw.add_argument("--gflops", type=float, default=None, help="--dry-run: sustained GFLOP/s (default: preset's)")
    sw.add_argument("--compile-s", type=float, default=None, help="--dry-run: seconds per compile")
    sw.add_argument("--no-report", action="store_true")
    rp = sub.add_parser("report", help="fits.json, plots and summary.md from DIR/results.json")
    rp.add_argument("dir")
    rp.add_argument("--boot", type=int, default=500, help="bootstrap resamples")
    args = ap.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # see the module docstring

    if args.cmd == "sweep":
        from theory import sweep

        only = tuple(s.strip() for s in args.only.split(",") if s.strip())
        bad = [s for s in only if s not in sweep.SWEEPS]
        if bad:
            from jaxdd.types import JaxddError
            raise SystemExit(str(JaxddError(f"unknown sweep(s) {bad}; choose from {sweep.SWEEPS}")))
        index = None if args.index is None else tuple(int(i) for i in args.index.split(","))
        if args.dry_run:
            sweep.print_plan(args.preset, only, index, gflops=args.gflops, compile_s=args.compile_s)
            return 0
        if args.out is None:
            ap.error("sweep: --out is required (unless --dry-run)")
        t = time.time()
        try:
            sweep.run_sweep(args.preset, args.out, key_seed=args.seed, only=only, index=index,
                            log=lambda m: print(m, flush=True))
        except Exception as e:  # a user's mistake (e.g. --out holding another preset) gets its message only
            from jaxdd.types import JaxddError
            if isinstance(e, JaxddError):
                print(f"error: {e}", file=sys.stderr)
                return 2
            raise
        print(f"sweep done in {time.time() - t:.0f} s", flush=True)
        if args.no_report:
            return 0
        args.dir, args.boot = args.out, 500
    from theory import report

    report.make_report(args.dir, n_boot=args.boot)
    print(f"wrote {args.dir}/summary.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
