"""Benchmark: DC/DSA seconds per outer iteration, and BPTT meta-gradient memory/time against the unroll length.

    nice -n 10 python experiments/bench/bench_unroll_memory.py                 # both parts, writes the results below
    nice -n 10 python experiments/bench/bench_unroll_memory.py --part bptt     # only the memory table

Fashion-MNIST shape (28x28x1, 10 classes), the standard ConvNet (width 128, depth 3, instance norm), random data of
that shape (the cost does not depend on the pixel values).

DC/DSA: one outer iteration of the paper = a fresh network and ``outer_loop`` rounds of [per-class gradient matching
+ one synthetic update], with ``inner_loop`` epochs of network training after every round but the last. jaxdd runs
one round per jitted ``distill_step``; we time (after compilation) the step of a round that ends with inner training
(``t_train``) and of the last round (``t_last``: ends with a fresh network), and report
``outer_iteration = (outer_loop - 1) * t_train + t_last``. The inner-training convolution implementation is timed
separately (``train_on_set`` alone, ``conv_impl`` "patches" vs "xla", inside ``lax.scan``).

BPTT: peak memory is XLA's own accounting of the compiled meta-gradient program (``jit(...).lower().compile()
.memory_analysis()``: temp + argument + output bytes; ``temp_size_in_bytes`` is where the stored residuals of the
unroll live) for T = 10, 20, 50 unrolled steps, full unroll vs ``jax.checkpoint`` blocks of k steps. It is a
deterministic compile-time figure, independent of the other processes on the machine (peak RSS of a subprocess is
not: the XLA:CPU allocator and the Python heap blur it). One timed execution per setting is reported for T = 10.

Writes experiments/bench/results/bench_unroll_memory.json and .md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jaxdd.distill import DistillConfig, distill_step, init_state, make_pool  # noqa: E402
from jaxdd.models import get_model, init_model  # noqa: E402
from jaxdd.objectives import Synthetic  # noqa: E402
from jaxdd.objectives.gradient import gradient_matching, paper_loops, train_on_set  # noqa: E402
from jaxdd.objectives.performance import bptt  # noqa: E402
from jaxdd.synthetic import pixels  # noqa: E402
from jaxdd.types import Batch  # noqa: E402

K, SHAPE = 10, (28, 28, 1)
RESULTS = ROOT / "experiments" / "bench" / "results"


def _pool(per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(K * per_class, *SHAPE)).astype(np.float32)
    y = np.repeat(np.arange(K), per_class).astype(np.int32)
    return make_pool(x, y, K)


def _block(tree):
    jax.tree.map(lambda a: a.block_until_ready(), tree)


def time_dc_step(ipc: int, strategy, outer_loop: int, inner_loop: int, real_per_class: int, repeats: int = 1):
    """Seconds of one jitted distill step (after compilation) and the compile+first-call time."""
    module = get_model("ConvNet", K, conv_impl="patches")
    obj = gradient_matching(module, K, SHAPE, outer_loop=outer_loop, inner_loop=inner_loop, strategy=strategy,
                            real_per_class=real_per_class)
    pool = _pool(max(real_per_class, ipc))
    param = pixels(ipc, "noise")
    state, tx = init_state(jax.random.key(0), obj, param, pool, DistillConfig(lr_img=0.1, momentum=0.5))
    step = jax.jit(lambda s, p, k: distill_step(obj, param, tx, s, p, k))
    t0 = time.perf_counter()
    state, m = step(state, pool, jax.random.key(1))
    _block(state)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, m = step(state, pool, jax.random.key(1))
        _block(state)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), first


def time_inner_training(ipc: int, epochs: int, conv_impl: str, strategy=None):
    module = get_model("ConvNet", K, conv_impl=conv_impl)
    x = jax.random.normal(jax.random.key(0), (K * ipc, *SHAPE))
    y = jnp.repeat(jnp.arange(K), ipc)
    v = init_model(module, jax.random.key(1), SHAPE)
    fn = jax.jit(lambda v, k: train_on_set(module, v, x, y, k, epochs=epochs, lr=0.01, strategy=strategy))
    t0 = time.perf_counter()
    _block(fn(v, jax.random.key(2)))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    _block(fn(v, jax.random.key(3)))
    return time.perf_counter() - t0, first


def bench_dc(real_per_class: int, ipcs=(1, 10)):
    rows = []
    for method, strategy in (("dc", None), ("dsa", "color_crop_cutout_flip_scale_rotate")):
        for ipc in ipcs:
            outer, inner = paper_loops(ipc)
            t_last, c_last = time_dc_step(ipc, strategy, 1, 0, real_per_class)
            row = {"method": method, "ipc": ipc, "outer_loop": outer, "inner_loop": inner,
                   "real_per_class": real_per_class, "t_last_round_s": t_last, "compile_last_s": c_last}
            if outer > 1:
                t_train, c_train = time_dc_step(ipc, strategy, outer + 1, inner, real_per_class)
                row.update(t_train_round_s=t_train, compile_train_s=c_train)
                row["outer_iteration_s"] = (outer - 1) * t_train + t_last
            else:
                row["outer_iteration_s"] = t_last
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def bench_conv_impl(ipc: int = 10, epochs: int = 1):
    rows = []
    for impl in ("patches", "xla"):
        t, first = time_inner_training(ipc, epochs, impl)
        rows.append({"conv_impl": impl, "ipc": ipc, "epochs": epochs, "seconds": t, "compile_and_first_s": first})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_bptt(lengths=(10, 20, 50), blocks=(1, 5, 10), ipc: int = 10, real_per_class: int = 10,
               time_lengths=(10,)):
    module = get_model("ConvNet", K, conv_impl="patches")
    rng = np.random.default_rng(0)
    real = Batch(jnp.asarray(rng.normal(size=(K * real_per_class, *SHAPE)), jnp.float32),
                 jnp.repeat(jnp.arange(K), real_per_class))
    sx = jnp.asarray(rng.normal(size=(K * ipc, *SHAPE)), jnp.float32)
    y = jnp.repeat(jnp.arange(K), ipc)
    rows = []
    for total in lengths:
        epochs = total // ipc  # steps = ipc (one image per class per step): T = ipc * epochs
        for memory, k in [("full", 1)] + [("remat", b) for b in blocks if total % b == 0]:
            obj = bptt(module, K, SHAPE, ipc, epochs=epochs, real_per_class=real_per_class, memory=memory,
                       remat_every=k)
            raw = obj.learnables["raw_lr"]
            grad = jax.jit(jax.grad(lambda x, r: obj.loss(Synthetic(x, y, {"raw_lr": r}), real, (),
                                                          jax.random.key(0))[0], argnums=(0, 1)))
            t0 = time.perf_counter()
            compiled = grad.lower(sx, raw).compile()
            t_compile = time.perf_counter() - t0
            ma = compiled.memory_analysis()
            row = {"unrolled_steps": total, "memory": memory, "remat_every": k if memory == "remat" else None,
                   "temp_bytes": int(ma.temp_size_in_bytes), "argument_bytes": int(ma.argument_size_in_bytes),
                   "output_bytes": int(ma.output_size_in_bytes),
                   "peak_bytes": int(ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes),
                   "compile_s": t_compile, "synthetic_images": K * ipc, "real_images": K * real_per_class}
            if total in time_lengths:
                _block(compiled(sx, raw))
                t0 = time.perf_counter()
                _block(compiled(sx, raw))
                row["seconds_per_meta_gradient"] = time.perf_counter() - t0
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def to_markdown(res: dict) -> str:
    out = ["# bench_unroll_memory", "", f"`{res['command']}` on {res['machine']} (shared 2-core CPU; load noted in "
           "the run), jax " + res["jax"], ""]
    if res.get("dc"):
        out += ["## DC / DSA: seconds per outer iteration (Fashion-MNIST shape, ConvNet-3 width 128)", "",
                "| method | IPC | (outer, inner) | real/class | last round s | training round s | outer iteration s |",
                "|---|---|---|---|---|---|---|"]
        for r in res["dc"]:
            out.append(f"| {r['method']} | {r['ipc']} | ({r['outer_loop']}, {r['inner_loop']}) | "
                       f"{r['real_per_class']} | {r['t_last_round_s']:.2f} | "
                       f"{r.get('t_train_round_s', float('nan')):.2f} | {r['outer_iteration_s']:.1f} |")
        out.append("")
    if res.get("conv_impl"):
        out += ["Inner training alone (IPC 10, lax.scan, 1 epoch, after compilation): " + ", ".join(
            f"{r['conv_impl']} {r['seconds']:.2f} s" for r in res["conv_impl"]), ""]
    if res.get("bptt"):
        out += ["## BPTT meta-gradient memory (XLA compiled memory_analysis) against unrolled steps", "",
                "| unrolled steps | memory | remat_every | temp MiB | peak MiB | s / meta-gradient |",
                "|---|---|---|---|---|---|"]
        for r in res["bptt"]:
            s = r.get("seconds_per_meta_gradient")
            out.append(f"| {r['unrolled_steps']} | {r['memory']} | {r['remat_every'] or '-'} | "
                       f"{r['temp_bytes'] / 2**20:.1f} | {r['peak_bytes'] / 2**20:.1f} | "
                       f"{'-' if s is None else f'{s:.2f}'} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("all", "dc", "bptt"), default="all")
    p.add_argument("--real-per-class", type=int, default=64, help="real images per class of the DC/DSA matching")
    p.add_argument("--ipcs", type=int, nargs="+", default=[1, 10], help="images per class timed for DC/DSA")
    args = p.parse_args(argv)
    path = RESULTS / "bench_unroll_memory.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res.update({"command": "python experiments/bench/bench_unroll_memory.py " + " ".join(argv or sys.argv[1:]),
                "machine": platform.processor() or platform.machine(), "jax": jax.__version__,
                "devices": [str(d) for d in jax.devices()]})
    RESULTS.mkdir(parents=True, exist_ok=True)

    def save():
        path.write_text(json.dumps(res, indent=2))
        (RESULTS / "bench_unroll_memory.md").write_text(to_markdown(res))

    if args.part in ("all", "bptt"):
        res["bptt"] = bench_bptt()
        save()
    if args.part in ("all", "dc"):
        res["dc"] = bench_dc(args.real_per_class, tuple(args.ipcs))
        save()
        res["conv_impl"] = bench_conv_impl()
        save()
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
