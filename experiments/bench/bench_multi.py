"""CPU benchmark: N distillations as one vmapped program (``jaxdd.distill.distill_many``) vs the same N run one after the other.

    nice -n 10 python experiments/bench/bench_multi.py                    # -> experiments/bench/results/bench_multi.json
    nice -n 10 python experiments/bench/bench_multi.py --method dc --num-exp 1,4

Settings (default): DM on Fashion-MNIST shapes with synthetic inputs (28x28x1, 10 classes, 100 random "real"
images per class drawn with jax.random), ConvNet width 32 depth 3 (instance norm), IPC 10, 32 real images per
class per step, no DSA (a smaller program: this 2-core CPU is shared). For each N the vmapped step runs ``--steps``
timed iterations after one compiling call; the sequential baseline is N x the seconds per iteration of the jitted
single-experiment step (N separate runs of the same program). Wall-clock times on a shared machine are noisy: the
1-minute load average is recorded with every measurement, and process CPU seconds are reported next to wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jaxdd.distill import DistillConfig, distill_step, init_state, make_pool  # noqa: E402
from jaxdd.methods import MethodContext, get_method, resolve_options  # noqa: E402
from jaxdd.distill import init_states, make_multi_step  # noqa: E402
from jaxdd.synthetic import pixels  # noqa: E402


def timed(fn, steps: int):
    """(wall seconds, cpu seconds) per call of fn() -> pytree, after one untimed (compiling) call."""
    jax.block_until_ready(fn())
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="dm", choices=("dm", "dc"))
    p.add_argument("--num-exp", default="1,4,8", help="comma-separated experiment counts")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--real-per-class", type=int, default=32)
    p.add_argument("--conv-impl", default="xla", choices=("xla", "patches"),
                   help="ConvNet convolution: xla, or patches (im2col + matmul; vmaps over per-experiment "
                        "networks as a batched matmul instead of a grouped convolution)")
    p.add_argument("--out", default=str(ROOT / "experiments" / "bench" / "results" / "bench_multi.json"))
    args = p.parse_args(argv)
    shape, classes, per_class = (28, 28, 1), 10, 100
    k_img = jax.random.key(0)
    images = jax.random.normal(k_img, (classes * per_class, *shape), jnp.float32)
    labels = jnp.repeat(jnp.arange(classes, dtype=jnp.int32), per_class)
    pool = make_pool(images, labels, classes)
    spec = get_method(args.method)
    opts = {"real_per_class": args.real_per_class}
    if args.method == "dm":
        opts["dsa"] = ""
    else:
        opts.update(outer_loop=10, inner_loop=5)
    ctx = MethodContext(classes, shape, args.ipc, "ConvNet", {"width": args.width, "conv_impl": args.conv_impl}, resolve_options(spec, opts),
                        "synthetic", pool, None, jax.random.key(0))
    objective = spec.build(ctx)
    param = pixels(args.ipc, spec.defaults.get("init", "real"))
    config = DistillConfig(iterations=1, progress=False, lr_img=spec.defaults["lr_img"])

    key = jax.random.key(1)
    state, tx = init_state(key, objective, param, pool, config)
    single = jax.jit(lambda s, pl, k: distill_step(objective, param, tx, s, pl, k))
    box = {"s": state}

    def run_single():
        box["s"], m = single(box["s"], pool, key)
        return box["s"]

    t0 = time.perf_counter()
    wall1, cpu1 = timed(run_single, args.steps)
    res = {"method": args.method, "options": opts, "ipc": args.ipc, "model": f"ConvNet width {args.width}", "conv_impl": args.conv_impl,
           "image_shape": list(shape), "classes": classes, "steps": args.steps, "devices": jax.device_count(),
           "backend": jax.default_backend(), "cores": os.cpu_count(),
           "single": {"wall_seconds_per_iteration": wall1, "cpu_seconds_per_iteration": cpu1,
                      "load_avg_1min": os.getloadavg()[0]}, "rows": []}
    print("single", json.dumps(res["single"]), flush=True)
    for num in [int(v) for v in args.num_exp.split(",")]:
        keys = jax.random.split(jax.random.key(2), num)
        states, txm = init_states(keys, objective, param, pool, config)
        multi = make_multi_step(objective, param, txm)
        mbox = {"s": states}

        def run_multi():
            mbox["s"], _ = multi(mbox["s"], pool, keys)
            return mbox["s"]

        wall, cpu = timed(run_multi, args.steps)
        row = {"num_exp": num, "vmap_wall_seconds_per_iteration": wall, "vmap_cpu_seconds_per_iteration": cpu,
               "sequential_wall_seconds_per_iteration": wall1 * num,
               "sequential_cpu_seconds_per_iteration": cpu1 * num,
               "speedup_wall": wall1 * num / wall, "speedup_cpu": cpu1 * num / cpu,
               "load_avg_1min": os.getloadavg()[0]}
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
    res["total_seconds"] = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
