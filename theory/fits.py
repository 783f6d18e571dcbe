"""Log-log fits of minimal memory with bootstrap confidence intervals over seeds (THEORY.md section 10).

Inputs are per-seed minimal memories Y of shape (P points, S seeds), NaN where the search was censored (threshold not
reached on the grid). A point enters a fit when at least half of its seeds are uncensored; its value is the median
over the uncensored seeds. Bootstrap: every point's seeds are resampled with replacement, independently, B times;
intervals are 2.5 / 97.5 percentiles. Randomness: a local ``numpy.random.Generator`` seeded explicitly (no global
RNG); same seed, same intervals.
"""
from __future__ import annotations

import numpy as np


def _point_values(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median over uncensored seeds and a mask of usable points. Y (P, S)."""
    Y = np.asarray(Y, dtype=float)
    ok = np.sum(np.isfinite(Y), axis=1) * 2 >= Y.shape[1]
    with np.errstate(all="ignore"):
        med = np.array([np.nanmedian(row) if np.isfinite(row).any() else np.nan for row in Y])
    return med, ok & np.isfinite(med) & (med > 0)


def ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with intercept: returns [c, b_1, ..., b_k] for y ~ c + X b. X (n, k), y (n,)."""
    A = np.column_stack([np.ones(len(y)), X])
    return np.linalg.lstsq(A, y, rcond=None)[0]


def _resample(Y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    P, S = Y.shape
    idx = rng.integers(0, S, size=(P, S))
    return np.take_along_axis(Y, idx, axis=1)


def loglog_fit(x, Y, n_boot: int = 1000, seed: int = 0) -> dict:
    """Fit log Y = c + slope log x. x (P,), Y (P, S). Returns slope, intercept, 95 % CI of the slope, the points
    used, and the number of usable bootstrap fits. None for slope when fewer than 2 points are usable."""
    x = np.asarray(x, dtype=float)
    Y = np.asarray(Y, dtype=float)
    med, ok = _point_values(Y)
    out = dict(x=x.tolist(), median=[None if not np.isfinite(v) else float(v) for v in med], used=ok.tolist(),
               slope=None, intercept=None, ci=[None, None], n_boot=0)
    if ok.sum() < 2:
        return out
    c, b = ols(np.log(x[ok])[:, None], np.log(med[ok]))
    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(n_boot):
        m, k = _point_values(_resample(Y, rng))
        k = k & ok
        if k.sum() >= 2 and np.ptp(np.log(x[k])) > 0:
            slopes.append(ols(np.log(x[k])[:, None], np.log(m[k]))[1])
    out.update(slope=float(b), intercept=float(c), n_boot=len(slopes))
    if slopes:
        out["ci"] = [float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))]
    return out


def joint_fit(d, r, L, Y, n_boot: int = 1000, seed: int = 0) -> dict:
    """log Y = c + alpha log d + beta log r + gamma log L over all points of S1-S3. d, r, L (P,), Y (P, S).
    Returns coefficients and 95 % bootstrap intervals (None where the design is rank deficient)."""
    Z = np.log(np.column_stack([d, r, L]).astype(float))
    Y = np.asarray(Y, dtype=float)
    med, ok = _point_values(Y)
    names = ("alpha_d", "beta_r", "gamma_L")
    out = {n: None for n in names} | {"ci": {n: [None, None] for n in names}, "n_points": int(ok.sum())}
    if ok.sum() < 4 or np.linalg.matrix_rank(np.column_stack([np.ones(ok.sum()), Z[ok]])) < 4:
        return out
    coef = ols(Z[ok], np.log(med[ok]))
    out.update({n: float(v) for n, v in zip(names, coef[1:])})
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        m, k = _point_values(_resample(Y, rng))
        k = k & ok
        if k.sum() >= 4 and np.linalg.matrix_rank(np.column_stack([np.ones(k.sum()), Z[k]])) == 4:
            boots.append(ols(Z[k], np.log(m[k]))[1:])
    if boots:
        B = np.array(boots)
        out["ci"] = {n: [float(np.percentile(B[:, i], 2.5)), float(np.percentile(B[:, i], 97.5))]
                     for i, n in enumerate(names)}
    return out


def two_term_model(params, d, r, L):
    """Mem = A r^b d^a + B L^c with params = (log A, a, b, log B, c)."""
    lA, a, b, lB, c = params
    return np.exp(lA) * r**b * d**a + np.exp(lB) * L**c


def _fit_two_term(d, r, L, y):
    from scipy.optimize import least_squares

    def res(p):
        return np.log(two_term_model(p, d, r, L)) - np.log(y)

    best = None
    for a0, b0, c0 in ((1.0, 2.0, 1.0), (1.0, 1.0, 0.5), (0.5, 1.0, 1.0)):
        x0 = np.array([np.log(np.min(y)) - 3.0, a0, b0, np.log(np.min(y)) - 3.0, c0])
        try:
            sol = least_squares(res, x0, bounds=([-30, -1, -1, -30, -1], [30, 4, 4, 30, 4]))
        except ValueError:
            continue
        if best is None or sol.cost < best.cost:
            best = sol
    return None if best is None else best.x


def two_term_fit(d, r, L, Y, n_boot: int = 300, seed: int = 0) -> dict:
    """Nonlinear least squares (log residuals) of Mem = A r^b d^a + B L^c on per-point medians, with bootstrap
    intervals for (a, b, c). Y (P, S)."""
    d, r, L = (np.asarray(v, dtype=float) for v in (d, r, L))
    Y = np.asarray(Y, dtype=float)
    med, ok = _point_values(Y)
    names = ("a_d", "b_r", "c_L")
    out = {n: None for n in names} | {"A": None, "B": None, "ci": {n: [None, None] for n in names},
                                      "n_points": int(ok.sum())}
    if ok.sum() < 5:
        return out
    p = _fit_two_term(d[ok], r[ok], L[ok], med[ok])
    if p is None:
        return out
    out.update(a_d=float(p[1]), b_r=float(p[2]), c_L=float(p[4]), A=float(np.exp(p[0])), B=float(np.exp(p[3])))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        m, k = _point_values(_resample(Y, rng))
        k = k & ok
        if k.sum() >= 5:
            q = _fit_two_term(d[k], r[k], L[k], m[k])
            if q is not None:
                boots.append(q[[1, 2, 4]])
    if boots:
        B = np.array(boots)
        out["ci"] = {n: [float(np.percentile(B[:, i], 2.5)), float(np.percentile(B[:, i], 97.5))]
                     for i, n in enumerate(names)}
    return out


def verdict_for(ci, predicted: float, rival: float | None) -> str:
    """'supported' if the interval holds the prediction and excludes the rival; 'not separable' if it holds both or
    cannot be computed; 'contradicted' if it excludes the prediction."""
    lo, hi = ci
    if lo is None or hi is None:
        return "not separable"
    if not lo <= predicted <= hi:
        return "contradicted"
    if rival is not None and lo <= rival <= hi:
        return "not separable"
    return "supported"
