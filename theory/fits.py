"""Fits of minimal memory against d, r and L, with censoring and bootstrap intervals over seeds.

Inputs are per-point pass matrices (seeds x grid sizes) and the memory of each grid size, so that every bootstrap
resample recomputes M* with the same rule as the point estimate (``theory.search.m_star_index``: pass rate >= 1/2
at M* and above). A point whose M* is censored (pass rate < 1/2 at the cap) is kept as a right-censored observation
("the memory exceeds the cap's memory"):

* ``censored_loglog``: Tobit-style maximum likelihood for log Mem = c + slope log x + N(0, s^2), where a censored
  point contributes log P(log Mem > log cap). With no censored point it equals ordinary least squares.
* ``linear_in_d``: Mem = A d + B by least squares over the d values of one r (no censoring possible: an r with a
  censored point is excluded and counted).
* ``a_r_slope``: the slope of log A(r) on log r (1: memory ~ r d, 2: memory ~ r^2 d).
* ``d_slope``: the common slope of log Mem on log d at fixed r (one intercept per r; 1: memory linear in d).

Bootstrap: seeds of every point are resampled with replacement, independently, B times; intervals are 2.5 / 97.5
percentiles of the refitted statistic. Randomness: a local ``numpy.random.Generator`` with an explicit seed.
"""
from __future__ import annotations

import math

import numpy as np

from theory import search as sr

MIN_POINTS = 3


class PointData:
    """One grid point's evidence for one quantity: alternatives [(mem_grid (C,), passed (S, C))]; the point's
    M*-memory is the minimum over alternatives of the memory at its pass-rate M* (e.g. a joint minimum over
    stage-1 sizes). ``in_regime``: the regime check passed. ``cap_censors``: an M* at the grid's last size counts
    as censored (nothing above it confirms that passing holds there; used where the optimiser, not a rank
    argument, decides the last size)."""

    def __init__(self, x: dict, alternatives, in_regime: bool = True, cap_censors: bool = False):
        self.x = x
        self.alts = [(np.asarray(m, float), np.asarray(p, bool)) for m, p in alternatives]
        self.in_regime = bool(in_regime)
        self.cap_censors = bool(cap_censors)

    def value(self, rng=None) -> tuple[float, bool]:
        """(memory at M*, censored). With ``rng``: from a bootstrap resample of the seeds (the same resample for
        every alternative, since they share seeds)."""
        S = self.alts[0][1].shape[0]
        rows = None if rng is None else rng.integers(0, S, size=S)
        best, best_c = math.inf, True
        cap = -math.inf
        for mem, P in self.alts:
            P = P if rows is None else P[rows]
            i = sr.m_star_index(P)
            cap = max(cap, mem[-1])
            if self.cap_censors and i == len(mem) - 1:
                i = -1
            if i >= 0 and mem[i] < best:
                best, best_c = float(mem[i]), False
        return (best, False) if not best_c else (float(cap), True)


def ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with intercept: returns [c, b_1, ..., b_k] for y ~ c + X b. X (n, k), y (n,)."""
    A = np.column_stack([np.ones(len(y)), X])
    return np.linalg.lstsq(A, y, rcond=None)[0]


def tobit(x, y, cens) -> tuple[float, float, float] | None:
    """Right-censored Gaussian regression y = c + b x + N(0, s^2); cens[i]: y[i] is a lower bound.
    Returns (c, b, s) or None (fewer than 2 uncensored points). Pure OLS when nothing is censored."""
    from scipy.optimize import minimize
    from scipy.stats import norm

    x, y, cens = np.asarray(x, float), np.asarray(y, float), np.asarray(cens, bool)
    u = ~cens
    if u.sum() < 2 or np.ptp(x[u]) == 0:
        return None
    c0, b0 = ols(x[u][:, None], y[u])
    if not cens.any():
        s = float(np.std(y - c0 - b0 * x)) or 1e-3
        return float(c0), float(b0), s
    s0 = max(float(np.std(y[u] - c0 - b0 * x[u])), 0.05)

    def nll(p):
        c, b, ls = p
        s = math.exp(ls)
        mu = c + b * x
        ll = np.sum(norm.logpdf(y[u], mu[u], s)) + np.sum(norm.logsf(y[cens], mu[cens], s))
        return -ll

    sol = minimize(nll, np.array([c0, b0, math.log(s0)]), method="Nelder-Mead",
                   options=dict(xatol=1e-6, fatol=1e-9, maxiter=4000))
    c, b, ls = sol.x
    return float(c), float(b), float(math.exp(max(ls, -12)))


def _pct(v):
    v = np.asarray(v, float)
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [None, None]


def censored_loglog(points: list[PointData], var: str, n_boot: int = 500, seed: int = 0) -> dict:
    """log Mem = c + slope log x over the in-regime points (censored ones kept as censored). Returns slope,
    intercept, ci, the points (x, memory, censored, in_regime), counts, and the number of usable resamples."""
    use = [p for p in points if p.in_regime]
    vals = [p.value() for p in use]
    out = dict(var=var, points=[dict(x=p.x[var], mem=p.value()[0], censored=p.value()[1], in_regime=p.in_regime)
                                for p in points],
               n_in_regime=len(use), n_out_of_regime=len(points) - len(use),
               n_censored=int(sum(c for _, c in vals)), slope=None, intercept=None, ci=[None, None], n_boot=0)
    if len(use) < MIN_POINTS:
        out["why_no_fit"] = f"fewer than {MIN_POINTS} in-regime points"
        return out
    lx = np.log([p.x[var] for p in use])
    f = tobit(lx, np.log([v for v, _ in vals]), [c for _, c in vals])
    if f is None:
        out["why_no_fit"] = "fewer than 2 uncensored points"
        return out
    out.update(intercept=f[0], slope=f[1], sigma=f[2])
    rng = np.random.default_rng(seed)
    bs = []
    for _ in range(n_boot):
        vv = [p.value(rng) for p in use]
        g = tobit(lx, np.log([v for v, _ in vv]), [c for _, c in vv])
        if g is not None:
            bs.append(g[1])
    out["n_boot"] = len(bs)
    out["ci"] = _pct(bs)
    return out


def _a_of_r(groups: dict, vals: dict, through_origin: bool = False) -> dict:
    """{r: (A, B)} from Mem = A d + B per r (or Mem = A d, B = 0, with ``through_origin``); groups {r: [d values]},
    vals {(r, d): (mem, cens)}; an r with a censored point (or, for the free fit, fewer than 2 distinct d) is
    skipped."""
    out = {}
    for r, ds in groups.items():
        if (len(set(ds)) < 2 and not through_origin) or any(vals[(r, d)][1] for d in ds):
            continue
        y = np.array([vals[(r, d)][0] for d in ds])
        x = np.asarray(ds, float)
        if through_origin:
            out[r] = (float(np.sum(x * y) / np.sum(x * x)), 0.0)
            continue
        B, A = ols(x[:, None], y)
        out[r] = (float(A), float(B))
    return out


def a_r_slope(points: list[PointData], n_boot: int = 500, seed: int = 0, through_origin: bool = False) -> dict:
    """Per r, Mem = A(r) d + B(r) over the in-regime d points (``through_origin``: Mem = A(r) d, which is steadier
    when the d grid per r is short); then log A(r) = c + slope log r over the r values with a positive A. Returns
    A(r), B(r) with intervals, the slope with its interval, and what was excluded."""
    use = [p for p in points if p.in_regime]
    groups: dict = {}
    for p in use:
        groups.setdefault(int(p.x["r"]), []).append(int(p.x["d"]))
    vals = {(int(p.x["r"]), int(p.x["d"])): p.value() for p in use}
    ab = _a_of_r(groups, vals, through_origin)
    excluded = {r: ("censored point" if any(vals[(r, d)][1] for d in ds) else "fewer than 2 d values")
                for r, ds in groups.items() if r not in ab}
    out = dict(A={str(r): v[0] for r, v in ab.items()}, B={str(r): v[1] for r, v in ab.items()},
               excluded_r={str(k): v for k, v in excluded.items()}, n_out_of_regime=len(points) - len(use),
               slope=None, ci=[None, None], A_ci={}, n_boot=0)
    pos = sorted(r for r, (A, _) in ab.items() if A > 0)
    if len(pos) < MIN_POINTS:
        out["why_no_fit"] = f"fewer than {MIN_POINTS} values of r with A(r) > 0 from in-regime, uncensored points"
        return out
    c, b = ols(np.log(pos)[:, None], np.log([ab[r][0] for r in pos]))
    out.update(slope=float(b), intercept=float(c), r_used=pos)
    rng = np.random.default_rng(seed)
    bs, As = [], {r: [] for r in pos}
    for _ in range(n_boot):
        vb = {(int(p.x["r"]), int(p.x["d"])): p.value(rng) for p in use}
        abb = _a_of_r({r: groups[r] for r in pos}, vb, through_origin)
        for r, (A, _) in abb.items():
            As[r].append(A)
        rr = [r for r in pos if r in abb and abb[r][0] > 0]
        if len(rr) >= MIN_POINTS:
            bs.append(ols(np.log(rr)[:, None], np.log([abb[r][0] for r in rr]))[1])
    out["n_boot"] = len(bs)
    out["ci"] = _pct(bs)
    out["A_ci"] = {str(r): _pct(v) for r, v in As.items()}
    return out


def _d_slope_fit(groups: dict, vals: dict):
    """Common slope of log Mem on log d with one intercept per r (r values with >= 2 distinct d and no censored
    point); None if fewer than MIN_POINTS points remain."""
    rs = [r for r, ds in groups.items() if len(set(ds)) >= 2 and not any(vals[(r, d)][1] for d in ds)]
    rows = [(r, d) for r in rs for d in groups[r]]
    if len(rows) < MIN_POINTS or not rs:
        return None, rs
    X = np.zeros((len(rows), len(rs) + 1))
    for i, (r, d) in enumerate(rows):
        X[i, rs.index(r)] = 1.0
        X[i, -1] = math.log(d)
    y = np.log([vals[k][0] for k in rows])
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    return float(coef[-1]), rs


def d_slope(points: list[PointData], n_boot: int = 500, seed: int = 0) -> dict:
    """The d exponent at fixed r: log Mem = c_r + slope log d over the in-regime points (1: memory linear in d),
    with a 95 % bootstrap interval over seeds."""
    use = [p for p in points if p.in_regime]
    groups: dict = {}
    for p in use:
        groups.setdefault(int(p.x["r"]), []).append(int(p.x["d"]))
    vals = {(int(p.x["r"]), int(p.x["d"])): p.value() for p in use}
    slope, rs = _d_slope_fit(groups, vals)
    out = dict(slope=slope, ci=[None, None], r_used=sorted(rs), n_points=sum(len(groups[r]) for r in rs),
               n_out_of_regime=len(points) - len(use), n_boot=0)
    if slope is None:
        out["why_no_fit"] = f"fewer than {MIN_POINTS} in-regime, uncensored points in r groups with >= 2 d values"
        return out
    rng = np.random.default_rng(seed)
    bs = []
    for _ in range(n_boot):
        vb = {(int(p.x["r"]), int(p.x["d"])): p.value(rng) for p in use}
        b, _ = _d_slope_fit({r: groups[r] for r in rs}, vb)
        if b is not None:
            bs.append(b)
    out["n_boot"] = len(bs)
    out["ci"] = _pct(bs)
    return out


def verdict_for(ci, predicted: float, rival: float | None) -> str:
    """'holds the prediction and excludes the rival' / 'holds both' / 'excludes the prediction' / 'no interval'."""
    lo, hi = ci
    if lo is None or hi is None:
        return "no interval"
    if not lo <= predicted <= hi:
        return "excludes the prediction"
    if rival is not None and lo <= rival <= hi:
        return "holds both the prediction and the rival"
    return "holds the prediction and excludes the rival"
