"""The ConvNet's first block fused (``conv_impl="fused"``) against the same four layers one after another.

    python experiments/bench/bench_stem.py                      # writes results/bench_stem.{json,md}
    taskset -c 0 python experiments/bench/bench_stem.py --out /tmp/stem_1core

Block: conv3x3 of a 28x28x1 image (padding 3, as the DD ConvNet) -> instance norm -> ReLU -> avgpool 2x2, width 128,
100 images. ``layers`` is what ``conv_impl="winograd"`` runs there (``conv3x3_vjp``: Winograd needs 16 input
channels); ``fused`` is ``jaxdd.ops.conv.conv_instnorm_relu_avgpool``. Passes: the forward, the VJP for the
parameters (evaluation, expert and inner-loop training), the VJP for parameters and images (DM, DC, MTT), and a
second-order pass (the gradient in the images of a function of the parameter gradients: DC's matching). Each pass
is one jitted program; the median of ``--reps`` timed calls after one warm-up call is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdd.hostmem import reexec_with_hugepages  # noqa: E402
from jaxdd.models.convnet import InstanceNorm
from jaxdd.ops.conv import conv3x3_vjp, conv_instnorm_relu_avgpool  # noqa: E402


def layers(x, k, b, s, t, pad):
    z = conv3x3_vjp(x, k, pad) + b
    y = InstanceNorm().apply({"params": {"scale": s, "bias": t}}, z)
    return jax.lax.reduce_window(jax.nn.relu(y), 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4


def passes(block, pad):
    def head(x, k, b, s, t, w):
        return jnp.sum(jnp.tanh(block(x, k, b, s, t, pad)) * w)

    def second(x, k, b, s, t, w):
        return sum(jnp.sum(g ** 2) for g in jax.grad(head, (1, 3, 4))(x, k, b, s, t, w))

    return {
        "forward": lambda x, k, b, s, t, w: block(x, k, b, s, t, pad),
        "vjp_params": jax.grad(head, (1, 2, 3, 4)),
        "vjp_params_images": jax.grad(head, (0, 1, 2, 3, 4)),
        "second_order": jax.grad(second, (0, 1, 3, 4)),
    }


def main(argv=None) -> int:
    reexec_with_hugepages()  # as the jaxdd command does (jaxdd.hostmem; JAXDD_HUGEPAGES=0: off)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", default=str(HERE / "results" / "bench_stem"), help="path stem: .json and .md")
    args = p.parse_args(argv)
    ks = jax.random.split(jax.random.key(0), 6)
    n, o, pad = args.images, args.width, 3
    x = jax.random.normal(ks[0], (n, 28, 28, 1))
    k = jax.random.normal(ks[1], (3, 3, 1, o)) / 3
    b = jax.random.normal(ks[2], (o,))
    s = 1 + 0.1 * jax.random.normal(ks[3], (o,))
    t = 0.1 * jax.random.normal(ks[4], (o,))
    w = jax.random.normal(ks[5], (16, 16, o))
    args_ = (x, k, b, s, t, w)
    rows = []
    for name, block in (("layers", layers), ("fused", conv_instnorm_relu_avgpool)):
        for pname, fn in passes(block, pad).items():
            fn = jax.jit(fn)
            jax.block_until_ready(fn(*args_))
            ts = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(*args_))
                ts.append(time.perf_counter() - t0)
            rows.append({"block": name, "pass": pname, "ms": 1000 * statistics.median(ts)})
            print(json.dumps(rows[-1]), flush=True)
    cmd = " ".join(["python experiments/bench/bench_stem.py", *(argv if argv is not None else sys.argv[1:])])
    res = {"command": cmd, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "cores_allowed": len(os.sched_getaffinity(0)), "jax": jax.__version__, "images": n, "width": o,
           "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
           "rows": rows}
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    ms = {(r["block"], r["pass"]): r["ms"] for r in rows}
    lines = ["# The ConvNet's first block: fused against layer by layer", "",
             f"`{cmd}` on {res['machine']} ({res['cores_allowed']} allowed), jax {res['jax']}: {n} images "
             f"28x28x1 -> 16x16x{o}, median ms of {args.reps} calls; GLIBC_TUNABLES={res['glibc_tunables']}.", "",
             "| pass | layers (conv3x3_vjp, instance norm, ReLU, avgpool) ms | fused ms | speed-up |",
             "|---|---|---|---|"]
    for pname in passes(layers, pad):
        a, f = ms[("layers", pname)], ms[("fused", pname)]
        lines.append(f"| {pname} | {a:.1f} | {f:.1f} | {a / f:.1f}x |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
