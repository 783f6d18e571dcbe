"""Command line: ``python -m theory sweep --preset smoke|cpu|gpu --out DIR`` and ``python -m theory report DIR``.

sweep runs S1-S4 of the preset (``--only S1,S3`` for a part), writes DIR/results.json, then the plots and
DIR/summary.md. report regenerates the plots and summary from an existing results.json.
"""
from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m theory", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sw = sub.add_parser("sweep", help="run sweeps S1-S4 and write results, plots and summary")
    sw.add_argument("--preset", choices=("smoke", "cpu", "gpu"), default="smoke")
    sw.add_argument("--out", required=True)
    sw.add_argument("--seed", type=int, default=0, help="root key: jax.random.key(seed)")
    sw.add_argument("--only", default="S1,S2,S3,S4", help="comma-separated subset of S1,S2,S3,S4")
    sw.add_argument("--index", default=None, help="comma-separated point indices within each selected sweep")
    sw.add_argument("--no-report", action="store_true")
    rp = sub.add_parser("report", help="plots and summary.md from DIR/results.json")
    rp.add_argument("dir")
    rp.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    rp.add_argument("--merge", nargs="*", default=(),
                    help="other results.json of the same preset (e.g. a parallel --only S3,S4 run) whose sweeps are "
                         "added to DIR/results.json first (keys are per sweep and point, so the bits are those of "
                         "one run)")
    args = ap.parse_args(argv)

    if args.cmd == "sweep":
        from theory import sweep

        t = time.time()
        only = tuple(s.strip() for s in args.only.split(",") if s.strip())
        index = None if args.index is None else tuple(int(i) for i in args.index.split(","))
        sweep.run_sweep(args.preset, args.out, key_seed=args.seed, only=only, index=index,
                        log=lambda m: print(m, flush=True))
        print(f"sweep done in {time.time() - t:.0f} s", flush=True)
        if args.no_report:
            return 0
        args.dir, args.boot = args.out, 1000
    from theory import report

    if getattr(args, "merge", None):
        report.merge_results(args.dir, args.merge)
    report.make_report(args.dir, n_boot=args.boot)
    print(f"wrote {args.dir}/summary.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
