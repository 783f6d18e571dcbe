"""Minimal-memory search over a grid of candidate sizes, vmapped within buckets and early-stopped across them.

The grid (THEORY.md section 8): unit steps up to 12, then 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256, ...,
capped. Candidates are grouped into buckets that share one padded size (the next power of two, at least 16: compiles cost more than padded compute at small sizes); a bucket
is one jitted, vmapped call over seeds x candidates. Buckets run in increasing size until every criterion is met by
every seed (M* is the first grid point where the monotone envelope, the cumulative minimum over M, is below the
threshold, which is the first point below it), so large candidates are only paid for when needed.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


def default_grid(cap: int, unit_until: int = 12) -> list[int]:
    """Unit steps up to ``unit_until``, then the coarse tail, capped at ``cap`` (cap itself included)."""
    tail = [16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
    g = [m for m in range(1, unit_until + 1) if m <= cap] + [m for m in tail if unit_until < m <= cap]
    if g[-1] < cap:
        g.append(int(cap))
    return g


def bucketize(grid: list[int], min_pad: int = 16) -> list[tuple[int, list[int]]]:
    """Group sizes by padded size (next power of two >= M, at least min_pad). Returns [(pad, [sizes...]), ...]."""
    out: dict[int, list[int]] = {}
    for m in grid:
        pad = max(min_pad, 1 << (int(m) - 1).bit_length())
        out.setdefault(pad, []).append(int(m))
    return sorted(out.items())


class SearchResult(NamedTuple):
    sizes: list[int]                 # candidate sizes actually run, increasing
    metrics: dict                    # name -> np.ndarray (S, len(sizes))
    aux: list                        # per bucket: the runner's auxiliary output (e.g. the distilled sets)
    pads: list[int]                  # per bucket: padded size


def first_hit(errs: np.ndarray, eps) -> np.ndarray:
    """(S, C) errors, eps scalar or (S,) -> index of the first candidate with err <= eps per seed, -1 if none."""
    errs = np.asarray(errs, dtype=float)
    env = np.minimum.accumulate(np.where(np.isnan(errs), np.inf, errs), axis=-1)
    ok = env <= np.asarray(eps, dtype=float).reshape(-1, 1)
    idx = np.argmax(ok, axis=-1)
    return np.where(ok.any(axis=-1), idx, -1)


def m_star(res: SearchResult, metric: str, eps) -> np.ndarray:
    """Per-seed minimal size at threshold eps (np.nan when censored, i.e. not reached on the grid run)."""
    idx = first_hit(res.metrics[metric], eps)
    sizes = np.asarray(res.sizes, dtype=float)
    return np.where(idx >= 0, sizes[np.maximum(idx, 0)], np.nan)


def search(run_bucket: Callable, grid: list[int], criteria: list[tuple[str, object]], log=None) -> SearchResult:
    """Run buckets of ``grid`` in order until every (metric, eps) criterion is met by every seed.

    run_bucket(sizes: np.ndarray (C,), pad: int) -> (aux, metrics dict of (S, C) arrays)."""
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
        done = all((first_hit(metrics[name], eps) >= 0).all() for name, eps in criteria)
        if log is not None:
            log(f"    pad {pad}: sizes {sizes} -> " + ", ".join(
                f"{name} med {np.median(metrics[name][:, -len(sizes):], axis=0).round(4).tolist()}"
                for name, _ in criteria))
        if done:
            break
    return SearchResult(sizes_run, metrics, aux, pads)


def select_aux(res: SearchResult, idx_per_seed: np.ndarray, take: Callable):
    """Pick, for each seed s, the auxiliary output of candidate idx_per_seed[s] (index into res.sizes; -1 means the
    last candidate run). take(aux_bucket, seed, j) extracts one item; returns the list of items per seed."""
    bounds = np.cumsum([0] + [len(b) for _, b in bucketize(res.sizes)])
    out = []
    for s, i in enumerate(idx_per_seed):
        i = len(res.sizes) - 1 if i < 0 else int(i)
        bkt = int(np.searchsorted(bounds, i, side="right") - 1)
        out.append(take(res.aux[bkt], s, i - bounds[bkt], res.pads[bkt]))
    return out
