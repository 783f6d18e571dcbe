"""The Objective contract: one matching family = init / loss / update.

``loss(syn, real, state, key) -> (scalar, aux dict)`` is differentiated with respect to the synthetic set only
(``syn.x``, learned ``syn.y`` and ``syn.extras``). ``update(state, syn, real, key) -> state`` is the
non-differentiated bookkeeping (a memory bank, heads trained alongside, an expert pointer). ``real_per_class`` is
how many real images of each class the driver samples per step (class-major, 0 = none). ``learnables`` are extra
leaves learned with the synthetic set (e.g. MTT's inner learning rate): the driver puts them in ``syn.extras``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax

from jaxdd.types import Batch, JaxddError, PRNGKey, PyTree


class Synthetic(NamedTuple):
    """The decoded synthetic set an objective sees: images x (n, h, w, c), labels y ((n,) or (n, k)), extras."""

    x: jax.Array
    y: jax.Array
    extras: dict

    @property
    def batch(self) -> Batch:
        return Batch(self.x, self.y)


def auto_class_batch(class_batch: int) -> int:
    """The ``class_batch`` option of DM, DC and DSA: classes whose real images go through one forward/backward
    (``lax.map``; 0 = all at once). -1 (the default) is 1 on CPU, where a 10-class 2560-image batch streams
    gigabyte activations through memory (one class at a time: a DC IPC-10 iteration 239 instead of 323 s, peak
    RSS 2.7 instead of 14.7 GiB; experiments/bench/PROFILE.md), and 0 on accelerators."""
    if class_batch < -1:
        raise JaxddError(f"class_batch must be -1 (auto), 0 (all classes) or a positive count, got {class_batch}")
    if class_batch == -1:
        return 1 if jax.default_backend() == "cpu" else 0
    return class_batch


def no_init(key: PRNGKey) -> PyTree:
    return ()


def no_update(state: PyTree, syn: Synthetic, real: Batch, key: PRNGKey) -> PyTree:
    return state


class Objective(NamedTuple):
    name: str
    init: Callable[[PRNGKey], PyTree]
    loss: Callable[[Synthetic, Batch, PyTree, PRNGKey], tuple[jax.Array, dict]]
    update: Callable[[PyTree, Synthetic, Batch, PRNGKey], PyTree] = no_update
    real_per_class: int = 0
    learnables: dict = {}
    # Optional, additive hooks (None = unused):
    # init_with_real(key, real_init) -> state replaces init(key) when given: real_init (K, m, h, w, c) are the real
    # images of each class the driver drew to initialise the synthetic set (DWA perturbs its teacher on them).
    init_with_real: Callable[[PRNGKey, jax.Array], PyTree] | None = None
    # project(data) -> data is applied to the synthetic ``data`` pytree after every optimiser update (a projection
    # onto a feasible set, e.g. SRe2L's clipping of pixels to the valid normalised range).
    project: Callable[[PyTree], PyTree] | None = None
