"""Preprocessing as a saved pytree: per-channel mean/std normalisation, or ZCA whitening (docs/methods.md 1.1).

``Preprocess`` is a NamedTuple of arrays, so it passes through ``jit``/``vmap`` as an argument. The two modes differ in
pytree structure, not in a traced flag: with ZCA off, the three ``zca_*`` fields are ``None`` (no leaves), so the
branch in ``apply_preprocess`` is resolved at trace time.

ZCA follows kornia's ``ZCAWhitening(eps=0.1, compute_inv=True)`` as used by MTT: fitted on un-normalised [0, 1]
training images flattened per image, unbiased covariance (divide by n - 1), ``W = U diag(1/sqrt(S + eps)) U^T`` and
``W^-1 = U diag(sqrt(S + eps)) U^T``; ``x_white = (x_flat - mu) W``. Mean/std normalisation is skipped when ZCA is on
(``mean`` = 0, ``std`` = 1 then). jaxdd flattens NHWC images in (h, w, c) order, so a jaxdd ZCA matrix is kornia's
(c, h, w) matrix with rows and columns permuted, the same transform.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.data.checks import check_images
from jaxdd.types import JaxddError


# ZCA is a dense D x D product: ask for full float32 matmuls, not the faster reduced-precision default some
# accelerators use, so a whitened set means the same thing wherever it was made.
_EXACT = jax.lax.Precision.HIGHEST


class Preprocess(NamedTuple):
    """Fitted preprocessing. mean, std: (c,) float32. zca_matrix, zca_inverse: (D, D) and zca_mean: (D,) float32,
    D = h * w * c, or all three None when ZCA is off."""

    mean: jnp.ndarray
    std: jnp.ndarray
    zca_matrix: jnp.ndarray | None = None
    zca_inverse: jnp.ndarray | None = None
    zca_mean: jnp.ndarray | None = None

    @property
    def uses_zca(self) -> bool:
        return self.zca_matrix is not None


def _channel_vector(v, c: int, what: str) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, c)
    if arr.size != c:
        raise JaxddError(f"{what} must have one value per channel ({c}), got {arr.size}: {v!r}.")
    return arr


def fit_preprocess(
    images01,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    zca: bool = False,
    zca_reg: float = 0.1,
) -> Preprocess:
    """Fits preprocessing on training images in [0, 1].

    Args:
      images01: (n, h, w, c) float training images, NOT normalised.
      mean, std: per-channel constants (e.g. ``ds.mean``, ``ds.std``); each one left None is computed from
        ``images01`` (population statistics over n, h, w). Must be None when ``zca`` is True.
      zca: fit ZCA whitening instead of mean/std normalisation.
      zca_reg: the eigenvalue regulariser ``eps`` (kornia/MTT: 0.1).

    Returns:
      A ``Preprocess`` pytree.
    """
    check_images(images01, "images01")
    x = np.asarray(images01)
    n, h, w, c = x.shape
    if zca:
        if mean is not None or std is not None:
            raise JaxddError(
                "fit_preprocess: mean/std normalisation is skipped when zca=True (docs/methods.md 1.1: ZCA is fitted on "
                "un-normalised [0, 1] images); pass mean=None, std=None."
            )
        if zca_reg < 0:
            raise JaxddError(f"zca_reg must be >= 0, got {zca_reg}.")
        if n < 2:
            raise JaxddError(f"ZCA needs at least 2 images to estimate a covariance, got {n}.")
        d = h * w * c
        flat = x.reshape(n, d)
        mu = flat.mean(axis=0, dtype=np.float64)
        cov = np.zeros((d, d), np.float64)
        for s in range(0, n, 4096):  # bounded memory for CIFAR-size data
            chunk = flat[s : s + 4096].astype(np.float64) - mu
            cov += chunk.T @ chunk
        cov /= n - 1
        evals, evecs = np.linalg.eigh(cov)
        evals = np.clip(evals, 0.0, None) + zca_reg
        if np.any(evals <= 1e-12 * max(float(evals.max()), 1e-30)):
            raise JaxddError(
                "ZCA covariance is singular and zca_reg=0: use zca_reg > 0 (kornia/MTT use 0.1) or more images."
            )
        wmat = (evecs / np.sqrt(evals)) @ evecs.T
        winv = (evecs * np.sqrt(evals)) @ evecs.T
        f32 = lambda a: jnp.asarray(a, jnp.float32)
        return Preprocess(f32(np.zeros(c)), f32(np.ones(c)), f32(wmat), f32(winv), f32(mu))
    m = x.mean(axis=(0, 1, 2), dtype=np.float64) if mean is None else _channel_vector(mean, c, "mean")
    if std is None:
        sq = np.zeros(c, np.float64)
        for i in range(0, n, 4096):  # float64 accuracy without a float64 copy of the whole set
            sq += ((x[i : i + 4096].astype(np.float64) - m) ** 2).sum(axis=(0, 1, 2))
        s = np.sqrt(sq / (n * h * w))
    else:
        s = _channel_vector(std, c, "std")
    if np.any(s <= 0):
        raise JaxddError(f"std must be > 0 in every channel, got {s.tolist()} (constant images?).")
    return Preprocess(jnp.asarray(m, jnp.float32), jnp.asarray(s, jnp.float32))


def apply_preprocess(p: Preprocess, x01):
    """Maps [0, 1] images (..., h, w, c) to the normalised (or whitened) space the models see. Jittable."""
    x = jnp.asarray(x01)
    if p.zca_matrix is None:
        return (x - p.mean) / p.std
    lead, tail = x.shape[:-3], x.shape[-3:]
    flat = x.reshape(lead + (-1,))
    if flat.shape[-1] != p.zca_matrix.shape[0]:
        raise JaxddError(
            f"apply_preprocess: images of shape {tail} have {flat.shape[-1]} values but the ZCA was fitted on "
            f"{p.zca_matrix.shape[0]}."
        )
    out = jnp.matmul(flat - p.zca_mean, p.zca_matrix, precision=_EXACT)
    return out.reshape(x.shape)


def invert_preprocess(p: Preprocess, x):
    """Maps normalised (or whitened) images back to [0, 1] pixel units, e.g. for display. Jittable; not clipped."""
    x = jnp.asarray(x)
    if p.zca_matrix is None:
        return x * p.std + p.mean
    flat = x.reshape(x.shape[:-3] + (-1,))
    out = jnp.matmul(flat, p.zca_inverse, precision=_EXACT) + p.zca_mean
    return out.reshape(x.shape)


def preprocess_to_arrays(p: Preprocess) -> dict[str, np.ndarray]:
    """Plain numpy arrays for saving (e.g. in synthetic.npz): keys mean, std and, with ZCA, zca_matrix, zca_inverse,
    zca_mean."""
    out = {"mean": np.asarray(p.mean, np.float32), "std": np.asarray(p.std, np.float32)}
    if p.zca_matrix is not None:
        out["zca_matrix"] = np.asarray(p.zca_matrix, np.float32)
        out["zca_inverse"] = np.asarray(p.zca_inverse, np.float32)
        out["zca_mean"] = np.asarray(p.zca_mean, np.float32)
    return out


def preprocess_from_arrays(d) -> Preprocess:
    """Inverse of ``preprocess_to_arrays``; accepts a dict or an ``np.load`` result (extra keys are ignored)."""
    keys = set(d.keys()) if hasattr(d, "keys") else set()
    missing = {"mean", "std"} - keys
    if missing:
        raise JaxddError(f"preprocess arrays lack {sorted(missing)}; found keys {sorted(keys)}.")
    f32 = lambda a: jnp.asarray(np.asarray(a), jnp.float32)
    zkeys = ("zca_matrix", "zca_inverse", "zca_mean")
    present = [k in keys for k in zkeys]
    if any(present) and not all(present):
        raise JaxddError(f"preprocess arrays must hold all of {zkeys} or none; found keys {sorted(keys)}.")
    if all(present):
        return Preprocess(f32(d["mean"]), f32(d["std"]), *(f32(d[k]) for k in zkeys))
    return Preprocess(f32(d["mean"]), f32(d["std"]))
