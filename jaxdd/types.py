"""Shared types of jaxdd.

Images are NHWC float32 in the normalised space the models see. Labels are either hard class ids, shape (n,) int32,
or soft/learned label vectors, shape (n, k) float32.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax

PRNGKey = jax.Array
PyTree = Any


class Batch(NamedTuple):
    """A batch of images and labels. x: (n, h, w, c) float32; y: (n,) int32 or (n, k) float32."""

    x: jax.Array
    y: jax.Array


class JaxddError(ValueError):
    """A user-facing error: says what was wrong and how to fix it."""


def path_str(path) -> str:
    """A pytree key path as "a/b/0" (e.g. "data/A", "extras/syn_lr"): how lr groups and expert layouts name leaves."""
    return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
