"""DC / DSA: the layer-wise distance against hand-computed values, per-class vmapped gradients against a per-class
loop, the outer/inner round bookkeeping, and the masked inner training against a plain loop."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.models import apply_model, get_model, init_model
from jaxdd.objectives import Synthetic
from jaxdd.objectives.gradient import (gradient_matching, layerwise_distance, paper_loops, train_on_set,
                                       _per_example_ce)
from jaxdd.types import Batch, JaxddError
from tests.conftest import toy_images

EPS = 1e-6


def _pair():
    """A fixed pair of gradient trees in flax layouts: conv HWIO (1,1,2,2), bias (2,), dense (in 3, out 2)."""
    g = {"conv": {"kernel": jnp.array([[1., 2.], [3., 4.]]).reshape(1, 1, 2, 2), "bias": jnp.array([1., 2.])},
         "dense": {"kernel": jnp.array([[1., 0.], [0., 1.], [0., 0.]])}}
    # conv output row o = kernel[0, 0, :, o]: g rows [1,3], [2,4]; h rows [2,6] (x2), [1,2] (x0.5)
    h = {"conv": {"kernel": jnp.array([[2., 1.], [6., 2.]]).reshape(1, 1, 2, 2), "bias": jnp.array([-5., 7.])},
         # dense output row o = kernel[:, o]: g rows [1,0,0], [0,1,0]; h rows [1,1,0], [0,-1,0]
         "dense": {"kernel": jnp.array([[1., 0.], [1., -1.], [0., 0.]])}}
    return g, h


def test_ours_distance_hand_computed():
    g, h = _pair()
    expected = ((1 - 20 / (math.sqrt(10) * math.sqrt(40) + EPS)) + (1 - 10 / (math.sqrt(20) * math.sqrt(5) + EPS))
                + (1 - 1 / (1 * math.sqrt(2) + EPS)) + (1 - (-1) / (1 * 1 + EPS)))
    np.testing.assert_allclose(float(layerwise_distance(g, h, "ours")), expected, rtol=1e-6)
    # the rows are output units (last flax axis): the conv part of h is a per-output-row rescaling of g (distance
    # ~0), whereas rows taken over the input axis ([1,2] vs [2,1], [3,4] vs [6,2]) would not be
    assert abs(float(layerwise_distance(g["conv"], h["conv"]))) < 1e-5
    naive = sum(1 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
                for a, b in zip(np.array([[1., 2.], [3., 4.]]), np.array([[2., 1.], [6., 2.]])))
    assert naive > 0.05


def test_mse_and_cos_hand_computed():
    g, h = _pair()
    # tree order: conv/bias, conv/kernel, dense/kernel (sorted keys); permutation does not change either value
    vg = np.concatenate([[1., 2.], [1., 2., 3., 4.], [1., 0., 0., 1., 0., 0.]])
    vh = np.concatenate([[-5., 7.], [2., 1., 6., 2.], [1., 0., 1., -1., 0., 0.]])
    np.testing.assert_allclose(float(layerwise_distance(g, h, "mse")), np.sum((vg - vh) ** 2), rtol=1e-6)
    cos = 1 - vg @ vh / (np.linalg.norm(vg) * np.linalg.norm(vh) + EPS)
    np.testing.assert_allclose(float(layerwise_distance(g, h, "cos")), cos, rtol=1e-5)


def test_ours_properties():
    g, _ = _pair()
    assert abs(float(layerwise_distance(g, g))) < 1e-5  # identical gradients
    scaled = jax.tree.map(lambda a: a * jnp.arange(1, a.shape[-1] + 1, dtype=a.dtype), g)  # per-row positive scales
    assert abs(float(layerwise_distance(g, scaled))) < 1e-5
    only_1d = jax.tree.map(lambda a: a if a.ndim == 1 else jnp.zeros_like(a), g)
    flipped = jax.tree.map(lambda a: -a if a.ndim == 1 else a, only_1d)
    # 1-D tensors contribute nothing (zero multi-dimensional rows give 1 - 0 = 1 per row, bias flips do not matter)
    assert float(layerwise_distance(only_1d, flipped)) == float(layerwise_distance(only_1d, only_1d))
    with pytest.raises(JaxddError):
        layerwise_distance(g, g, "l1")


K, SHAPE = 3, (8, 8, 1)


def _module():
    return get_model("ConvNet", K, width=8, depth=2)


def _reference_loss(module, variables, syn_x, syn_y, real_x, real_y, distance):
    """Per-class Python loop: the reference's formulation."""

    def grad(x, y):
        return jax.grad(lambda p: jnp.mean(_per_example_ce(module.apply({"params": p}, x), y)))(variables["params"])

    m, n = syn_x.shape[0] // K, real_x.shape[0] // K
    total = 0.0
    for c in range(K):
        gs = grad(syn_x[c * m:(c + 1) * m], syn_y[c * m:(c + 1) * m])
        gr = grad(real_x[c * n:(c + 1) * n], real_y[c * n:(c + 1) * n])
        total += layerwise_distance(gr, gs, distance)
    return total


@pytest.mark.parametrize("distance,class_batch", [("ours", 0), ("mse", 2)])
def test_vmapped_class_gradients_match_loop(distance, class_batch):
    module = _module()
    x, y = toy_images(K, 4, SHAPE)
    sx = x[np.array([0, 1, 4, 5, 8, 9])] + 0.1
    sy = y[np.array([0, 1, 4, 5, 8, 9])]
    obj = gradient_matching(module, K, SHAPE, outer_loop=1, inner_loop=0, distance=distance, real_per_class=4,
                            class_batch=class_batch)
    state = obj.init(jax.random.key(3))
    syn = Synthetic(jnp.asarray(sx), jnp.asarray(sy), {})
    got, _ = obj.loss(syn, Batch(jnp.asarray(x), jnp.asarray(y)), state, jax.random.key(0))
    want = _reference_loss(module, state["net"], jnp.asarray(sx), jnp.asarray(sy), jnp.asarray(x), jnp.asarray(y),
                           distance)
    np.testing.assert_allclose(float(got), float(want), rtol=2e-4)
    g = jax.grad(lambda a: obj.loss(syn._replace(x=a), Batch(jnp.asarray(x), jnp.asarray(y)), state,
                                    jax.random.key(0))[0])(syn.x)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0  # second-order path is live


@pytest.mark.parametrize("strategy", [None, "color_crop_cutout_flip_scale_rotate"])
def test_zero_when_synthetic_equals_real(strategy):
    """Same images, same Siamese draw per class -> identical gradients -> loss ~ 0 (DC and DSA)."""
    x, y = toy_images(K, 3, SHAPE)
    obj = gradient_matching(_module(), K, SHAPE, outer_loop=1, inner_loop=0, strategy=strategy, real_per_class=3)
    state = obj.init(jax.random.key(0))
    real = Batch(jnp.asarray(x), jnp.asarray(y))
    val, _ = obj.loss(Synthetic(jnp.asarray(x), jnp.asarray(y), {}), real, state, jax.random.key(1))
    other, _ = obj.loss(Synthetic(jnp.asarray(x[::-1].copy()), jnp.asarray(y), {}), real, state, jax.random.key(1))
    # not exactly 0: the 1e-6 in each row's cosine denominator (about 60 rows here) leaves a float32-sized residue
    assert abs(float(val)) < 2e-3 and float(other) > 100 * abs(float(val))


def test_rounds_train_then_reinitialise():
    """outer_loop=3: rounds 0 -> 1 -> 2 train the network on S; after round 2 a fresh network replaces it."""
    x, y = toy_images(K, 2, SHAPE)
    obj = gradient_matching(_module(), K, SHAPE, outer_loop=3, inner_loop=2, real_per_class=2)
    syn = Synthetic(jnp.asarray(x), jnp.asarray(y), {})
    real = Batch(jnp.asarray(x), jnp.asarray(y))
    state = obj.init(jax.random.key(0))
    update = jax.jit(obj.update)
    rounds, changes = [], []
    for t in range(4):
        new = update(state, syn, real, jax.random.fold_in(jax.random.key(9), t))
        rounds.append(int(new["round"]))
        changes.append(float(jnp.abs(new["net"]["params"]["classifier"]["kernel"]
                                     - state["net"]["params"]["classifier"]["kernel"]).max()))
        if t == 2:  # the network after the re-init is a fresh draw, not the trained one
            fresh = init_model(_module(), jax.random.split(jax.random.fold_in(jax.random.key(9), t))[0], SHAPE)
            np.testing.assert_array_equal(new["net"]["params"]["classifier"]["kernel"],
                                          fresh["params"]["classifier"]["kernel"])
        state = new
    assert rounds == [1, 2, 0, 1]
    assert all(c > 0 for c in changes)


def test_train_on_set_matches_python_loop():
    """The padded/masked scanned SGD equals plain per-batch SGD (n=7, batch 3: batches of 3, 3 and 1)."""
    module = _module()
    x, y = toy_images(K, 3, SHAPE)
    x, y = jnp.asarray(x[:7]), jnp.asarray(y[:7])
    v0 = init_model(module, jax.random.key(0), SHAPE)
    key = jax.random.key(5)
    got = jax.jit(lambda v: train_on_set(module, v, x, y, key, epochs=2, lr=0.05, batch_size=3))(v0)
    params = v0["params"]
    for ek in jax.random.split(key, 2):
        perm = np.asarray(jax.random.permutation(jax.random.split(ek)[0], 7))
        for s in range(3):
            idx = perm[3 * s:3 * s + 3]
            g = jax.grad(lambda p: jnp.mean(_per_example_ce(module.apply({"params": p}, x[idx]), y[idx])))(params)
            params = jax.tree.map(lambda p, d: p - 0.05 * d, params, g)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got["params"], params)


def test_paper_loops_and_errors():
    assert paper_loops(1) == (1, 1) and paper_loops(10) == (10, 50) and paper_loops(50) == (50, 10)
    with pytest.raises(JaxddError, match="outer_loop"):
        paper_loops(7)
    with pytest.raises(JaxddError, match="outer_loop"):  # 0 / -1 mean the paper's; below that is an error
        gradient_matching(_module(), K, SHAPE, outer_loop=-1, inner_loop=1)
    with pytest.raises(JaxddError, match="inner_loop"):
        gradient_matching(_module(), K, SHAPE, outer_loop=1, inner_loop=-2)
