"""Side by side with the PyTorch reference (issue 5): jaxdd on exactly the work of the issue's table.

    python experiments/bench/bench_vs_reference.py                    # every row, writes results/bench_vs_reference.{json,md}
    python experiments/bench/bench_vs_reference.py --rows dm dc --conv-impl patches --out /tmp/bvr

The reference figures are the issue's (the field's official PyTorch code, torch 2.13 CPU, 2 threads, this machine,
Fashion-MNIST shape 28x28x1, ConvNet-3 width 128, 100 synthetic images). Each row runs jaxdd on the same work in a
FRESH process (its own peak RSS; XLA reads its flags once) with random inputs of the real shapes (time and memory do
not depend on pixel values):

  dm        one DM outer iteration: IPC 10, DSA (Siamese, the default strategy), 256 real images/class, a fresh
            network (``bench_dm.child_distill``)
  dc        one DC outer iteration: IPC 10, 10 outer loops x 50 inner epochs, no augmentation. One jaxdd step is one
            outer-loop round; ``--dc-rounds`` rounds are timed, then the last round on its own (it draws the next
            fresh network instead of training, as the reference breaks out of its outer loop before the inner
            training): the iteration is 9 x their mean + the last round (one compiled program for every round).
  mtt10/20  one MTT meta-step (value and gradient w.r.t. images and lr) at 10 / 20 unrolled student steps, DSA,
            batch_syn 100, bounded memory (``--mtt-memory``, default ``constant``): time and peak RSS
            (``bench_mtt_memory.child``)
  eval      10 networks trained on one synthetic set of 100 images with DSA (batch 100, so one step per epoch) in one
            vmapped program and one at a time: ``--eval-epochs`` epochs are timed and the 300-epoch protocol is
            extrapolated per network (epochs are the same compiled step)

Threads: XLA:CPU uses every core the process may run on. The reference used 2 threads; run this unpinned on a quiet
machine for the like-for-like comparison (``taskset -c 0`` gives the one-core figure). The core count and the
1-minute load average are recorded per row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from jaxdd.hostmem import reexec_with_hugepages  # noqa: E402
from jaxdd.ops.conv import CONV_IMPLS  # noqa: E402
SHAPE = (28, 28, 1)
# the figures: (work, seconds, peak GiB or None)
REFERENCE = {
    "dm": ("DM outer iteration, IPC 10, DSA, 256 real images/class", 3.1, None),
    "dc": ("DC outer iteration, IPC 10 (10 outer loops, 50 inner epochs), no augmentation", 190.0, None),
    "mtt10": ("MTT meta-step, 10 unrolled steps", 9.9, 4.4),
    "mtt20": ("MTT meta-step, 20 unrolled steps", 21.0, 8.0),
    "eval": ("evaluation, 300 epochs on 100 images with DSA, per network (10 networks)", 85.0, None),
}


def child(job: dict) -> dict:
    sys.path[:0] = [str(ROOT), str(HERE)]
    import bench_dm
    import bench_mtt_memory
    import jax

    row, impl = job["row"], job["conv_impl"]
    shared = {"conv_impl": impl, "class_batch": job["class_batch"]}  # DM and DC options
    if row == "dm":
        out = bench_dm.child_distill("dm", SHAPE, 10, 256, job["reps"], shared)
        seconds = out["seconds_per_iteration"]
    elif row == "dc":
        out = bench_dm.child_distill("dc", SHAPE, 10, 256, job["dc_rounds"],
                                     {"outer_loop": 10, "inner_loop": 50, **shared})
        seconds = out["seconds_per_paper_iteration"]
    elif row.startswith("mtt"):
        ns = argparse.Namespace(steps=int(row[3:]), memory=job["mtt_memory"], images=100, batch_syn=100,
                                reps=job["reps"], run=True, save_grad=None, conv_impl=impl)
        out = bench_mtt_memory.child(ns)
        if "seconds_per_meta_step" not in out:
            raise SystemExit(out.get("note", "not run"))
        seconds = out["seconds_per_meta_step"]
    else:
        out = bench_dm.child_eval(SHAPE, 10, impl, 100, job["eval_epochs"], 1000)
        best = min(out["vmapped"]["seconds_per_network_epoch"], out["sequential"]["seconds_per_network_epoch"])
        seconds = best * 300
        out["seconds_per_network_300_vmapped"] = out["vmapped"]["seconds_per_network_epoch"] * 300
        out["seconds_per_network_300_sequential"] = out["sequential"]["seconds_per_network_epoch"] * 300
    return {**job, "seconds": seconds, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "cores": len(os.sched_getaffinity(0)), "load_avg_1min": os.getloadavg()[0],
            "jax": jax.__version__, "backend": jax.default_backend(), "detail": out}


def markdown(res: dict) -> str:
    lines = [f"# jaxdd vs the PyTorch reference (issue 5)\n\n`{res['command']}` on {res['machine']}; host malloc "
             f"GLIBC_TUNABLES={res.get('glibc_tunables')} (jaxdd.hostmem).\n",
             "Reference: the issue's figures (torch 2.13 CPU, 2 threads, same machine). Speed-up = reference seconds /"
             " jaxdd seconds (> 1: jaxdd faster).\n",
             "| work | reference s | jaxdd s | speed-up | reference peak GiB | jaxdd peak RSS GiB | conv | cores | "
             "load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        work, ref_s, ref_gib = REFERENCE[r["row"]]
        if "error" in r:
            lines.append(f"| {work} | {ref_s:g} | failed: {r['error'][-80:]} | | | | {r['conv_impl']} | | |")
            continue
        lines.append(f"| {work} | {ref_s:g} | {r['seconds']:.1f} | {ref_s / r['seconds']:.2f}x | "
                     f"{ref_gib if ref_gib else '-'} | {r['peak_rss_gib']:.1f} | {r['conv_impl']} | {r['cores']} | "
                     f"{r['load_avg_1min']:.1f} |")
    ev = [r for r in res["rows"] if r["row"] == "eval" and "error" not in r]
    for r in ev:
        d = r["detail"]
        lines.append(f"\nEvaluation detail ({r['conv_impl']}, {r['eval_epochs']} epochs timed): 300 epochs per network "
                     f"{d['seconds_per_network_300_vmapped']:.0f} s with the 10 networks vmapped, "
                     f"{d['seconds_per_network_300_sequential']:.0f} s one at a time.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    reexec_with_hugepages()  # as the jaxdd command does; the rows' processes inherit it (JAXDD_HUGEPAGES=0: off)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(REFERENCE), choices=list(REFERENCE))
    p.add_argument("--conv-impl", default="auto", choices=("auto",) + CONV_IMPLS,
                   help="convolutions of every row's network (jaxdd.ops.conv; auto = the library's default)")
    p.add_argument("--class-batch", type=int, default=-1,
                   help="DM/DC option class_batch: classes per real-side pass (-1 = the default: 1 on CPU)")
    p.add_argument("--mtt-memory", default="constant", choices=["constant", "remat", "full"])
    p.add_argument("--reps", type=int, default=3, help="timed calls of the DM and MTT rows")
    p.add_argument("--dc-rounds", type=int, default=2, help="DC outer-loop rounds timed (of the iteration's 10)")
    p.add_argument("--eval-epochs", type=int, default=10, help="evaluation epochs timed (of the protocol's 300)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_vs_reference"), help="path stem: .json and .md")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("ROW " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    res = {"command": " ".join(["python experiments/bench/bench_vs_reference.py", *(argv or sys.argv[1:])]),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "glibc_tunables": os.environ.get("GLIBC_TUNABLES"), "rows": []}
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    for row in args.rows:
        job = {"row": row, "conv_impl": args.conv_impl, "class_batch": args.class_batch,
               "mtt_memory": args.mtt_memory, "reps": args.reps,
               "dc_rounds": args.dc_rounds, "eval_epochs": args.eval_epochs}
        print("running", job, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        got = [json.loads(ln[4:]) for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
        res["rows"].append(got[0] if got else {**job, "error": proc.stderr[-2000:]})
        print(json.dumps({k: v for k, v in res["rows"][-1].items() if k != "detail"}), flush=True)
        stem.with_suffix(".json").write_text(json.dumps(res, indent=2))  # after every row: an interrupted run keeps it
    stem.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
