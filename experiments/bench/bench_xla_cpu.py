"""Profile: where a ConvNet's time goes on XLA:CPU, and which XLA CPU backends/flags make it faster (issue 5).

    python experiments/bench/bench_xla_cpu.py                          # all flag sets, writes results/bench_xla_cpu.{json,md}
    python experiments/bench/bench_xla_cpu.py --flagsets default xnn --impls xla --reps 2

The work is the inner loop of every matching method on the Fashion-MNIST shape: ConvNet-3 (width 128, instance norm,
avgpool), a batch of 100 images 28x28x1, 10 classes, no augmentation (so only the network is timed), in five passes:
  fwd           cross-entropy of the batch (one jitted call)
  fwd_bwd       its gradient in the parameters (one training step's work; evaluation, DM's network is fwd only)
  second_order  d/dx of ||d loss / d params||^2 (the gradient-of-gradient of DC/DSA and of an unrolled meta-step)
  scan_fwd_bwd  ``--steps`` SGD steps inside ``lax.scan`` (the unrolled inner loop; seconds per step)
  scan_meta     d/dx of the parameters after ``--steps`` scanned SGD steps (an MTT/BPTT meta-gradient; per step)
for each convolution implementation (``lax.conv`` = "xla", im2col + matmul = "patches") under each XLA flag set.
Every flag set runs in a FRESH process (XLA_FLAGS is read once), which records compile seconds and the median of
``--reps`` timed calls after a first one (a pass slower than ``--slow-s`` is timed by its first call alone), XLA's FLOP
estimate (``cost_analysis``) and the achieved GFLOP/s, and a checksum of the
outputs: every flag set must give the default's numbers to float tolerance (``max_rel_diff`` in the table).
``--trace`` adds, for the default flags, one profiled call per pass (``jax.profiler``): the wall time per HLO op
kind (convolution, dot, fusions, ...), i.e. which operations dominate.
Run it pinned to one core (``taskset -c 0``) on a quiet machine; the 1-minute load average is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from jaxdd.ops.conv import CONV_IMPLS  # noqa: E402

FLAGSETS = {
    "default": "",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "ynn_conv_dot": "--xla_cpu_experimental_ynn_fusion_type="
                    "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "xnn_greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn_dot": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
}
PASSES = ("fwd", "fwd_bwd", "second_order", "scan_fwd_bwd", "scan_meta")


def _op_profile(compiled, inputs, top: int = 8) -> list:
    """One traced call (jax.profiler): wall time per HLO operation kind (the op name without its numeric suffix:
    convolution, dot, transpose_copy_fusion, ...), the ``top`` largest as [name, ms, share of the op total]."""
    import collections
    import re
    import tempfile

    import jax
    from jax.profiler import ProfileData

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            jax.block_until_ready(compiled(*inputs))
        files = list(Path(d).rglob("*.xplane.pb"))
        if not files:
            return []
        data = ProfileData.from_file(str(files[0]))
        total = collections.Counter()
        for plane in data.planes:
            for line in plane.lines:
                if not line.name.startswith("tf_XLA"):  # XLA's executor threads; not the python line
                    continue
                for ev in line.events:  # skip markers and the executor's container events (they nest the ops)
                    if not ev.name.startswith(("end: ", "ThunkExecutor", "SlinkyThreadPool")):
                        total[re.sub(r"\.\d+$", "", ev.name)] += ev.duration_ns
    whole = sum(total.values()) or 1
    return [[name, ns / 1e6, ns / whole] for name, ns in total.most_common(top)]


def child(args) -> dict:
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdd.models import get_model, init_model
    from jaxdd.train import cross_entropy

    x = jax.random.normal(jax.random.key(0), (args.batch, 28, 28, 1))
    y = jnp.arange(args.batch, dtype=jnp.int32) % 10
    rows = []
    for impl in args.impls:
        module = get_model("ConvNet", 10, conv_impl=impl)
        params = init_model(module, jax.random.key(1), (28, 28, 1))["params"]

        def loss(p, xb):
            return cross_entropy(module.apply({"params": p}, xb), y)

        def sgd_steps(p, xb):
            def body(q, _):
                g = jax.grad(loss)(q, xb)
                return jax.tree.map(lambda a, b: a - 0.01 * b, q, g), None
            return jax.lax.scan(body, p, None, length=args.steps)[0]

        def sq_grad(xb, p):
            return sum(jnp.vdot(g, g) for g in jax.tree.leaves(jax.grad(loss)(p, xb)))

        def meta(xb, p):
            q = sgd_steps(p, xb)
            return sum(jnp.vdot(a - b, a - b) for a, b in zip(jax.tree.leaves(q), jax.tree.leaves(p)))

        fns = {"fwd": (loss, (params, x), 1), "fwd_bwd": (jax.grad(loss), (params, x), 1),
               "second_order": (jax.grad(sq_grad), (x, params), 1),
               "scan_fwd_bwd": (sgd_steps, (params, x), args.steps),
               "scan_meta": (jax.grad(meta), (x, params), args.steps)}
        for name in args.passes:
            fn, inputs, per = fns[name]
            t0 = time.perf_counter()
            compiled = jax.jit(fn).lower(*inputs).compile()
            compile_s = time.perf_counter() - t0
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            # XLA's cost analysis counts a while-loop body once: a scanned pass does ``per`` bodies per call
            flops = float(cost.get("flops", 0.0)) * per if cost else 0.0
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(*inputs))  # first call (compiled ahead of time: no compile in it)
            times = [time.perf_counter() - t0]
            slow = times[0] > args.slow_s  # a pathological pass is timed once and not traced
            for _ in range(0 if slow else args.reps):
                t0 = time.perf_counter()
                out = jax.block_until_ready(compiled(*inputs))
                times.append(time.perf_counter() - t0)
            sec = float(np.median(times[1:] or times))
            ops = _op_profile(compiled, inputs) if args.trace and not slow else None
            leaves = [np.asarray(v, np.float64).ravel() for v in jax.tree.leaves(out)]
            rows.append({"impl": impl, "pass": name, "compile_s": compile_s, "seconds": sec,
                         "seconds_per_step": sec / per, "times": times, "xla_gflop": flops / 1e9,
                         "gflop_per_s": flops / 1e9 / sec if sec else None,
                         "checksum": [float(np.sum(v)) for v in leaves], "abs_checksum":
                         [float(np.sum(np.abs(v))) for v in leaves], **({"ops": ops} if ops else {})})
            print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("checksum", "abs_checksum")}),
                  file=sys.stderr, flush=True)
    return {"rows": rows, "load_avg_1min": os.getloadavg()[0], "backend": jax.default_backend()}


def _markdown(res: dict) -> str:
    base = {(r["impl"], r["pass"]): r for r in res["flagsets"].get("default", {}).get("rows", [])}
    lines = [f"# XLA:CPU profile of ConvNet-3 (w128) passes, batch {res['batch']} x 28x28x1, scan length "
             f"{res['steps']}", "", f"Command: `{res['command']}`", "",
             "| flag set | conv | pass | compile s | s / step | GFLOP/step (XLA) | GFLOP/s | vs default | "
             "max rel diff |", "|---|---|---|---|---|---|---|---|---|"]
    for fs, out in res["flagsets"].items():
        if "error" in out:
            lines.append(f"| {fs} | error: {out['error'][-120:].replace(chr(10), ' ')} | | | | | | | |")
            continue
        for r in out["rows"]:
            b = base.get((r["impl"], r["pass"]))
            speed = f"{b['seconds'] / r['seconds']:.2f}x" if b else "-"
            diff = "-"
            if b and "checksum" in r and "checksum" in b:
                diff = max(abs(c - d) / max(a, 1e-30) for c, d, a in
                           zip(r["checksum"], b["checksum"], b["abs_checksum"]))
                diff = f"{diff:.1e}"
            per = r["seconds_per_step"]
            steps = r["seconds"] / per if per else 1
            lines.append(f"| {fs} | {r['impl']} | {r['pass']} | {r['compile_s']:.1f} | {per:.3f} | "
                         f"{r['xla_gflop'] / steps:.2f} | {r['gflop_per_s'] or 0:.1f} | {speed} | {diff} |")
    traced = [r for out in res["flagsets"].values() for r in out.get("rows", []) if r.get("ops")]
    if traced:
        lines += ["", "Where the time goes (default flags, one traced call; HLO op kinds by wall time, share of the "
                      "ops' total):", "", "| conv | pass | top op kinds |", "|---|---|---|"]
        for r in traced:
            ops = ", ".join(f"{n} {100 * sh:.0f} %" for n, _, sh in r["ops"][:5])
            lines.append(f"| {r['impl']} | {r['pass']} | {ops} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flagsets", nargs="+", default=list(FLAGSETS), choices=list(FLAGSETS))
    p.add_argument("--impls", nargs="+", default=["xla", "patches"], choices=CONV_IMPLS)
    p.add_argument("--passes", nargs="+", default=list(PASSES), choices=list(PASSES))
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=5, help="scan length of the scan_* passes")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--slow-s", type=float, default=60.0,
                   help="a pass whose first call takes longer is timed by that call alone (no reps, no trace)")
    p.add_argument("--trace", action="store_true", help="also profile one call per pass (time per HLO op kind)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_xla_cpu"), help="path stem: writes .json and .md")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    res = {"batch": args.batch, "steps": args.steps, "reps": args.reps,
           "command": " ".join(["python", "experiments/bench/bench_xla_cpu.py", *(argv or sys.argv[1:])]),
           "flag_values": {f: FLAGSETS[f] for f in args.flagsets}, "flagsets": {}}
    for fs in args.flagsets:
        cmd = [sys.executable, __file__, "--child", "--impls", *args.impls, "--passes", *args.passes,
               "--batch", str(args.batch), "--steps", str(args.steps), "--reps", str(args.reps),
               "--slow-s", str(args.slow_s),
               *(["--trace"] if args.trace and fs == "default" else [])]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": FLAGSETS[fs]}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)  # the child's progress: stderr
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        res["flagsets"][fs] = (json.loads(line[0][7:]) if line and not proc.returncode else
                               {"error": f"exit {proc.returncode} (its stderr above)"})
        res["flagsets"][fs]["wall_s"] = time.perf_counter() - t0
        print(fs, f"{time.perf_counter() - t0:.0f} s", "error" if "error" in res["flagsets"][fs] else "ok", flush=True)
        Path(args.out + ".json").parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".json").write_text(json.dumps(res, indent=2))
    Path(args.out + ".md").write_text(_markdown(res))
    print(_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
