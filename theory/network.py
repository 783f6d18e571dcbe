"""The two-layer ReLU network and the one-step-plus-ridge training algorithm (reconstructed: theory/README.md).

f(x; W, a, b) = sum_j a_j relu(<w_j, x> + b_j), W: (L, d), a: (L,), b: (L,).

Training (DLS22 "Algorithm 1" template), all pure functions:
  1. symmetric init (``init_two_layer``): w_j ~ Unif(S^{d-1}), a_j = +1 for j < L/2, w_{j+L/2} = w_j,
     a_{j+L/2} = -a_j, first-step biases 0, so f(.; theta_0) = 0;
  2. one first-layer step with cancelling weight decay (eta1 lambda1 = 1): W1 = -eta1 grad_W L_hat(theta_0);
     ``first_layer_grad`` is its closed form, G = -(1/n) sum_i (a (.) 1{W0 x_i > 0}) y_i x_i^T;
  3. biases redrawn b ~ N(0, 1) (stored in the init as ``b``, so "same theta_0" means same biases);
  4. ridge readout a = argmin (1/2n) ||Phi a - y||^2 + (lambda2/2) ||a||^2 on Phi = relu(X W1^T + b);
  5. output f(x) = a^T relu(W1 x + b).
Step 2's scale eta1 is replaced by the safe row normalisation w / sqrt(||w||^2 + eps).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

NORM_EPS = 1e-12


class TwoLayerInit(NamedTuple):
    """Symmetric initialisation theta_0. W: (L, d) unit rows in pairs; a: (L,) = (+1, ..., -1, ...);
    b: (L,) the biases redrawn before the readout (N(0, 1)); the first step uses zero biases."""

    W: jax.Array
    a: jax.Array
    b: jax.Array


def init_two_layer(key, d: int, L: int, a_scale: float = 1.0, dtype=jnp.float32) -> TwoLayerInit:
    """Symmetric init (L even): rows j and j + L/2 share w_j ~ Unif(S^{d-1}) with opposite output weights, so the
    network is identically zero; redrawn biases b ~ N(0, 1). Returns TwoLayerInit with W (L, d), a (L,), b (L,)."""
    if L % 2:
        raise ValueError(f"L must be even for the symmetric init, got {L}")
    kw, kb = jax.random.split(key)
    w = jax.random.normal(kw, (L // 2, d), dtype=dtype)
    w = w / jnp.linalg.norm(w, axis=1, keepdims=True)
    W = jnp.concatenate([w, w], axis=0)
    a = a_scale * jnp.concatenate([jnp.ones(L // 2, dtype), -jnp.ones(L // 2, dtype)])
    b = jax.random.normal(kb, (L,), dtype=dtype)
    return TwoLayerInit(W=W, a=a, b=b)


def forward(W: jax.Array, a: jax.Array, b: jax.Array, X: jax.Array) -> jax.Array:
    """f(X) = relu(X W^T + b) a. W (L, d), a (L,), b (L,) or scalar, X (n, d) -> (n,)."""
    return jax.nn.relu(X @ W.T + b) @ a


def features(W: jax.Array, b: jax.Array, X: jax.Array) -> jax.Array:
    """Phi = relu(X W^T + b), shape (n, L)."""
    return jax.nn.relu(X @ W.T + b)


def mse_loss(W, a, b, X, y, weights=None) -> jax.Array:
    """L_hat = (1/2n) sum_i w_i (f(x_i) - y_i)^2 with optional 0/1 weights (n = sum of weights)."""
    r = forward(W, a, b, X) - y
    if weights is None:
        return 0.5 * jnp.mean(r**2)
    return 0.5 * jnp.sum(weights * r**2) / jnp.maximum(jnp.sum(weights), 1.0)


def first_layer_grad(theta0: TwoLayerInit, X: jax.Array, y: jax.Array, weights=None) -> jax.Array:
    """Closed-form grad_W L_hat at the symmetric init (zero network output, zero first-step biases).

    G = -(1/n) sum_i (a (.) 1{W0 x_i > 0}) y_i x_i^T, shape (L, d). Optional 0/1 ``weights`` (n,) mask points out
    (n = sum of weights); this is how candidate memory sizes share one padded array under vmap.
    Equals ``jax.grad`` of ``mse_loss(W, a, 0, X, y)`` at W0 whenever f(.; theta_0) = 0 (tested).
    """
    act = (X @ theta0.W.T > 0).astype(X.dtype)  # (n, L)
    wy = y if weights is None else y * weights
    n = X.shape[0] if weights is None else jnp.maximum(jnp.sum(weights), 1.0)
    return -(theta0.a[:, None] * ((act * wy[:, None]).T @ X)) / n


def population_first_layer_grad(theta0: TwoLayerInit, H: jax.Array, mean_grad: jax.Array | None = None) -> jax.Array:
    """Population G for a target of degree <= 2 (quadratic plus linear part), unit rows w_j, zero biases:

      E[y 1{w.x > 0} x] = (2 pi)^(-1/2) (H w - 0.5 (w^T H w) w) + 0.5 E[grad f*],   G_j = -a_j E[...].

    H: (d, d) = E[Hess f*]; mean_grad: (d,) = E[grad f*] (zero for ``quad``). Returns (L, d). Exact for quadratic
    f*; for higher-degree links it is only the leading part (the higher Hermite terms are dropped)."""
    W = theta0.W
    HW = W @ H  # (L, d), H symmetric
    quad = jnp.sum(HW * W, axis=1)  # w^T H w
    m = (HW - 0.5 * quad[:, None] * W) / math.sqrt(2.0 * math.pi)
    if mean_grad is not None:
        m = m + 0.5 * mean_grad[None, :]
    return -theta0.a[:, None] * m


def normalise_rows(W: jax.Array, eps: float = NORM_EPS) -> jax.Array:
    """Safe row normalisation w / sqrt(||w||^2 + eps) (finite gradient at w = 0)."""
    return W / jnp.sqrt(jnp.sum(W * W, axis=-1, keepdims=True) + eps)


def first_layer_step(theta0: TwoLayerInit, X, y, weights=None) -> jax.Array:
    """W1 = normalise(-G): the large step with cancelling weight decay, rows rescaled to unit norm. (L, d)."""
    return normalise_rows(-first_layer_grad(theta0, X, y, weights))


PIVOT_REL = 1e-4     # Cholesky pivot floor relative to mean(diag A), about n * eps(float32) for n ~ 1000
CHOL_BLOCK = 64      # panel width of the blocked Cholesky


def _chol_panel(P: jax.Array, floor, beta) -> jax.Array:
    """Factor the first k columns of an (n, n) matrix given as its panel P = A[:, :k] (n >= k): returns the (n, k)
    columns of the lower factor, column by column (matrix-vector products over the panel's rows).

    Modified Cholesky (after Gill, Murray and Wright): the pivot d_j is raised to at least sqrt(floor) and to at
    least max_{i>j} |v_i| / beta (beta^2 = max diag A), so every entry of the factor is bounded by beta. For a
    numerically positive definite A neither bound binds (an exact Cholesky factor has |L_ij| <= sqrt(A_ii) <=
    beta); when rounding has made A slightly indefinite (float32 moments of rank-deficient features), the factor
    is that of A + E with a non-negative diagonal E, finite, instead of dividing by a rounding-level pivot."""
    n, k = P.shape
    idx = jnp.arange(n)

    def step(j, Lp):
        v = P[:, j] - Lp @ Lp[j, :]                     # columns >= j of Lp are still zero
        off = jnp.max(jnp.where(idx > j, jnp.abs(v), 0.0))
        d = jnp.maximum(jnp.sqrt(jnp.maximum(v[j], floor)), off / beta)
        return Lp.at[:, j].set(jnp.where(idx > j, v / d, jnp.where(idx == j, d, 0.0)))

    return jax.lax.fori_loop(0, k, step, jnp.zeros_like(P))


def chol_lower(A: jax.Array, floor=None, beta=None) -> jax.Array:
    """Lower Cholesky factor of a symmetric PSD matrix, blocked (right-looking, panels of CHOL_BLOCK columns) so
    that the bulk of the work is matrix products. Plain JAX, not LAPACK (see ``spd_solve``). Pivots are modified
    as in ``_chol_panel`` (floor default PIVOT_REL * mean(diag A)), which keeps the factor finite and bounded when
    A is near-singular or, by float32 rounding, slightly indefinite."""
    n = A.shape[-1]
    if floor is None:
        dg = jnp.abs(jnp.diagonal(A))
        floor = PIVOT_REL * jnp.maximum(jnp.mean(dg), jnp.finfo(A.dtype).tiny)
        beta = jnp.sqrt(jnp.maximum(jnp.max(dg), jnp.finfo(A.dtype).tiny))
    if n <= CHOL_BLOCK:
        return _chol_panel(A, floor, beta)
    k = CHOL_BLOCK
    Lp = _chol_panel(A[:, :k], floor, beta)
    L11, L21 = Lp[:k], Lp[k:]
    L22 = chol_lower(A[k:, k:] - L21 @ L21.T, floor, beta)
    top = jnp.concatenate([L11, jnp.zeros((k, n - k), A.dtype)], axis=1)
    return jnp.concatenate([top, jnp.concatenate([L21, L22], axis=1)], axis=0)


JITTER_REL = 1e-6    # fallback ridge, relative to trace(A), for a system the plain factorisation cannot solve
SOLVE_TOL = 1e-2     # relative residual above which the plain solve counts as failed


def _chol_solve(A: jax.Array, b: jax.Array) -> jax.Array:
    n = A.shape[-1]
    Lm = chol_lower(A)

    def fwd(i, z):                                        # L z = b
        return z.at[i].set((b[i] - Lm[i, :] @ z) / Lm[i, i])

    z = jax.lax.fori_loop(0, n, fwd, jnp.zeros_like(b))

    def bwd(k, x):                                        # L^T x = z, i = n - 1 - k
        i = n - 1 - k
        return x.at[i].set((z[i] - Lm[:, i] @ x) / Lm[i, i])

    return jax.lax.fori_loop(0, n, bwd, jnp.zeros_like(b))


def spd_solve(A: jax.Array, b: jax.Array) -> jax.Array:
    """Solve A x = b for symmetric positive (semi)definite A (n, n), b (n,) by a Cholesky factorisation written in
    plain JAX (``chol_lower``), not LAPACK: on the loaded CPU of the committed run, XLA deadlocked repeatedly
    inside vmapped LAPACK solves (every thread waiting on a futex). O(n^3) like LAPACK; differentiable.

    Near-singular systems. A ridge system S + lambda2 I whose S was accumulated in float32 from rank-deficient
    features (e.g. the constant features of units whose step row is zero) can be indefinite by rounding at a level
    above lambda2, and no float32 factorisation of it is meaningful. So the plain solve is checked (finite, relative
    residual <= SOLVE_TOL); if it fails, the system is solved again with a jitter JITTER_REL * trace(A) added to
    the diagonal (a small extra ridge, of the size of the float32 rounding of the accumulated S). Well-conditioned
    systems are solved exactly as before; only the failing ones get the jitter. The check is not differentiated
    (gradients flow through the solve that is returned)."""
    sg = jax.lax.stop_gradient
    x1 = _chol_solve(sg(A), sg(b))
    res = jnp.linalg.norm(sg(A) @ x1 - sg(b)) / jnp.maximum(jnp.linalg.norm(sg(b)), jnp.finfo(A.dtype).tiny)
    bad = ~(jnp.isfinite(res) & (res <= SOLVE_TOL))
    delta = jnp.where(bad, JITTER_REL * jnp.abs(jnp.trace(sg(A))), 0.0)
    return _chol_solve(A + delta * jnp.eye(A.shape[-1], dtype=A.dtype), b)


def ridge_readout(Phi: jax.Array, y: jax.Array, lambda2: float, weights=None) -> jax.Array:
    """a = argmin_a (1/2n) ||Phi a - y||^2 + (lambda2/2) ||a||^2, Phi (n, L), y (n,) -> (L,).

    Solves the dual (n x n) system when n <= L and the primal (L x L) one otherwise; both are the same minimiser.
    ``weights`` (n,) in {0, 1} drop rows (n = number kept), so masked-out padding does not change the solution."""
    n_rows, L = Phi.shape
    if weights is not None:
        Phi = Phi * weights[:, None]
        y = y * weights
        n = jnp.maximum(jnp.sum(weights), 1.0)
    else:
        n = n_rows
    if n_rows <= L:
        K = Phi @ Phi.T + n * lambda2 * jnp.eye(n_rows, dtype=Phi.dtype)
        alpha = spd_solve(K, y)
        return Phi.T @ alpha
    S = Phi.T @ Phi / n + lambda2 * jnp.eye(L, dtype=Phi.dtype)
    return spd_solve(S, Phi.T @ y / n)


class Moments(NamedTuple):
    """Second moments of a feature map over a real data pool: S = Phi^T Phi / n (L, L), c = Phi^T y / n (L,),
    yy = mean y^2 (scalar). The pool MSE of any readout is a^T S a - 2 a^T c + yy."""

    S: jax.Array
    c: jax.Array
    yy: jax.Array


def moments(W1: jax.Array, b: jax.Array, X: jax.Array, y: jax.Array) -> Moments:
    """Pool moments of relu(X W1^T + b). X (n, d), y (n,)."""
    Phi = features(W1, b, X)
    n = X.shape[0]
    return Moments(S=Phi.T @ Phi / n, c=Phi.T @ y / n, yy=jnp.mean(y * y))


def readout_from_moments(m: Moments, lambda2: float) -> jax.Array:
    """Ridge readout fitted on the pool: a = (S + lambda2 I)^{-1} c, (L,)."""
    L = m.c.shape[0]
    return spd_solve(m.S + lambda2 * jnp.eye(L, dtype=m.S.dtype), m.c)


def moments_mse(m: Moments, a: jax.Array) -> jax.Array:
    """Pool MSE of readout a: a^T S a - 2 a^T c + mean y^2."""
    return a @ (m.S @ a) - 2.0 * a @ m.c + m.yy


def train_one_step_ridge(theta0: TwoLayerInit, X, y, lambda2: float = 1e-4, X2=None, y2=None,
                         weights=None, weights2=None) -> tuple[jax.Array, jax.Array]:
    """Steps 1-5: W1 = normalise(-grad_W L_hat(theta_0)) on (X, y); readout by ridge on (X2, y2) (default: the same
    data) over features relu(X2 W1^T + theta0.b). Returns (W1 (L, d), a (L,))."""
    W1 = first_layer_step(theta0, X, y, weights)
    if X2 is None:
        X2, y2, weights2 = X, y, weights
    a = ridge_readout(features(W1, theta0.b, X2), y2, lambda2, weights2)
    return W1, a
