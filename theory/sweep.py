"""Sweeps of the theory/ benchmark (v2): a design that isolates each term of the r^2 d + L law.

Sweeps (all thresholds FIXED and absolute; the tasks are noiseless with E f*^2 = 1, so the Bayes risk is 0 and a
test MSE is the excess MSE over the Bayes/target level):

* DR (r against r^2): a d x r grid at fixed L, d = m r for m in ``dr_m`` (so d >= 16 r). Per point:
  - stage 1 (gradient matching over K inits) on the whole size grid, judged twice at a HELD-OUT init:
    "fq": feature quality (test MSE of the pool-fitted readout on the step taken on the set) <= eps1;
    "gm": gradient-matching accuracy inside span(U), mean_j (1 - cos(U g~_j, U g_j)) <= tau_gm (the hypothesis
    that r^2 comes from matching the r x r Hessian block);
  - stage 2 (performance matching through the closed-form ridge readout, free inputs) on the whole size grid,
    run on the stage-1 sets of sizes M1* and 2 M1* (M1* from "fq"), judged by the test MSE at the same theta_0
    <= eps_final; the two-stage total is the smaller of the two totals (a joint rather than greedy minimum over
    these two stage-1 sizes).
  Fit (theory.fits): Mem = A(r) d + B(r) per r, then the slope of log A(r) on log r (1: r d; 2: r^2 d).
* L (+ L): d = l_d, r = 1, L over ``l_L``, parameter criterion ||a_D - a_ref|| / ||a_ref|| <= eps_param with the
  labels solved in closed form (pipeline.param_closed_errors; generic inputs N(0, I), memory M2 (d + 1)).
  Fit: censored log-log slope of the stage-2 memory on L (1 expected).
* ABL: a convergence ablation at one DR point: distillation steps x1, x2, x4 (both stages); M* should not move.

Regime check at every point: the same pipeline trained on the full data (first-layer step on n_real points,
readout on the n_pool pool) must reach test MSE <= eps_final / 5 and held-out-init feature quality <= eps1 / 5
(DR, ABL), or test MSE <= l_mse_max (L, where in addition n_pool >= 4 L). Points that fail are reported as out of
regime and not fitted.

M* (theory.search): the smallest grid size at which the pass rate over ``seeds`` seeds (each the best of
``restarts`` distillation restarts by its training objective) reaches 1/2 and stays >= 1/2 at every larger grid
size; right-censored when the pass rate at the cap is below 1/2. Whole curves are run (no early stop).

Resumable: results.json is rewritten after every point; a rerun with the same preset and key skips the points it
already holds (``run_sweep(resume=True)``, the default).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.types import JaxddError
from theory import distill as dd
from theory import pipeline as pl
from theory import search as sr

SWEEPS = ("DR", "L", "ABL")


@dataclasses.dataclass(frozen=True)
class Preset:
    seeds: int
    restarts: int
    base: pl.Config
    # DR
    dr_r: tuple = (1, 2, 3, 4)
    dr_late_r: tuple = ()              # DR values of r run after the L and ABL sweeps
    dr_m: tuple = (16, 32)            # d = m r
    dr_late_m: tuple = ()              # d = m r for the dr_late_r values (default: dr_m)
    dr_L: int = 128
    eps_final: float = 0.1
    eps1: float = 0.05
    tau_gm: float = 0.05
    s1_cap: tuple = (4, 4)             # stage-1 grid cap = a r + b (then at least s1_min)
    s1_min: int = 0
    s2_cap: tuple = (1, 8)             # stage-2 grid cap = a r^2 + b (then at least 2 r + 8)
    one_bucket: bool = True            # every size of a stage's grid in one padded bucket (one compile), or
                                       # buckets by padded size (16, 32, 64, ...: less work, a compile per bucket)
    n_real_per: int = 16               # n_real = clip(n_real_per d^2 r, n_real_min, n_real_max)
    n_real_min: int = 32768
    n_real_max: int = 262144
    # L
    l_d: int = 8
    l_r: int = 1
    l_L: tuple = (64, 128, 256, 512, 1024, 2048)
    l_M1: int = 4
    eps_param: float = 0.1
    l_mse_max: float = 0.02
    l_pool_per_L: int = 4
    l_cap_per_L: int = 4               # L-sweep grid up to 4 L points: a unit active on few inputs needs more than L
    # ABL
    abl_point: tuple = (16, 1)         # (d, r), at dr_L
    abl_mult: tuple = (2, 4)


PRESETS = {
    "smoke": Preset(
        seeds=3, restarts=1,
        base=pl.Config(n_pool=1024, n_test=1024, K=2, gm_steps=60, pm_steps=60, chunk=4096),
        dr_r=(1,), dr_m=(8, 16), dr_L=32, s1_cap=(2, 2), s2_cap=(1, 4), n_real_min=8192, n_real_max=8192,
        eps_final=0.3, eps1=0.2, tau_gm=0.2, l_d=8, l_L=(16, 32), l_M1=2, l_mse_max=0.3, abl_point=(8, 1),
        abl_mult=(2,)),
    # cpu: sized for a shared 2-core machine (README "Presets"): every stage of a point is one padded bucket (one
    # compile) vmapped over seeds x restarts x sizes; the r = 4 points run last (dr_late_r) so that a run cut short
    # still holds r = 1..3, L and ABL.
    "cpu": Preset(
        seeds=10, restarts=2,
        base=pl.Config(n_pool=4096, n_test=2048, K=2, gm_steps=300, pm_steps=400, chunk=8192),
        dr_r=(1, 2, 3, 4), dr_late_r=(5,), dr_m=(16, 24, 32), dr_late_m=(16, 24), dr_L=384, eps1=0.075, eps_final=0.15, tau_gm=0.1,
        s1_cap=(3, 1), s1_min=8, s2_cap=(1, 6), one_bucket=False, n_real_max=1 << 20,
        l_d=8, l_L=(64, 128, 256, 512, 1024, 2048), abl_point=(16, 1)),
    # gpu: one H100, calls of <= 8 minutes (experiments/theory_gpu.py --dry-run prints them)
    "gpu": Preset(
        seeds=16, restarts=2,
        base=pl.Config(n_pool=16384, n_test=8192, K=8, gm_steps=1000, pm_steps=1000, chunk=16384),
        dr_r=(1, 2, 3, 4, 6, 8), dr_late_r=(12,), dr_m=(16, 24, 32), dr_late_m=(16, 24), dr_L=1024,
        one_bucket=False, n_real_max=1 << 22, eps1=0.075,
        eps_final=0.15, tau_gm=0.1, l_d=16, l_L=(64, 128, 256, 512, 1024, 2048, 4096, 8192), abl_point=(32, 2)),
}


# ------------------------------------------------------------------------------------------------- the plan

def plan(pre: Preset, only=SWEEPS) -> list[tuple[str, int, dict]]:
    """[(sweep, index, spec)] in run order. spec holds the config overrides and the point's options."""
    out, late = [], []
    if "DR" in only:
        j = 0
        for r in pre.dr_r + pre.dr_late_r:
            for m in (pre.dr_late_m or pre.dr_m) if r in pre.dr_late_r else pre.dr_m:
                (late if r in pre.dr_late_r else out).append(("DR", j, dict(d=m * r, r=r, L=pre.dr_L)))
                j += 1
    if "L" in only:
        for j, L in enumerate(pre.l_L):
            out.append(("L", j, dict(d=pre.l_d, r=pre.l_r, L=L)))
    if "ABL" in only:
        d, r = pre.abl_point
        for j, mult in enumerate(pre.abl_mult):
            out.append(("ABL", j, dict(d=d, r=r, L=pre.dr_L, mult=mult)))
    return out + late


def caps(pre: Preset, r: int) -> tuple[int, int]:
    a1, b1 = pre.s1_cap
    a2, b2 = pre.s2_cap
    return max(a1 * r + b1, pre.s1_min), max(a2 * r * r + b2, 2 * r + 8)


def point_config(pre: Preset, sweep: str, spec: dict) -> pl.Config:
    d, r, L = spec["d"], spec["r"], spec["L"]
    n_real = int(min(max(pre.n_real_per * d * d * r, pre.n_real_min), pre.n_real_max))
    cfg = dataclasses.replace(pre.base, d=d, r=r, L=L, n_real=n_real)
    if sweep == "L":
        cfg = dataclasses.replace(cfg, n_pool=max(cfg.n_pool, pre.l_pool_per_L * L))
    if sweep == "ABL":
        cfg = dataclasses.replace(cfg, gm_steps=cfg.gm_steps * spec["mult"], pm_steps=cfg.pm_steps * spec["mult"])
    return cfg


def estimate_seconds(pre: Preset, sweep: str, spec: dict, gflops: float, compile_s: float) -> float:
    """Rough time of one point: compiles (prepare, references, one per stage call) plus float work at ``gflops``.
    Calibrated on the machine that runs it (README); a plan, not a measurement."""
    cfg = point_config(pre, sweep, spec)
    S, R, K, d, L = pre.seeds, pre.restarts, cfg.K, cfg.d, cfg.L
    prep = 2.0 * S * (K + 1) * cfg.n_real * L * d + 2.0 * S * (cfg.n_pool * L * (d + L) + L**3)
    if sweep == "L":
        M1 = pre.l_M1
        gm = 8.0 * S * cfg.gm_steps * K * L * d * 16
        grid = sr.default_grid(pre.l_cap_per_L * L)
        s2 = S * 4.0 * grid[-1] * L * L
        return 5 * compile_s + (prep + gm + s2 + 2.0 * S * cfg.n_pool * L * L) / (gflops * 1e9)
    c1, c2 = caps(pre, cfg.r)
    g1, g2 = sr.default_grid(c1), sr.default_grid(c2)
    b1 = [(_one_bucket(g1), g1)] if pre.one_bucket else sr.bucketize(g1)
    b2 = [(_one_bucket(g2), g2)] if pre.one_bucket else sr.bucketize(g2)
    s1 = sum(S * len(sz) * (R * 8.0 * cfg.gm_steps * K * L * d * p + 2 * 2.0 * cfg.n_pool * L * (d + L))
             for p, sz in b1)
    s2 = sum(2 * S * len(sz) * R * cfg.pm_steps * (8.0 * p * L * d + 6.0 * p * p * L + 4.0 * L * L) for p, sz in b2)
    return (4 + len(b1) + len(b2)) * compile_s + (prep + s1 + s2) / (gflops * 1e9)


# ------------------------------------------------------------------------------------------------- points

def _seed_keys(key, n):
    return jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(n))


def _tolist(x):
    return np.asarray(x, dtype=float).round(6).tolist()


def _pad_set(D: dd.DistilledSet, pad: int) -> dd.DistilledSet:
    extra = pad - D.x.shape[0]
    return dd.DistilledSet(jnp.pad(D.x, ((0, extra), (0, 0))), jnp.pad(D.y, (0, extra)), jnp.pad(D.mask, (0, extra)))


def _one_bucket(grid):
    """Every size of the grid in one padded bucket (one compile per stage and point)."""
    return max(16, 1 << (int(grid[-1]) - 1).bit_length())


def _curve(run, grid, pad, one_bucket=True):
    if not one_bucket:
        return sr.run_curve(run, grid)
    aux, m = run(np.asarray(grid, np.int32), pad)
    return sr.Curve(list(grid), {k: np.asarray(v, float) for k, v in m.items()}, [aux], [pad])


def _refs(probs, cfg):
    ref = pl.references(probs, cfg)
    return ref, dict(mse_full=_tolist(ref.mse_full), fq_full_fresh=_tolist(ref.fq_full_fresh),
                     mse_rf=_tolist(ref.mse_rf))


def run_dr_point(cfg: pl.Config, key, pre: Preset, log=print) -> dict:
    """One DR / ABL point: stage 1 and stage 2 on their whole grids, S seeds x R restarts."""
    t0 = time.time()
    S, R = pre.seeds, pre.restarts
    keys = _seed_keys(key, S)
    cfg0 = dataclasses.replace(cfg, gm_steps=pre.base.gm_steps, pm_steps=pre.base.pm_steps)  # shared compiles
    probs = pl.prepare_many(keys, cfg0)
    ref, refd = _refs(probs, cfg0)
    mse_full = float(np.median(refd["mse_full"]))
    fq_full = float(np.median(refd["fq_full_fresh"]))
    regime = dict(mse_full=mse_full, fq_full_fresh=fq_full, need_mse=pre.eps_final / 5, need_fq=pre.eps1 / 5,
                  ok=bool(mse_full <= pre.eps_final / 5 and fq_full <= pre.eps1 / 5))
    rec = dict(config=dataclasses.asdict(cfg), seeds=S, restarts=R, ref=refd, regime=regime,
               thresholds=dict(eps1=pre.eps1, tau_gm=pre.tau_gm, eps_final=pre.eps_final))
    log(f"  d={cfg.d} r={cfg.r} L={cfg.L}: MSE_full {mse_full:.4f}, fq_full {fq_full:.4f}, RF "
        f"{np.median(refd['mse_rf']):.3f}, in regime: {regime['ok']}")
    c1, c2 = caps(pre, cfg.r)
    g1 = sr.default_grid(c1)
    pad1 = _one_bucket(g1)
    cur1 = _curve(lambda sz, pad: pl.run_stage1(probs, keys, jnp.asarray(sz), cfg, pad, R), g1, pad1,
                  pre.one_bucket)
    P_fq = sr.passes(cur1.metrics["fq_fresh"], pre.eps1)
    P_gm = sr.passes(cur1.metrics["gm_cos_fresh"], pre.tau_gm)
    M1_fq, cens_fq = sr.m_star_rate(g1, P_fq)
    M1_gm, cens_gm = sr.m_star_rate(g1, P_gm)
    rec["stage1"] = dict(sizes=g1, curves={k: _tolist(v) for k, v in cur1.metrics.items()},
                         M_star_fq=M1_fq, censored_fq=cens_fq, M_star_gm=M1_gm, censored_gm=cens_gm)
    log(f"   [{time.time() - t0:.0f} s] stage 1: M1*(fq) {M1_fq:g}{' cens' if cens_fq else ''}, "
        f"M1*(gm) {M1_gm:g}{' cens' if cens_gm else ''}")
    # stage 2 on the stage-1 sets of sizes M1* and 2 M1* (on the stage-1 grid)
    i1 = g1.index(int(M1_fq))
    alts = sorted({i1, min(len(g1) - 1, g1.index(min((m for m in g1 if m >= 2 * M1_fq), default=g1[-1])))})
    g2 = sr.default_grid(c2)
    pad2 = _one_bucket(g2)
    rec["stage2"] = []
    for ia in alts:
        items = sr.select_aux(cur1, [ia] * S, lambda aux, s, j, pad: jax.tree.map(lambda a: a[s, j], aux))
        D1 = jax.tree.map(lambda *a: jnp.stack(a), *items)
        s2in = pl.stage2_inputs(probs, D1, cfg0, ref)
        cur2 = _curve(lambda sz, pad: (None, pl.run_stage2(probs, s2in, keys, jnp.asarray(sz), "free", cfg, pad,
                                                           R)), g2, pad2, pre.one_bucket)
        P2 = sr.passes(cur2.metrics["test_mse"], pre.eps_final)
        M2, c = sr.m_star_rate(g2, P2)
        rec["stage2"].append(dict(M1=g1[ia], sizes=g2, curves={k: _tolist(v) for k, v in cur2.metrics.items()},
                                  M_star=M2, censored=c))
        log(f"   [{time.time() - t0:.0f} s] stage 2 on M1 = {g1[ia]}: M2* {M2:g}{' cens' if c else ''}")
    rec["seconds"] = round(time.time() - t0, 1)
    return rec


def run_l_point(cfg: pl.Config, key, pre: Preset, log=print) -> dict:
    """One L point: a stage-1 set of l_M1 points per seed, then the closed-form parameter stage on the grid
    1..l_cap_per_L L (M = L generic points do not suffice when a unit's kink is far out: its feature is zero on
    all of them)."""
    t0 = time.time()
    S = pre.seeds
    keys = _seed_keys(key, S)
    probs = pl.prepare_many(keys, cfg)
    ref, refd = _refs(probs, cfg)
    mse_full = float(np.median(refd["mse_full"]))
    regime = dict(mse_full=mse_full, need_mse=pre.l_mse_max, n_pool=cfg.n_pool, need_pool=4 * cfg.L,
                  ok=bool(mse_full <= pre.l_mse_max and cfg.n_pool >= 4 * cfg.L))
    rec = dict(config=dataclasses.asdict(cfg), seeds=S, restarts=1, ref=refd, regime=regime,
               thresholds=dict(eps_param=pre.eps_param))
    log(f"  d={cfg.d} r={cfg.r} L={cfg.L}: MSE_full {mse_full:.4f}, in regime: {regime['ok']}")
    pad1 = 16
    D1s, m1 = pl.run_stage1(probs, keys, jnp.asarray([pre.l_M1], jnp.int32), cfg, pad1, 1)
    D1 = jax.tree.map(lambda a: a[:, 0], D1s)
    s2in = pl.stage2_inputs(probs, D1, cfg, ref)
    grid = sr.default_grid(pre.l_cap_per_L * cfg.L)
    Phi, a_ref = pl.param_features(probs, s2in, keys, int(grid[-1]))
    err = pl.param_closed_errors(Phi, a_ref, grid)
    P = sr.passes(err, pre.eps_param)
    M2, c = sr.m_star_rate(grid, P)
    rec["stage1"] = dict(M1=pre.l_M1, fq_fresh=_tolist(m1["fq_fresh"][:, 0]), x_in_span=_tolist(m1["x_in_span"][:, 0]))
    rec["param"] = dict(sizes=grid, curves=dict(param_rel=_tolist(err)), M_star=M2, censored=c)
    log(f"   [{time.time() - t0:.0f} s] param criterion: M2* {M2:g}{' cens' if c else ''} (of L = {cfg.L})")
    rec["seconds"] = round(time.time() - t0, 1)
    return rec


# ------------------------------------------------------------------------------------------------- driver

def _preset_dict(pre: Preset) -> dict:
    d = dataclasses.asdict(pre)
    d["base"] = dataclasses.asdict(pre.base)
    return d


def point_key(root, sweep: str, j: int):
    return jax.random.fold_in(jax.random.fold_in(root, SWEEPS.index(sweep)), j)


def run_sweep(preset: str, out_dir: str, key_seed: int = 0, only=SWEEPS, index=None, log=print,
              resume: bool = True) -> dict:
    """Run (or resume) the points of a preset; results.json is rewritten after every point. ``index``: only these
    point indices of each selected sweep. Points already in results.json (same preset and key) are skipped."""
    t_start = time.time()
    pre = PRESETS[preset]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    root = jax.random.key(key_seed)
    results = None
    if resume and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old.get("preset") == preset and old.get("key_seed") == key_seed and \
                old.get("preset_config") == json.loads(json.dumps(_preset_dict(pre))):
            results = old
        else:
            raise JaxddError(f"{path} holds a different preset, key or configuration; choose another --out or "
                              f"delete it (or pass --fresh) to start over")
    if results is None:
        results = dict(preset=preset, key_seed=key_seed, preset_config=_preset_dict(pre), points={},
                       run_seconds={}, started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))

    def save():
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, separators=(",", ":"))
        os.replace(tmp, path)

    for sweep, j, spec in plan(pre, only):
        if index is not None and j not in index:
            continue
        name = f"{sweep}/{j}"
        if name in results["points"]:
            log(f"[{time.strftime('%H:%M:%S')}] {name} {spec}: already done, skipped")
            continue
        cfg = point_config(pre, sweep, spec)
        log(f"[{time.strftime('%H:%M:%S')}] {name} {spec}")
        key = point_key(root, sweep, j)
        if sweep == "ABL":   # same problems and keys as the DR point it ablates (only the step counts differ)
            same = [jj for s_, jj, sp in plan(pre, ("DR",)) if (sp["d"], sp["r"]) == (spec["d"], spec["r"])]
            key = point_key(root, "DR", same[0]) if same else key
        rec = run_l_point(cfg, key, pre, log) if sweep == "L" else run_dr_point(cfg, key, pre, log)
        rec.update(sweep=sweep, index=j, spec=spec)
        results["points"][name] = rec
        save()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results["run_seconds"][time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())] = round(time.time() - t_start, 1)
    save()
    return results


# calibration of --dry-run (GFLOP/s sustained, seconds per XLA compile): cpu fitted to the first three DR points of
# an earlier run on the shared 2-core machine (45, 37, 58 s measured; 43, 46, 70 s estimated); the committed cpu run
# (README) took 1.3x its estimate with the other core busy, 0.77x without; gpu assumed, not measured
CALIBRATION = dict(smoke=(30.0, 2.0), cpu=(30.0, 5.0), gpu=(5000.0, 8.0))


def print_plan(preset: str, only=SWEEPS, index=None, gflops=None, compile_s=None, out=print) -> float:
    """Print the planned points with estimated seconds; returns the total."""
    pre = PRESETS[preset]
    gf, cs = CALIBRATION[preset]
    gf, cs = gflops or gf, compile_s or cs
    total = 0.0
    out(f"preset {preset}: {pre.seeds} seeds x {pre.restarts} restarts; estimate at {gf:g} GFLOP/s and {cs:g} s "
        f"per compile")
    for sweep, j, spec in plan(pre, only):
        if index is not None and j not in index:
            continue
        cfg = point_config(pre, sweep, spec)
        t = estimate_seconds(pre, sweep, spec, gf, cs)
        total += t
        extra = f", steps x{spec['mult']}" if sweep == "ABL" else ""
        out(f"  {sweep}/{j}: d={cfg.d} r={cfg.r} L={cfg.L} n_real={cfg.n_real} n_pool={cfg.n_pool}{extra}: "
            f"~{t:.0f} s")
    out(f"total ~{total:.0f} s ({total / 60:.1f} min)")
    return total
