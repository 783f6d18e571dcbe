"""The Winograd convolution with its 16 positions stacked into one batched matmul, against 16 separate matmuls.

    python experiments/bench_winograd.py                 # writes results/bench_winograd.{json,md}

``stacked`` is the formulation ``jaxdd.models.convnet.conv3x3_winograd`` had before: the 16 transformed input
tiles stacked into a (16, tiles, c) operand of one batched ``dot_general``, and the product indexed back out for
the output transform. ``separate`` is the library's function now: 16 arrays and 16 matmuls from the input transform
to the output transform. Same arithmetic. Shapes: the ConvNet-3's layer 2 (16x16x128 -> 128) and layer 3 (8x8x128)
at 100 images (a training step) and layer 2 at 256 images (DM's real batch of one class). Passes: forward, forward
and both gradients of a linear loss, and a second-order pass (the input gradient of the squared weight gradient, as
in gradient matching). Every (case, pass) is compiled once, then timed ``--reps`` times round-robin, so a load
change on the machine hits every case alike; the median is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def stacked(x, kernel, padding):
    import jax
    import jax.numpy as jnp

    from jaxdd.models.convnet import _WINO_G, _wino_at, _wino_bt

    n, h, w, c = x.shape
    o = kernel.shape[-1]
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    xp = jnp.pad(x, ((0, 0), (padding, padding + 2 * th - ho), (padding, padding + 2 * tw - wo), (0, 0)))
    rows = _wino_bt(*[xp[:, i:i + 2 * th:2] for i in range(4)])
    v = jnp.stack([t for r in rows for t in _wino_bt(*[r[:, :, j:j + 2 * tw:2] for j in range(4)])])
    g = jnp.asarray(_WINO_G, kernel.dtype)
    u = jnp.einsum("ai,ijco,bj->abco", g, kernel, g).reshape(16, c, o)
    m = jax.lax.dot_general(v.reshape(16, n * th * tw, c), u, (((2,), (1,)), ((0,), (0,)))).reshape(4, 4, n, th, tw, o)
    m = jnp.stack(_wino_at(*m))
    m = jnp.stack(_wino_at(*(m[:, j] for j in range(4))), axis=1)
    return m.transpose(2, 3, 0, 4, 1, 5).reshape(n, 2 * th, 2 * tw, o)[:, :ho, :wo]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default=str(HERE / "results" / "bench_winograd"), help="path stem: .json and .md")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from jaxdd.hostmem import reexec_with_hugepages

    reexec_with_hugepages()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdd.models.convnet import conv3x3_winograd

    impls = {"stacked": stacked, "separate": conv3x3_winograd}
    jobs, errors = {}, {}
    for n, hw in ((100, 16), (100, 8), (256, 16)):
        x = jax.random.normal(jax.random.key(0), (n, hw, hw, 128))
        k = jax.random.normal(jax.random.key(1), (3, 3, 128, 128)) / 34
        g = jax.random.normal(jax.random.key(2), (n, hw, hw, 128))
        for name, conv in impls.items():
            def grads(x, k, g, conv=conv):  # g an argument: a closed-over cotangent is constant-folded by XLA
                return jax.grad(lambda x, k: jnp.vdot(conv(x, k, 1), g), (0, 1))(x, k)

            passes = {"forward": jax.jit(lambda x, k, g, conv=conv: conv(x, k, 1)), "gradients": jax.jit(grads),
                      "second_order": jax.jit(jax.grad(lambda x, k, g, grads=grads: jnp.sum(grads(x, k, g)[1] ** 2)))}
            for pname, fn in passes.items():
                jax.block_until_ready(fn(x, k, g))
                jobs[(f"{n}x{hw}x{hw}x128", name, pname)] = (fn, (x, k, g))
        a, b = (jax.jit(lambda x, k, f=f: f(x, k, 1))(x, k) for f in impls.values())
        errors[f"{n}x{hw}x{hw}x128"] = float(jnp.abs(a - b).max() / jnp.abs(a).max())
    times = {key: [] for key in jobs}
    for _ in range(args.reps):
        for key, (fn, args_) in jobs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args_))
            times[key].append(time.perf_counter() - t0)
    rows = [{"shape": s, "impl": i, "pass": p_, "median_ms": 1e3 * float(np.median(t))}
            for (s, i, p_), t in times.items()]
    result = {"cores": len(os.sched_getaffinity(0)), "jax": jax.__version__, "reps": args.reps, "rows": rows,
              "max_relative_difference_forward": errors}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    med = {(r["shape"], r["impl"], r["pass"]): r["median_ms"] for r in rows}
    lines = ["# Winograd convolution: 16 positions stacked vs separate (issue 5)", "",
             f"`python experiments/bench_winograd.py` on {result['cores']} cores, jax {jax.__version__}, "
             f"median of {args.reps} round-robin calls, ms.", "",
             "| input | pass | stacked | separate | separate / stacked |", "|---|---|---|---|---|"]
    for s in errors:
        for p_ in ("forward", "gradients", "second_order"):
            a, b = med[(s, "stacked", p_)], med[(s, "separate", p_)]
            lines.append(f"| {s} | {p_} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    lines += ["", "Largest forward difference between the two, relative to the output's scale: "
              + ", ".join(f"{s} {e:.1e}" for s, e in errors.items()) + "."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
