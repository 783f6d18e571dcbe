"""GPU sweep of the theory/ benchmark (THEORY.md section 9, GPU-sized variant).

Command (from the repository root, one large GPU, e.g. an H100/H200):

    python experiments/theory_gpu.py --out runs/theory_gpu            # all of S1-S4
    python experiments/theory_gpu.py --out runs/theory_gpu --only S2  # one sweep

Aim: a log-log slope in d over d = 64..512 (S1), r up to 12 where r and r^2 separate (S2: 2r = 24 against
r(r+1)/2 = 78 at r = 12), and L up to 8192 so that the L-dominated regime of r^2 d + L is inside the grid (S3).
Sizes live in theory.sweep.PRESETS["gpu"]: 5 seeds vmapped, K = 16 stage-1 inits, n_real = clip(4 d^2 r, 64k, 4M),
GM 1500 steps, stage 2 2000 steps.

Expected runtime: sized by arithmetic (about 30 TFLOP of float32 work in total, mostly stage 1 at d = 512 and stage 2
at L = 8192) for under 10 minutes on one large GPU, but NOT yet measured on a GPU: no device was available when it
was written. Compilation (one per bucket of candidate sizes and grid point) is a large share of the time; set
JAX_COMPILATION_CACHE_DIR to reuse compiles between runs. Outputs: results.json, fits.json, plots and summary.md
under --out, exactly as the CPU preset (theory/results/).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from theory import report, sweep  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/theory_gpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="S1,S2,S3,S4")
    args = ap.parse_args(argv)
    t = time.time()
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    sweep.run_sweep("gpu", args.out, key_seed=args.seed, only=only, log=lambda m: print(m, flush=True))
    print(f"sweep done in {time.time() - t:.0f} s", flush=True)
    report.make_report(args.out)
    print(f"wrote {args.out}/summary.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
