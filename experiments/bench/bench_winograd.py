"""The Winograd convolution with its 16 positions stacked into one batched matmul, against 16 separate matmuls, and
against the larger-tile Winograd F(4x4, 3x3).

    python experiments/bench/bench_winograd.py                 # writes results/bench_winograd.{json,md}

``stacked`` is the formulation ``jaxdd.ops.conv.conv3x3_winograd`` had before: the 16 transformed input
tiles stacked into a (16, tiles, c) operand of one batched ``dot_general``, and the product indexed back out for
the output transform. ``separate`` is the library's function now: 16 arrays and 16 matmuls from the input transform
to the output transform. Same arithmetic. ``f4x4`` is Winograd F(4x4, 3x3) (Lavin & Gray 2016, interpolation points
0, +-1, +-2, infinity), written the way ``separate`` is: a 6x6 input tile gives a 4x4 output tile, so 36 (tiles x c)
@ (c x o) matmuls with a quarter of the tiles, 2.25 multiply-adds per output against F(2x2)'s 4 (1.78x fewer), but
transforms with more terms and non-unit constants. Shapes: the ConvNet-3's layer 2 (16x16x128 -> 128) and layer 3 (8x8x128)
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
ROOT = HERE.parents[1]


def stacked(x, kernel, padding):
    import jax
    import jax.numpy as jnp

    from jaxdd.ops.conv import _WINO_G, _wino_at, _wino_bt

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


# F(4x4, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A on 6x6 input tiles
_F4_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0),
          (0, 4, 0, -5, 0, 1))
_F4_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
         (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
_F4_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))


def _combine(mat, xs):
    """[sum_j mat[i][j] * xs[j] for each row i], skipping zeros and multiplying only by coefficients other than +-1."""
    out = []
    for row in mat:
        terms = [x if c == 1 else -x if c == -1 else c * x for c, x in zip(row, xs) if c != 0]
        out.append(sum(terms[1:], terms[0]))
    return out


def f4x4(x, kernel, padding):
    import jax.numpy as jnp

    n, h, w, c = x.shape
    o = kernel.shape[-1]
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    th, tw = -(-ho // 4), -(-wo // 4)
    xp = jnp.pad(x, ((0, 0), (padding, padding + 4 * th - ho), (padding, padding + 4 * tw - wo), (0, 0)))
    rows = _combine(_F4_BT, [xp[:, i:i + 4 * th:4] for i in range(6)])  # input tiles start every 4 pixels
    v = [[t.reshape(n * th * tw, c) for t in _combine(_F4_BT, [r[:, :, j:j + 4 * tw:4] for j in range(6)])]
         for r in rows]
    g = jnp.asarray(_F4_G, kernel.dtype)
    u = jnp.einsum("ai,ijco,bj->abco", g, kernel, g)
    m = [[v[i][j] @ u[i, j] for j in range(6)] for i in range(6)]
    m = [_combine(_F4_AT, list(col)) for col in zip(*m)]  # A^T along the tile rows: m[j][p]
    y = [_combine(_F4_AT, list(col)) for col in zip(*m)]  # A^T along the tile columns: y[p][q]
    # the 16 output phases written into their strided places. Stacked and transposed as in `separate`, XLA:CPU fused
    # them into one slow copy (one-off per-op trace at 256 x 16x16x128: ~150 ms of ~250) and this script's forward
    # rows were ~2x slower (one-off run: 95 against 48 ms at 100 x 16x16x128, 256 against 141 ms at 256)
    out = jnp.zeros((n, th, 4, tw, 4, o), x.dtype)
    for p in range(4):
        for q in range(4):
            out = out.at[:, :, p, :, q].set(y[p][q].reshape(n, th, tw, o))
    return out.reshape(n, 4 * th, 4 * tw, o)[:, :ho, :wo]


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

    from jaxdd.ops.conv import _lax_conv, conv3x3_winograd

    impls = {"stacked": stacked, "separate": conv3x3_winograd, "f4x4": f4x4}
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
        ref = _lax_conv(x, k, 1)
        errors[f"{n}x{hw}x{hw}x128"] = {
            name: float(jnp.abs(jax.jit(lambda x, k, f=f: f(x, k, 1))(x, k) - ref).max() / jnp.abs(ref).max())
            for name, f in impls.items()}
    times = {key: [] for key in jobs}
    for _ in range(args.reps):
        for key, (fn, args_) in jobs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args_))
            times[key].append(time.perf_counter() - t0)
    rows = [{"shape": s, "impl": i, "pass": p_, "median_ms": 1e3 * float(np.median(t))}
            for (s, i, p_), t in times.items()]
    result = {"cores": len(os.sched_getaffinity(0)), "jax": jax.__version__, "reps": args.reps, "rows": rows,
              "max_relative_difference_forward_vs_lax_conv": errors}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    med = {(r["shape"], r["impl"], r["pass"]): r["median_ms"] for r in rows}
    lines = ["# Winograd convolution: 16 positions stacked vs separate, and F(4x4, 3x3) (issue 5)", "",
             f"`python experiments/bench/bench_winograd.py` on {result['cores']} cores, jax {jax.__version__}, "
             f"median of {args.reps} round-robin calls, ms. `separate` is the library's `conv3x3_winograd`.", "",
             "| input | pass | stacked | separate | f4x4 | separate / stacked | f4x4 / separate |",
             "|---|---|---|---|---|---|---|"]
    for s in errors:
        for p_ in ("forward", "gradients", "second_order"):
            a, b, f = (med[(s, i, p_)] for i in impls)
            lines.append(f"| {s} | {p_} | {a:.1f} | {b:.1f} | {f:.1f} | {b / a:.2f} | {f / b:.2f} |")
    lines += ["", "Largest forward difference from `lax.conv`, relative to the output's scale:", ""]
    lines += [f"- {s}: " + ", ".join(f"{i} {e:.1e}" for i, e in errs.items()) for s, errs in errors.items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
