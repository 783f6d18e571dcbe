"""Gradient-based dataset distillation for the one-step-plus-ridge pipeline (reconstructed: theory/README.md).

Every function here distils ONE synthetic set of a padded size ``M_pad`` whose first ``M`` points are live
(``mask`` (M_pad,) in {0, 1}); padding points get zero gradient and stay zero, so candidate memory sizes of one
bucket share shapes and are ``vmap``-ed together (see ``theory.search``), and seeds are ``vmap``-ed on top.

Stage 1, gradient matching (GM) of the first-layer step over K initialisations:
  min_{X~, y~} (1/K) sum_k ||G(theta_k; X~, y~) - G_k||_F^2 / ||G_k||_F^2   (metric "fro"), or
  (1/K) sum_k mean_j (1 - cos(G~_kj, G_kj))                                  (metric "cos", Zhao et al. 2021).
  Inputs start at ``init_scale`` N(0, I) (small: a full-scale init keeps off-span components), labels at N(0, 1).
Stage 2, performance matching through the closed-form ridge readout on fixed first-layer weights W~1:
  min_{D2} pool-MSE(a(D2)) = a^T S a - 2 a^T c + mean y^2, a(D2) = ridge(relu(X2 W~1^T + b), y2).
  Parameterisations of X2: "free" (M2 x d), "span" (X2 = C X1, C: M2 x M1, coordinates in the span of the stage-1
  inputs) and "line" (X2 = t v^T, one stored direction v in R^d, t in R^M2; hypothesis H-L2). Labels y2 are learned.
End-to-end performance matching: one set drives both the step and the readout; loss = MSE on a real minibatch.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from theory import network as nw

STAGE2_KINDS = ("free", "span", "line")


class DistilledSet(NamedTuple):
    """A synthetic set. x: (M_pad, d); y: (M_pad,); mask: (M_pad,) 1 for live points."""

    x: jax.Array
    y: jax.Array
    mask: jax.Array


def size_mask(M, M_pad: int, dtype=jnp.float32) -> jax.Array:
    """(M_pad,) mask with ones in the first M entries (M may be traced)."""
    return (jnp.arange(M_pad) < M).astype(dtype)


def _adam_loop(loss_fn, params, lr: float, steps: int):
    """Run ``steps`` Adam steps on loss_fn(params) via lax.scan. Returns (params, final loss, loss at step 0)."""
    tx = optax.adam(lr)
    state = tx.init(params)
    vg = jax.value_and_grad(loss_fn)

    def body(carry, _):
        p, s = carry
        val, g = vg(p)
        upd, s = tx.update(g, s, p)
        return (optax.apply_updates(p, upd), s), val

    (params, _), losses = jax.lax.scan(body, (params, state), None, length=steps)
    return params, loss_fn(params), losses[0]


# ----------------------------------------------------------------------------------------------------------------
# Stage 1: gradient matching
# ----------------------------------------------------------------------------------------------------------------

def gm_loss(x, y, mask, inits: nw.TwoLayerInit, G_real: jax.Array, metric: str = "fro") -> jax.Array:
    """GM loss of a (masked) set against real first-layer gradients.

    x (M, d), y (M,), mask (M,); inits: TwoLayerInit with a leading K axis; G_real (K, L, d)."""

    def one(theta, G):
        Gs = nw.first_layer_grad(theta, x, y, mask)
        if metric == "fro":
            return jnp.sum((Gs - G) ** 2) / jnp.sum(G**2)
        num = jnp.sum(Gs * G, axis=1)
        den = jnp.sqrt(jnp.sum(Gs**2, axis=1) * jnp.sum(G**2, axis=1) + 1e-20)
        return jnp.mean(1.0 - num / den)

    return jnp.mean(jax.vmap(one)(inits, G_real))


@functools.partial(jax.jit, static_argnames=("steps", "lr", "init_scale", "metric"))
def distill_gm(key, inits: nw.TwoLayerInit, G_real: jax.Array, mask: jax.Array, *, steps: int = 1500,
               lr: float = 3e-2, init_scale: float = 0.1, metric: str = "fro") -> tuple[DistilledSet, jax.Array]:
    """Stage-1 GM distillation of one set. mask (M_pad,) selects the live points. Returns (set, final GM loss)."""
    M_pad, d = mask.shape[0], G_real.shape[-1]
    kx, ky = jax.random.split(key)
    dtype = G_real.dtype
    params = dict(x=init_scale * jax.random.normal(kx, (M_pad, d), dtype) * mask[:, None],
                  y=jax.random.normal(ky, (M_pad,), dtype) * mask)

    def loss_fn(p):
        return gm_loss(p["x"] * mask[:, None], p["y"] * mask, mask, inits, G_real, metric)

    params, final, _ = _adam_loop(loss_fn, params, lr, steps)
    return DistilledSet(params["x"] * mask[:, None], params["y"] * mask, mask), final


# ----------------------------------------------------------------------------------------------------------------
# Stage 2: performance matching through the ridge readout
# ----------------------------------------------------------------------------------------------------------------

def span_basis(D1: DistilledSet, rel_tol: float = 1e-3) -> jax.Array:
    """Orthonormal rows spanning the live stage-1 inputs, zero rows beyond their rank: (M1_pad, d). Modified
    Gram-Schmidt in plain JAX (no LAPACK: vmapped LAPACK calls deadlocked XLA on the loaded CPU of the committed
    run); a row whose residual is below rel_tol times the largest input norm adds nothing."""
    X = D1.x * D1.mask[:, None]
    scale = jnp.sqrt(jnp.max(jnp.sum(X * X, axis=1)))

    def step(i, B):
        v = X[i] - B.T @ (B @ X[i])
        v = v - B.T @ (B @ v)                      # second pass for orthogonality in float32
        nv = jnp.sqrt(jnp.sum(v * v))
        keep = nv > rel_tol * jnp.maximum(scale, 1e-30)
        return B.at[i].set(jnp.where(keep, v / jnp.where(keep, nv, 1.0), 0.0))

    return jax.lax.fori_loop(0, X.shape[0], step, jnp.zeros_like(X))


def init_stage2(key, kind: str, D1: DistilledSet, M2_pad: int, t_scale: float = 2.0) -> dict:
    """Stage-2 parameters: inputs start as Gaussians inside span(D1), labels N(0, 1).

    free: {x (M2, d), y}; span: {c (M2, M1_pad), y} with c D1.x = the same Gaussian; line: {v (d,), t (M2,), y}."""
    kz, ky, kt = jax.random.split(key, 3)
    B = span_basis(D1)
    dtype = D1.x.dtype
    y = jax.random.normal(ky, (M2_pad,), dtype)
    if kind == "free":
        return dict(x=jax.random.normal(kz, (M2_pad, B.shape[0]), dtype) @ B, y=y)
    if kind == "span":
        X0 = jax.random.normal(kz, (M2_pad, B.shape[0]), dtype) @ B
        Xm = D1.x * D1.mask[:, None]
        w, V = jnp.linalg.eigh(Xm @ Xm.T)       # pseudo-inverse of the Gram matrix, no SVD
        inv = jnp.where(w > 1e-6 * jnp.maximum(w[-1], 1e-30), 1.0 / jnp.where(w > 0, w, 1.0), 0.0)
        c = (X0 @ Xm.T) @ ((V * inv[None, :]) @ V.T)
        return dict(c=c, y=y)
    if kind == "line":
        v = jax.random.normal(kz, (B.shape[0],), dtype) @ B
        v = v / jnp.sqrt(jnp.sum(v * v) + 1e-20)
        return dict(v=v, t=t_scale * jax.random.normal(kt, (M2_pad,), dtype), y=y)
    raise ValueError(f"unknown stage-2 parameterisation {kind!r}; choose one of {STAGE2_KINDS}")


def decode_stage2(kind: str, params: dict, D1: DistilledSet) -> jax.Array:
    """Stage-2 inputs X2 (M2_pad, d) from the stored parameters."""
    if kind == "free":
        return params["x"]
    if kind == "span":
        return (params["c"] * D1.mask[None, :]) @ D1.x
    if kind == "line":
        return params["t"][:, None] * params["v"][None, :]
    raise ValueError(kind)


def stage2_readout(kind, params, D1, mask2, W1, b, lambda2):
    """Closed-form ridge readout a(D2) (L,) on features relu(X2 W1^T + b)."""
    X2 = decode_stage2(kind, params, D1)
    return nw.ridge_readout(nw.features(W1, b, X2), params["y"], lambda2, mask2)


@functools.partial(jax.jit, static_argnames=("kind", "lambda2", "steps", "lr"))
def distill_pm_ridge(key, kind: str, D1: DistilledSet, mask2: jax.Array, W1: jax.Array, b: jax.Array,
                     mom: nw.Moments, *, lambda2: float = 1e-4, steps: int = 2000,
                     lr: float = 1e-2) -> tuple[dict, jax.Array]:
    """Stage-2 distillation: minimise the real-pool MSE (exact, through the pool moments ``mom``) of the ridge
    readout fitted on the synthetic set. Returns (params, readout a (L,))."""
    params = init_stage2(key, kind, D1, mask2.shape[0])

    def loss_fn(p):
        a = stage2_readout(kind, p, D1, mask2, W1, b, lambda2)
        return nw.moments_mse(mom, a)

    params, _, _ = _adam_loop(loss_fn, params, lr, steps)
    return params, stage2_readout(kind, params, D1, mask2, W1, b, lambda2)


# ----------------------------------------------------------------------------------------------------------------
# End-to-end performance matching
# ----------------------------------------------------------------------------------------------------------------

def e2e_loss(x, y, mask, theta0: nw.TwoLayerInit, Xb, yb, lambda2):
    """Real-batch MSE of the whole pipeline trained on the set (x, y): step, redrawn biases, ridge."""
    W1, a = nw.train_one_step_ridge(theta0, x, y, lambda2, weights=mask)
    return jnp.mean((nw.forward(W1, a, theta0.b, Xb) - yb) ** 2)


@functools.partial(jax.jit, static_argnames=("lambda2", "steps", "lr", "batch", "init_scale"))
def distill_end2end(key, theta0: nw.TwoLayerInit, X_pool, y_pool, mask, *, lambda2: float = 1e-4,
                    steps: int = 1500, lr: float = 1e-2, batch: int = 512, init_scale: float = 0.1
                    ) -> DistilledSet:
    """End-to-end PM: one set for the step and the readout, theta_0 fixed ("reproduce"). Minibatch b_t of the real
    pool drawn with fold_in(key, t). Returns the distilled set."""
    M_pad, d = mask.shape[0], X_pool.shape[1]
    kx, ky, kb = jax.random.split(key, 3)
    dtype = X_pool.dtype
    params = dict(x=init_scale * jax.random.normal(kx, (M_pad, d), dtype),
                  y=jax.random.normal(ky, (M_pad,), dtype))
    tx = optax.adam(lr)
    state = tx.init(params)
    n = X_pool.shape[0]

    def body(carry, t):
        p, s = carry
        idx = jax.random.randint(jax.random.fold_in(kb, t), (batch,), 0, n)
        g = jax.grad(lambda q: e2e_loss(q["x"] * mask[:, None], q["y"] * mask, mask, theta0,
                                        X_pool[idx], y_pool[idx], lambda2))(p)
        upd, s = tx.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (params, _), _ = jax.lax.scan(body, (params, state), jnp.arange(steps))
    return DistilledSet(params["x"] * mask[:, None], params["y"] * mask, mask)
