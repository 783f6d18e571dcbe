"""Euclidean norms that are safe at zero.

``jnp.linalg.norm(x)`` is ``sqrt(sum(x * x))``; at ``x = 0`` its gradient is ``0 * inf = NaN``, and that NaN
reaches every input of a loss whose value went through it (a zero row of a gradient tensor, from a dead ReLU unit
or a zero-initialised layer, made DC's distance NaN). PyTorch's ``torch.norm``, which the reference code uses,
defines the gradient at zero as 0. The functions here compute the same value as ``jnp.linalg.norm`` (bit for bit:
the same sum of squares and square root) and take the gradient 0 where the norm is 0, with the "double where"
(the square root never sees a zero, so no NaN is formed even in the branch ``where`` discards).

Use these, never ``jnp.linalg.norm`` or ``jnp.sqrt`` of a sum of squares, wherever a norm can be differentiated.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdd.types import PyTree


def _safe_sqrt(s: jax.Array) -> jax.Array:
    """sqrt(s) for s >= 0 with the gradient 0 (not inf) at s = 0."""
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, jnp.ones_like(s))), jnp.zeros_like(s))


def safe_norm(x: jax.Array, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> jax.Array:
    """The Euclidean norm of ``x`` over ``axis`` (all axes when None), as ``jnp.linalg.norm(x, axis=axis)`` for a
    vector norm, with gradient 0 where the norm is 0 (``torch.norm``'s convention) instead of NaN."""
    return _safe_sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims))


def safe_global_norm(tree: PyTree) -> jax.Array:
    """The Euclidean norm of all leaves of ``tree`` together (``optax.global_norm``), safe at zero."""
    return _safe_sqrt(sum((jnp.sum(x * x) for x in jax.tree.leaves(tree)), jnp.zeros(())))


def safe_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` over ``axis`` (``torch.nn.functional.normalize``): unit rows, a zero row stays zero
    (value 0, gradient ``1/eps`` times the identity, finite)."""
    return x / jnp.maximum(safe_norm(x, axis=axis, keepdims=True), eps)


def cosine_similarity(a: jax.Array, b: jax.Array, axis: int = -1, eps: float = 1e-6) -> jax.Array:
    """``<a, b> / (||a|| * ||b|| + eps)`` over ``axis`` (DC's row-wise and whole-vector cosine; the reference adds
    ``eps`` = 1e-6 to the product of the norms). A zero ``a`` or ``b`` gives 0 with a finite gradient: with respect
    to ``b`` it is ``a / (||a|| ||b|| + eps)`` (so ``a / eps`` when ``b`` = 0, and 0 when ``a`` = 0 too)."""
    return jnp.sum(a * b, axis=axis) / (safe_norm(a, axis=axis) * safe_norm(b, axis=axis) + eps)
