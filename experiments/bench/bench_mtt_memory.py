"""Benchmark: MTT meta-gradient memory and time against the number of unrolled student steps, per memory strategy.

    python experiments/bench/bench_mtt_memory.py                         # default grid, writes the results below
    python experiments/bench/bench_mtt_memory.py --steps 10 20 --memory constant remat --run-steps 10 20

Shape (the Fashion-MNIST MTT setting of issue 5): 100 synthetic 28x28x1 images, 10 classes, ConvNet-3 (width 128,
instance norm, avgpool; convolutions as patches-matmul inside the unroll), batch_syn 100, DSA on every student step,
one meta-gradient = value_and_grad of the normalised trajectory distance with respect to the images and the learned
lr. Start and target parameters are a random init and a random perturbation of it (no expert buffer is needed:
the cost does not depend on the values).

Every (strategy, syn_steps) point runs in a FRESH subprocess, which
  1. compiles the meta-gradient and records XLA's buffer assignment (``compiled.memory_analysis()``: temp, argument
     and output bytes: what the program needs at run time, measured without running it), for every point;
  2. for the points listed in --run-steps, runs it ``--reps`` times (compiled ahead of time, so no warm-up call),
     recording the seconds
     per meta-iteration and the process's peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
     which includes the Python/JAX baseline and the compiler; the baseline RSS before compiling is reported too).
A point whose compiled program needs more than 90 % of the machine's RAM is not run (its note says so); its memory
comes from (1).

TESLA's detached approximation ("tesla") is compared with the exact gradient ("constant") on the same inputs at
``--tesla-steps`` with ``--tesla-images`` synthetic images (relative L2 error and cosine of the image gradient, and
both lr gradients).

Writes experiments/bench/results/bench_mtt_memory.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from jaxdd.hostmem import reexec_with_hugepages  # noqa: E402
from jaxdd.ops.conv import CONV_IMPLS  # noqa: E402


def child(args) -> dict:
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.flatten_util import ravel_pytree

    from jaxdd import augment as aug
    from jaxdd.models import get_model, init_model, with_conv_impl
    from jaxdd.objectives import trajectory as tr

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    k, n, shape = 10, args.images, (28, 28, 1)
    module = with_conv_impl(get_model("ConvNet", k), args.conv_impl)
    variables = init_model(module, jax.random.key(0), shape)
    theta0, unravel = ravel_pytree(variables["params"])
    target = theta0 + 0.01 * jax.random.normal(jax.random.key(1), theta0.shape)
    step_loss = tr.make_step_loss(module, {}, unravel, aug.DSA_DEFAULT)
    x = jax.random.normal(jax.random.key(2), (n, *shape))
    y = jnp.repeat(jnp.arange(k), n // k)
    steps = args.steps
    remat_every = 1

    def meta_loss(x, lr, key):
        k_idx, k_aug = jax.random.split(key)
        idx = tr.minibatch_indices(k_idx, n, steps, args.batch_syn)
        kraw = jax.random.key_data(jax.random.split(k_aug, steps))
        th = tr.unroll_student(step_loss, theta0, {"x": x}, {"y": y}, (idx, kraw), lr, memory=args.memory,
                               remat_every=remat_every)
        return tr.trajectory_distance(th, theta0, target)

    fn = jax.jit(jax.value_and_grad(meta_loss, argnums=(0, 1)))
    lr = jnp.float32(0.01)
    key = jax.random.key(3)
    t0 = time.perf_counter()
    compiled = fn.lower(x, lr, key).compile()
    t_compile = time.perf_counter() - t0
    ma = compiled.memory_analysis()
    out = {"memory": args.memory, "syn_steps": steps, "images": n, "batch_syn": args.batch_syn,
           "num_params": int(theta0.size),
           "compile_s": t_compile, "rss_baseline_mib": rss0 / 1024,
           "xla_temp_mib": ma.temp_size_in_bytes / 2**20, "xla_argument_mib": ma.argument_size_in_bytes / 2**20,
           "xla_output_mib": ma.output_size_in_bytes / 2**20}
    out["xla_total_mib"] = out["xla_temp_mib"] + out["xla_argument_mib"] + out["xla_output_mib"]
    ram_mib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    if args.run and out["xla_total_mib"] > 0.9 * ram_mib:
        out["note"] = f"not run: needs {out['xla_total_mib'] / 1024:.1f} GiB, the machine has {ram_mib / 1024:.1f} GiB"
    elif args.run:
        times = []  # the program is compiled ahead of time, so the first call is not a compile: no warm-up call
        for r in range(args.reps):
            t0 = time.perf_counter()
            val, (gx, glr) = compiled(x, lr, jax.random.fold_in(key, r))
            jax.block_until_ready(gx)
            times.append(time.perf_counter() - t0)
            if r == 0 and args.save_grad:
                np.savez(args.save_grad, gx=np.asarray(gx), glr=np.asarray(glr))
        out.update({"seconds_per_meta_step": float(np.median(times)), "times": times,
                    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "loss": float(val)})
    return out


def markdown(result: dict) -> str:
    """The results table (also written next to the JSON as .md)."""
    lines = ["# MTT meta-gradient: memory and time against unrolled student steps", "",
             f"Shape: {result['shape']}. Command: `{result['command']}`.", "",
             *([result["machine"], ""] if "machine" in result else []),
             "| memory | syn_steps | images | XLA temp+args+out (MiB) | peak RSS (MiB) | s / meta-step | compile s |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['memory']} | {r['syn_steps']} | error | | | | |")
            continue
        rss = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else "-"
        sec = f"{r['seconds_per_meta_step']:.1f}" if "seconds_per_meta_step" in r else "- (" + r.get("note", "") + ")"
        lines.append(f"| {r['memory']} | {r['syn_steps']} | {r['images']} | {r['xla_total_mib']:.0f} | {rss} | {sec} "
                     f"| {r['compile_s']:.0f} |")
    for c in result.get("tesla_vs_exact", []):
        lines += ["", f"TESLA's detached approximation vs the exact gradient ({c['syn_steps']} steps, {c['images']} "
                      f"images): image-gradient relative L2 error {c['image_grad_rel_err']:.3f}, cosine "
                      f"{c['image_grad_cosine']:.4f}; lr gradient {c['lr_grad_tesla']:.4f} vs exact "
                      f"{c['lr_grad_exact']:.4f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    reexec_with_hugepages()  # as the jaxdd command does (jaxdd.hostmem; JAXDD_HUGEPAGES=0: off)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 80])
    p.add_argument("--memory", nargs="+", default=["constant", "remat", "full"])
    p.add_argument("--run-steps", type=int, nargs="*", default=[10],
                   help="syn_steps values that are also RUN (timed, peak RSS); the rest are compile-only")
    p.add_argument("--run-full-steps", type=int, nargs="*", default=[10, 20, 50, 80],
                   help="syn_steps values at which the full unroll is run (it is the slowest)")
    p.add_argument("--tesla-steps", type=int, nargs="*", default=[10],
                   help="syn_steps at which TESLA's approximation is compared with the exact gradient")
    p.add_argument("--tesla-images", type=int, default=10, help="synthetic images (= batch_syn) of that comparison")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--batch-syn", type=int, default=100)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--conv-impl", default="patches", choices=("auto",) + CONV_IMPLS,
                   help="the student's convolutions (jaxdd.ops.conv)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_mtt_memory.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save-grad", default=None, help=argparse.SUPPRESS)
    args, _ = p.parse_known_args(argv)
    if args.child:
        args.steps = args.steps[0]
        args.memory = args.memory[0]
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0

    tmp = Path(tempfile.mkdtemp())

    def spawn(mem, steps, images, batch, run, save=None):
        cmd = [sys.executable, __file__, "--child", "--steps", str(steps), "--memory", mem, "--images", str(images),
               "--batch-syn", str(batch), "--reps", str(args.reps),
               "--conv-impl", args.conv_impl]
        if run:
            cmd.append("--run")
        if save:
            cmd += ["--save-grad", str(save)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            row = {"memory": mem, "syn_steps": steps, "error": proc.stderr[-2000:]}
        else:
            row = json.loads(line[0][7:])
            if not run:
                row["note"] = "compile-only (not in --run-steps / --run-full-steps)"
        row["wall_s"] = time.perf_counter() - t0
        print(json.dumps({k: v for k, v in row.items() if k != "times"}), flush=True)
        partial.append(row)  # written after every point, so an interrupted benchmark keeps what it measured
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"partial": True, "rows": partial}, indent=2))
        return row

    partial: list = []

    rows = []
    for mem in args.memory:  # bounded-memory strategies first: they are the point, and full unroll is the slowest
        for steps in args.steps:
            run = steps in args.run_steps and (mem != "full" or steps in args.run_full_steps)
            rows.append(spawn(mem, steps, args.images, args.batch_syn, run))
    result = {"shape": f"{args.images} x 28x28x1 synthetic, ConvNet-3 w128 ({args.conv_impl}), "
                       f"batch_syn {args.batch_syn}, "
                       "DSA", "rows": rows,
              "command": " ".join(["python", "experiments/bench/bench_mtt_memory.py", *(argv or sys.argv[1:])]),
              "tesla_vs_exact": []}
    import numpy as np

    for steps in args.tesla_steps:
        pair = {}
        for mem in ("constant", "tesla"):
            pair[mem] = tmp / f"{mem}_{steps}.npz"
            row = spawn(mem, steps, args.tesla_images, args.tesla_images, True, save=pair[mem])
            row["note"] = "tesla comparison point"
            rows.append(row)
        if all(f.exists() for f in pair.values()):
            a, b = np.load(pair["constant"]), np.load(pair["tesla"])
            gx_e, gx_t = a["gx"].ravel(), b["gx"].ravel()
            cmp_ = {"syn_steps": steps, "images": args.tesla_images,
                    "image_grad_rel_err": float(np.linalg.norm(gx_t - gx_e) / np.linalg.norm(gx_e)),
                    "image_grad_cosine": float(gx_t @ gx_e / np.linalg.norm(gx_t) / np.linalg.norm(gx_e)),
                    "lr_grad_exact": float(a["glr"]), "lr_grad_tesla": float(b["glr"])}
            result["tesla_vs_exact"].append(cmp_)
            print(json.dumps(cmp_), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    md = markdown(result)
    Path(args.out).with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
