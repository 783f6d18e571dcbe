"""The kit's stages: check, dm, mtt, dc, theory (see experiments/gpu/__init__.py and docs/gpu.md).

Full settings follow the papers (docs/methods.md): DM 256 real images per class, up to 20000 iterations; DC/DSA 256
real images per class, the paper's (outer_loop, inner_loop) for the IPC, up to 1000 iterations; MTT CIFAR-10's
per-IPC settings (MTT published none for Fashion-MNIST); evaluation 20 networks, 1000 epochs with DSA (DSA, DM,
MTT) or 300 without (DC). Iterations are "as many as fit": a cell distils in chunks, resuming its own checkpoint
(the same bits as one uninterrupted run), and stops at the paper's count or when its ``--distill-s`` is spent.
The allowances below were sized by arithmetic for one H100, not measured: the first run's JSON says what fitted.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments.gpu.kit import DETERMINISTIC_FLAG, ROOT, finite

FULL = {
    "dataset": "fashion_mnist", "model": "ConvNet", "model_kwargs": {}, "models": 20, "eval_epochs": None,
    "dm": {"ipcs": (1, 10, 50), "options": {"real_per_class": 256}, "cap": 20000, "first": 200, "unit": 100,
           "distill_s": 100.0, "need_s": 60.0},
    "random": {"need_s": 60.0},
    "dc": {"methods": ("dc", "dsa"), "ipcs": (1, 10), "options": {"real_per_class": 256}, "cap": 1000, "first": 5,
           "distill_s": 90.0, "need_s": 60.0},
    "mtt": {"experts": 5, "expert_epochs": 25, "expert_group": 5, "cap": 5000, "first": 100, "unit": 100,
            "distill_s": 120.0, "need_s": 90.0,
            # CIFAR-10's cells (MTT's table; no ZCA here); lr_img 1000 at IPC 10: the table's 1e5 is a known typo
            "cells": {1: {"syn_steps": 50, "expert_epochs": 2, "max_start_epoch": 2, "lr_img": 100.0, "lr_lr": 1e-7},
                      10: {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 20, "lr_img": 1000.0,
                           "lr_lr": 1e-4}}},
    "timing": {"ipc": 10, "dm_steps": 20, "dc_rounds": 10, "mtt_steps": (20, 50, 80),
               "mtt_memory": ("constant", "remat", "full", "tesla"), "mtt_images": 100, "mtt_reps": 2,
               "eval_networks": 20, "eval_epochs": 1000, "multi_exp": 8, "multi_steps": 10},
    "probe": {"dm_iterations": 20, "dc_rounds": 2, "eval_epochs": 20},
    "theory_preset": "gpu", "theory_args": (),
}
SMOKE = {
    "dataset": "digits", "model": "ConvNet", "model_kwargs": {"width": 8, "depth": 1}, "models": 2, "eval_epochs": 2,
    "dm": {"ipcs": (1,), "options": {"real_per_class": 8}, "cap": 4, "first": 2, "unit": 2, "distill_s": 600.0,
           "need_s": 1.0},
    "random": {"need_s": 1.0},
    "dc": {"methods": ("dc", "dsa"), "ipcs": (1,), "options": {"real_per_class": 4}, "cap": 1, "first": 1,
           "distill_s": 600.0, "need_s": 1.0},
    "mtt": {"experts": 1, "expert_epochs": 2, "expert_group": 1, "cap": 1, "first": 1, "unit": 1, "distill_s": 600.0,
            "need_s": 1.0, "max_per_class": 10,
            "cells": {1: {"syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1, "lr_img": 100.0, "lr_lr": 1e-7}}},
    "timing": {"ipc": 2, "dm_steps": 2, "dc_rounds": 2, "mtt_steps": (2, 3), "mtt_memory": ("constant", "full"),
               "mtt_images": 10, "mtt_reps": 1, "eval_networks": 2, "eval_epochs": 2, "multi_exp": 2, "multi_steps": 2},
    "probe": {"dm_iterations": 2, "dc_rounds": 0, "eval_epochs": 1},
    "theory_preset": "smoke", "theory_args": ("--only", "DR", "--index", "0", "--no-report"),
}
PAPER_OUTER = {1: 1, 10: 10, 20: 20, 30: 30, 40: 40, 50: 50}  # DC/DSA (outer_loop) by IPC; one iteration = that many steps


def config(args) -> dict:
    import copy

    s = copy.deepcopy(SMOKE if args.smoke else FULL)
    s["smoke"] = bool(args.smoke)
    if args.models:
        s["models"] = args.models
    for name in ("dm", "dc", "mtt"):
        if args.distill_s is not None:
            s[name]["distill_s"] = args.distill_s
    if args.experts:
        s["mtt"]["experts"] = args.experts
    if args.expert_epochs:
        s["mtt"]["expert_epochs"] = args.expert_epochs
    return s


def settings(args) -> dict:
    s = config(args)
    s["data_dir"] = args.data_dir
    return s


def _run_cells(stage, guard, only, call, cells):
    """cells: [(name, need_s, fn)]; fn() -> record. Skips done cells, stops starting cells the budget cannot hold."""
    for name, need, fn in cells:
        if only is not None and name not in only:
            continue
        if stage.done(name):
            print(f"{name}: done in {stage.cells[name].get('call_started', 'an earlier call')}, kept", flush=True)
            continue
        if not guard.fits(need):
            call["pending"][name] = f"not started: {guard.remaining():.0f} s left of the budget, needs >= {need:.0f} s"
            print(f"{name}: pending ({call['pending'][name]})", flush=True)
            continue
        print(f"{name}: running ({guard.remaining():.0f} s left)", flush=True)
        t0 = time.perf_counter()
        try:
            rec = fn()
            rec.setdefault("status", "done")
        except Exception as e:  # a failed cell is recorded, the others still run
            import traceback

            rec = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        rec["wall_s"] = time.perf_counter() - t0
        rec["call_started"] = call["environment"]["started"]
        rec["device"] = call["environment"]["device_kind"]
        call["ran"].append(name)
        stage.put(name, rec)
        print(f"{name}: {rec['status']} in {rec['wall_s']:.0f} s "
              f"{json.dumps({k: v for k, v in rec.items() if k in ('accuracy_mean', 'iterations', 'error')})}",
              flush=True)


# ------------------------------------------------------------------------------------------------ distillation


def distill_fit(method: str, ipc: int, s: dict, ms: dict, work: Path, guard, data_dir, *, options: dict,
                overrides: dict | None = None, unit: int = 1, eval_reserve: float = 0.0) -> dict:
    """Distil in chunks (each resumes the last one's checkpoint) until the paper's count ``ms['cap']`` or the
    allowance is spent: chunk 1 = ``first`` steps; chunk 2 measures again; later chunks fill what is left, from
    the per-step time and per-call overhead solved from the first two. Returns the summary and the chunks."""
    import jaxdd

    allowance = min(ms["distill_s"], max(0.0, guard.remaining() - eval_reserve))
    chunks, done, spent = [], 0, 0.0
    target = min(ms["cap"], ms["first"])
    summary = None
    while True:
        t0 = time.perf_counter()
        summary = jaxdd.distill_dataset(method, s["dataset"], ipc, out_dir=str(work), seed=0, iterations=target,
                                        model=s["model"], model_kwargs=s["model_kwargs"] or None,
                                        method_options=options, config_overrides=overrides, data_dir=data_dir,
                                        progress=False)
        wall = time.perf_counter() - t0
        chunks.append({"steps": target - done, "seconds": wall})
        done, spent = target, spent + wall
        if done >= ms["cap"]:
            break
        if len(chunks) == 1:
            per, overhead = wall / chunks[0]["steps"], 0.0  # an over-estimate: the overhead is counted per step
        else:
            (n1, w1), (n2, w2) = ((c["steps"], c["seconds"]) for c in chunks[-2:])
            per = (w2 - w1) / (n2 - n1) if n2 != n1 else w2 / n2
            per = per if per > 0 else w2 / n2
            overhead = max(0.0, w2 - per * n2)
        left = allowance - spent - overhead
        n_next = int(left / per) // unit * unit if per > 0 else 0
        if len(chunks) == 1:
            n_next = min(n_next, max(unit, 4 * chunks[0]["steps"] // unit * unit))
        if n_next < unit:
            break
        target = min(ms["cap"], done + n_next)
    fm = summary.get("final_metrics", {})
    return {"iterations": done, "chunks": chunks, "seconds_distill": spent, "allowance_s": allowance,
            "final_metrics": fm, "loss_finite": finite(fm.get("loss")), "options": options,
            "overrides": overrides or {}}


def evaluate_cell(work: Path, s: dict, data_dir) -> dict:
    import jaxdd

    t0 = time.perf_counter()
    res = jaxdd.evaluate_run(str(work), num_models=s["models"], epochs=s["eval_epochs"], augment=True, seed=0,
                             data_dir=data_dir, save=True)
    syn = res["synthetic"]
    return {"accuracy_mean": syn["mean"], "accuracy_std": syn["std"], "accuracies": syn["accuracies"],
            "eval": {"networks": s["models"], "epochs": syn["protocol"]["epochs"],
                     "augment": syn["protocol"]["augment"], "lr": syn["protocol"]["lr"]},
            "seconds_eval": time.perf_counter() - t0}


def _save_images(out: Path, name: str, work: Path) -> None:
    import numpy as np

    z = np.load(work / "synthetic.npz")
    np.savez_compressed(out / f"{name}_synthetic.npz", **{k: z[k] for k in z.files})


def _distill_cell(method, ipc, s, ms, work, guard, args, stage, *, options, overrides=None, unit=1):
    rec = {"method": method, "ipc": ipc, "dataset": s["dataset"], "model": s["model"],
           "model_kwargs": s["model_kwargs"], "cap": ms["cap"]}
    rec.update(distill_fit(method, ipc, s, ms, work, guard, args.data_dir, options=options, overrides=overrides,
                           unit=unit, eval_reserve=ms["need_s"]))
    rec.update(evaluate_cell(work, s, args.data_dir))
    _save_images(stage.out, f"{method}_ipc{ipc}", work)
    if not rec["loss_finite"]:
        rec["status"] = "error"
        rec["error"] = f"non-finite loss {rec['final_metrics'].get('loss')}"
    return rec


def random_cell(ipc: int, s: dict, data_dir, augment) -> dict:
    """A random real subset of ``ipc`` images per class, one per network, under the evaluation protocol."""
    import jax

    from jaxdd.data import apply_preprocess, fit_preprocess, load
    from jaxdd.evaluate import evaluate_random_subset
    from jaxdd.train import default_protocol

    t0 = time.perf_counter()
    train, test = load(s["dataset"], "train", data_dir), load(s["dataset"], "test", data_dir)
    pre = fit_preprocess(train.images, train.mean, train.std)
    protocol = default_protocol(augment, epochs=s["eval_epochs"])
    res = evaluate_random_subset(jax.random.fold_in(jax.random.key(0), 1), apply_preprocess(pre, train.images),
                                 train.labels, apply_preprocess(pre, test.images), test.labels,
                                 num_classes=train.num_classes, ipc=ipc, num_models=s["models"], model=s["model"],
                                 protocol=protocol, model_kwargs=s["model_kwargs"] or None)
    return {"method": "random", "ipc": ipc, "dataset": s["dataset"], "accuracy_mean": res.mean,
            "accuracy_std": res.std, "accuracies": [float(a) for a in res.accuracies],
            "eval": {"networks": s["models"], "epochs": protocol.epochs, "augment": protocol.augment},
            "seconds_eval": time.perf_counter() - t0}


def stage_dm(args, rest, stage, guard, work, only, call):
    from jaxdd.augment import DSA_DEFAULT

    s = config(args)
    ms = s["dm"]
    cells = []
    for ipc in ms["ipcs"]:
        def dm(ipc=ipc):
            return _distill_cell("dm", ipc, s, ms, _fresh(work / f"dm_ipc{ipc}"), guard, args, stage,
                                 options=ms["options"], unit=ms["unit"])

        cells.append((f"dm_ipc{ipc}", ms["need_s"] + min(ms["distill_s"], 30.0), dm))
    for ipc in ms["ipcs"]:
        cells.append((f"random_ipc{ipc}", s["random"]["need_s"],
                      lambda ipc=ipc: random_cell(ipc, s, args.data_dir, DSA_DEFAULT)))
    _run_cells(stage, guard, only, call, cells)


def stage_dc(args, rest, stage, guard, work, only, call):
    s = config(args)
    ms = s["dc"]
    cells = []
    for method in ms["methods"]:
        for ipc in ms["ipcs"]:
            outer = PAPER_OUTER.get(ipc, 1)
            options = dict(ms["options"])
            if args.smoke:
                options.update({"outer_loop": 2, "inner_loop": 1})
                outer = 2
            m = {**ms, "cap": ms["cap"] * outer, "first": ms["first"] * outer}

            def dc(method=method, ipc=ipc, options=options, m=m, outer=outer):
                rec = _distill_cell(method, ipc, s, m, _fresh(work / f"{method}_ipc{ipc}"), guard, args, stage,
                                    options=options, unit=outer)
                rec["outer_loop"] = outer
                rec["paper_iterations"] = rec.get("iterations", 0) / outer
                return rec

            cells.append((f"{method}_ipc{ipc}", ms["need_s"] + min(ms["distill_s"], 30.0), dc))
    _run_cells(stage, guard, only, call, cells)


def stage_mtt(args, rest, stage, guard, work, only, call):
    from jaxdd.api import make_experts

    s = config(args)
    ms = s["mtt"]
    experts_dir = work / f"experts_{ms['experts']}x{ms['expert_epochs']}"
    todo = [ipc for ipc in ms["cells"] if (only is None or f"mtt_ipc{ipc}" in only) and not stage.done(f"mtt_ipc{ipc}")]
    if todo:
        t0 = time.perf_counter()
        buf = make_experts(s["dataset"], str(experts_dir), num_experts=ms["experts"], epochs=ms["expert_epochs"],
                           seed=0, model=s["model"], model_kwargs=s["model_kwargs"] or None,
                           group=ms["expert_group"], max_per_class=ms.get("max_per_class"), data_dir=args.data_dir,
                           progress=False)
        call["experts"] = {"num_experts": buf.num_experts, "epochs": buf.epochs, "seconds": time.perf_counter() - t0,
                           "dir": str(experts_dir), "note": "rebuilt in every call that distils (same seed, same "
                           "experts): they are too large to bring back from the device"}
    cells = []
    for ipc, c in ms["cells"].items():
        options = {"experts": str(experts_dir), "syn_steps": c["syn_steps"], "expert_epochs": c["expert_epochs"],
                   "max_start_epoch": c["max_start_epoch"]}
        overrides = {"lr_img": c["lr_img"], "lrs": (("extras/syn_lr", c["lr_lr"]),), "checkpoint_every": 100}

        def mtt(ipc=ipc, options=options, overrides=overrides):
            rec = _distill_cell("mtt", ipc, s, ms, _fresh(work / f"mtt_ipc{ipc}"), guard, args, stage,
                                options=options, overrides=overrides, unit=ms["unit"])
            rec["experts"] = call.get("experts")
            return rec

        cells.append((f"mtt_ipc{ipc}", ms["need_s"] + min(ms["distill_s"], 30.0), mtt))
    _run_cells(stage, guard, only, call, cells)


def _fresh(path: Path) -> Path:
    """A cell's work directory, emptied: a cell runs start to end in one call (its record is what persists)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------------------------------------------------- theory


def stage_theory(args, rest, stage, guard, work, only, call):
    """``python -m theory sweep --preset gpu`` with the arguments after ``--`` (the theory module defines the
    split of the preset into parts: --only DR,L,ABL / --index 0,1; experiments/theory_gpu.py --dry-run lists the calls). One cell per distinct argument list."""
    s = config(args)
    extra = list(rest) or list(s["theory_args"])
    name = "sweep" + ("_" + "_".join(a.strip("-").replace(",", "+") for a in extra) if extra else "")

    def run():
        out = _fresh(work / name)
        cmd = [sys.executable, "-m", "theory", "sweep", "--preset", s["theory_preset"], "--out", str(out), *extra]
        t0 = time.perf_counter()
        timeout = max(10.0, guard.remaining())
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-4000:]
        except subprocess.TimeoutExpired as e:
            rc, tail = "timeout", f"stopped after {timeout:.0f} s (the kit's budget): {str(e.stdout or '')[-2000:]}"
        rec = {"command": " ".join(["python3", "-m", "theory", "sweep", "--preset", s["theory_preset"], *extra]),
               "rc": rc, "seconds": time.perf_counter() - t0, "output_tail": tail}
        for f in ("results.json", "summary.md"):
            if (out / f).is_file():
                (stage.out / f"{name}_{f}").write_bytes((out / f).read_bytes())
                rec.setdefault("files", []).append(f"{name}_{f}")
        if rc != 0:
            rec["status"] = "error"
        return rec

    _run_cells(stage, guard, only, call, [(name, 5.0, run)])


# ----------------------------------------------------------------------------------------------------------- check


def stage_check(args, rest, stage, guard, work, only, call):
    s = config(args)
    t = s["timing"]
    cells = [("tests", 5.0, lambda: tests_cell(args)),
             ("determinism", 30.0 if not args.smoke else 1.0, lambda: determinism_cell(args, work)),
             ("timing_dm", 20.0, lambda: method_timing("dm", s, args.data_dir)),
             ("timing_dsa", 40.0, lambda: method_timing("dsa", s, args.data_dir)),
             ("timing_dc", 40.0, lambda: method_timing("dc", s, args.data_dir))]
    for steps in t["mtt_steps"]:
        for memory in t["mtt_memory"]:
            cells.append((f"timing_mtt_{memory}_{steps}", 20.0 if not args.smoke else 1.0,
                          lambda steps=steps, memory=memory: mtt_timing(steps, memory, s)))
    cells += [("timing_eval", 30.0, lambda: eval_timing(s, args.data_dir, guard)),
              ("timing_multi", 30.0 if not args.smoke else 1.0, lambda: multi_timing(s, args.data_dir)),
              ("theory_first_point", 30.0 if not args.smoke else 1.0, lambda: theory_point(s, work, guard))]
    _run_cells(stage, guard, only, call, cells)


def _pytest(argv: list[str], timeout: float) -> dict:
    """pytest in a subprocess. Float32 matmuls and convolutions at full precision: on GPUs JAX's default lets
    cuBLAS/cuDNN use TF32 (10-bit mantissa), and the tests compare implementations to float32 rounding."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv]
    env = {"JAX_DEFAULT_MATMUL_PRECISION": "highest", **os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return {"command": " ".join(["JAX_DEFAULT_MATMUL_PRECISION=" + env["JAX_DEFAULT_MATMUL_PRECISION"], "python3",
                                 "-m", "pytest", "-q", *argv]), "rc": proc.returncode,
            "summary": lines[-1] if lines else "", "output_tail": (proc.stdout + proc.stderr)[-3000:]}


ACCELERATOR_TESTS = ["-m", "accelerator", "tests/test_accelerator.py", "tests/test_models.py", "tests/test_train.py",
                     "tests/test_sharding.py"]


def tests_cell(args) -> dict:
    """The accelerator-branch tests on this backend (smoke: collected only; CI runs them anyway)."""
    rec = _pytest((["--collect-only"] if args.smoke else []) + ACCELERATOR_TESTS, timeout=400)
    if rec["rc"] != 0:
        rec["status"] = "error"
    return rec


def determinism_cell(args, work: Path) -> dict:
    """Two identical runs (fresh processes) with XLA's defaults, and two with deterministic ops (not on CPU smoke)."""
    rec = {}
    variants = [("default", False)] + ([] if args.smoke else [("deterministic_ops", True)])
    for name, det in variants:
        outs = []
        for i in range(2):
            path = work / f"probe_{name}_{i}.json"
            path.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "experiments.gpu", "_probe", "--out", str(path)]
            cmd += ["--smoke"] if args.smoke else []
            cmd += ["--data-dir", args.data_dir] if args.data_dir else []
            cmd += ["--deterministic"] if det else []
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode:
                return {"status": "error", "error": f"probe {name} {i} failed", "output_tail": proc.stderr[-3000:]}
            outs.append(json.loads(path.read_text()))
        a, b = outs
        rec[name] = {"identical": a["hashes"] == b["hashes"],
                     "parts_identical": {k: a["hashes"][k] == b["hashes"][k] for k in a["hashes"]},
                     "max_abs_diff_images": max(abs(x - y) for x, y in zip(a["dm_images_head"], b["dm_images_head"])),
                     "accuracies": [a["accuracies"], b["accuracies"]], "xla_flags": a["xla_flags"],
                     "seconds": [a["seconds"], b["seconds"]]}
    return rec


def probe_main(args) -> int:
    """One run of the determinism probe (a fresh process): DM iterations, DC rounds, an evaluation; hashes out."""
    import jax
    import numpy as np

    import jaxdd

    s = config(args)
    p = s["probe"]
    t0 = time.perf_counter()
    hashes, out = {}, {}
    with _tmpdir() as tmp:
        for method, it, opts in (("dm", p["dm_iterations"], s["dm"]["options"]),
                                 ("dc", p["dc_rounds"], {**s["dc"]["options"], "outer_loop": 2, "inner_loop": 1})):
            if it == 0:
                continue
            res = jaxdd.distill_dataset(method, s["dataset"], s["timing"]["ipc"], out_dir=None, seed=0,
                                        iterations=it, model=s["model"], model_kwargs=s["model_kwargs"] or None,
                                        method_options=opts, data_dir=args.data_dir, progress=False)
            img = np.asarray(res["images"], np.float32)
            hashes[method] = hashlib.sha256(img.tobytes()).hexdigest()
            out[f"{method}_images_head"] = [float(v) for v in img.ravel()[:64]]
            if method == "dm":
                x, y = img, np.asarray(res["labels"])
        from jaxdd.data import apply_preprocess, fit_preprocess, load
        from jaxdd.evaluate import evaluate_synthetic
        from jaxdd.train import default_protocol

        test = load(s["dataset"], "test", args.data_dir)
        pre = fit_preprocess(test.images[:1], test.mean, test.std)
        ev = evaluate_synthetic(jax.random.key(0), x, y, apply_preprocess(pre, test.images), test.labels,
                                num_classes=test.num_classes, model=s["model"], num_models=2,
                                protocol=default_protocol(jaxdd.DSA_DEFAULT, epochs=p["eval_epochs"]),
                                model_kwargs=s["model_kwargs"] or None)
        hashes["eval"] = hashlib.sha256(np.asarray(ev.accuracies, np.float64).tobytes()).hexdigest()
        del tmp
    Path(args.out).write_text(json.dumps({"hashes": hashes, "accuracies": [float(a) for a in ev.accuracies],
                                          "dm_images_head": out["dm_images_head"],
                                          "xla_flags": os.environ.get("XLA_FLAGS", ""),
                                          "seconds": time.perf_counter() - t0}))
    return 0


class _tmpdir:
    def __enter__(self):
        import tempfile

        self.d = tempfile.TemporaryDirectory(prefix="jaxdd-probe-")
        return self.d.name

    def __exit__(self, *exc):
        self.d.cleanup()


def _pool_and_context(method: str, s: dict, data_dir, options: dict):
    import jax

    from jaxdd.distill import make_pool
    from jaxdd.methods import MethodContext, get_method, resolve_options
    from jaxdd.api import prepare_data

    train, _, pre, x_train, _ = prepare_data(s["dataset"], data_dir=data_dir, seed=0)
    pool = make_pool(x_train, train.labels, train.num_classes)
    spec = get_method(method)
    ctx = MethodContext(train.num_classes, train.image_shape, s["timing"]["ipc"], s["model"], dict(s["model_kwargs"]),
                        resolve_options(spec, options), s["dataset"], pool, pre, jax.random.key(0), data_dir)
    return spec, ctx, pool, train


def method_timing(method: str, s: dict, data_dir) -> dict:
    """Seconds per iteration at the paper's settings (IPC 10): DM 256 real/class; DC/DSA 256 real/class and (10, 50)
    loops, where one paper iteration = 10 jaxdd steps (rounds). Ten consecutive rounds are timed: whatever round
    they start at, they hold 9 rounds with the inner training and one without, i.e. one paper iteration."""
    import jax

    from jaxdd.distill import DistillConfig, distill_step, init_state
    from jaxdd.models import resolve_conv_impl
    from jaxdd.synthetic import pixels

    t = s["timing"]
    options = dict(s["dm" if method == "dm" else "dc"]["options"])
    if s["smoke"]:
        options.update({} if method == "dm" else {"outer_loop": 2, "inner_loop": 1})
    spec, ctx, pool, _ = _pool_and_context(method, s, data_dir, options)
    objective = spec.build(ctx)
    param = pixels(t["ipc"], spec.defaults.get("init", "real"))
    config = DistillConfig(iterations=1, progress=False, lr_img=spec.defaults["lr_img"])
    key = jax.random.key(1)
    state, tx = init_state(key, objective, param, pool, config)
    step = jax.jit(lambda st, k: distill_step(objective, param, tx, st, pool, k))
    t0 = time.perf_counter()
    state, m = jax.block_until_ready(step(state, key))
    first = time.perf_counter() - t0
    n = t["dm_steps"] if method == "dm" else t["dc_rounds"]
    t0 = time.perf_counter()
    losses = []
    for i in range(n):
        state, m = step(state, jax.random.fold_in(key, i + 1))
        losses.append(m["loss"])
    jax.block_until_ready(state)
    sec = (time.perf_counter() - t0) / n
    losses = [float(v) for v in losses]
    rec = {"method": method, "ipc": t["ipc"], "options": ctx.options, "steps_timed": n,
           "seconds_per_step": sec, "first_call_seconds": first, "losses": losses,
           "loss_finite": all(finite(v) for v in losses),
           "conv_impl": resolve_conv_impl(ctx.options.get("conv_impl", "auto"))}
    if method != "dm":
        rec["seconds_per_paper_iteration"] = sec * n
    else:
        rec["seconds_per_paper_iteration"] = sec
    if not rec["loss_finite"]:
        rec["status"] = "error"
        rec["error"] = f"non-finite loss in {losses}"
    return rec


def _device_peak_mib():
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def mtt_timing(steps: int, memory: str, s: dict) -> dict:
    """One MTT meta-gradient (value and gradient of the normalised trajectory distance with respect to the images
    and the learned lr) at ``steps`` unrolled student steps with one memory strategy: seconds, XLA's buffer
    assignment (what the program needs on the device) and the device's peak memory so far (cumulative in the
    process: the cells run in order, so a cell's peak is at least the earlier ones')."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.flatten_util import ravel_pytree

    from jaxdd import augment as aug
    from jaxdd.models import get_model, init_model, with_conv_impl
    from jaxdd.objectives import trajectory as tr

    t = s["timing"]
    k, n = 10, t["mtt_images"]
    shape = (28, 28, 1) if s["dataset"] == "fashion_mnist" else (8, 8, 1)
    module = with_conv_impl(get_model(s["model"], k, **s["model_kwargs"]), "auto")
    variables = init_model(module, jax.random.key(0), shape)
    theta0, unravel = ravel_pytree(variables["params"])
    target = theta0 + 0.01 * jax.random.normal(jax.random.key(1), theta0.shape)
    step_loss = tr.make_step_loss(module, {}, unravel, aug.DSA_DEFAULT)
    x = jax.random.normal(jax.random.key(2), (n, *shape))
    y = jnp.repeat(jnp.arange(k), n // k)

    def meta_loss(x, lr, key):
        k_idx, k_aug = jax.random.split(key)
        idx = tr.minibatch_indices(k_idx, n, steps, n)
        kraw = jax.random.key_data(jax.random.split(k_aug, steps))
        th = tr.unroll_student(step_loss, theta0, {"x": x}, {"y": y}, (idx, kraw), lr, memory=memory, remat_every=1)
        return tr.trajectory_distance(th, theta0, target)

    fn = jax.jit(jax.value_and_grad(meta_loss, argnums=(0, 1)))
    lr, key = jnp.float32(0.01), jax.random.key(3)
    t0 = time.perf_counter()
    compiled = fn.lower(x, lr, key).compile()
    compile_s = time.perf_counter() - t0
    ma = compiled.memory_analysis()
    times, val = [], None
    for r in range(t["mtt_reps"]):
        t0 = time.perf_counter()
        val, (gx, _) = compiled(x, lr, jax.random.fold_in(key, r))
        jax.block_until_ready(gx)
        times.append(time.perf_counter() - t0)
    rec = {"memory": memory, "syn_steps": steps, "images": n, "batch_syn": n, "compile_s": compile_s,
           "seconds_per_meta_step": float(np.median(times)), "times": times, "loss": float(val),
           "loss_finite": finite(val)}
    if ma is not None:
        rec["xla_mib"] = (ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes) / 2**20
    rec["device_peak_mib_so_far"] = _device_peak_mib()
    if not rec["loss_finite"]:
        rec["status"] = "error"
        rec["error"] = f"non-finite loss {val}"
    return rec


def eval_timing(s: dict, data_dir, guard) -> dict:
    """K networks x E epochs with DSA on an IPC-10 real subset: all K in one vmapped program against one at a
    time (both compiled first; one at a time measured on as many networks as the budget allows, per network)."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from jaxdd.augment import DSA_DEFAULT
    from jaxdd.data import apply_preprocess, fit_preprocess, load
    from jaxdd.evaluate import eval_module, random_subset
    from jaxdd.train import default_protocol, train_many

    t = s["timing"]
    train = load(s["dataset"], "train", data_dir)
    pre = fit_preprocess(train.images, train.mean, train.std)
    x, y = random_subset(jax.random.key(0), apply_preprocess(pre, train.images), train.labels, train.num_classes,
                         t["ipc"])
    module = eval_module(s["model"], train.num_classes, s["model_kwargs"] or None)
    k = t["eval_networks"]
    keys = jax.random.split(jax.random.key(1), k)
    proto = default_protocol(DSA_DEFAULT, epochs=t["eval_epochs"])
    warm = dataclasses.replace(proto, epochs=0)
    jax.block_until_ready(train_many(keys, module, x, y, warm, group=k))
    jax.block_until_ready(train_many(keys[:1], module, x, y, warm, group=1))
    t0 = time.perf_counter()
    jax.block_until_ready(train_many(keys, module, x, y, proto, group=k))
    vmapped = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(train_many(keys[:1], module, x, y, proto, group=1))
    one = time.perf_counter() - t0
    m = 1
    # the rest one at a time within 60 s (and the stage's budget): the per-network time is what is compared
    more = min(k - 1, int(min(60.0, max(0.0, guard.remaining() - 60.0)) / max(one, 1e-3)))
    if more > 0:
        t0 = time.perf_counter()
        jax.block_until_ready(train_many(keys[1:1 + more], module, x, y, proto, group=1))
        one = (one + time.perf_counter() - t0) / (1 + more)
        m += more
    return {"networks": k, "epochs": proto.epochs, "set_size": int(x.shape[0]), "augment": proto.augment,
            "vmapped_seconds": vmapped, "one_at_a_time_seconds_per_network": one, "one_at_a_time_measured": m,
            "one_at_a_time_seconds_all": one * k, "speedup": one * k / vmapped, "conv_impl": module.conv_impl
            if hasattr(module, "conv_impl") else None}


def multi_timing(s: dict, data_dir) -> dict:
    """``jaxdd distill-many``'s program: E DM experiments (IPC 10, 256 real/class) as one vmapped step against E
    single-experiment steps, seconds per iteration (compiled first)."""
    import jax

    from jaxdd.distill import DistillConfig, distill_step, init_state
    from jaxdd.distill import init_states, make_multi_step
    from jaxdd.synthetic import pixels

    t = s["timing"]
    spec, ctx, pool, _ = _pool_and_context("dm", s, data_dir, dict(s["dm"]["options"]))
    objective = spec.build(ctx)
    param = pixels(t["ipc"], "real")
    config = DistillConfig(iterations=1, progress=False, lr_img=spec.defaults["lr_img"])
    e, n = t["multi_exp"], t["multi_steps"]
    keys = jax.random.split(jax.random.key(5), e)
    states, tx = init_states(keys, objective, param, pool, config)
    multi = make_multi_step(objective, param, tx)
    states, m = jax.block_until_ready(multi(states, pool, keys))
    t0 = time.perf_counter()
    losses = []
    for i in range(n):
        states, m = multi(states, pool, jax.vmap(lambda k: jax.random.fold_in(k, i + 1))(keys))
        losses.append(m["loss"])
    jax.block_until_ready(states)
    vmapped = (time.perf_counter() - t0) / n
    state, tx1 = init_state(keys[0], objective, param, pool, config)
    step = jax.jit(lambda st, k: distill_step(objective, param, tx1, st, pool, k))
    state, _ = jax.block_until_ready(step(state, keys[0]))
    t0 = time.perf_counter()
    for i in range(n):
        state, _ = step(state, jax.random.fold_in(keys[0], i + 1))
    jax.block_until_ready(state)
    single = (time.perf_counter() - t0) / n
    flat = [float(v) for row in losses for v in jax.device_get(row)]
    rec = {"method": "dm", "ipc": t["ipc"], "experiments": e, "steps_timed": n,
           "vmapped_seconds_per_iteration": vmapped, "single_seconds_per_iteration": single,
           "sequential_seconds_per_iteration": single * e, "speedup": single * e / vmapped,
           "loss_finite": all(finite(v) for v in flat)}
    if not rec["loss_finite"]:
        rec["status"], rec["error"] = "error", "non-finite loss"
    return rec


def theory_point(s: dict, work: Path, guard) -> dict:
    out = _fresh(work / "theory_first_point")
    cmd = [sys.executable, "-m", "theory", "sweep", "--preset", s["theory_preset"], "--out", str(out), "--only", "DR",
           "--index", "0", "--no-report"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(10.0, guard.remaining()),
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    rec = {"command": f"python3 -m theory sweep --preset {s['theory_preset']} --out DIR --only DR --index 0",
           "rc": proc.returncode, "seconds": time.perf_counter() - t0,
           "output_tail": (proc.stdout + proc.stderr)[-2000:]}
    if proc.returncode:
        rec["status"] = "error"
    return rec
