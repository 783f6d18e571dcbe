"""Analytic checks of the two-layer network, its closed-form first-layer gradient and the ridge readout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory as th


def test_symmetric_init_is_zero_function():
    key = jax.random.key(0)
    theta = th.init_two_layer(key, 7, 10)
    X = jax.random.normal(jax.random.key(1), (20, 7))
    assert np.allclose(th.forward(theta.W, theta.a, 0.0, X), 0.0, atol=1e-6)
    assert np.allclose(jnp.linalg.norm(theta.W, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError):
        th.init_two_layer(key, 7, 9)


def test_first_layer_grad_equals_autodiff(x64):
    key = jax.random.key(3)
    task = th.make_mim_task(jax.random.fold_in(key, 0), 6, 2, "quad")
    theta = th.init_two_layer(jax.random.fold_in(key, 1), 6, 8, dtype=jnp.float64)
    X, y = th.sample(jax.tree.map(lambda a: a.astype(jnp.float64), task), jax.random.fold_in(key, 2), 50)
    auto = jax.grad(lambda W: th.mse_loss(W, theta.a, 0.0, X, y))(theta.W)
    closed = th.first_layer_grad(theta, X, y)
    np.testing.assert_allclose(closed, auto, rtol=1e-10, atol=1e-12)
    # masked version = gradient on the kept points only
    w = (jnp.arange(50) < 31).astype(jnp.float64)
    auto_m = jax.grad(lambda W: th.mse_loss(W, theta.a, 0.0, X[:31], y[:31]))(theta.W)
    np.testing.assert_allclose(th.first_layer_grad(theta, X, y, w), auto_m, rtol=1e-10, atol=1e-12)


def test_population_grad_matches_monte_carlo(x64):
    d, r, L, n, chunks = 16, 2, 8, 1_000_000, 10
    key = jax.random.key(11)
    task = jax.tree.map(lambda a: a.astype(jnp.float64), th.make_mim_task(jax.random.fold_in(key, 0), d, r, "quad"))
    theta = th.init_two_layer(jax.random.fold_in(key, 1), d, L, dtype=jnp.float64)

    def body(acc, c):
        X, y = th.sample(task, jax.random.fold_in(key, 100 + c), n // chunks)
        return acc + th.first_layer_grad(theta, X, y) / chunks, None

    G_mc, _ = jax.lax.scan(body, jnp.zeros((L, d)), jnp.arange(chunks))
    H = th.expected_hessian(task)
    G_pop = th.population_first_layer_grad(theta, H)
    rel = float(jnp.linalg.norm(G_mc - G_pop) / jnp.linalg.norm(G_pop))
    assert rel < 0.08, rel
    # the along-w correction matters: dropping it is clearly worse than the Monte Carlo error
    G_wrong = -theta.a[:, None] * (theta.W @ H) / np.sqrt(2 * np.pi)
    rel_wrong = float(jnp.linalg.norm(G_mc - G_wrong) / jnp.linalg.norm(G_pop))
    assert rel_wrong > 2 * rel
    # the population rows lie in span(U) up to the along-w term
    U = task.U
    assert float(th.offsub(-th.population_first_layer_grad(theta, H) + 0.0, U)) < 0.3


@pytest.mark.parametrize("n", [5, 40])  # dual (n <= L) and primal (n > L) branches
def test_ridge_readout_equals_direct_solve(x64, n):
    L, lam = 12, 1e-3
    k1, k2 = jax.random.split(jax.random.key(5))
    Phi = jax.nn.relu(jax.random.normal(k1, (n, L), jnp.float64))
    y = jax.random.normal(k2, (n,), jnp.float64)
    a = np.asarray(th.ridge_readout(Phi, y, lam))
    P, Y = np.asarray(Phi), np.asarray(y)
    direct = np.linalg.solve(P.T @ P / n + lam * np.eye(L), P.T @ Y / n)
    np.testing.assert_allclose(a, direct, rtol=1e-8, atol=1e-10)
    # gradient of the regularised objective vanishes
    grad = P.T @ (P @ a - Y) / n + lam * a
    assert np.abs(grad).max() < 1e-9
    # masking rows = dropping them
    w = (jnp.arange(n) < n - 2).astype(jnp.float64)
    np.testing.assert_allclose(th.ridge_readout(Phi, y, lam, w), th.ridge_readout(Phi[:-2], y[:-2], lam),
                               rtol=1e-7, atol=1e-9)


def test_moments_readout_matches_ridge(x64):
    key = jax.random.key(2)
    theta = th.init_two_layer(key, 5, 6, dtype=jnp.float64)
    X = jax.random.normal(jax.random.fold_in(key, 1), (300, 5), jnp.float64)
    y = jnp.sin(X[:, 0])
    m = th.moments(theta.W, theta.b, X, y)
    a1 = th.readout_from_moments(m, 1e-3)
    a2 = th.ridge_readout(th.features(theta.W, theta.b, X), y, 1e-3)
    np.testing.assert_allclose(a1, a2, rtol=1e-8)
    mse = jnp.mean((th.features(theta.W, theta.b, X) @ a1 - y) ** 2)
    np.testing.assert_allclose(th.moments_mse(m, a1), mse, rtol=1e-8)


def test_normalise_rows_safe_at_zero():
    W = jnp.zeros((3, 4)).at[0].set(jnp.array([3.0, 4.0, 0.0, 0.0]))
    out = th.normalise_rows(W)
    assert np.allclose(np.linalg.norm(out[0]), 1.0, atol=1e-6)
    g = jax.grad(lambda w: jnp.sum(th.normalise_rows(w)))(W)
    assert np.isfinite(np.asarray(g)).all()


def test_spd_solve_is_finite_and_regularised_on_near_singular_systems():
    """float32, n = 160 (blocked path: CHOL_BLOCK = 64): a rank-8 PSD matrix B B^T (exactly singular) and one with a
    ridge far below float32 resolution. The old pivot floor (the smallest float) gave non-finite solutions here;
    the modified pivots and the jitter fallback must give a finite x with a small residual (b in the range of A).
    A well-conditioned system (ridge 1e-2 of the diagonal) must match the float64 solve, with no jitter added."""
    from theory import network as nw
    rng = np.random.default_rng(0)
    n, k = 160, 8
    assert n > nw.CHOL_BLOCK
    B = rng.normal(size=(n, k)).astype(np.float32)
    A0 = B @ B.T
    scale = float(np.mean(np.diag(A0)))
    b = (A0 @ rng.normal(size=n)).astype(np.float32)
    for mu in (0.0, 1e-9):
        A = A0 + np.float32(mu * scale) * np.eye(n, dtype=np.float32)
        x = np.asarray(nw.spd_solve(jnp.asarray(A), jnp.asarray(b)), np.float64)
        assert np.all(np.isfinite(x))
        assert np.linalg.norm(A.astype(np.float64) @ x - b) / np.linalg.norm(b) < 1e-3
    A = A0 + np.float32(1e-2 * scale) * np.eye(n, dtype=np.float32)
    x = np.asarray(nw.spd_solve(jnp.asarray(A), jnp.asarray(b)), np.float64)
    ref = np.linalg.solve(A.astype(np.float64), b.astype(np.float64))
    assert np.linalg.norm(x - ref) / np.linalg.norm(ref) < 1e-3
    assert np.array_equal(x, np.asarray(nw._chol_solve(jnp.asarray(A), jnp.asarray(b)), np.float64))
    # the factor itself: lower triangular with a positive diagonal, L L^T = A for a well-conditioned A
    Lm = np.asarray(nw.chol_lower(jnp.asarray(A)), np.float64)
    assert np.allclose(np.triu(Lm, 1), 0.0) and np.all(np.diag(Lm) > 0)
    assert np.linalg.norm(Lm @ Lm.T - A) / np.linalg.norm(A) < 1e-5
