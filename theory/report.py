"""Fits, plots and the markdown summary of a v2 sweep (reads DIR/results.json; writes DIR/fits.json, DIR/*.png and
DIR/summary.md). Every number in summary.md is computed here from results.json; nothing is typed in by hand."""
from __future__ import annotations

import json
import math
import os

import numpy as np

from theory import fits
from theory import search as sr
from theory import sweep as swp


# ------------------------------------------------------------------------------------------------- quantities

def _P(curve, eps):
    return sr.passes(np.asarray(curve, float), eps)


def dr_quantities(p: dict) -> dict:
    """PointData per quantity for one DR / ABL point."""
    d, r = p["config"]["d"], p["config"]["r"]
    th = p["thresholds"]
    x = dict(d=d, r=r, L=p["config"]["L"])
    ok = p["regime"]["ok"]
    s1 = p["stage1"]
    g1 = np.asarray(s1["sizes"], float)
    q = {"stage 1, feature quality": fits.PointData(x, [(g1 * (d + 1), _P(s1["curves"]["fq_fresh"], th["eps1"]))], ok,
                                                    True),
         "stage 1, gradient matching": fits.PointData(x, [(g1 * (d + 1),
                                                           _P(s1["curves"]["gm_cos_fresh"], th["tau_gm"]))], ok, True)}
    s2 = p["stage2"]
    g2 = np.asarray(s2[0]["sizes"], float)
    q["stage 2 alone (on M1*)"] = fits.PointData(x, [(g2 * (d + 1), _P(s2[0]["curves"]["test_mse"],
                                                                      th["eps_final"]))], ok, True)
    q["two-stage total"] = fits.PointData(x, [((a["M1"] + np.asarray(a["sizes"], float)) * (d + 1),
                                               _P(a["curves"]["test_mse"], th["eps_final"])) for a in s2], ok, True)
    return q


def l_quantities(p: dict) -> dict:
    d, L = p["config"]["d"], p["config"]["L"]
    x = dict(d=d, r=p["config"]["r"], L=L)
    g = np.asarray(p["param"]["sizes"], float)
    P = _P(p["param"]["curves"]["param_rel"], p["thresholds"]["eps_param"])
    ok = p["regime"]["ok"]
    return {"stage 2 (parameter criterion), M2 (d + 1)": fits.PointData(x, [(g * (d + 1), P)], ok),
            "M2* (points)": fits.PointData(x, [(g, P)], ok)}


def _points(res, sweep):
    pts = [v for v in res["points"].values() if v["sweep"] == sweep]
    return sorted(pts, key=lambda v: v["index"])


def _boot_interval(pd: fits.PointData, n_boot: int, seed: int):
    rng = np.random.default_rng(seed)
    vals = [pd.value(rng) for _ in range(n_boot)]
    v = np.array([m if not c else np.inf for m, c in vals])       # censored resamples: above any value
    return [float(np.percentile(v, 2.5, method="lower")), float(np.percentile(v, 97.5, method="higher"))]


def compute_fits(res: dict, n_boot: int = 500) -> dict:
    out = dict(DR={}, L={}, ABL={}, bound={})
    dr = _points(res, "DR")
    if dr:
        Q = [dr_quantities(p) for p in dr]
        for k in Q[0]:
            out["DR"][k] = fits.a_r_slope([q[k] for q in Q], n_boot=n_boot, seed=1)
        out["DR0"] = {k: fits.a_r_slope([q[k] for q in Q], n_boot=n_boot, seed=1, through_origin=True)
                      for k in Q[0]}
        out["Dslope"] = {k: fits.d_slope([q[k] for q in Q], n_boot=n_boot, seed=4) for k in Q[0]}
        ratios = []
        for p, q in zip(dr, Q):
            m, c = q["two-stage total"].value()
            claim = p["config"]["r"] ** 2 * p["config"]["d"] + p["config"]["L"]
            ratios.append(dict(d=p["config"]["d"], r=p["config"]["r"], mem=m, censored=c,
                               in_regime=p["regime"]["ok"], ratio=m / claim))
        out["bound"] = ratios
    lp = _points(res, "L")
    if lp:
        Q = [l_quantities(p) for p in lp]
        for k in Q[0]:
            out["L"][k] = fits.censored_loglog([q[k] for q in Q], "L", n_boot=n_boot, seed=2)
    ab = _points(res, "ABL")
    if ab and dr:
        d0, r0 = ab[0]["config"]["d"], ab[0]["config"]["r"]
        base = [p for p in dr if (p["config"]["d"], p["config"]["r"]) == (d0, r0)]
        rows = []
        for mult, p in [(1, base[0])] * bool(base) + [(a["spec"]["mult"], a) for a in ab]:
            q = dr_quantities(p)
            row = dict(mult=mult, gm_steps=p["config"]["gm_steps"], pm_steps=p["config"]["pm_steps"])
            for k in ("stage 1, feature quality", "stage 1, gradient matching", "stage 2 alone (on M1*)"):
                m, c = q[k].value()
                row[k] = dict(M_star=m / (d0 + 1), censored=c,
                              ci=[v / (d0 + 1) for v in _boot_interval(q[k], n_boot, 3)])
            rows.append(row)
        out["ABL"] = rows
    return out


# ------------------------------------------------------------------------------------------------- plots

def make_plots(res: dict, fd: dict, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    dr = _points(res, "DR")
    if dr:
        Q = [dr_quantities(p) for p in dr]
        fig, axs = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
        key = "two-stage total"
        f = fd["DR"][key]
        rs = sorted({p["config"]["r"] for p in dr})
        for r in rs:
            sel = [(p, q) for p, q in zip(dr, Q) if p["config"]["r"] == r]
            ds = np.array([p["config"]["d"] for p, _ in sel], float)
            vals = [q[key].value() for _, q in sel]
            ok = [p["regime"]["ok"] for p, _ in sel]
            line = axs[0].plot(ds, [v for v, _ in vals], marker="o", lw=0.8, label=f"r={r}")[0]
            for dd_, (v, c), o in zip(ds, vals, ok):
                if c:
                    axs[0].annotate("", (dd_, v * 1.4), (dd_, v), arrowprops=dict(arrowstyle="->",
                                                                                  color=line.get_color()))
                if not o:
                    axs[0].plot([dd_], [v], marker="x", ms=10, color="k")
            if str(r) in f["A"]:
                xs = np.linspace(ds.min(), ds.max(), 10)
                axs[0].plot(xs, f["A"][str(r)] * xs + f["B"][str(r)], ls="--", lw=0.8, color=line.get_color())
        axs[0].set_xscale("log")
        axs[0].set_yscale("log")
        axs[0].set_xlabel("d")
        axs[0].set_ylabel("memory at M* (stored reals)")
        axs[0].set_title("DR: two-stage total vs d per r; dashed: A(r) d + B(r)\n(x: out of regime; arrow: "
                         "censored)", fontsize=8)
        axs[0].legend(fontsize=7)
        for fk, k, mk in (("DR0", "two-stage total", "o"), ("DR", "two-stage total", "D"),
                          ("DR0", "stage 1, feature quality", "s"), ("DR0", "stage 1, gradient matching", "^"),
                          ("DR0", "stage 2 alone (on M1*)", "v")):
            g = fd[fk][k]
            rr = sorted(int(v) for v in g["A"])
            if not rr:
                continue
            A = np.array([g["A"][str(v)] for v in rr])
            ci = np.array([g["A_ci"].get(str(v), [np.nan, np.nan]) for v in rr], float)
            lab = k + (" (free fit A d + B)" if fk == "DR" else "") + (f": slope {g['slope']:.2f} [{g['ci'][0]:.2f}, {g['ci'][1]:.2f}]"
                       if g["slope"] is not None and g["ci"][0] is not None else "")
            mask = A > 0
            axs[1].errorbar(np.array(rr)[mask], A[mask], yerr=np.abs(np.stack([A - ci[:, 0], ci[:, 1] - A]))[:, mask],
                            marker=mk, capsize=2, lw=0.8, label=lab, mfc="none" if fk == "DR" else None)
        rr = np.array(rs, float)
        a1 = fd["DR0"]["two-stage total"]["A"].get("1")
        if a1:
            axs[1].plot(rr, a1 * rr, ls=":", color="gray", label="slope 1 (r d)")
            axs[1].plot(rr, a1 * rr**2, ls=":", color="k", label="slope 2 (r^2 d)")
        axs[1].set_xscale("log")
        axs[1].set_yscale("log")
        axs[1].set_xlabel("r")
        axs[1].set_ylabel("A(r) (reals per input dimension)")
        axs[1].set_title("A(r) from Mem = A(r) d (B = 0) and, hollow, from the free fit A(r) d + B(r),\n95 % "
                         "bootstrap intervals over seeds", fontsize=8)
        axs[1].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "dr_sweep.png"))
        plt.close(fig)
        files.append("dr_sweep.png")
        # M* against the threshold (two-stage total and stage 1), re-read from the stored curves
        fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
        for p in dr:
            if p["config"]["d"] != min(q["config"]["d"] for q in dr if q["config"]["r"] == p["config"]["r"]):
                continue
            epss = np.geomspace(0.02, 0.4, 12)
            ys = []
            d = p["config"]["d"]
            for e in epss:
                m, c = fits.PointData({}, [((a["M1"] + np.asarray(a["sizes"], float)),
                                            _P(a["curves"]["test_mse"], e)) for a in p["stage2"]]).value()
                ys.append(np.nan if c else m)
            ax.plot(epss, ys, marker="o", ms=3, label=f"d={d}, r={p['config']['r']}: M1 + M2 (points)")
        ax.axvline(res["preset_config"]["eps_final"], color="k", ls=":", lw=0.8, label="threshold used")
        ax.set_xscale("log")
        ax.set_xlabel("threshold on the test MSE (excess over Bayes = 0)")
        ax.set_ylabel("M1 + M2 at M* (points; stage 1 fixed at M1*, 2 M1*)")
        ax.set_title("M* against the threshold (missing: censored)", fontsize=8)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "mstar_vs_threshold.png"))
        plt.close(fig)
        files.append("mstar_vs_threshold.png")
    lp = _points(res, "L")
    if lp and fd["L"]:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
        for k, g in fd["L"].items():
            xs = np.array([q["x"] for q in g["points"]], float)
            ys = np.array([q["mem"] for q in g["points"]], float)
            cens = np.array([q["censored"] for q in g["points"]])
            line = ax.plot(xs, ys, marker="o", lw=0.8,
                           label=k + (f": slope {g['slope']:.2f} [{g['ci'][0]:.2f}, {g['ci'][1]:.2f}]"
                                      if g["slope"] is not None and g["ci"][0] is not None else ""))[0]
            if cens.any():
                ax.plot(xs[cens], ys[cens], marker="^", ls="", color=line.get_color())
            if g["slope"] is not None:
                ax.plot(xs, np.exp(g["intercept"]) * xs ** g["slope"], ls="--", lw=0.8, color=line.get_color())
        ax.plot(xs, xs, ls=":", color="k", label="L (slope 1)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("L")
        ax.set_ylabel("memory / points")
        ax.set_title(f"L: reproduce the readout (||a_D - a_ref|| / ||a_ref|| <= {res['preset_config']['eps_param']}),"
                     f" d = {lp[0]['config']['d']}, r = {lp[0]['config']['r']}; ^: censored", fontsize=8)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "l_sweep.png"))
        plt.close(fig)
        files.append("l_sweep.png")
    return files


# ------------------------------------------------------------------------------------------------- summary

def _f(v, nd=2):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _ci(g):
    if g.get("slope") is None:
        return f"no fit ({g.get('why_no_fit', 'n/a')})"
    lo, hi = g["ci"]
    return f"{g['slope']:.2f} [{_f(lo)}, {_f(hi)}] ({g.get('n_boot', 0)} resamples)"


def _r_verdict(g) -> str:
    if g.get("slope") is None or g["ci"][0] is None:
        return f"no verdict: {g.get('why_no_fit', 'no interval')}"
    lo, hi = g["ci"]
    has1, has2 = lo <= 1 <= hi, lo <= 2 <= hi
    s = f"the r-slope of A(r) is {g['slope']:.2f} [{lo:.2f}, {hi:.2f}] over r = {g['r_used']}: "
    if hi - lo > 2.0:
        return s + "the interval is wider than 2 (twice the gap between r d and r^2 d): too noisy for a verdict"
    if has2 and not has1:
        return s + "r^2 tightness observed (the interval holds 2 and excludes 1)"
    if has1 and not has2:
        return s + "r^2 tightness NOT observed (the interval holds 1 and excludes 2: memory ~ r d here)"
    if has1 and has2:
        return s + "r d and r^2 d cannot be separated at this scale"
    return s + ("growth faster than r^2" if lo > 2 else "growth slower than r d" if hi < 1 else
                "between r d and r^2 d, excluding both")


def _l_verdict(g) -> str:
    if g.get("slope") is None or g["ci"][0] is None:
        return f"no verdict: {g.get('why_no_fit', 'no interval')}"
    lo, hi = g["ci"]
    s = (f"L-slope {g['slope']:.2f} [{lo:.2f}, {hi:.2f}] over {g['n_in_regime']} in-regime points "
         f"({g['n_censored']} censored, {g['n_out_of_regime']} out of regime): ")
    if lo <= 1 <= hi:
        return s + "the + L term is observed (slope 1 inside the interval)"
    return s + ("memory grows faster than L" if lo > 1 else "memory grows slower than L (no full L term)")


def make_summary(res: dict, fd: dict, files: list[str]) -> str:
    pre = res["preset_config"]
    planned = swp.plan(swp.PRESETS[res["preset"]])
    done = res["points"]
    missing = [f"{s}/{j}" for s, j, _ in planned if f"{s}/{j}" not in done]
    L = []
    L.append(f"# theory/ v2 sweep, preset `{res['preset']}` (root key {res['key_seed']})\n")
    if missing:
        L.append(f"**PARTIAL RESULTS: {len(done)} of {len(planned)} planned points are in results.json; missing: "
                 f"{', '.join(missing)}. Resume with the same command (`python -m theory sweep --preset "
                 f"{res['preset']} --out DIR`): finished points are skipped.**\n")
    secs = sum(p.get("seconds", 0) for p in done.values())
    L.append(f"Points: {len(done)}; time inside the points {secs / 60:.1f} min (wall times of the sweep calls: "
             f"{', '.join(f'{v / 60:.1f} min' for v in res.get('run_seconds', {}).values()) or 'n/a'}). "
             f"Seeds {pre['seeds']} per point, each the best of {pre['restarts']} restarts by its training "
             f"objective; K = {pre['base']['K']} stage-1 inits; GM {pre['base']['gm_steps']} and stage 2 "
             f"{pre['base']['pm_steps']} Adam steps; pool {pre['base']['n_pool']}, test {pre['base']['n_test']}.\n")
    L.append("## Criteria (fixed, absolute; noiseless tasks with E f*^2 = 1, so Bayes risk 0 and the test MSE is the "
             "excess MSE)\n")
    L.append(f"- DR / ABL stage 1, feature quality at a held-out init <= eps1 = {pre['eps1']}; gradient matching "
             f"inside span(U), mean_j (1 - cos(U g~_j, U g_j)) at a held-out init <= tau_gm = {pre['tau_gm']}.")
    L.append(f"- DR / ABL two-stage model (stage 2 free inputs, same theta_0): test MSE <= eps_final = "
             f"{pre['eps_final']}; stage 2 runs on the stage-1 sets of sizes M1* and 2 M1*; the total is the "
             f"smaller of the two (M1 + M2*) (d + 1).")
    L.append(f"- L: parameter criterion ||a_D - a_ref|| / ||a_ref|| <= {pre['eps_param']}, labels in closed form, "
             f"generic inputs N(0, I) (memory M2 (d + 1)); the stage-1 set (fixed size) is not counted in this slope.")
    L.append(f"- Regime: DR / ABL points need full-data test MSE <= eps_final / 5 = {pre['eps_final'] / 5:g} and "
             f"full-data held-out feature quality <= eps1 / 5 = {pre['eps1'] / 5:g}; L points need full-data MSE "
             f"<= {pre['l_mse_max']} and n_pool >= 4 L. Out-of-regime points are shown, never fitted.")
    L.append("- M*: smallest grid size at which the pass rate over seeds is >= 1/2 there and at every larger size; "
             "censored if the pass rate at the cap is < 1/2 (kept as a lower bound: Tobit fit for L; an r with a "
             "censored point is excluded from the A(r) slope and counted). Intervals: 95 % bootstrap over seeds.\n")
    dr = _points(res, "DR")
    if dr:
        L.append("## DR: d x r grid at fixed L\n")
        L.append("| d | r | L | n_real | MSE_full | fq_full | regime | M1* fq | M1* gm | M2* on M1* | M2* on 2 M1* | "
                 "total (reals) | total / (r^2 d + L) | s |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for p, b in zip(dr, fd["bound"]):
            c = p["config"]
            s1, s2 = p["stage1"], p["stage2"]
            m2 = [f"{a['M_star']:g}{'+' if a['censored'] or a['M_star'] == a['sizes'][-1] else ''} (M1={a['M1']})"
                  for a in s2]
            m2 += ["-"] * (2 - len(m2))
            L.append(f"| {c['d']} | {c['r']} | {c['L']} | {c['n_real']} | {p['regime']['mse_full']:.4f} | "
                     f"{p['regime']['fq_full_fresh']:.4f} | {'in' if p['regime']['ok'] else 'OUT'} | "
                     f"{s1['M_star_fq']:g}{'+' if s1['censored_fq'] or s1['M_star_fq'] == s1['sizes'][-1] else ''} | "
                     f"{s1['M_star_gm']:g}{'+' if s1['censored_gm'] or s1['M_star_gm'] == s1['sizes'][-1] else ''} | "
                     f"{m2[0]} | {m2[1]} | "
                     f"{b['mem']:.0f}{'+' if b['censored'] else ''} | {b['ratio']:.2f} | {p.get('seconds', 0):.0f} |")
        L.append("\n`+`: censored (pass rate < 1/2 at the grid's cap, or first >= 1/2 only AT the cap, where no larger "
                 "size confirms it). Fits of Mem = A(r) d + B(r) per r and of log A(r) on "
                 "log r:\n")
        L.append("| quantity | A(r) [95 % CI] | excluded r | r-slope of A(r) [95 % CI] |")
        L.append("|---|---|---|---|")
        for k, g in list(fd["DR"].items()) + [(k + " (B = 0)", g) for k, g in fd["DR0"].items()]:
            A = "; ".join(f"r={r}: {g['A'][r]:.1f} [{_f(g['A_ci'].get(r, [None, None])[0], 1)}, "
                          f"{_f(g['A_ci'].get(r, [None, None])[1], 1)}]" for r in g["A"])
            ex = ", ".join(f"{r} ({w})" for r, w in g["excluded_r"].items()) or "none"
            L.append(f"| {k} | {A or '-'} | {ex} | {_ci(g)} |")
        L.append("")
        L.append("d exponent at fixed r (log Mem = c_r + slope log d, one intercept per r, in-regime uncensored "
                 "points of the r values with >= 2 d):\n")
        for k, g in fd.get("Dslope", {}).items():
            L.append(f"- {k}: {_ci(g)} over {g['n_points']} points, r = {g['r_used']}")
        L.append("")
    lp = _points(res, "L")
    if lp:
        L.append("## L: reproduce the readout (parameter criterion, closed-form labels)\n")
        L.append("| L | n_pool | MSE_full | regime | stage-1 fq (M1 = %d) | M2* | memory M2* (d + 1) | s |" % pre["l_M1"])
        L.append("|---|---|---|---|---|---|---|---|")
        for p in lp:
            c = p["config"]
            L.append(f"| {c['L']} | {c['n_pool']} | {p['regime']['mse_full']:.4f} | "
                     f"{'in' if p['regime']['ok'] else 'OUT'} | {np.median(p['stage1']['fq_fresh']):.4f} | "
                     f"{p['param']['M_star']:g}{'+' if p['param']['censored'] else ''} | "
                     f"{(c['d'] + 1) * p['param']['M_star']:.0f} | {p.get('seconds', 0):.0f} |")
        L.append("")
        for k, g in fd["L"].items():
            L.append(f"- {k}: censored log-log slope on L {_ci(g)}")
        L.append("")
    if fd.get("ABL"):
        L.append("## ABL: convergence ablation (same seeds and keys, more distillation steps)\n")
        L.append("| steps | GM steps | stage-2 steps | M1* fq [CI] | M1* gm [CI] | M2* [CI] |")
        L.append("|---|---|---|---|---|---|")
        for row in fd["ABL"]:
            cells = []
            for k in ("stage 1, feature quality", "stage 1, gradient matching", "stage 2 alone (on M1*)"):
                v = row[k]
                cells.append(f"{v['M_star']:g}{'+' if v['censored'] else ''} [{_f(v['ci'][0], 0)}, "
                             f"{_f(v['ci'][1], 0)}]")
            L.append(f"| x{row['mult']} | {row['gm_steps']} | {row['pm_steps']} | " + " | ".join(cells) + " |")
        L.append("")
    nan_lines, n_all, n_vals = [], 0, 0
    for name, p in sorted(done.items(), key=lambda kv: (kv[1]["sweep"], kv[1]["index"])):
        arrs = [p["ref"][k] for k in p.get("ref", {})]
        if "stage1" in p:
            arrs += list(p["stage1"].get("curves", {}).values())
            arrs += [p["stage1"][k] for k in ("fq_fresh", "x_in_span") if k in p["stage1"]]
        for a in p.get("stage2", []):
            arrs += list(a["curves"].values())
        if "param" in p:
            arrs += list(p["param"]["curves"].values())
        arrs = [np.asarray(a, float).ravel() for a in arrs]
        n = int(sum((~np.isfinite(a)).sum() for a in arrs))
        n_all += n
        n_vals += int(sum(a.size for a in arrs))
        if n:
            nan_lines.append(f"{name} {n}")
    L.append(f"Non-finite values (a non-finite error counts as a failure for M*): {n_all} of the {n_vals} stored "
             f"metric values (references, every stage-1, stage-2 and parameter-criterion curve)"
             + (": " + ", ".join(nan_lines) if nan_lines else "") + ".\n")
    L.append("## Verdicts (computed by report.py from the fits above)\n")
    if dr:
        b = [x for x in fd["bound"] if x["in_regime"] and not x["censored"]]
        if len(b) >= fits.MIN_POINTS:
            rr = [x["ratio"] for x in b]
            if max(rr) <= 1.0:
                L.append(f"- Upper bound: at every one of the {len(b)} in-regime, uncensored DR points the two-stage "
                         f"memory is at most {max(rr):.2f} (r^2 d + L) (ratio {min(rr):.2f}-{max(rr):.2f}): "
                         f"consistent with O(r^2 d + L) as an upper bound, even with unit constants. A memory below "
                         f"an upper bound cannot refute it.")
            else:
                L.append(f"- Upper bound: the two-stage memory over the {len(b)} in-regime, uncensored DR points is "
                         f"{min(rr):.2f}-{max(rr):.2f} (r^2 d + L): above the law with unit constants at "
                         f"{sum(x > 1 for x in rr)} points, consistent with O(r^2 d + L) only with a constant >= "
                         f"{max(rr):.2f}.")
        else:
            L.append(f"- Upper bound: no verdict (only {len(b)} in-regime, uncensored DR points).")
        for k in ("two-stage total", "stage 1, feature quality", "stage 1, gradient matching",
                  "stage 2 alone (on M1*)"):
            L.append(f"- r ({k}): {_r_verdict(fd['DR'][k])}; with B = 0: {_r_verdict(fd['DR0'][k])}.")
        g = fd.get("Dslope", {}).get("two-stage total")
        if g:
            if g["slope"] is None or g["ci"][0] is None:
                L.append(f"- d (two-stage total): no verdict: {g.get('why_no_fit', 'no interval')}.")
            else:
                lo, hi = g["ci"]
                what = ("memory linear in d (1 inside the interval)" if lo <= 1 <= hi else
                        "memory grows more slowly than d" if hi < 1 else "memory grows faster than d")
                L.append(f"- d (two-stage total, fixed r): slope {g['slope']:.2f} [{lo:.2f}, {hi:.2f}] over "
                         f"{g['n_points']} in-regime points: {what}.")
    if lp:
        k = "stage 2 (parameter criterion), M2 (d + 1)"
        L.append(f"- L ({k}): {_l_verdict(fd['L'][k])}.")
    if fd.get("ABL"):
        base = fd["ABL"][0]
        moved = []
        for row in fd["ABL"][1:]:
            for k in ("stage 1, feature quality", "stage 1, gradient matching", "stage 2 alone (on M1*)"):
                lo, hi = base[k]["ci"]
                if not (lo <= row[k]["M_star"] <= hi):
                    moved.append(f"{k} at x{row['mult']} ({base[k]['M_star']:g} -> {row[k]['M_star']:g})")
        L.append("- Convergence: " + ("M* stays inside the x1 bootstrap interval at every ablated step count."
                                      if not moved else "M* moved outside the x1 interval: " + "; ".join(moved)
                                      + " (the x1 optimisation is not converged there)."))
    L.append("")
    L.append("Plots: " + ", ".join(f"`{f}`" for f in files) + ".\n")
    return "\n".join(L)


def make_report(out_dir: str, n_boot: int = 500) -> dict:
    with open(os.path.join(out_dir, "results.json")) as f:
        res = json.load(f)
    fd = compute_fits(res, n_boot=n_boot)
    with open(os.path.join(out_dir, "fits.json"), "w") as f:
        json.dump(fd, f, indent=1, default=float)
    files = make_plots(res, fd, out_dir)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(make_summary(res, fd, files))
    return fd
