"""SRe2L / DWA recover (jaxdd.objectives.recover): analytic checks of the BN statistics loss, the DWA perturbation,
the equivalence of parallel class batches with independent syntheses, SRe2L = DWA at rho 0, clipping, the cosine
schedule, the KD loss and the diversity measure. Tiny shapes (8x8x1, 3 classes, width-8 nets)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdd.distill import DistillConfig, distill_step, init_state, make_pool, synthetic_optimizer
from jaxdd.models import get_model, init_model
from jaxdd.objectives.base import Synthetic
from jaxdd.objectives.recover import (
    RecoverConfig, bn_statistics_loss, diversity, dwa_perturb, forward_with_bn_inputs, kd_loss, recover,
    recover_batch_loss, roll_jitter,
)
from jaxdd.synthetic import pixels
from jaxdd.train import cross_entropy
from tests.conftest import toy_images

K, SHAPE = 3, (8, 8, 1)


class TwoBN(nn.Module):
    """x -> BN_a -> relu -> Dense(2) (per pixel) -> BN_b -> mean over h,w -> Dense(K)."""

    @nn.compact
    def __call__(self, x, train: bool = False, features: bool = False):
        h = nn.BatchNorm(use_running_average=not train, epsilon=1e-5, name="bn_a")(x)
        h = nn.Dense(2, name="mix")(nn.relu(h))
        h = nn.BatchNorm(use_running_average=not train, epsilon=1e-5, name="bn_b")(h)
        return nn.Dense(K, name="out")(h.mean(axis=(1, 2)))


def _two_bn_variables(rng):
    v = init_model(TwoBN(), jax.random.key(0), (2, 2, 3))
    bs = {"bn_a": {"mean": rng.normal(size=3), "var": rng.uniform(0.5, 2, 3)},
          "bn_b": {"mean": rng.normal(size=2), "var": rng.uniform(0.5, 2, 2)}}
    params = jax.tree.map(lambda a: rng.normal(size=a.shape), v["params"])
    return {"params": params, "batch_stats": bs}


def test_bn_statistics_loss_hand_computed():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        v = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), _two_bn_variables(rng))
        x = rng.normal(size=(4, 2, 2, 3))
        logits, recs = forward_with_bn_inputs(TwoBN(), v, jnp.asarray(x))
        got = bn_statistics_loss(recs, v["batch_stats"], first_bn_multiplier=10.0, r_var=3.0)
        # by hand (numpy): BN_a input is x; BN_b input is Dense(relu(BN_a(x))) with BN_a in eval mode
        p, bs = jax.tree.map(np.asarray, v["params"]), jax.tree.map(np.asarray, v["batch_stats"])
        a = (x - bs["bn_a"]["mean"]) / np.sqrt(bs["bn_a"]["var"] + 1e-5) * p["bn_a"]["scale"] + p["bn_a"]["bias"]
        h = np.maximum(a, 0) @ p["mix"]["kernel"] + p["mix"]["bias"]

        def term(z, st):
            mu, var = z.reshape(-1, z.shape[-1]).mean(0), z.reshape(-1, z.shape[-1]).var(0)
            return np.linalg.norm(mu - st["mean"]) + 3.0 * np.linalg.norm(var - st["var"])

        want = 10.0 * term(x, bs["bn_a"]) + term(h, bs["bn_b"])
        assert [r[0] for r in recs] == [("bn_a",), ("bn_b",)]
        np.testing.assert_allclose(float(got), want, rtol=1e-10)
        # the whole recover loss: CE + alpha_BN * L_BN, no jitter
        y = jnp.asarray([0, 1, 2, 0])
        total, (ce, bn) = recover_batch_loss(TwoBN(), v, jnp.asarray(x), y, jax.random.key(0),
                                             RecoverConfig(alpha_bn=0.5, first_bn_multiplier=10.0, r_var=3.0,
                                                           jitter=0))
        np.testing.assert_allclose(float(bn), want, rtol=1e-10)
        np.testing.assert_allclose(float(total), float(cross_entropy(logits, y)) + 0.5 * want, rtol=1e-10)


def test_bn_loss_is_zero_at_running_stats_and_has_finite_gradient():
    # images whose per-channel batch mean/var equal the running stats: loss 0, gradient finite (safe norm)
    m = get_model("ConvNetBN", K, width=8, depth=1)
    v = init_model(m, jax.random.key(0), SHAPE)
    x = jax.random.normal(jax.random.key(1), (6, *SHAPE))
    x = (x - x.mean()) / x.std()
    _, recs = forward_with_bn_inputs(m, v, x)
    stats = {"norm0": {"mean": recs[0][1].mean((0, 1, 2)), "var": recs[0][1].var((0, 1, 2))}}
    loss_fn = lambda z: bn_statistics_loss(forward_with_bn_inputs(m, {**v, "batch_stats": stats}, z)[1], stats)
    assert float(loss_fn(x)) == pytest.approx(0.0, abs=1e-5)
    assert bool(jnp.all(jnp.isfinite(jax.grad(loss_fn)(x))))


def test_roll_jitter_is_a_whole_batch_roll():
    x = jnp.arange(2 * 5 * 5).reshape(2, 5, 5, 1).astype(jnp.float32)
    out = roll_jitter(x, jax.random.key(3), 2)
    hits = [(a, b) for a in range(-2, 3) for b in range(-2, 3) if bool(jnp.all(jnp.roll(x, (a, b), (1, 2)) == out))]
    assert len(hits) == 1
    assert bool(jnp.all(roll_jitter(x, jax.random.key(3), 0) == x))


@pytest.fixture(scope="module")
def teacher():
    m = get_model("ConvNetBN", K, width=8, depth=2)
    v = init_model(m, jax.random.key(0), SHAPE)
    # non-trivial running statistics (as after training)
    x, _ = toy_images(K, 8, SHAPE)
    _, upd = m.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    return m, {**v, **upd}


def _global_norm_diff(a, b):
    return float(optax.global_norm(jax.tree.map(lambda p, q: p - q, a, b)))


def test_dwa_perturbation_norm_and_loss_increase(teacher):
    m, v = teacher
    x, y = toy_images(K, 1, SHAPE, seed=1)
    x, y = jnp.asarray(x), jnp.asarray(y)
    ce = lambda p: float(cross_entropy(m.apply({**v, "params": p}, x), y))  # noqa: E731
    rho = 0.05
    one = dwa_perturb(m, v, x, y, jax.random.key(0), rho=rho, steps=1, jitter=0)
    np.testing.assert_allclose(_global_norm_diff(one, v["params"]), rho, rtol=1e-4)  # K=1: exactly rho
    many = dwa_perturb(m, v, x, y, jax.random.key(0), rho=rho, steps=4, jitter=0)
    d = _global_norm_diff(many, v["params"])
    assert 0.5 * rho < d <= rho * (1 + 1e-5)  # triangle inequality: <= rho
    assert ce(one) > ce(v["params"]) and ce(many) > ce(v["params"])  # ascent increases the loss on its batch
    # the BN affine parameters move too
    assert float(jnp.max(jnp.abs(many["norm0"]["scale"] - v["params"]["norm0"]["scale"]))) > 0


def _objective_state(objective, param, pool, key, steps=3, lr=0.1):
    cfg = DistillConfig(iterations=steps, optimizer="adam", lr_img=lr, progress=False)
    state, tx = init_state(key, objective, param, pool, cfg)
    step = jax.jit(lambda s, k: distill_step(objective, param, tx, s, pool, k))
    for _ in range(steps):
        state, metrics = step(state, key)
    return state, metrics


def test_dwa_at_rho_zero_reproduces_sre2l_and_rho_positive_differs(teacher):
    m, v = teacher
    x, y = toy_images(K, 6, SHAPE)
    pool = make_pool(x, y, K)
    param = pixels(2, "real")
    cfg = RecoverConfig(r_var=5.0, jitter=1)
    key = jax.random.key(4)
    plain, _ = _objective_state(recover(m, v, K, 2, cfg=cfg), param, pool, key)
    off, _ = _objective_state(recover(m, v, K, 2, cfg=cfg, perturb=True, rho=0.0, dwa_steps=3), param, pool, key)
    on, _ = _objective_state(recover(m, v, K, 2, cfg=cfg, perturb=True, rho=0.5, dwa_steps=3), param, pool, key)
    np.testing.assert_allclose(off.syn["data"], plain.syn["data"], rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(on.syn["data"] - plain.syn["data"]))) > 1e-4
    # the perturbed teachers are one per class batch, each from that batch's real init images, and differ
    p = on.obj_state["params"]["conv0"]["kernel"]
    assert p.shape[0] == 2 and float(jnp.max(jnp.abs(p[0] - p[1]))) > 0


def test_parallel_batches_equal_independent_syntheses(teacher):
    m, v = teacher
    ipc = 3
    obj = recover(m, v, K, ipc, cfg=RecoverConfig(jitter=2))
    xs = jax.random.normal(jax.random.key(0), (K * ipc, *SHAPE))
    ys = jnp.repeat(jnp.arange(K), ipc)
    key = jax.random.key(7)
    g_all = jax.grad(lambda a: obj.loss(Synthetic(a, ys, {}), None, obj.init(key), key)[0])(xs)
    g_all = g_all.reshape(K, ipc, *SHAPE)
    keys = jax.random.split(key, ipc)
    for b in range(ipc):  # batch b = image b of every class, against the teacher, with its own jitter key
        xb = xs.reshape(K, ipc, *SHAPE)[:, b]
        g_b = jax.grad(lambda a: recover_batch_loss(m, v, a, jnp.arange(K), keys[b], RecoverConfig(jitter=2))[0])(xb)
        np.testing.assert_allclose(g_all[:, b], g_b, rtol=1e-4, atol=1e-7)


def test_dwa_state_from_init_images_and_clipping(teacher):
    m, v = teacher
    x, y = toy_images(K, 6, SHAPE)
    pool = make_pool(x, y, K)
    lo, hi = np.array([-0.5], np.float32), np.array([0.7], np.float32)
    obj = recover(m, v, K, 2, cfg=RecoverConfig(jitter=0), perturb=True, rho=0.1, dwa_steps=2, clip=(lo, hi))
    param = pixels(2, "real")
    key = jax.random.key(1)
    state0, _ = init_state(key, obj, param, pool, DistillConfig(optimizer="adam", lr_img=0.1))
    # the state holds, per class batch b, the perturbation of the very real images batch b starts from
    real = state0.syn["data"].reshape(K, 2, *SHAPE)
    for b in range(2):
        want = dwa_perturb(m, v, real[:, b], jnp.arange(K), jax.random.key(0), rho=0.1, steps=2, jitter=0)
        got = jax.tree.map(lambda a: a[b], state0.obj_state["params"])
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7), got, want)
    state, metrics = _objective_state(obj, param, pool, key, steps=2, lr=1.0)
    assert float(state.syn["data"].min()) >= -0.5 and float(state.syn["data"].max()) <= 0.7
    assert np.isfinite(float(metrics["loss"])) and {"ce", "bn"} <= set(metrics)


def test_cosine_schedule():
    syn = {"data": jnp.zeros((2, 2)), "extras": {}}
    cfg = DistillConfig(iterations=10, optimizer="adam", lr_img=0.25, schedule="cosine")
    tx = synthetic_optimizer(syn, cfg)
    st = tx.init(syn)
    lrs = []
    for _ in range(5):
        _, st = tx.update(jax.tree.map(jnp.ones_like, syn), st, syn)
        lrs.append(float(st.inner_states["data"].inner_state.hyperparams["learning_rate"]))
    # learning rate used at step t (0-based) is 0.25 * 0.5 (1 + cos(pi t / 10)); the stored value is step t's
    np.testing.assert_allclose(lrs, [0.125 * (1 + np.cos(np.pi * t / 10)) for t in range(5)], rtol=1e-5)


def test_kd_loss_hand_computed():
    s = jnp.asarray([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t = jnp.asarray([[0.0, 2.0, 1.0], [1.0, -1.0, 0.0]])
    T = 2.0
    pt = np.exp(np.asarray(t) / T) / np.exp(np.asarray(t) / T).sum(-1, keepdims=True)
    ps = np.exp(np.asarray(s) / T) / np.exp(np.asarray(s) / T).sum(-1, keepdims=True)
    want = np.mean(np.sum(pt * np.log(pt / ps), -1))
    np.testing.assert_allclose(float(kd_loss(s, t, T)), want, rtol=1e-5)
    np.testing.assert_allclose(float(kd_loss(s, t, T, t2=True)), want * T * T, rtol=1e-5)
    assert float(kd_loss(t, t, T)) == pytest.approx(0.0, abs=1e-7)


class Flat(nn.Module):
    @nn.compact
    def __call__(self, x, train=False, features=False):
        e = x.reshape(x.shape[0], -1)
        return (e, {"embedding": e}) if features else e


def test_diversity_hand_computed():
    e = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0],  # class 0
                  [1, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0]], np.float32)  # class 1: identical directions
    x = e.reshape(6, 2, 2, 1)
    y = np.array([0, 0, 0, 1, 1, 1])
    out = diversity(Flat(), {}, x, y, 2)
    c = 1 / np.sqrt(2)
    want0 = np.mean([1 - 0, 1 - c, 1 - c])  # pairs (0,1), (0,2), (1,2)
    np.testing.assert_allclose(out["per_class"], [want0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out["mean"], want0 / 2, atol=1e-6)
