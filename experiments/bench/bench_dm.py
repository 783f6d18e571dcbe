"""Benchmark: DM (and DC/DSA) seconds per iteration, evaluation throughput (K vmapped vs K sequential), memory.

    python experiments/bench/bench_dm.py                  # both shapes, writes experiments/bench/results/bench_dm.{json,md}
    python experiments/bench/bench_dm.py --shapes fmnist --eval-impls xla patches --k 10

Shapes: Fashion-MNIST (28x28x1, 10 classes) and CIFAR-10 (32x32x3, 10 classes). Inputs are random normal arrays of
those shapes (timing and memory do not depend on the pixel values, and no dataset download is needed).

- DM: ConvNet-3 (width 128, instance norm, avgpool), the paper's setting: IPC 10 (and IPC 1), 256 real images per
  class per iteration, Siamese DSA (color_crop_cutout_flip_scale_rotate), one fresh network per iteration; the
  jitted ``distill_step`` (real batch sampled on device, SGD on the images).
- DC and DSA (Fashion-MNIST shape): the same, with the paper's outer/inner loops for the IPC (IPC 1: 1/1,
  IPC 10: 10/50); one jaxdd step is one outer-loop round, so the paper's "outer iteration" is outer_loop steps.
- Expert training (``--expert-impls``): one SGD step of MTT's expert trainer (``jaxdd.objectives.trajectory.experts``, a group of one
  network) on 256 images, per convolution implementation.
- Evaluation: K networks trained on 100 images (IPC 10) under the standard protocol step (batch 100 = one step per
  epoch, SGD momentum, DSA per image): one vmapped step over K networks against K calls of the single-network step;
  plus the forward pass of the K trained networks over --test-images test images (reported per 10000 images),
  vmapped and one network at a time. Reported per network and per epoch, and extrapolated
  to the 300- and 1000-epoch protocols.

Every row runs in a FRESH subprocess so its peak resident memory (``ru_maxrss``, which includes the Python/JAX
baseline, reported alongside) belongs to it alone; XLA's buffer assignment of the compiled program
(``memory_analysis``: temp + arguments + outputs) is recorded too. Times are wall-clock after one compiling call,
``--reps`` timed calls; the 1-minute load average is recorded so a loaded machine is visible.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from jaxdd.hostmem import reexec_with_hugepages  # noqa: E402
from jaxdd.ops.conv import CONV_IMPLS  # noqa: E402
SHAPES = {"fmnist": (28, 28, 1), "cifar": (32, 32, 3)}


def _xla_mib(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    mib = 1 / 2 ** 20
    return {"xla_temp_mib": m.temp_size_in_bytes * mib,
            "xla_total_mib": (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes) * mib}


def _timed(call, reps: int) -> tuple[float, float]:
    """(seconds of the first, compiling call; mean seconds of ``reps`` further calls). call() -> pytree."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(reps):
        out = call()
    jax.block_until_ready(out)
    return first, (time.perf_counter() - t0) / reps


def child_distill(method: str, shape, ipc: int, real_per_class: int, reps: int, options: dict | None = None) -> dict:
    import jax

    from jaxdd.distill import DistillConfig, distill_step, init_state, make_pool
    from jaxdd.methods import MethodContext, get_method, resolve_options
    from jaxdd.synthetic import pixels

    classes = 10
    per_class = max(real_per_class, ipc) + 16
    images = jax.random.normal(jax.random.key(0), (classes * per_class, *shape))
    labels = jax.numpy.repeat(jax.numpy.arange(classes, dtype=jax.numpy.int32), per_class)
    pool = make_pool(images, labels, classes)
    spec = get_method(method)
    options = resolve_options(spec, {"real_per_class": real_per_class, **(options or {})})
    ctx = MethodContext(classes, shape, ipc, "ConvNet", {}, options, "random", pool, None, jax.random.key(0))
    objective = spec.build(ctx)
    param = pixels(ipc, "real")
    config = DistillConfig(iterations=1, progress=False, lr_img=spec.defaults["lr_img"])
    state, tx = init_state(jax.random.key(1), objective, param, pool, config)
    step = jax.jit(lambda s, k: distill_step(objective, param, tx, s, pool, k))
    box = {"s": state, "i": 0}
    mem = _xla_mib(step.lower(state, jax.random.key(2)).compile())

    def call():
        box["i"] += 1
        box["s"], m = step(box["s"], jax.random.key(box["i"]))
        return m["loss"]

    first, per = _timed(call, reps)
    row = {"part": "distill", "method": method, "ipc": ipc, "real_per_class": real_per_class,
           "options": {k: v for k, v in options.items() if k in ("dsa", "outer_loop", "inner_loop", "conv_impl")},
           "compile_and_first_s": first, "seconds_per_iteration": per, **mem}
    if method in ("dc", "dsa"):  # one jaxdd step is one outer-loop round; a paper iteration is outer_loop rounds
        from jaxdd.objectives.gradient import paper_loops

        outer = options["outer_loop"] if options["outer_loop"] > 0 else paper_loops(ipc)[0]
        row["outer_loop"] = outer
        # the timed rounds each end with the inner training; the iteration's last round does not train (the
        # reference code breaks out of its outer loop before it, jaxdd draws the next fresh network instead), so it
        # is timed on its own: the same compiled step, with the round counter set to the last round
        last = per
        if outer > 1:
            box["s"] = box["s"]._replace(obj_state={**box["s"].obj_state, "round": jax.numpy.int32(outer - 1)})
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            last = time.perf_counter() - t0
        row["seconds_last_round"] = last
        row["seconds_per_paper_iteration"] = per * (outer - 1) + last
    return row


def child_eval(shape, k: int, impl: str, n: int, reps: int, test_n: int) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxdd.augment import DSA_DEFAULT
    from jaxdd.models import get_model, with_conv_impl
    from jaxdd.train import TrainProtocol, predict_many, protocol_programs

    module = with_conv_impl(get_model("ConvNet", 10), impl)
    protocol = TrainProtocol(epochs=300, augment=DSA_DEFAULT)
    x = jax.random.normal(jax.random.key(0), (n, *shape))
    y = jnp.arange(n, dtype=jnp.int32) % 10
    keys = jax.random.split(jax.random.key(1), k)
    row = {"part": "eval", "conv_impl": impl, "k": k, "images": n, "dsa": True, "epochs_timed": reps}
    for mode, width in (("vmapped", k), ("sequential", 1)):
        comp = protocol_programs(module, protocol, shape)
        variables, opt = comp.init(keys[:width], protocol.lr)
        idx = jnp.broadcast_to(jnp.arange(n), (width, n))
        box = {"v": variables, "o": opt}

        def call():
            box["v"], box["o"], loss = comp.run(box["v"], box["o"], x, y, idx, keys[:width], None)
            return loss

        if mode == "vmapped":
            row.update(_xla_mib(comp.run.lower(variables, opt, x, y, idx, keys[:width], None).compile()))
        first, per = _timed(call, reps)
        per_net_epoch = per / width
        row[mode] = {"compile_and_first_s": first, "seconds_per_step": per,
                     "seconds_per_network_epoch": per_net_epoch,
                     "seconds_per_network_300_epochs": per_net_epoch * 301,
                     "seconds_per_network_1000_epochs": per_net_epoch * 1001}
        if mode == "vmapped":
            test_x = jax.random.normal(jax.random.key(2), (test_n, *shape))
            for name, group in (("vmapped", k), ("sequential", 1)):
                predict_many(module, box["v"], test_x[:250], group=group).block_until_ready()
                t0 = time.perf_counter()
                predict_many(module, box["v"], test_x, group=group).block_until_ready()
                row[f"test_forward_{name}_s_per_10000"] = (time.perf_counter() - t0) * 10000 / test_n
    row["vmapped_speedup"] = row["sequential"]["seconds_per_network_epoch"] / row["vmapped"]["seconds_per_network_epoch"]
    return row


def child_expert(shape, impl: str, batch: int, reps: int) -> dict:
    """One SGD step of MTT's expert training (the batched step ``jaxdd.objectives.trajectory.experts`` trains
    with, a group of one network) on ``batch`` images, no augmentation."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxdd.models import get_model, init_model, with_conv_impl
    from jaxdd.train import batched_step, make_train_step

    module = with_conv_impl(get_model("ConvNet", 10), impl)
    run = batched_step(make_train_step(module, optax.sgd(0.01)))
    pool_x = jax.random.normal(jax.random.key(0), (batch, *shape))
    pool_y = jnp.arange(batch, dtype=jnp.int32) % 10
    variables = jax.vmap(lambda k: init_model(module, k, shape))(jax.random.split(jax.random.key(1), 1))
    opt = jax.vmap(optax.sgd(0.01).init)(variables["params"])
    idx, keys = jnp.arange(batch)[None], jax.random.split(jax.random.key(2), 1)
    first, per = _timed(lambda: run(variables, opt, pool_x, pool_y, idx, keys, None)[2], reps)
    return {"part": "expert", "conv_impl": impl, "batch": batch, "compile_and_first_s": first, "seconds_per_step": per}


def child(args) -> dict:
    sys.path.insert(0, str(ROOT))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import jax

    shape = SHAPES[args.shape]
    if args.part == "distill":
        row = child_distill(args.method, shape, args.ipc, args.real_per_class, args.reps)
    elif args.part == "expert":
        row = child_expert(shape, args.impl, args.batch, args.reps)
    else:
        row = child_eval(shape, args.k, args.impl, args.images, args.reps, args.test_images)
    row.update(shape=args.shape, image_shape=list(shape), backend=jax.default_backend(),
               rss_baseline_mib=rss0 / 1024, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               load_avg_1min=os.getloadavg()[0])
    return row


def _markdown(res: dict) -> str:
    lines = [f"# bench_dm\n\n`{res['command']}` on {res['machine']}, jax {res['jax']}, {res['backend']}. "
             f"{res.get('note', '')}\n",
             "## Distillation steps (ConvNet-3 width 128, 256 real images/class; DM and DSA with DSA augmentation)\n",
             "DC/DSA: one jaxdd step is one outer-loop round (matching, then `inner_loop` epochs of network training);"
             " a paper iteration is `outer_loop` rounds, the last of which does no inner training (timed on its"
             " own).\n",
             "| method | shape | IPC | s / step | s / paper iteration | compile + first s | XLA MiB | peak RSS MiB | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if r.get("failed"):
            lines.append(f"| {r.get('method', r['part'])} | {r['shape']} | {r.get('ipc', '')} | failed: see json | "
                         "| | | | |")
        elif r["part"] == "distill":
            per_paper = r.get("seconds_per_paper_iteration", r["seconds_per_iteration"])
            lines.append(f"| {r['method']} | {r['shape']} {r['image_shape']} | {r['ipc']} | "
                         f"{r['seconds_per_iteration']:.2f} | {per_paper:.2f} | "
                         f"{r['compile_and_first_s']:.1f} | {r.get('xla_total_mib', float('nan')):.0f} | "
                         f"{r['peak_rss_mib']:.0f} | {r['load_avg_1min']:.1f} |")
    lines += ["", "## Evaluation (ConvNet-3, 100 images, batch 100, DSA): K networks vmapped vs one at a time\n",
              "| shape | conv | K | vmapped s / net / epoch | sequential s / net / epoch | vmapped speed-up | "
              "300 ep / net (faster mode) | 1000 ep / net (faster mode) | K nets x 10000 test images, vmapped s | "
              "sequential s | XLA MiB (vmapped step) | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if r["part"] == "eval" and not r.get("failed"):
            v, s = r["vmapped"], r["sequential"]
            best = min(v["seconds_per_network_epoch"], s["seconds_per_network_epoch"])
            lines.append(f"| {r['shape']} | {r['conv_impl']} | {r['k']} | {v['seconds_per_network_epoch']:.3f} | "
                         f"{s['seconds_per_network_epoch']:.3f} | {r['vmapped_speedup']:.2f}x | "
                         f"{best * 301:.0f} s | {best * 1001:.0f} s | "
                         f"{r['test_forward_vmapped_s_per_10000']:.1f} | {r['test_forward_sequential_s_per_10000']:.1f} | "
                         f"{r.get('xla_total_mib', float('nan')):.0f} | "
                         f"{r['peak_rss_mib']:.0f} |")
    experts = [r for r in res["rows"] if r["part"] == "expert" and not r.get("failed")]
    if experts:
        lines += ["", "## Expert training (MTT buffers): one SGD step of one network, no augmentation\n",
                  "| shape | conv | batch | s / step | compile + first s |", "|---|---|---|---|---|"]
        lines += [f"| {r['shape']} | {r['conv_impl']} | {r['batch']} | {r['seconds_per_step']:.3f} | "
                  f"{r['compile_and_first_s']:.1f} |" for r in experts]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    reexec_with_hugepages()  # as the jaxdd command does (jaxdd.hostmem; JAXDD_HUGEPAGES=0: off)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    p.add_argument("--methods", nargs="*", default=["dm", "dc", "dsa"], choices=["dm", "dc", "dsa"],
                   help="distillation steps to time (DC and DSA on the Fashion-MNIST shape only)")
    p.add_argument("--real-per-class", type=int, default=256)
    p.add_argument("--eval-impls", nargs="*", default=["xla", "patches"], choices=("auto",) + CONV_IMPLS)
    p.add_argument("--expert-impls", nargs="*", default=[], choices=("auto",) + CONV_IMPLS,
                   help="also time one expert-training step (batch 256) per convolution implementation")
    p.add_argument("--k", type=int, default=4, help="networks trained together in the evaluation rows")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--note", default="", help="recorded with the results (e.g. what else the machine ran)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_dm"), help="path stem: writes .json and .md")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        ns = argparse.Namespace(**json.loads(args.child))
        print("ROW " + json.dumps(child(ns)), flush=True)
        return 0
    jobs = []
    for shape in args.shapes:
        jobs += [dict(part="distill", method=m, shape=shape, ipc=ipc, real_per_class=args.real_per_class,
                      reps=args.reps if m == "dm" else min(args.reps, 2))
                 for m in args.methods if m == "dm" or shape == "fmnist" for ipc in args.ipcs]
        jobs += [dict(part="eval", shape=shape, k=args.k, impl=impl, images=100, reps=args.reps,
                      test_images=args.test_images) for impl in args.eval_impls]
        jobs += [dict(part="expert", shape=shape, impl=impl, batch=256, reps=args.reps) for impl in args.expert_impls]
    rows = []
    for job in jobs:
        print("running", job, flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True)
        row = next((json.loads(line[4:]) for line in out.stdout.splitlines() if line.startswith("ROW ")), None)
        if row is None:  # recorded, not fatal: one failed row (e.g. out of memory) must not lose the others
            row = {**job, "failed": out.stderr[-2000:]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    import jax

    shown = ["NOTE" if args.note and a == args.note else a for a in (argv if argv is not None else sys.argv[1:])]
    res = {"command": " ".join(["python experiments/bench/bench_dm.py", *shown]),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "jax": jax.__version__,
           "backend": jax.default_backend(), "note": args.note, "rows": rows}
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2))
    stem.with_suffix(".md").write_text(_markdown(res))
    print(_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
