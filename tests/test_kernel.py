"""KIP: the ridge solve against a direct solve and against primal ridge regression, the empirical NTK against a
full Jacobian, and the loss on a support set equal to the targets."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.models import get_model, init_model
from jaxdd.objectives import Synthetic
from jaxdd.objectives.kernel import centred_labels, empirical_ntk_features, kernel_ridge_predict, kip
from jaxdd.types import Batch, JaxddError
from tests.conftest import toy_images


def test_ridge_equals_direct_solve():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 9))
    k_ss = a @ a.T
    k_ts = rng.normal(size=(4, 9)) @ a.T
    y_s = rng.normal(size=(6, 3))
    reg = 1e-2
    lam = reg * np.trace(k_ss) / 6
    direct = k_ts @ np.linalg.inv(k_ss + lam * np.eye(6)) @ y_s
    got = kernel_ridge_predict(jnp.asarray(k_ts, jnp.float32), jnp.asarray(k_ss, jnp.float32),
                               jnp.asarray(y_s, jnp.float32), reg)
    np.testing.assert_allclose(got, direct, rtol=1e-3, atol=1e-4)


def test_linear_kernel_equals_primal_ridge_regression():
    """With K = X X^T the dual prediction equals X_t (X_s^T X_s + lam I)^(-1) X_s^T Y_s."""
    rng = np.random.default_rng(1)
    xs, xt, ys = rng.normal(size=(5, 3)), rng.normal(size=(7, 3)), rng.normal(size=(5, 2))
    reg = 0.1
    lam = reg * np.trace(xs @ xs.T) / 5
    primal = xt @ np.linalg.solve(xs.T @ xs + lam * np.eye(3), xs.T @ ys)
    dual = kernel_ridge_predict(jnp.asarray(xt @ xs.T, jnp.float32), jnp.asarray(xs @ xs.T, jnp.float32),
                                jnp.asarray(ys, jnp.float32), reg)
    np.testing.assert_allclose(dual, primal, rtol=1e-4, atol=1e-5)


def test_empirical_ntk_equals_full_jacobian():
    module = get_model("ConvNet", 3, width=4, depth=1)
    x = jnp.asarray(toy_images(3, 2, (6, 6, 1))[0])
    variables = init_model(module, jax.random.key(0), (6, 6, 1))
    phi = empirical_ntk_features(module, variables, x)
    jac = jax.jacrev(lambda p: module.apply({"params": p}, x)[:, 0])(variables["params"])
    full = jnp.concatenate([j.reshape(x.shape[0], -1) for j in jax.tree.leaves(jac)], axis=1)
    np.testing.assert_allclose(phi @ phi.T, full @ full.T, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_support_equal_to_targets_fits_them(kernel):
    """Support = targets with a tiny ridge -> the regression interpolates: loss ~ 0 and every target correct."""
    k = 3
    module = get_model("ConvNet", k, width=8, depth=1)
    x, y = toy_images(k, 2, (6, 6, 1))
    obj = kip(module, k, (6, 6, 1), kernel=kernel, reg=1e-7, real_per_class=2)
    val, aux = obj.loss(Synthetic(jnp.asarray(x), jnp.asarray(y), {}), Batch(jnp.asarray(x), jnp.asarray(y)), (),
                        jax.random.key(0))
    assert float(val) < 1e-4 and float(aux["target_acc"]) == 1.0
    other, _ = obj.loss(Synthetic(jnp.asarray(x[::-1].copy()), jnp.asarray(y), {}),
                        Batch(jnp.asarray(x), jnp.asarray(y)), (), jax.random.key(0))
    assert float(other) > 100 * float(val)
    g = jax.grad(lambda a: obj.loss(Synthetic(a, jnp.asarray(y), {}), Batch(jnp.asarray(x + 0.3), jnp.asarray(y)), (),
                                    jax.random.key(0))[0])(jnp.asarray(x))
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_labels_and_errors():
    np.testing.assert_allclose(centred_labels(jnp.array([0, 2]), 3), [[2 / 3, -1 / 3, -1 / 3], [-1 / 3, -1 / 3, 2 / 3]],
                               rtol=1e-6)
    module = get_model("ConvNet", 3, width=4, depth=1)
    with pytest.raises(JaxddError, match="kernel"):
        kip(module, 3, (6, 6, 1), kernel="rbf")
    with pytest.raises(JaxddError, match="real_per_class"):
        kip(module, 3, (6, 6, 1), real_per_class=0)
