"""The Parameterization contract: how a synthetic set is stored and decoded.

A parameterization owns a learnable pytree and a pure, differentiable ``decode`` to images; objectives only ever
see decoded images. Images are class-major: class 0's ``images_per_class`` images first, then class 1's, ...

Budgets are counted in stored float32 numbers, so parameterizations that store images more compactly (low-rank
factors) are compared with pixels at equal memory: ``pixel_budget(num_classes, ipc, shape)`` is the number of floats
``ipc`` pixel images per class take, and every parameterization reports ``floats(params)``.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxdd.types import JaxddError, PRNGKey, PyTree


class Parameterization(NamedTuple):
    """init(key, real) -> learnable pytree, where real: (K, images_per_class, h, w, c) real images of each class (used
    by real-based inits; noise inits use only its shape). decode(params) -> (K * images_per_class, h, w, c).
    floats(params) -> stored float count. name/config describe it for artifacts."""

    name: str
    init: Callable[[PRNGKey, jax.Array], PyTree]
    decode: Callable[[PyTree], jax.Array]
    images_per_class: int
    floats: Callable[[PyTree], int]
    config: dict


def pixel_budget(num_classes: int, ipc: int, image_shape: tuple[int, int, int]) -> int:
    """Floats stored by ``ipc`` full-pixel images per class."""
    return num_classes * ipc * math.prod(image_shape)


def tree_floats(params: PyTree) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))


def class_major_labels(num_classes: int, images_per_class: int) -> jax.Array:
    """Hard labels [0]*m + [1]*m + ... of a class-major synthetic set: (K*m,) int32."""
    return jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), images_per_class)


INITS = ("real", "noise")


def pixels(ipc: int, init: str = "real") -> Parameterization:
    """Plain pixels: the learnable pytree is the (K*ipc, h, w, c) image array itself.

    init="real": random real images of each class (DM, DSA, MTT default); "noise": N(0, 1) in normalised units (DC
    default)."""
    if not isinstance(ipc, int) or ipc < 1:
        raise JaxddError(f"images per class must be a positive int, got {ipc!r}")
    if init not in INITS:
        raise JaxddError(f"init must be one of {INITS}, got {init!r}")

    def _init(key, real):
        k, m = real.shape[:2]
        if m < ipc:
            raise JaxddError(f"pixels init needs {ipc} real images per class, got {m}")
        x = real[:, :ipc].reshape(k * ipc, *real.shape[2:])
        if init == "noise":
            x = jax.random.normal(key, x.shape, jnp.float32)
        return jnp.asarray(x, jnp.float32)

    return Parameterization("pixels", _init, lambda p: p, ipc, tree_floats, {"ipc": ipc, "init": init})
