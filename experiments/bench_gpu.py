"""Accelerator benchmark (one GPU, < 10 minutes): DM and DC seconds per iteration on CIFAR-10 shapes with synthetic
inputs, evaluation throughput, and the speed-up of N experiments in one vmapped program over N sequential runs.

    python experiments/bench_gpu.py                        # on a GPU node: writes experiments/results/bench_gpu.json
    python experiments/bench_gpu.py --smoke --out /tmp/b.json   # CPU plumbing check: tiny shapes, an MLP (tests)

Settings (full run): CIFAR-10 shapes (32x32x3, 10 classes, 600 random "real" images per class drawn with
jax.random), ConvNet (width 128, depth 3, instance norm), IPC 10, the methods' paper options through their
MethodSpec: DM (256 real images per class, DSA), DC (256 real per class, outer_loop 10 / inner_loop 50 at IPC 10;
one jaxdd step = one outer round, so a paper iteration = 10 steps). Evaluation: 10 ConvNets trained together on an
IPC-10 set with DSA. Multi: N (default 8) DM experiments as one vmapped program vs the same N run one after the
other. Every time excludes compilation (reported separately); a section that would overrun the time budget is
recorded as skipped, never dropped silently. Nothing here names a device: JAX uses the default backend.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxdd.augment import DSA_DEFAULT  # noqa: E402
from jaxdd.distill import DistillConfig, distill_step, init_state, make_pool  # noqa: E402
from jaxdd.methods import MethodContext, get_method, resolve_options  # noqa: E402
from jaxdd.models import get_model  # noqa: E402
from jaxdd.multi import init_states, make_multi_step  # noqa: E402
from jaxdd.synthetic import pixels  # noqa: E402
from jaxdd.train import default_protocol, train_many  # noqa: E402

FULL = dict(shape=(32, 32, 3), classes=10, per_class=600, ipc=10, model="ConvNet", model_kw={}, dm={}, dc={"outer_loop": 10,
            "inner_loop": 50}, steps=20, dc_steps=5, eval_models=10, eval_epochs=20, num_exp=8, multi_steps=10,
            budget_s=540)
SMOKE = dict(shape=(8, 8, 1), classes=3, per_class=12, ipc=2, model="MLP", model_kw={"width": 16},
             dm={"real_per_class": 4, "dsa": ""}, dc={"outer_loop": 2, "inner_loop": 1, "real_per_class": 4},
             steps=2, dc_steps=2, eval_models=2, eval_epochs=1, num_exp=2, multi_steps=2, budget_s=300)


def block(tree):
    return jax.block_until_ready(tree)


def build(method: str, s: dict, pool, options: dict):
    spec = get_method(method)
    ctx = MethodContext(s["classes"], s["shape"], s["ipc"], s["model"], s["model_kw"],
                        resolve_options(spec, options), "synthetic", pool, None, jax.random.key(0))
    objective = spec.build(ctx)
    param = pixels(s["ipc"], spec.defaults.get("init", "real"))
    config = DistillConfig(iterations=1, progress=False, lr_img=spec.defaults["lr_img"])
    return objective, param, config


def time_single(objective, param, config, pool, steps: int) -> dict:
    key = jax.random.key(1)
    state, tx = init_state(key, objective, param, pool, config)
    step = jax.jit(lambda st, p, k: distill_step(objective, param, tx, st, p, k))
    t0 = time.perf_counter()
    state, m = block(step(state, pool, key))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, pool, key)
    block(state)
    sec = (time.perf_counter() - t0) / steps
    return {"seconds_per_iteration": sec, "first_call_seconds": compile_s, "steps": steps,
            "loss": float(m["loss"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes, seconds on a CPU")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_gpu.json"))
    p.add_argument("--num-exp", type=int, default=None, help="experiments in the multi section (default 8)")
    p.add_argument("--dc-conv-impl", default="auto",
                   help="DC's conv_impl: auto = 'patches' on CPU (jax-ml/jax#12868), 'xla' elsewhere")
    args = p.parse_args(argv)
    s = dict(SMOKE if args.smoke else FULL)
    if args.num_exp:
        s["num_exp"] = args.num_exp
    t_start = time.perf_counter()
    backend = jax.default_backend()
    res: dict = {"backend": backend, "devices": [str(d.device_kind) for d in jax.local_devices()],
                 "jax": jax.__version__, "smoke": args.smoke,
                 "settings": {k: v for k, v in s.items() if k not in ("dm", "dc")} | {"dm": s["dm"], "dc": s["dc"]}}

    def remaining() -> float:
        return s["budget_s"] - (time.perf_counter() - t_start)

    k_img, k_lab = jax.random.split(jax.random.key(0))
    n = s["classes"] * s["per_class"]
    images = jax.random.normal(k_img, (n, *s["shape"]), jnp.float32)
    labels = jnp.repeat(jnp.arange(s["classes"], dtype=jnp.int32), s["per_class"])
    pool = make_pool(images, labels, s["classes"])

    # DM and DC seconds per iteration
    conv = args.dc_conv_impl
    if conv == "auto":
        conv = "patches" if backend == "cpu" else "xla"
    for method, opts in (("dm", s["dm"]), ("dc", {**s["dc"], "conv_impl": conv})):
        if remaining() < 60 and not args.smoke:
            res[method] = {"skipped": f"time budget ({s['budget_s']} s) nearly spent"}
            continue
        objective, param, config = build(method, s, pool, opts)
        steps = s["steps"] if method == "dm" else s["dc_steps"]
        res[method] = {"options": opts, **time_single(objective, param, config, pool, steps)}
        if method == "dc":
            res[method]["seconds_per_paper_iteration"] = res[method]["seconds_per_iteration"] * opts["outer_loop"]
        print(method, json.dumps(res[method]), flush=True)

    # evaluation throughput: eval_models ConvNets trained together on an IPC set with DSA (or none in smoke)
    if remaining() > 60 or args.smoke:
        proto = default_protocol(None if args.smoke else DSA_DEFAULT,
                                 epochs=s["eval_epochs"])
        module = get_model(s["model"], s["classes"], **s["model_kw"])
        x = images[: s["classes"] * s["ipc"]]
        y = jnp.repeat(jnp.arange(s["classes"], dtype=jnp.int32), s["ipc"])
        keys = jax.random.split(jax.random.key(2), s["eval_models"])
        block(train_many(keys, module, x, y, dataclasses.replace(proto, epochs=0)))  # compile
        t0 = time.perf_counter()
        block(train_many(keys, module, x, y, proto))
        sec = time.perf_counter() - t0
        epochs = proto.epochs + 1
        res["evaluation"] = {"networks": s["eval_models"], "epochs": epochs, "set_size": int(x.shape[0]),
                             "augment": proto.augment, "seconds": sec,
                             "images_per_second": s["eval_models"] * epochs * int(x.shape[0]) / sec,
                             "seconds_per_network_300_epochs": sec / epochs * 301 / s["eval_models"]}
        print("evaluation", json.dumps(res["evaluation"]), flush=True)
    else:
        res["evaluation"] = {"skipped": "time budget nearly spent"}

    # N experiments in one vmapped program vs N sequential single runs (DM). Each experiment draws its own random
    # network, so vmap turns the convolutions into grouped convolutions; the "patches" variant (im2col + matmul,
    # numerically equal) turns them into batched matmuls instead. Both are measured when the budget allows.
    variants = [("multi", {})] if args.smoke else [("multi", {}), ("multi_patches", {"conv_impl": "patches"})]
    for name, extra in variants:
        if remaining() < 90 and not args.smoke:
            res[name] = {"skipped": "time budget nearly spent"}
            continue
        num = s["num_exp"]
        s_var = {**s, "model_kw": {**s["model_kw"], **extra}}
        objective, param, config = build("dm", s_var, pool, s["dm"])
        keys = jax.random.split(jax.random.key(3), num)
        states, tx = init_states(keys, objective, param, pool, config)
        multi = make_multi_step(objective, param, tx)
        t0 = time.perf_counter()
        states, _ = block(multi(states, pool, keys))
        compile_multi = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(s["multi_steps"]):
            states, _ = multi(states, pool, keys)
        block(states)
        multi_s = (time.perf_counter() - t0) / s["multi_steps"]
        # the sequential baseline: the single-experiment step of the same objective (the DM section's when equal)
        single = res["dm"] if not extra and "seconds_per_iteration" in res.get("dm", {}) else time_single(
            objective, param, config, pool, s["multi_steps"])
        seq = single["seconds_per_iteration"] * num
        res[name] = {"num_exp": num, "model_kw": s_var["model_kw"], "vmap_seconds_per_iteration": multi_s,
                     "sequential_seconds_per_iteration": seq, "speedup": seq / multi_s,
                     "vmap_first_call_seconds": compile_multi, "steps": s["multi_steps"]}
        print(name, json.dumps(res[name]), flush=True)
    res["total_seconds"] = time.perf_counter() - t_start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"-> {args.out} ({res['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
