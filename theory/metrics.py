"""Memory accounting and the structural metrics (span(U) shares).

Memory is the number of real scalars stored: inputs plus labels plus learned extras. Nothing is hidden: the stage-2
"span" parameterisation pays its coordinates but reuses the stage-1 inputs (counted once, in stage 1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


# ---------------------------------------------------------------------------------------------- memory (reals)

def memory_points(M: int, d: int) -> int:
    """M labelled points in R^d: M (d + 1) reals (real subsets, stage-1 sets, free stage-2 sets, end-to-end sets)."""
    return int(M) * (int(d) + 1)


def memory_stage2(kind: str, M2: int, d: int, M1: int) -> int:
    """Stage-2 storage: free M2 (d + 1); span M2 (M1 + 1) (coordinates + labels; D1 counted in stage 1);
    line d + 2 M2 (one direction, M2 positions, M2 labels)."""
    if kind == "free":
        return memory_points(M2, d)
    if kind == "span":
        return int(M2) * (int(M1) + 1)
    if kind == "line":
        return int(d) + 2 * int(M2)
    raise ValueError(kind)


def memory_model(d: int, L: int) -> int:
    """Storing the trained network itself: W1 (L d), biases (L) and readout (L)."""
    return int(L) * int(d) + 2 * int(L)


def memory_model_lowrank(d: int, L: int, r: int) -> int:
    """Storing the network with the first layer at rank r: r d + L r, plus biases and readout 2L (r d + L r + L
    counts the readout only; we also count the biases)."""
    return int(r) * int(d) + int(L) * int(r) + 2 * int(L)


def memory_claim(d: int, r: int, L: int) -> int:
    """The paper's order r^2 d + L, constants set to 1 (a reference line, not a prediction of constants)."""
    return int(r) ** 2 * int(d) + int(L)


# ---------------------------------------------------------------------------------------------- structure

def x_in_span(X, U, mask=None):
    """Share of the (live) inputs' energy inside span(U): ||X U^T||^2 / ||X||^2. X (M, d), U (r, d)."""
    if mask is not None:
        X = X * mask[:, None]
    return jnp.sum((X @ U.T) ** 2) / jnp.maximum(jnp.sum(X * X), 1e-30)


def offsub(W, U):
    """Share of first-layer energy outside span(U): ||W (I - U^T U)||^2 / ||W||^2. W (L, d)."""
    P = W - (W @ U.T) @ U
    return jnp.sum(P * P) / jnp.maximum(jnp.sum(W * W), 1e-30)


def principal_cos2(X, U, mask=None):
    """Mean squared cosine of the principal angles between the top-r right singular vectors of X and span(U)
    (1 = same subspace, about r/d for a random one). X (M, d), U (r, d)."""
    if mask is not None:
        X = X * mask[:, None]
    r = U.shape[0]
    # top-r right singular vectors via eigh of X^T X (robust where XLA's CPU SVD hung on degenerate inputs)
    w, V = jnp.linalg.eigh(X.T @ X)
    k = min(r, X.shape[0])
    Vk = V[:, -k:] * (w[-k:] > 1e-12 * jnp.maximum(w[-1], 1e-30))[None, :]
    return jnp.sum((Vk.T @ U.T) ** 2) / r


def first_hit(errs, eps):
    """Index of the first candidate with err <= eps along the last axis (monotone envelope: cumulative minimum),
    or -1 if none. errs (..., C), eps broadcastable to (...)."""
    env = _cummin(jnp.asarray(errs))
    ok = env <= jnp.expand_dims(jnp.asarray(eps), -1)
    idx = jnp.argmax(ok, axis=-1)
    return jnp.where(jnp.any(ok, axis=-1), idx, -1)


def _cummin(x):
    return jax.lax.cummin(x, axis=x.ndim - 1)


def envelope(errs):
    """Monotone envelope (cumulative minimum over increasing memory), same shape."""
    return _cummin(jnp.asarray(errs))
