"""Per-seed problems and the vmapped stage runners used by the memory searches and the sweeps.

A ``Problem`` holds everything one seed needs: the task, the "reproduce" init theta_0 (its redrawn biases included),
K stage-1 inits (the first is theta_0), a held-out init for "transfer", the real first-layer gradients of the full
data at all of them, a readout pool and a test set. ``prepare`` is a pure function of (key, cfg) and is vmapped over
seed keys. The runners take a stack of problems (leading seed axis S) and a bucket of candidate sizes (C of them,
padded to ``pad``) and return metrics of shape (S, C); they are jitted with (cfg, pad) static.

Keys: seed key -> fold_in(., stream id) for each consumer; candidate M of a stage uses fold_in(stage key, M), so a
result does not depend on which bucket the candidate was run in.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory import distill as dd
from theory import metrics as mt
from theory import network as nw
from theory import tasks as tk

# stream ids for fold_in (fixed forever: changing them changes every result)
_TASK, _INIT, _FRESH, _DATA, _POOL, _TEST, _S1, _S2, _E2E, _SUB = range(10)


@dataclasses.dataclass(frozen=True)
class Config:
    """One grid point of a sweep. Hashable; used as a static jit argument.

    d, r, L, kind, kappa, noise: task and width. lambda2: ridge. n_real: points behind the full-data first-layer
    gradients; n_pool: real pool for readouts and stage-2/end-to-end losses; n_test: test points. K: stage-1 inits.
    gm_*: stage-1 Adam; pm_*: stage-2 Adam; e2e_*: end-to-end Adam and input init scale (unit scale, like real points, as in pilot A). chunk: streaming chunk for the gradients."""

    d: int = 32
    r: int = 2
    L: int = 256
    kind: str = "quad"
    kappa: float = 2.0
    noise: float = 0.0
    lambda2: float = 1e-4
    n_real: int = 65536
    n_pool: int = 16384
    n_test: int = 8192
    K: int = 4
    gm_steps: int = 1500
    gm_lr: float = 3e-2
    gm_metric: str = "fro"
    init_scale: float = 0.1
    pm_steps: int = 2000
    pm_lr: float = 1e-2
    e2e_steps: int = 1500
    e2e_lr: float = 1e-2
    e2e_batch: int = 512
    e2e_init_scale: float = 1.0
    chunk: int = 8192
    dtype: str = "float32"


class Problem(NamedTuple):
    task: tk.MIMTask
    theta0: nw.TwoLayerInit      # (L, d) ... the "reproduce" init
    inits: nw.TwoLayerInit       # (K, L, d) ... stage-1 inits, inits[0] == theta0
    fresh: nw.TwoLayerInit       # held-out init ("transfer")
    G: jax.Array                 # (K, L, d) full-data first-layer gradients at inits
    G_fresh: jax.Array           # (L, d) at the held-out init
    X_pool: jax.Array            # (n_pool, d)
    y_pool: jax.Array
    X_test: jax.Array            # (n_test, d)
    y_test: jax.Array


def _stack(ts):
    return jax.tree.map(lambda *a: jnp.stack(a), *ts)


def prepare(key, cfg: Config) -> Problem:
    """Draw one seed's problem. The full-data gradients are streamed over n_real / chunk chunks of fresh data."""
    dt = jnp.dtype(cfg.dtype)
    task = tk.make_mim_task(jax.random.fold_in(key, _TASK), cfg.d, cfg.r, cfg.kind, cfg.kappa, cfg.noise)
    task = jax.tree.map(lambda a: a.astype(dt), task)
    kinit = jax.random.fold_in(key, _INIT)
    inits = _stack([nw.init_two_layer(jax.random.fold_in(kinit, k), cfg.d, cfg.L, dtype=dt) for k in range(cfg.K)])
    fresh = nw.init_two_layer(jax.random.fold_in(key, _FRESH), cfg.d, cfg.L, dtype=dt)
    allinit = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), inits, fresh)
    n_chunks = max(1, cfg.n_real // cfg.chunk)
    kdata = jax.random.fold_in(key, _DATA)

    def body(acc, c):
        X, y = tk.sample(task, jax.random.fold_in(kdata, c), cfg.chunk)
        G = jax.vmap(lambda th: nw.first_layer_grad(th, X, y))(allinit)
        return acc + G / n_chunks, None

    G0 = jnp.zeros((cfg.K + 1, cfg.L, cfg.d), dt)
    G, _ = jax.lax.scan(body, G0, jnp.arange(n_chunks))
    X_pool, y_pool = tk.sample(task, jax.random.fold_in(key, _POOL), cfg.n_pool)
    X_test, y_test = tk.sample(task, jax.random.fold_in(key, _TEST), cfg.n_test)
    theta0 = jax.tree.map(lambda a: a[0], inits)
    return Problem(task, theta0, inits, fresh, G[: cfg.K], G[cfg.K], X_pool, y_pool, X_test, y_test)


@functools.partial(jax.jit, static_argnums=1)
def prepare_many(keys, cfg: Config) -> Problem:
    """vmap of ``prepare`` over seed keys (S,)."""
    return jax.vmap(lambda k: prepare(k, cfg))(keys)


def test_mse(W1, b, a, p: Problem):
    return jnp.mean((nw.forward(W1, a, b, p.X_test) - p.y_test) ** 2)


def feature_quality(W1, b, p: Problem, lambda2):
    """Test MSE of the ridge readout fitted on the real pool over relu(X W1^T + b) (stage-1 criterion)."""
    a = nw.readout_from_moments(nw.moments(W1, b, p.X_pool, p.y_pool), lambda2)
    return test_mse(W1, b, a, p)


class Reference(NamedTuple):
    """Full-data references per seed: W1 and readout at theta_0, test MSE, feature quality at the fresh init."""

    W1: jax.Array
    a: jax.Array
    mse_full: jax.Array
    fq_full_fresh: jax.Array
    mse_rf: jax.Array          # random features: first layer frozen at init (no step)


@functools.partial(jax.jit, static_argnums=1)
def references(probs: Problem, cfg: Config) -> Reference:
    def one(p):
        W1 = nw.normalise_rows(-p.G[0])
        a = nw.readout_from_moments(nw.moments(W1, p.theta0.b, p.X_pool, p.y_pool), cfg.lambda2)
        Wf = nw.normalise_rows(-p.G_fresh)
        fqf = feature_quality(Wf, p.fresh.b, p, cfg.lambda2)
        rf = feature_quality(p.theta0.W, p.theta0.b, p, cfg.lambda2)
        return Reference(W1, a, test_mse(W1, p.theta0.b, a, p), fqf, rf)

    return jax.vmap(one)(probs)


def gm_cos_error(G_syn, G_real, U):
    """Gradient-matching accuracy inside span(U): mean over rows j of 1 - cos(U g~_j, U g_j) (0: every row of the
    distilled first-layer gradient points, inside span(U), where the real one does; a row with no active distilled
    point counts as 1). Rows are compared by direction because the step normalises them."""
    P, Q = G_syn @ U.T, G_real @ U.T
    num = jnp.sum(P * Q, axis=1)
    den = jnp.sqrt(jnp.sum(P * P, axis=1) * jnp.sum(Q * Q, axis=1))
    return jnp.mean(1.0 - jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0))


# ---------------------------------------------------------------------------------------------- stage runners
# Restarts: every (seed, size) distils ``restarts`` sets from independent inits (key fold_in(., restart)) and keeps
# the one with the lowest TRAINING objective (GM loss, pool MSE); the test criteria never choose.

def _best_of(outs, losses):
    i = jnp.argmin(losses)
    return jax.tree.map(lambda a: a[i], outs)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def run_stage1(probs: Problem, keys, sizes, cfg: Config, pad: int, restarts: int = 1):
    """Stage-1 GM for S seeds x C candidate sizes (padded to ``pad``). Returns (sets with leading (S, C), metrics
    dict of (S, C) arrays): fq_fresh, fq_theta0 (feature quality), gm_loss, gm_cos_fresh (gradient-matching
    accuracy inside span(U) at the held-out init), x_in_span, offsub (W~1 at theta_0)."""

    def per_seed(p: Problem, key):
        k1 = jax.random.fold_in(key, _S1)

        def per_size(M):
            mask = dd.size_mask(M, pad, p.G.dtype)

            def one(rk):
                return dd.distill_gm(jax.random.fold_in(jax.random.fold_in(k1, M), rk), p.inits, p.G, mask,
                                     steps=cfg.gm_steps, lr=cfg.gm_lr, init_scale=cfg.init_scale,
                                     metric=cfg.gm_metric)

            Ds, losses = jax.vmap(one)(jnp.arange(restarts))
            D, loss = _best_of((Ds, losses), losses)
            Wf = nw.first_layer_step(p.fresh, D.x, D.y, mask)
            W0 = nw.first_layer_step(p.theta0, D.x, D.y, mask)
            Gs = nw.first_layer_grad(p.fresh, D.x, D.y, mask)
            m = dict(fq_fresh=feature_quality(Wf, p.fresh.b, p, cfg.lambda2),
                     fq_theta0=feature_quality(W0, p.theta0.b, p, cfg.lambda2),
                     gm_loss=loss, gm_cos_fresh=gm_cos_error(Gs, p.G_fresh, p.task.U),
                     x_in_span=mt.x_in_span(D.x, p.task.U, mask), offsub=mt.offsub(W0, p.task.U))
            return D, m

        return jax.vmap(per_size)(sizes)

    return jax.vmap(per_seed)(probs, keys)


class Stage2Input(NamedTuple):
    """Per seed: the selected stage-1 set, W~1 at theta_0, pool moments of its features, the readout fitted on the
    pool over the same features (a_ref) and the full-data model's test predictions (f_real)."""

    D1: dd.DistilledSet
    W1: jax.Array
    mom: nw.Moments
    a_ref: jax.Array
    f_real: jax.Array


@functools.partial(jax.jit, static_argnums=2)
def stage2_inputs(probs: Problem, D1: dd.DistilledSet, cfg: Config, ref: Reference) -> Stage2Input:
    def one(p, D, W1r, ar):
        W1 = nw.first_layer_step(p.theta0, D.x, D.y, D.mask)
        mom = nw.moments(W1, p.theta0.b, p.X_pool, p.y_pool)
        return Stage2Input(D, W1, mom, nw.readout_from_moments(mom, cfg.lambda2),
                           nw.forward(W1r, ar, p.theta0.b, p.X_test))

    return jax.vmap(one)(probs, D1, ref.W1, ref.a)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def run_stage2(probs: Problem, s2: Stage2Input, keys, sizes, kind: str, cfg: Config, pad: int, restarts: int = 1):
    """Stage-2 PM-through-ridge for S seeds x C sizes. Metrics (S, C): test_mse, pool_mse (the training
    objective), agree_ref = E(f_D - f_ref)^2 with f_ref the pool readout on the same W~1, param_rel =
    ||a - a_ref|| / ||a_ref||, x2_in_span."""

    def per_seed(p: Problem, s: Stage2Input, key):
        k2 = jax.random.fold_in(jax.random.fold_in(key, _S2), dd.STAGE2_KINDS.index(kind))
        b = p.theta0.b
        f_ref = nw.forward(s.W1, s.a_ref, b, p.X_test)

        def per_size(M):
            mask = dd.size_mask(M, pad, s.W1.dtype)

            def one(rk):
                params, a = dd.distill_pm_ridge(jax.random.fold_in(jax.random.fold_in(k2, M), rk), kind, s.D1,
                                                mask, s.W1, b, s.mom, lambda2=cfg.lambda2, steps=cfg.pm_steps,
                                                lr=cfg.pm_lr)
                return (params, a), nw.moments_mse(s.mom, a)

            outs, losses = jax.vmap(one)(jnp.arange(restarts))
            (params, a), pool = _best_of((outs, losses), losses)
            f = nw.forward(s.W1, a, b, p.X_test)
            X2 = dd.decode_stage2(kind, params, s.D1)
            return dict(test_mse=jnp.mean((f - p.y_test) ** 2), pool_mse=pool,
                        agree_ref=jnp.mean((f - f_ref) ** 2),
                        param_rel=jnp.linalg.norm(a - s.a_ref) / jnp.linalg.norm(s.a_ref),
                        x2_in_span=mt.x_in_span(X2, p.task.U, mask))

        return jax.vmap(per_size)(sizes)

    return jax.vmap(per_seed)(probs, s2, keys)


@functools.partial(jax.jit, static_argnums=3)
def param_features(probs: Problem, s2: Stage2Input, keys, M_max: int):
    """Features Phi (S, M_max, L) of M_max generic inputs x_k ~ N(0, I_d) per seed (one draw; a set of M points is
    its first M rows) on the stage-2 features relu(X W~1^T + b), and a_ref (S, L)."""

    def per_seed(p: Problem, s: Stage2Input, key):
        k = jax.random.fold_in(jax.random.fold_in(key, _S2), 7)
        X = jax.random.normal(k, (M_max, s.W1.shape[1]), s.W1.dtype)
        return nw.features(s.W1, p.theta0.b, X)

    return jax.vmap(per_seed)(probs, s2, keys), s2.a_ref


def param_closed_errors(Phi, a_ref, sizes, block: int = 256) -> np.ndarray:
    """Stage 2 under the PARAMETER criterion with labels in closed form: (S, C) errors ||a - a_ref|| / ||a_ref||.

    The ridge readout is linear in the labels, a(y) = Phi^T (Phi Phi^T + M lambda2 I)^{-1} y, so as y ranges over
    R^M it ranges over the row space of Phi (first M rows): the best labels give a = the projection of a_ref on
    that row space. Computed in float64 (NumPy) by Gram-Schmidt over the rows in order (twice orthogonalised): a
    row whose residual is below 1e-9 of its norm adds no direction, and a later row can still add the directions
    an earlier one lacked (a unit active on few inputs), which a QR of the wide matrix would miss. Rows are taken
    in blocks (at most ``block`` rows, split at the sizes asked for): a block is first orthogonalised against the
    basis so far with matrix products, then row by row against the directions it adds itself. No optimiser is
    involved, so nothing is censored by optimisation."""
    Phi = np.asarray(Phi, np.float64)
    a_ref = np.asarray(a_ref, np.float64)
    S, M_max, L = Phi.shape
    want = {int(m): i for i, m in enumerate(sizes)}
    cuts = sorted({m for m in want if 0 < m <= M_max} | {M_max})
    bounds, m0 = [], 0
    for m1 in cuts:
        for b0 in range(m0, m1, block):
            bounds.append((b0, min(b0 + block, m1)))
        m0 = m1
    out = np.zeros((S, len(sizes)))
    for s in range(S):
        a = a_ref[s]
        na = np.linalg.norm(a)
        Q = np.zeros((L, L))
        k = 0
        resid = a.copy()
        for b0, b1 in bounds:
            if k < L:
                B = Phi[s, b0:b1]
                V = B.copy()
                for _ in range(2):
                    V -= (V @ Q[:, :k]) @ Q[:, :k].T
                k0 = k
                for i in range(b1 - b0):
                    if k >= L:
                        break
                    nv0 = np.linalg.norm(B[i])
                    v = V[i]
                    for _ in range(2):
                        v = v - Q[:, k0:k] @ (Q[:, k0:k].T @ v)
                    nv = np.linalg.norm(v)
                    if nv0 > 0 and nv > 1e-9 * nv0:
                        Q[:, k] = v / nv
                        k += 1
                Qn = Q[:, k0:k]
                resid -= Qn @ (Qn.T @ resid)
            if b1 in want:
                out[s, want[b1]] = np.linalg.norm(resid) / na
    return out


@functools.partial(jax.jit, static_argnums=(3, 4))
def run_e2e(probs: Problem, keys, sizes, cfg: Config, pad: int):
    """End-to-end PM at theta_0 for S seeds x C sizes. Metrics (S, C): test_mse, x_in_span."""

    def per_seed(p: Problem, key):
        k3 = jax.random.fold_in(key, _E2E)

        def per_size(M):
            mask = dd.size_mask(M, pad, p.G.dtype)
            D = dd.distill_end2end(jax.random.fold_in(k3, M), p.theta0, p.X_pool, p.y_pool, mask,
                                   lambda2=cfg.lambda2, steps=cfg.e2e_steps, lr=cfg.e2e_lr,
                                   batch=cfg.e2e_batch, init_scale=cfg.e2e_init_scale)
            W1, a = nw.train_one_step_ridge(p.theta0, D.x, D.y, cfg.lambda2, weights=mask)
            return dict(test_mse=test_mse(W1, p.theta0.b, a, p), x_in_span=mt.x_in_span(D.x, p.task.U, mask))

        return jax.vmap(per_size)(sizes)

    return jax.vmap(per_seed)(probs, keys)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _subset_mse_padded(p: Problem, key, n, pad: int, lambda2: float):
    X, y = tk.sample(p.task, key, pad)
    w = (jnp.arange(pad) < n).astype(X.dtype)
    W1, a = nw.train_one_step_ridge(p.theta0, X, y, lambda2, weights=w)
    return test_mse(W1, p.theta0.b, a, p)


def real_subset_mse(p: Problem, key, n: int, lambda2: float) -> float:
    """Baseline: the same pipeline (same theta_0) trained on the first n of a fresh real sample drawn with
    fold_in(fold_in(key, _SUB), n); returns test MSE. Padded to a power of four so that bisection reuses compiles."""
    pad = 16
    while pad < n:   # powers of 4: few distinct compiles per grid point
        pad *= 4
    k = jax.random.fold_in(jax.random.fold_in(key, _SUB), n)
    return float(_subset_mse_padded(p, k, jnp.asarray(n), pad, float(lambda2)))
