"""Sweeps S1-S4 of THEORY.md section 9: minimal distilled memory against d, r and L, and the baselines.

``run_point`` measures one grid point for S seeds (vmapped): stage-1 GM, stage-2 PM through ridge (free / span /
line), end-to-end PM and the real-subset baseline, each with its own minimal-size search. ``run_sweep`` runs a preset
and writes results.json; ``theory.report`` turns it into plots and summary.md.

Thresholds (per seed; THEORY.md section 8, made explicit here):
  eps       = max(2 MSE_full, 0.02)   stage 1: feature quality at a held-out init ("transfer") <= eps;
  eps_final = max(3 MSE_full, 0.03)   any final model (end-to-end set, real subset, two-stage set) <= eps_final;
  eps2      = max(1.5 fq(D1_sel), eps_final) stage 2 on the selected stage-1 set (its own ceiling, relaxed only when
                                      that set's features are themselves worse than eps_final / 1.5);
  reproduce: E_x (f_D - f_ref)^2 <= 0.01, f_ref = the pool-fitted readout on the same W~1 (S3);
  param:     ||a_D - a_ref|| / ||a_ref|| <= 0.1 (S3).
MSE_full: the same pipeline at the same theta_0 on the full data (first layer from n_real points, readout from the
n_pool pool). M* is the first grid size whose monotone envelope is below the threshold, NaN when not reached.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory import distill as dd
from theory import metrics as mt
from theory import pipeline as pl
from theory import search as sr


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes of a sweep. base: defaults of every grid point. S1: d grid at (s1_r, s1_L); S2: r grid at (s2_d, s2_L,
    s2_L_big for r >= 6); S3: L grid at (s3_d, s3_r); S4: (kind, d, r) control points at s4_L."""

    seeds: int
    base: pl.Config
    s1_d: tuple = (16, 32, 64, 128)
    s1_r: int = 2
    s1_L: int = 256
    s2_r: tuple = (1, 2, 3, 4, 6, 8)
    s2_d: int = 32
    s2_L: int = 256
    s2_L_big: int = 512
    s3_L: tuple = (64, 128, 256, 512, 1024)
    s3_d: int = 32
    s3_r: int = 2
    s4: tuple = (("he3", 32, 1), ("none", 8, 8), ("relu_sum", 32, 2), ("cubic", 32, 2))
    s4_L: int = 256
    n_real_min: int = 65536
    n_real_per: int = 8          # n_real = clip(n_real_per d^2 r, n_real_min, n_real_max)
    n_real_max: int = 262144
    stage2_cap_min: int = 32
    s3_cap: int = 256            # stage-2 grid cap for the reproduce criteria in S3
    subset_max: int = 262144     # real-subset bisection range [16, subset_max]
    e2e_in: tuple = ("S1",)      # sweeps that run end-to-end PM
    s3_kinds: tuple = ("free", "span", "line")
    s3_criteria: tuple = ("generalise", "reproduce", "param")
    e2e_cap: int = 24
    subset_steps: int = 8


PRESETS = {
    "smoke": Preset(
        seeds=2,
        base=pl.Config(L=32, n_pool=2048, n_test=2048, K=2, gm_steps=150, pm_steps=150, e2e_steps=60,
                       e2e_batch=128, chunk=2048),
        s1_d=(8, 16), s1_r=1, s1_L=32, s2_r=(1, 2), s2_d=16, s2_L=32, s2_L_big=32, s3_L=(16, 32), s3_d=16,
        s3_r=1, s4=(("he3", 16, 1),), s4_L=32, n_real_min=8192, n_real_max=8192, stage2_cap_min=8, s3_cap=16,
        subset_max=4096, e2e_in=("S1",), s3_kinds=("free", "line"), e2e_cap=16, subset_steps=5),
    # cpu: sized for one process on ONE core of this 2-core machine (taskset -c 1, single-threaded XLA) in under
    # 30 minutes, S1-S4 together. Compiles dominate at these sizes (about 5-7 s per jitted runner and point), so
    # every candidate bucket is one vmapped call over seeds x sizes, and a configuration shared by two sweeps
    # (S1 d = 32 = S2 r = 2; S1 d = 16 = S3 L = 256) is measured once with the union of their stages and criteria.
    # S3 runs at d = 16 (r^2 d = 64, so L = 256, 512 are in the L-dominated regime of r^2 d + L; L = 1024 at
    # d = 32 spent over 3 minutes in stage-1 evaluation alone), with the free and span stage-2 sets under the
    # generalise and reproduce criteria: the "param" criterion and the "line" set were censored on every point of
    # the earlier runs and doubled the cost (they stay in the gpu preset).
    "cpu": Preset(
        seeds=3,
        base=pl.Config(n_pool=8192, n_test=4096, K=4, gm_steps=500, pm_steps=800, e2e_steps=500,
                       e2e_batch=256, chunk=8192),
        s1_d=(16, 32, 64, 128), s2_r=(1, 2, 3, 4, 6), s2_L_big=256, s3_L=(32, 64, 128, 256, 512), s3_d=16,
        s4=(("he3", 32, 1), ("relu_sum", 32, 2)),
        n_real_max=65536, s3_cap=64, subset_max=65536, s3_kinds=("free", "span"),
        s3_criteria=("generalise", "reproduce"), subset_steps=7, e2e_in=()),
    "gpu": Preset(
        seeds=5,
        base=pl.Config(n_pool=65536, n_test=20000, K=16, gm_steps=1500, pm_steps=2000, e2e_steps=1500,
                       e2e_batch=2048, chunk=16384),
        s1_d=(64, 128, 256, 512), s1_L=256, s2_r=(1, 2, 4, 6, 8, 12), s2_d=128, s2_L=1024, s2_L_big=1024,
        s3_L=(256, 1024, 4096, 8192), s3_d=64, s4=(("he3", 64, 1), ("none", 16, 16), ("relu_sum", 64, 2),
                                                     ("cubic", 64, 2)),
        s4_L=1024, n_real_per=4, n_real_max=1 << 22, s3_cap=2048, subset_max=1 << 21, e2e_in=("S1", "S2")),
}


def _n_real(pre: Preset, d, r):
    return int(min(max(pre.n_real_per * d * d * r, pre.n_real_min), pre.n_real_max))


def _seed_keys(key, n):
    return jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(n))


def _tolist(x):
    return np.asarray(x, dtype=float).round(6).tolist()


def _pad_set(D: dd.DistilledSet, pad: int) -> dd.DistilledSet:
    extra = pad - D.x.shape[0]
    return dd.DistilledSet(jnp.pad(D.x, ((0, extra), (0, 0))), jnp.pad(D.y, (0, extra)), jnp.pad(D.mask, (0, extra)))


def _bisect_subset(p1, key, cfg, eps, n_lo, n_hi, steps=9):
    """Smallest n in [n_lo, n_hi] (geometric bisection) whose real-subset model has test MSE <= eps; NaN if n_hi
    fails. Returns (n*, list of (n, mse) evaluated)."""
    tried = []
    m_hi = pl.real_subset_mse(p1, key, n_hi, cfg.lambda2)
    tried.append((n_hi, m_hi))
    if not m_hi <= eps:
        return float("nan"), tried
    lo, hi = math.log(n_lo), math.log(n_hi)
    for _ in range(steps):
        mid = int(round(math.exp(0.5 * (lo + hi))))
        m = pl.real_subset_mse(p1, key, mid, cfg.lambda2)
        tried.append((mid, m))
        if m <= eps:
            hi = math.log(mid)
        else:
            lo = math.log(mid)
    return float(int(round(math.exp(hi)))), tried


def run_point(cfg: pl.Config, key, pre: Preset, *, stage2_kinds=("free",), criteria2=("generalise",),
              s1_cap=None, s2_cap=None, e2e=False, subset=True, log=print) -> dict:
    """Measure one grid point for pre.seeds seeds. Returns a JSON-able record (per-seed values, curves, M*)."""
    t0 = time.time()
    S = pre.seeds
    keys = _seed_keys(key, S)
    probs = pl.prepare_many(keys, cfg)
    ref = pl.references(probs, cfg)
    mse_full = np.asarray(ref.mse_full, float)
    eps = np.maximum(2 * mse_full, 0.02)
    eps_final = np.maximum(3 * mse_full, 0.03)
    rec = dict(config=dataclasses.asdict(cfg), seeds=S,
               ref=dict(mse_full=_tolist(mse_full), fq_full_fresh=_tolist(ref.fq_full_fresh),
                        mse_rf=_tolist(ref.mse_rf), mse_lowrank=_tolist(ref.mse_lowrank)),
               eps=_tolist(eps), eps_final=_tolist(eps_final),
               memory_refs=dict(model=mt.memory_model(cfg.d, cfg.L),
                                model_lowrank=mt.memory_model_lowrank(cfg.d, cfg.L, cfg.r),
                                claim=mt.memory_claim(cfg.d, cfg.r, cfg.L), full_data=cfg.n_real * (cfg.d + 1)))
    log(f"  point d={cfg.d} r={cfg.r} L={cfg.L} kind={cfg.kind}: MSE_full med {np.median(mse_full):.4f}, "
        f"RF {np.median(np.asarray(ref.mse_rf)):.3f}")

    # ---- stage 1
    cap1 = s1_cap or (4 * cfg.r**2 + 8)
    grid1 = sr.default_grid(cap1)
    res1 = sr.search(lambda sz, pad: pl.run_stage1(probs, keys, jnp.asarray(sz), cfg, pad), grid1,
                     [("fq_fresh", eps)], log=log)
    idx1 = sr.first_hit(res1.metrics["fq_fresh"], eps)
    M1 = sr.m_star(res1, "fq_fresh", eps)
    sel = np.where(idx1 >= 0, idx1, len(res1.sizes) - 1)
    pick = lambda m: [float(res1.metrics[m][s, sel[s]]) for s in range(S)]
    rec["stage1"] = dict(sizes=res1.sizes, curves={k: _tolist(v) for k, v in res1.metrics.items()},
                         M_star=_tolist(M1), mem=_tolist([mt.memory_points(m, cfg.d) if m == m else np.nan
                                                          for m in M1]),
                         grid_cap=cap1, at_sel={m: pick(m) for m in ("x_in_span", "offsub", "cos2", "fq_theta0",
                                                                      "fq_fresh")},
                         M_used=[float(res1.sizes[i]) for i in sel])
    log(f"   [{time.time() - t0:.0f} s] stage1 M1* {M1.tolist()} x_in_span {np.round(pick('x_in_span'), 3).tolist()}")

    # ---- stage 2 on the selected stage-1 sets
    if stage2_kinds:
        items = sr.select_aux(res1, idx1, lambda aux, s, j, pad: (jax.tree.map(lambda a: a[s, j], aux), pad))
        P1 = max(p for _, p in items)
        D1 = jax.tree.map(lambda *a: jnp.stack(a), *[_pad_set(D, P1) for D, _ in items])
        s2in = pl.stage2_inputs(probs, D1, cfg, ref)
        fq_sel = np.asarray(pick("fq_theta0"))
        eps2 = np.maximum(1.5 * fq_sel, eps_final)
        rec["eps2"] = _tolist(eps2)
        crit_all = dict(generalise=("test_mse", eps2), reproduce=("agree_ref", np.full(S, 0.01)),
                        param=("param_rel", np.full(S, 0.1)))
        cap2 = s2_cap or max(4 * cfg.r**2 + 8, pre.stage2_cap_min)
        rec["stage2"] = {}
        M1_used = np.asarray(rec["stage1"]["M_used"])
        mem1 = np.asarray([mt.memory_points(m, cfg.d) for m in M1_used], float)
        for kind in stage2_kinds:
            crits = [crit_all[c] for c in criteria2]
            res2 = sr.search(lambda sz, pad: (None, pl.run_stage2(probs, s2in, keys, jnp.asarray(sz), kind, cfg,
                                                                  pad)),
                             sr.default_grid(cap2), crits, log=log)
            out = dict(sizes=res2.sizes, curves={k: _tolist(v) for k, v in res2.metrics.items()}, grid_cap=cap2)
            for c in criteria2:
                name, e = crit_all[c]
                M2 = sr.m_star(res2, name, e)
                mem2 = np.asarray([mt.memory_stage2(kind, m, cfg.d, m1) if m == m else np.nan
                                   for m, m1 in zip(M2, M1_used)], float)
                out[c] = dict(M_star=_tolist(M2), mem=_tolist(mem2), mem_total=_tolist(mem1 + mem2))
            rec["stage2"][kind] = out
            log(f"   [{time.time() - t0:.0f} s] stage2[{kind}] " + "; ".join(f"{c}: M2* {out[c]['M_star']}" for c in criteria2))

    # ---- end-to-end
    if e2e:
        res3 = sr.search(lambda sz, pad: (None, pl.run_e2e(probs, keys, jnp.asarray(sz), cfg, pad)),
                         sr.default_grid(pre.e2e_cap), [("test_mse", eps_final)],
                         log=log)
        M3 = sr.m_star(res3, "test_mse", eps_final)
        rec["e2e"] = dict(sizes=res3.sizes, curves={k: _tolist(v) for k, v in res3.metrics.items()},
                          M_star=_tolist(M3),
                          mem=_tolist([mt.memory_points(m, cfg.d) if m == m else np.nan for m in M3]))
        log(f"   [{time.time() - t0:.0f} s] e2e M* {M3.tolist()}")

    # ---- real-subset baseline (eager bisection per seed)
    if subset:
        ns, tried_all = [], []
        for s in range(S):
            p1 = jax.tree.map(lambda a: a[s], probs)
            n, tried = _bisect_subset(p1, keys[s], cfg, float(eps_final[s]), 16, pre.subset_max,
                                      steps=pre.subset_steps)
            ns.append(n)
            tried_all.append([[int(a), round(float(b), 5)] for a, b in tried])
        rec["subset"] = dict(n_star=_tolist(ns), mem=_tolist([mt.memory_points(n, cfg.d) if n == n else np.nan
                                                              for n in ns]), tried=tried_all,
                             n_max=pre.subset_max)
        log(f"   [{time.time() - t0:.0f} s] real subset n* {ns}")
    rec["seconds"] = round(time.time() - t0, 1)
    return rec


def plan_points(pre: Preset, only=("S1", "S2", "S3", "S4"), index=None):
    """The grid points of a preset: returns (todo, merged). todo: [(sweep, index, over, kw)] in run order;
    merged: {config key: run_point keyword arguments (union over the sweeps that share the configuration) plus
    'first' = (sweep, index) of its first occurrence, whose key the measurement uses}."""
    plan = []
    if "S1" in only:
        for d in pre.s1_d:
            plan.append(("S1", dict(d=d, r=pre.s1_r, L=pre.s1_L), dict(stage2_kinds=("free", "span"),
                                                                        e2e="S1" in pre.e2e_in)))
    if "S2" in only:
        for r in pre.s2_r:
            L = pre.s2_L if r < 6 else pre.s2_L_big
            plan.append(("S2", dict(d=pre.s2_d, r=r, L=L), dict(stage2_kinds=("free", "span"),
                                                                 e2e="S2" in pre.e2e_in)))
    if "S3" in only:
        for L in pre.s3_L:
            plan.append(("S3", dict(d=pre.s3_d, r=pre.s3_r, L=L),
                         dict(stage2_kinds=pre.s3_kinds, criteria2=pre.s3_criteria,
                              s2_cap=min(pre.s3_cap, 2 * L), subset=False)))
    if "S4" in only:
        for kind, d, r in pre.s4:
            plan.append(("S4", dict(d=d, r=r, L=pre.s4_L, kind=kind),
                         dict(stage2_kinds=("free",), s1_cap=(32 if kind in ("he3", "none") else None),
                              s2_cap=(32 if kind in ("he3", "none") else None))))
    # identical configurations (e.g. d = 32, r = 2, L = 256 in S1, S2 and S3) are measured once, with the union of
    # the stages and criteria the sweeps ask for, under the key of their first occurrence; later occurrences carry
    # a copy of that record marked "borrowed_from".
    counters: dict = {}
    todo = []
    for sweep, over, kw in plan:
        j = counters[sweep] = counters.get(sweep, -1) + 1
        if index is not None and j not in index:
            continue
        todo.append((sweep, j, over, kw))
    merged: dict = {}
    for sweep, j, over, kw in todo:
        ck = tuple(sorted(over.items()))
        if ck not in merged:
            merged[ck] = dict(kw, first=(sweep, j))
            continue
        m = merged[ck]
        for name, default in (("stage2_kinds", ("free",)), ("criteria2", ("generalise",))):
            have = tuple(m.get(name, default))
            m[name] = have + tuple(x for x in kw.get(name, default) if x not in have)
        for name in ("subset", "e2e"):
            m[name] = bool(m.get(name, name == "subset")) or bool(kw.get(name, name == "subset"))
        for name in ("s1_cap", "s2_cap"):
            a, b = m.get(name), kw.get(name)
            m[name] = None if a is None and b is None else max(x for x in (a, b) if x is not None)
    return todo, merged


def run_sweep(preset: str, out_dir: str, key_seed: int = 0, only: tuple = ("S1", "S2", "S3", "S4"), log=print,
              index: tuple | None = None):
    """Run the sweeps of a preset and write out_dir/results.json (incrementally, after each point). ``index``
    restricts every selected sweep to those point indices; keys depend only on (sweep, index), so separate runs
    of parts merge into the bits of one run (``python -m theory report DIR --merge ...``), except that a
    configuration shared by two selected sweeps is measured once under the key of its first occurrence
    (``plan_points``)."""
    import os

    t_start = time.time()
    pre = PRESETS[preset]
    os.makedirs(out_dir, exist_ok=True)
    key = jax.random.key(key_seed)
    results = dict(preset=preset, key_seed=key_seed, preset_config=_preset_dict(pre), sweeps={},
                   started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    path = os.path.join(out_dir, "results.json")

    def save():
        with open(path, "w") as f:
            json.dump(results, f, separators=(",", ":"))

    base = pre.base
    todo, merged = plan_points(pre, only, index)
    done: dict = {}
    for sweep, j, over, kw in todo:
        ck = tuple(sorted(over.items()))
        if ck in done:
            rec = json.loads(json.dumps(done[ck]))
            fs, fj = merged[ck]["first"]
            rec["borrowed_from"] = (f"the same measurement as {fs} point {fj} (identical configuration, measured "
                                    f"once with the union of both sweeps' stages and criteria)")
            log(f"[{time.strftime('%H:%M:%S')}] {sweep} {over}: same configuration as {fs} point {fj}, reused")
        else:
            cfg = dataclasses.replace(base, **over, n_real=_n_real(pre, over["d"], over["r"]))
            log(f"[{time.strftime('%H:%M:%S')}] {sweep} {over}")
            pkey = jax.random.fold_in(jax.random.fold_in(key, ("S1", "S2", "S3", "S4").index(sweep)), j)
            run_kw = {k: v for k, v in merged[ck].items() if k != "first"}
            rec = run_point(cfg, pkey, pre, log=log, **run_kw)
            done[ck] = rec
        rec["sweep"] = sweep
        rec["index"] = j
        results["sweeps"].setdefault(sweep, []).append(rec)
        save()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results["seconds"] = round(time.time() - t_start, 1)
    save()
    return results


def _preset_dict(pre: Preset) -> dict:
    d = dataclasses.asdict(pre)
    d["base"] = dataclasses.asdict(pre.base)
    return d
