"""Minor page faults and time per evaluation epoch, with 4 KiB host pages and with huge-page malloc (jaxdd.hostmem).

    python experiments/bench/bench_page_faults.py                 # writes results/bench_page_faults.{json,md}

Work: ``jaxdd.train.train`` of one ConvNet-3 (the evaluation network, ``eval_module``: ``conv_impl="auto"``) on 100
random 28x28x1 images with DSA, batch 100 (one step per epoch). Each mode runs in a fresh process: a 1-epoch run
compiles, then ``--epochs`` epochs are timed and their minor page faults counted (``getrusage``). Modes:
``4k`` starts the child with ``JAXDD_HUGEPAGES=0`` and no ``GLIBC_TUNABLES``; ``huge`` with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``. Results are compared bit for bit (a checksum of the trained weights).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def child(epochs: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp

    from jaxdd.augment import DSA_DEFAULT
    from jaxdd.evaluate import eval_module
    from jaxdd.train import TrainProtocol, train

    x = jax.random.normal(jax.random.key(0), (100, 28, 28, 1))
    y = jnp.arange(100, dtype=jnp.int32) % 10
    module = eval_module("ConvNet", 10)
    jax.block_until_ready(train(jax.random.key(1), module, x, y, TrainProtocol(epochs=1, augment=DSA_DEFAULT)))
    protocol = TrainProtocol(epochs=epochs - 1, augment=DSA_DEFAULT)  # the loop runs epochs + 1 epochs
    faults0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    out = jax.block_until_ready(train(jax.random.key(1), module, x, y, protocol))
    seconds, faults = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    checksum = float(sum(jnp.sum(jnp.abs(a)) for a in jax.tree.leaves(out["params"])))
    return {"epochs": epochs, "seconds_per_epoch": seconds / epochs, "minor_faults_per_epoch": faults / epochs,
            "checksum": checksum, "glibc_tunables": os.environ.get("GLIBC_TUNABLES")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--out", default=str(HERE / "results" / "bench_page_faults"), help="path stem: .json and .md")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("ROW " + json.dumps(child(args.child)), flush=True)
        return 0
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAXDD_HUGEPAGES")}
    modes = {"4k": {**base, "JAXDD_HUGEPAGES": "0"}, "huge": {**base, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}}
    rows = {}
    for mode, env in modes.items():
        proc = subprocess.run([sys.executable, __file__, "--child", str(args.epochs)], env=env, capture_output=True,
                              text=True, check=True)
        rows[mode] = next(json.loads(ln[4:]) for ln in proc.stdout.splitlines() if ln.startswith("ROW "))
        print(mode, json.dumps(rows[mode]), flush=True)
    cmd = " ".join(["python experiments/bench/bench_page_faults.py", *(argv if argv is not None else sys.argv[1:])])
    res = {"command": cmd, "cores": len(os.sched_getaffinity(0)), "rows": rows,
           "bit_identical": rows["4k"]["checksum"] == rows["huge"]["checksum"]}
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    lines = ["# Host page faults per evaluation epoch (100 images, DSA, ConvNet-3, conv_impl auto)", "",
             f"`{cmd}`, {res['cores']} cores allowed, {args.epochs} epochs timed per mode; trained weights "
             f"bit-identical across modes: {res['bit_identical']}.", "",
             "| host pages | GLIBC_TUNABLES | minor page faults / epoch | s / epoch |", "|---|---|---|---|"]
    for mode, r in rows.items():
        lines.append(f"| {mode} | {r['glibc_tunables']} | {r['minor_faults_per_epoch']:.0f} | "
                     f"{r['seconds_per_epoch']:.3f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
