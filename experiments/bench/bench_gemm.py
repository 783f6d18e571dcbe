"""The matmul ceiling of this CPU for the Winograd convolution's shapes, and what it implies for the issue-5 rows.

    python experiments/bench/bench_gemm.py                 # writes results/bench_gemm.{json,md}

Every pass of the ConvNet's layers 2-3 under ``conv_impl="fused"`` is a set of (tiles x 128) @ (128 x 128) float32
matmuls (``jaxdd.ops.conv.conv3x3_winograd``). This times that shape in XLA (one batched ``dot_general`` of
the 16 positions, and 16 separate dots in one program, as the convolution now runs them) and in NumPy's BLAS
(OpenBLAS), and a square 2048^3 matmul for the machine's best case, all on every core this process may use. It then
counts the Winograd multiply-adds of one DM iteration, one DC iteration and one evaluation step (ConvNet-3,
width 128, 28x28x1 images: layer 2 on 16x16 inputs in 8x8 tiles, layer 3 on 8x8 in 4x4 tiles; forward = 1 matmul
per layer, a training pass = 3) and divides by the measured rate: the time those matmuls alone need, a lower bound
for the formulation whatever the rest of the step costs.
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


def _median_seconds(fn, reps: int) -> float:
    import numpy as np

    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def winograd_gflop(images: int, passes: int) -> float:
    """GFLOP of the layer 2-3 Winograd matmuls for ``images`` 28x28x1 images, ``passes`` matmuls per layer."""
    tiles = 8 * 8 + 4 * 4  # layer 2: 16x16 output in 2x2 tiles; layer 3: 8x8
    return 2 * 16 * tiles * images * 128 * 128 * passes / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", type=int, default=16384, help="rows of each matmul (256 images x 64 tiles)")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--out", default=str(HERE / "results" / "bench_gemm"), help="path stem: .json and .md")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from jaxdd.hostmem import reexec_with_hugepages

    reexec_with_hugepages()
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, args.tiles, 128), dtype=np.float32)
    b = rng.standard_normal((16, 128, 128), dtype=np.float32)
    sq = rng.standard_normal((2048, 2048), dtype=np.float32)
    ja, jb, jsq = jax.device_put(a), jax.device_put(b), jax.device_put(sq)
    batched = jax.jit(lambda a, b: jax.lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,)))))
    separate = jax.jit(lambda a, b: [a[i] @ b[i] for i in range(16)])
    square = jax.jit(lambda s: s @ s)
    flop = 2 * 16 * args.tiles * 128 * 128
    cases = {
        "xla_batched_dot": (lambda: jax.block_until_ready(batched(ja, jb)), flop),
        "xla_16_dots": (lambda: jax.block_until_ready(separate(ja, jb)), flop),
        "numpy_openblas_batched": (lambda: np.matmul(a, b), flop),
        "xla_2048_cubed": (lambda: jax.block_until_ready(square(jsq)), 2 * 2048 ** 3),
        "numpy_openblas_2048_cubed": (lambda: sq @ sq, 2 * 2048 ** 3),
    }
    rows = {}
    for name, (fn, fl) in cases.items():
        s = _median_seconds(fn, args.reps)
        rows[name] = {"seconds": s, "gflop_per_s": fl / s / 1e9}
        print(name, rows[name], flush=True)
    rate = max(rows[k]["gflop_per_s"] for k in ("xla_batched_dot", "xla_16_dots", "numpy_openblas_batched"))
    work = {  # (GFLOP of layer 2-3 Winograd matmuls, reference seconds)
        "DM iteration, IPC 10, 256 real/class (2560 real forwards + 100 synthetic forward and backward)":
            (winograd_gflop(2560, 1) + winograd_gflop(100, 3), 3.1),
        "DC iteration, IPC 10: 10 matching rounds (2560 real training passes, 100 synthetic second-order ~ 2 "
        "training passes) and 9 inner trainings of 50 steps on 100 images (none after the last round)":
            (10 * (winograd_gflop(2560, 3) + 2 * winograd_gflop(100, 3)) + 9 * 50 * winograd_gflop(100, 3), 190.0),
        "evaluation step, 100 images": (winograd_gflop(100, 3), 85 / 300),
    }
    bounds = {k: {"gflop": g, "matmul_seconds_at_ceiling": g / rate, "reference_seconds": ref,
                  "best_possible_speedup": ref / (g / rate)} for k, (g, ref) in work.items()}
    result = {"cores": len(os.sched_getaffinity(0)), "jax": jax.__version__, "tiles": args.tiles, "rows": rows,
              "ceiling_gflop_per_s": rate, "bounds": bounds}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = ["# Matmul ceiling for the Winograd shapes (issue 5)", "",
             f"`python experiments/bench/bench_gemm.py` on {result['cores']} cores, jax {jax.__version__}, float32.", "",
             "| matmul | GFLOP/s |", "|---|---|"]
    lines += [f"| {k} | {v['gflop_per_s']:.0f} |" for k, v in rows.items()]
    lines += ["", f"Ceiling used below: {rate:.0f} GFLOP/s, the best of the three (16 x {args.tiles}x128 @ 128x128)"
              " rows.",
              "", "| work | Winograd matmul GFLOP | matmuls alone at the ceiling, s | reference s | "
              "best possible speed-up of this formulation |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['gflop']:.0f} | {v['matmul_seconds_at_ceiling']:.2f} | {v['reference_seconds']:.2f} | "
              f"{v['best_possible_speedup']:.2f}x |" for k, v in bounds.items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
