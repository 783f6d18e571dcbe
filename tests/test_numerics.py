"""Norms safe at zero (jaxdd.ops.norms) and the DC/DSA distance on zero rows: finite values and gradients equal to
the reference's (torch.norm has gradient 0 at 0), unchanged values elsewhere, and DC/DSA gradients that stay finite
on networks whose gradients have zero rows (an MLP and ConvNetNN with one synthetic image per class)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdd.data import load
from jaxdd.models import get_model
from jaxdd.objectives import Synthetic
from jaxdd.objectives.gradient import EPS, gradient_matching, layerwise_distance
from jaxdd.ops import cosine_similarity, safe_global_norm, safe_norm, safe_normalize
from jaxdd.types import Batch


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(tree))


def test_safe_norm_is_linalg_norm_bit_for_bit_and_zero_gradient_at_zero():
    x = jax.random.normal(jax.random.key(0), (6, 37))
    for axis in (None, -1, 0, (0, 1)):
        got = jax.jit(lambda a: safe_norm(a, axis=axis))(x)
        want = jax.jit(lambda a: jnp.linalg.norm(a, axis=axis))(x)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(safe_norm(x, axis=-1, keepdims=True), jnp.linalg.norm(x, axis=-1, keepdims=True))
    # gradient: x/||x|| where nonzero, 0 (torch.norm's convention) where zero; jnp.linalg.norm gives NaN there
    x = x.at[2].set(0.0)
    g = jax.grad(lambda a: jnp.sum(safe_norm(a, axis=-1)))(x)
    assert bool(jnp.all(jnp.isnan(jax.grad(lambda a: jnp.sum(jnp.linalg.norm(a, axis=-1)))(x)[2])))
    np.testing.assert_array_equal(g[2], 0.0)
    np.testing.assert_allclose(g[0], x[0] / np.linalg.norm(x[0]), rtol=1e-6)
    # second order stays finite too (double where: the square root never sees the zero)
    assert _finite(jax.hessian(lambda a: safe_norm(a))(jnp.zeros(3)))


def test_safe_global_norm_and_normalize():
    tree = {"a": jax.random.normal(jax.random.key(1), (3, 4)), "b": jnp.arange(5.0)}
    np.testing.assert_allclose(safe_global_norm(tree), optax.tree.norm(tree), rtol=1e-7)
    zero = jax.tree.map(jnp.zeros_like, tree)
    assert float(safe_global_norm(zero)) == 0.0
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(jax.grad(safe_global_norm)(zero)))
    x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(safe_normalize(x), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-7)
    jac = jax.jacobian(lambda a: safe_normalize(a)[1])(x)[:, 1]  # zero row: x / eps, Jacobian I / eps
    np.testing.assert_allclose(jac, np.eye(2) / np.float32(1e-12), rtol=1e-6)


def _zero_row_pair():
    """Dense kernels (in 3, out 2): g rows (output units) [1, 2, 2] and 0; h rows 0 and [3, 4, 0]; plus a bias."""
    g = {"bias": jnp.array([1.0, -1.0]), "kernel": jnp.array([[1.0, 0.0], [2.0, 0.0], [2.0, 0.0]])}
    h = {"bias": jnp.array([0.0, 2.0]), "kernel": jnp.array([[0.0, 3.0], [0.0, 4.0], [0.0, 0.0]])}
    return g, h


def test_ours_distance_with_zero_rows_hand_computed():
    g, h = _zero_row_pair()
    # each row: 1 - <g_i, h_i> / (|g_i| |h_i| + 1e-6) = 1 - 0 / 1e-6 = 1
    val, (dg, dh) = jax.value_and_grad(lambda a, b: layerwise_distance(a, b, "ours"), argnums=(0, 1))(g, h)
    np.testing.assert_allclose(float(val), 2.0, rtol=1e-7)
    # d/dh_i = -g_i / (|g_i| |h_i| + eps) + <g_i, h_i> |g_i| (dh |h_i|) / den^2: row 0 (h_0 = 0) -> -g_0 / eps;
    # row 1 (g_1 = 0) -> 0. Symmetrically d/dg: row 0 -> 0, row 1 -> -h_1 / eps. Biases: 0.
    inv = 1.0 / np.float32(EPS)
    np.testing.assert_allclose(dh["kernel"], np.array([[-1.0, 0.0], [-2.0, 0.0], [-2.0, 0.0]]) * inv, rtol=1e-6)
    np.testing.assert_allclose(dg["kernel"], np.array([[0.0, -3.0], [0.0, -4.0], [0.0, 0.0]]) * inv, rtol=1e-6)
    assert float(jnp.abs(dh["bias"]).max()) == 0.0 and float(jnp.abs(dg["bias"]).max()) == 0.0
    # both rows zero on both sides: 1 per row, gradient exactly 0
    z = jax.tree.map(jnp.zeros_like, g)
    val, dz = jax.value_and_grad(lambda b: layerwise_distance(z, b, "ours"))(z)
    assert float(val) == 2.0 and float(jnp.abs(dz["kernel"]).max()) == 0.0


def test_cos_and_mse_with_a_zero_side_hand_computed():
    g, h = _zero_row_pair()
    z = jax.tree.map(jnp.zeros_like, h)
    # cos of the concatenated vectors: vg = (1, -1, 1, 0, 2, 0, 2, 0) against 0: value 1, d/dh = -vg / eps
    val, dh = jax.value_and_grad(lambda b: layerwise_distance(g, b, "cos"))(z)
    np.testing.assert_allclose(float(val), 1.0, rtol=1e-7)
    inv = 1.0 / np.float32(EPS)
    np.testing.assert_allclose(dh["kernel"], -np.asarray(g["kernel"]) * inv, rtol=1e-6)
    np.testing.assert_allclose(dh["bias"], -np.asarray(g["bias"]) * inv, rtol=1e-6)
    val, dz = jax.value_and_grad(lambda b: layerwise_distance(z, b, "cos"))(z)
    assert float(val) == 1.0 and float(jnp.abs(dz["kernel"]).max()) == 0.0
    val, dh = jax.value_and_grad(lambda b: layerwise_distance(g, b, "mse"))(z)
    np.testing.assert_allclose(float(val), 1 + 1 + 1 + 4 + 4, rtol=1e-7)
    np.testing.assert_allclose(dh["kernel"], -2 * np.asarray(g["kernel"]), rtol=1e-7)


def test_distances_unchanged_where_norms_are_nonzero():
    """Bit for bit the formula with jnp.linalg.norm, on random gradient-shaped trees (jitted)."""
    ks = jax.random.split(jax.random.key(2), 4)
    shapes = {"conv": (3, 3, 4, 8), "dense": (32, 10)}
    g = {k: jax.random.normal(ks[i], s) for i, (k, s) in enumerate(shapes.items())}
    h = {k: jax.random.normal(ks[i + 2], s) for i, (k, s) in enumerate(shapes.items())}

    def old_ours(a, b):
        total = jnp.zeros(())
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            r, s = x.reshape(-1, x.shape[-1]).T, y.reshape(-1, y.shape[-1]).T
            den = jnp.linalg.norm(r, axis=-1) * jnp.linalg.norm(s, axis=-1) + EPS
            total = total + jnp.sum(1.0 - jnp.sum(r * s, axis=-1) / den)
        return total

    def old_cos(a, b):
        va = jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(a)])
        vb = jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(b)])
        return 1.0 - jnp.sum(va * vb) / (jnp.linalg.norm(va) * jnp.linalg.norm(vb) + EPS)

    np.testing.assert_array_equal(jax.jit(lambda a, b: layerwise_distance(a, b, "ours"))(g, h), jax.jit(old_ours)(g, h))
    np.testing.assert_array_equal(jax.jit(lambda a, b: layerwise_distance(a, b, "cos"))(g, h), jax.jit(old_cos)(g, h))
    a, b = g["dense"], h["dense"]
    np.testing.assert_array_equal(cosine_similarity(a, b, axis=0, eps=0.0),
                                  jnp.sum(a * b, 0) / (jnp.linalg.norm(a, axis=0) * jnp.linalg.norm(b, axis=0)))


@pytest.fixture(scope="module")
def digits():
    ds = load("digits", "train")
    x = (ds.images - np.asarray(ds.mean)) / np.asarray(ds.std)
    idx = np.concatenate([np.nonzero(ds.labels == c)[0][:8] for c in range(10)])  # 8 real images per class
    return jnp.asarray(x[idx], jnp.float32), jnp.asarray(ds.labels[idx], jnp.int32)


@pytest.mark.parametrize("model,strategy", [("MLP", None), ("MLP", "color_crop_cutout_flip_scale_rotate"),
                                            ("ConvNetNN", None)])
def test_dc_and_dsa_gradients_finite_with_dead_units(digits, model, strategy):
    """One synthetic image per class (noise, as DC's init): about half of the ReLU units are dead on it, so the
    synthetic gradient has zero rows. With jnp.linalg.norm the image gradient was NaN (the run stopped at step 10);
    now it is finite and nonzero for several fresh networks (DC and DSA's matching, jitted as the driver does)."""
    xr, yr = digits
    module = get_model(model, 10, **({"width": 16} if model.startswith("ConvNet") else {}))
    obj = gradient_matching(module, 10, (8, 8, 1), outer_loop=1, inner_loop=0, strategy=strategy, real_per_class=8)
    syn_x = jax.random.normal(jax.random.key(0), (10, 8, 8, 1))
    syn_y = jnp.arange(10, dtype=jnp.int32)

    @jax.jit
    def value_grad(sx, key):
        state = obj.init(key)
        return jax.value_and_grad(lambda a: obj.loss(Synthetic(a, syn_y, {}), Batch(xr, yr), state, key)[0])(sx)

    zero_rows = 0
    for seed in range(3):
        key = jax.random.key(seed)
        val, g = value_grad(syn_x, key)
        assert bool(jnp.isfinite(val)) and _finite(g), (model, strategy, seed)
        assert float(jnp.abs(g).max()) > 0
        if seed == 0:  # the case is the one that failed: the synthetic side has zero gradient rows
            state = obj.init(key)
            gs = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
                module.apply({**state["net"], "params": p}, syn_x[:1]), syn_y[:1]).mean())(state["net"]["params"])
            for leaf in jax.tree.leaves(gs):
                if leaf.ndim > 1:
                    zero_rows += int(jnp.sum(jnp.all(leaf.reshape(-1, leaf.shape[-1]) == 0, axis=0)))
    assert zero_rows > 0
