"""Multi-index tasks: normalisation and the second-order Stein identity E[y (x x^T - I)] = H."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory as th


@pytest.mark.parametrize("kind", ["quad", "cubic", "relu_sum", "he3", "staircase"])
def test_link_normalised(kind):
    task = th.make_mim_task(jax.random.key(1), 8, 3, kind, kappa=2.0)
    U = task.U
    np.testing.assert_allclose(U @ U.T, np.eye(3), atol=1e-5)
    _, y = th.sample(task, jax.random.key(2), 200_000)
    assert abs(float(jnp.mean(y))) < 0.03
    assert abs(float(jnp.var(y)) - 1.0) < 0.08


def test_none_kind_uses_all_coordinates():
    task = th.make_mim_task(jax.random.key(0), 6, 2, "none")
    assert task.U.shape == (6, 6)
    with pytest.raises(ValueError):
        th.make_mim_task(jax.random.key(0), 6, 2, "nope")


@pytest.mark.parametrize("kind", ["quad", "cubic", "relu_sum", "he3"])
def test_stein_hessian(kind):
    d, n = 6, 400_000
    task = th.make_mim_task(jax.random.key(3), d, 2, kind, kappa=3.0)
    X, y = th.sample(task, jax.random.key(4), n)
    H_mc = (X * y[:, None]).T @ X / n - jnp.mean(y) * jnp.eye(d)
    H = th.expected_hessian(task)
    assert float(jnp.max(jnp.abs(H_mc - H))) < 0.05
    if kind == "quad":
        ev = np.sort(np.abs(np.linalg.eigvalsh(np.asarray(H))))[-2:]
        np.testing.assert_allclose(ev[1] / ev[0], 3.0, rtol=1e-4)  # condition number kappa
    if kind == "he3":
        assert float(jnp.max(jnp.abs(H))) == 0.0
