"""Candidate-size grids, whole-curve runs and the robust minimal size M* (pass rate over seeds).

The grid: unit steps up to ``unit_until``, then a coarse tail (16, 20, 24, 32, 40, 48, 64, ...),
capped. Candidates are grouped into buckets that share one padded size (next power of two, at least 16), and each
bucket is one jitted call vmapped over seeds x candidates. ``run_curve`` runs EVERY bucket (no early stop), so the
whole curve is known and "passing above M*" can be checked.

M* (``m_star_rate``): the smallest grid size M such that the pass rate over seeds (share of seeds whose error is at
most the threshold) is at least ``rate`` (default 1/2) at M AND at every larger size of the grid. If the pass rate at
the largest size is below ``rate``, M* is right-censored: it is only known to exceed the grid's cap. There is no
running minimum: a lucky early pass followed by failures does not count.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


def default_grid(cap: int, unit_until: int = 12, start: int = 1) -> list[int]:
    """Unit steps from ``start`` up to ``unit_until``, then the coarse tail, capped at ``cap`` (cap itself
    included)."""
    tail = [16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024, 1280, 1536, 2048,
            2560, 3072, 4096, 5120, 6144, 8192]
    g = [m for m in range(start, unit_until + 1) if m <= cap] + [m for m in tail if unit_until < m <= cap]
    if not g or g[-1] < cap:
        g.append(int(cap))
    return g


def bucketize(grid: list[int], min_pad: int = 16) -> list[tuple[int, list[int]]]:
    """Group sizes by padded size (next power of two >= M, at least min_pad). Returns [(pad, [sizes...]), ...]."""
    out: dict[int, list[int]] = {}
    for m in grid:
        pad = max(min_pad, 1 << (int(m) - 1).bit_length())
        out.setdefault(pad, []).append(int(m))
    return sorted(out.items())


class Curve(NamedTuple):
    sizes: list[int]                 # candidate sizes, increasing (the whole grid)
    metrics: dict                    # name -> np.ndarray (S, len(sizes))
    aux: list                        # per bucket: the runner's auxiliary output (e.g. the distilled sets)
    pads: list[int]                  # per bucket: padded size


def run_curve(run_bucket: Callable, grid: list[int], log=None) -> Curve:
    """Run every bucket of ``grid`` (no early stop). run_bucket(sizes (C,), pad) -> (aux, {name: (S, C)})."""
    sizes_run: list[int] = []
    metrics: dict = {}
    aux, pads = [], []
    for pad, sizes in bucketize(grid):
        a, m = run_bucket(np.asarray(sizes, dtype=np.int32), pad)
        aux.append(a)
        pads.append(pad)
        sizes_run += sizes
        for k, v in m.items():
            v = np.asarray(v, dtype=float)
            metrics[k] = v if k not in metrics else np.concatenate([metrics[k], v], axis=1)
        if log is not None:
            log(f"    pad {pad}: sizes {sizes[0]}..{sizes[-1]} done")
    return Curve(sizes_run, metrics, aux, pads)


def passes(errs, eps) -> np.ndarray:
    """(S, C) bool: err <= eps (NaN fails). eps scalar."""
    errs = np.asarray(errs, dtype=float)
    return np.where(np.isnan(errs), False, errs <= float(eps))


def m_star_index(passed: np.ndarray, rate: float = 0.5) -> int:
    """Index of M* on the grid from a (S, C) pass matrix, or -1 if censored (pass rate below ``rate`` at the
    largest size). M* is the smallest index i with pass rate >= rate at every j >= i."""
    pr = np.asarray(passed, dtype=float).mean(axis=0)
    ok = pr >= rate - 1e-12
    if not ok[-1]:
        return -1
    bad = np.nonzero(~ok)[0]
    return 0 if len(bad) == 0 else int(bad[-1] + 1)


def m_star_rate(sizes, passed, rate: float = 0.5) -> tuple[float, bool]:
    """(M*, censored). Censored: M* > sizes[-1], returned as sizes[-1] with censored = True."""
    i = m_star_index(passed, rate)
    return (float(sizes[-1]), True) if i < 0 else (float(sizes[i]), False)


def m_star_per_seed(sizes, passed) -> np.ndarray:
    """Per seed: the smallest size from which the seed passes at every larger size; NaN where it fails at the cap."""
    passed = np.asarray(passed, dtype=bool)
    out = []
    for row in passed:
        out.append(m_star_rate(sizes, row[None, :], rate=1.0))
    return np.array([np.nan if c else m for m, c in out])


def bootstrap_index(passed: np.ndarray, rng: np.random.Generator, rate: float = 0.5) -> int:
    """m_star_index of one bootstrap resample of the seeds (rows)."""
    S = passed.shape[0]
    return m_star_index(passed[rng.integers(0, S, size=S)], rate)


def select_aux(curve: Curve, idx_per_seed, take: Callable):
    """Pick, for each seed s, the auxiliary output of candidate idx_per_seed[s] (index into curve.sizes).
    take(aux_bucket, seed, j, pad) extracts one item; returns the list of items per seed."""
    bounds = np.cumsum([0] + [len(b) for _, b in bucketize(curve.sizes)])
    out = []
    for s, i in enumerate(idx_per_seed):
        i = int(i)
        bkt = int(np.searchsorted(bounds, i, side="right") - 1)
        out.append(take(curve.aux[bkt], s, i - bounds[bkt], curve.pads[bkt]))
    return out
