"""BPTT: the meta-gradient through the unrolled inner loop against finite differences (float64), remat == full, and
the class-balanced step batches."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdd.models import get_model
from jaxdd.objectives import Synthetic
from jaxdd.objectives.performance import bptt, softplus_inverse, step_batches
from jaxdd.types import Batch, JaxddError
from tests.conftest import toy_images

K, SHAPE = 2, (6, 6, 1)


def _setup(dtype, ipc=2, **kw):
    module = get_model("ConvNet", K, width=4, depth=1, conv_impl="patches")
    obj = bptt(module, K, SHAPE, ipc, real_per_class=3, **kw)
    x, y = toy_images(K, 3, SHAPE, seed=1)
    real = Batch(jnp.asarray(x, dtype), jnp.asarray(y))
    sx = jnp.asarray(toy_images(K, ipc, SHAPE, seed=2)[0], dtype)
    raw = obj.learnables["raw_lr"].astype(dtype) + 2.0  # larger steps: a meta-gradient that is not tiny
    return obj, real, sx, raw


def test_meta_gradient_matches_finite_differences():
    """d L_real(theta_T) / d (images, raw lrs, soft labels) through T = 4 unrolled steps, float64."""
    with jax.enable_x64(True):
        obj, real, sx, raw = _setup(jnp.float64, epochs=2)
        y_soft = jax.nn.one_hot(jnp.repeat(jnp.arange(K), 2), K, dtype=jnp.float64) * 0.9 + 0.05
        key = jax.random.key(0)

        def f(x, r, ys):
            return obj.loss(Synthetic(x, ys, {"raw_lr": r}), real, (), key)[0]

        assert f(sx, raw, y_soft).dtype == jnp.float64
        check_grads(f, (sx, raw, y_soft), order=1, modes=["rev"], eps=1e-5, atol=1e-6, rtol=1e-5)
        g = jax.grad(f)(sx, raw, y_soft)
        assert float(jnp.abs(g).max()) > 1e-4  # the check is not vacuous


def test_remat_equals_full():
    key = jax.random.key(3)
    grads = []
    for memory, k in (("full", 1), ("remat", 2), ("remat", 3)):
        obj, real, sx, raw = _setup(jnp.float32, epochs=3, memory=memory, remat_every=k)  # T = 6 steps
        y = jnp.repeat(jnp.arange(K), 2)
        grads.append(jax.jit(jax.grad(lambda x, r: obj.loss(Synthetic(x, y, {"raw_lr": r}), real, (), key)[0],
                                      argnums=(0, 1)))(sx, raw))
    for other in grads[1:]:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads[0], other)


def test_step_batches_are_class_balanced():
    x = jnp.arange(2 * 4).astype(jnp.float32).reshape(8, 1, 1, 1)  # class 0: 0..3, class 1: 4..7
    y = jnp.repeat(jnp.arange(2), 4)
    xb, yb = step_batches(x, y, 2, steps=2)
    assert xb.shape == (2, 4, 1, 1, 1)
    np.testing.assert_array_equal(xb[:, :, 0, 0, 0], [[0, 1, 4, 5], [2, 3, 6, 7]])
    np.testing.assert_array_equal(yb, [[0, 0, 1, 1], [0, 0, 1, 1]])


def test_learned_lrs_and_errors():
    obj, *_ = _setup(jnp.float32, epochs=3)
    assert obj.learnables["raw_lr"].shape == (6,)  # steps (= ipc 2) x epochs 3
    np.testing.assert_allclose(jax.nn.softplus(softplus_inverse(0.02)), 0.02, rtol=1e-5)
    module = get_model("ConvNet", K, width=4, depth=1)
    with pytest.raises(JaxddError, match="divide"):
        bptt(module, K, SHAPE, 3, steps=2)
    with pytest.raises(JaxddError, match="remat_every"):
        bptt(module, K, SHAPE, 2, epochs=3, memory="remat", remat_every=4)
    with pytest.raises(JaxddError, match="batch-norm"):
        bptt(get_model("ConvNetBN", K, width=4, depth=1), K, SHAPE, 1)
