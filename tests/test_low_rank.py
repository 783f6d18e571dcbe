"""The low-rank parameterization (docs/methods.md section 9): decode, SVD init, gradients, budget, lrs, labels, CLI."""
from __future__ import annotations

import json

import jax
import jax.test_util  # noqa: F401
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxdd.distill import DistillConfig, decode_synthetic, distill_step, init_state, make_pool
from jaxdd.objectives import Objective, dm, no_init
from jaxdd.models import get_model
from jaxdd.api import _PARAMS, available_parameterizations
from jaxdd.synthetic.budget import (budget_report, check_within_budget, images_that_fit,
                                    low_rank_images_per_class)
from jaxdd.synthetic.low_rank import decode_factors, low_rank, svd_factors
from jaxdd.types import JaxddError
from tests.conftest import toy_images


def _rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_decode_is_per_channel_matmul():
    A, B = _rand((3, 2, 5, 2), 1), _rand((3, 2, 2, 7), 2)
    x = np.asarray(decode_factors(jnp.asarray(A), jnp.asarray(B)))
    assert x.shape == (3, 5, 7, 2)
    for n in range(3):
        for c in range(2):
            np.testing.assert_allclose(x[n, :, :, c], A[n, c] @ B[n, c], rtol=1e-5, atol=1e-5)


def test_full_rank_svd_reproduces_images():
    x = _rand((4, 6, 9, 3))  # h != w: full rank is min(h, w) = 6
    A, B = svd_factors(x, 6)
    assert A.shape == (4, 3, 6, 6) and B.shape == (4, 3, 6, 9)
    np.testing.assert_allclose(np.asarray(decode_factors(A, B)), x, atol=1e-4)
    # through the Parameterization: the "real" init at full rank returns the real images
    param = low_rank(6, ipc=20, image_shape=(6, 9, 3), init="real")
    m = param.images_per_class  # floor(20*54 / (6*15)) = 12
    assert m == 12
    real = _rand((2, m, 6, 9, 3), 3)
    out = param.decode(param.init(jax.random.key(0), real))
    np.testing.assert_allclose(np.asarray(out), real.reshape(2 * m, 6, 9, 3), atol=1e-4)


def test_truncated_svd_error_is_eckart_young():
    x = _rand((2, 8, 8, 1))
    for r in (1, 2, 4):
        A, B = svd_factors(x, r)
        err = np.sum((np.asarray(decode_factors(A, B)) - x) ** 2, axis=(1, 2, 3))
        s = np.linalg.svd(x[..., 0], compute_uv=False)
        np.testing.assert_allclose(err, np.sum(s[:, r:] ** 2, axis=1), rtol=1e-3)


def test_gradients_reach_both_factors():
    with jax.enable_x64(True):
        A = jnp.asarray(_rand((2, 1, 5, 2), 4), jnp.float64)
        B = jnp.asarray(_rand((2, 1, 2, 6), 5), jnp.float64)
        G = jnp.asarray(_rand((2, 5, 6, 1), 6), jnp.float64)
        gA, gB = jax.grad(lambda a, b: jnp.sum(G * decode_factors(a, b)), argnums=(0, 1))(A, B)
        Gc = jnp.transpose(G, (0, 3, 1, 2))  # (n, c, h, w)
        np.testing.assert_allclose(gA, Gc @ jnp.swapaxes(B, -1, -2), rtol=1e-12)  # G B^T
        np.testing.assert_allclose(gB, jnp.swapaxes(A, -1, -2) @ Gc, rtol=1e-12)  # A^T G
        jax.test_util.check_grads(lambda a, b: jnp.sum(jnp.sin(decode_factors(a, b))), (A, B), order=1, modes=("rev",))


def test_noise_init_is_the_papers():
    param = low_rank(2, ipc=10, image_shape=(12, 12, 1), init="noise")
    m = param.images_per_class  # floor(10*144 / 48) = 30
    assert m == 30 and param.config["paper_init"]
    p = param.init(jax.random.key(0), jnp.zeros((3, 1, 12, 12, 1)))  # noise needs no real images
    assert p["A"].shape == (90, 1, 12, 2) and p["B"].shape == (90, 1, 2, 12)
    assert abs(float(jnp.std(p["A"])) - 1) < 0.05 and abs(float(jnp.mean(p["B"]))) < 0.05
    # each decoded pixel is a sum of r products of independent N(0,1): variance r
    assert abs(float(jnp.var(param.decode(p))) - 2.0) < 0.2


def test_svd_init_approximates_class_images_class_major():
    x, y = toy_images(3, 12, (8, 8, 1))
    real = x.reshape(3, 12, 8, 8, 1)
    param = low_rank(2, ipc=2, image_shape=(8, 8, 1), init="svd")
    m = param.images_per_class
    assert m == 4
    out = np.asarray(param.decode(param.init(jax.random.key(0), real)))
    target = real[:, :m].reshape(3 * m, 8, 8, 1)
    # each decoded image is the best rank-2 approximation (numpy SVD reference) of the real image in its slot
    u, s, vt = np.linalg.svd(target[..., 0].astype(np.float64))
    ref = np.einsum("nhr,nr,nrw->nhw", u[:, :, :2], s[:, :2], vt[:, :2])
    np.testing.assert_allclose(out[..., 0], ref, atol=1e-4)
    # so it stays closest to its own class's images
    err = ((out[:, None] - target[None]) ** 2).sum(axis=(2, 3, 4))
    np.testing.assert_array_equal(err.argmin(axis=1) // m, np.arange(3 * m) // m)


def test_known_budget_table():
    # docs/methods.md 9: exact m per class
    for (ipc, r), m in {(1, 2): 7, (10, 2): 70, (50, 2): 350, (1, 4): 3, (10, 4): 35, (50, 4): 175,
                        (1, 8): 1, (10, 8): 17, (50, 8): 87}.items():
        assert low_rank_images_per_class(ipc, (28, 28, 1), r) == m
    assert low_rank_images_per_class(10, (32, 32, 3), 2) == 80
    assert low_rank_images_per_class(1, (64, 64, 3), 2) == 16


@settings(max_examples=300, deadline=None)
@given(ipc=st.integers(1, 100), h=st.integers(1, 64), w=st.integers(1, 64), c=st.integers(1, 4),
       r=st.integers(1, 64))
def test_budget_never_exceeds_pixels(ipc, h, w, c, r):
    budget = ipc * h * w * c
    per_image = c * r * (h + w)
    if per_image > budget:
        with pytest.raises(JaxddError, match="lower --rank"):
            low_rank_images_per_class(ipc, (h, w, c), r)
        return
    m = low_rank_images_per_class(ipc, (h, w, c), r)
    assert 1 <= m and m * per_image <= budget < (m + 1) * per_image  # fits, and is the most that fits
    assert m == images_that_fit(ipc, (h, w, c), per_image)


def test_stored_floats_match_and_respect_budget():
    K, shape = 3, (8, 8, 1)
    for r in (1, 2, 3, 4):
        param = low_rank(r, ipc=3, image_shape=shape, init="noise", num_classes=K)
        p = jax.eval_shape(param.init, jax.random.key(0), jnp.zeros((K, 1, *shape)))
        floats = param.floats(p)
        assert floats == K * param.images_per_class * 1 * r * 16 <= K * 3 * 64
        rep = budget_report(floats, param.images_per_class, K, 3, shape, full_dataset_images=300)
        assert rep["floats_budget"] == 576 and rep["compression_vs_full"] == pytest.approx(300 * 64 / floats)
    with pytest.raises(JaxddError, match="over the pixel budget"):
        check_within_budget(577, K, 3, shape)
    with pytest.raises(JaxddError, match="rank"):
        low_rank(9, ipc=1, image_shape=shape)
    with pytest.raises(JaxddError, match="lower --rank"):
        low_rank(5, ipc=1, image_shape=shape)  # 5*16 = 80 floats > one 8x8 pixel image (64)
    assert low_rank(4, ipc=1, image_shape=shape).images_per_class == 1  # 64 <= 64 fits exactly


def _dm_case(lrs=(), learn_labels=False):
    K, shape = 3, (8, 8, 1)
    x, y = toy_images(K, 12, shape)
    pool = make_pool(x, y, K)
    param = _PARAMS["low_rank"](ipc=2, image_shape=shape, num_classes=K, init="noise", rank=2)
    objective = dm(get_model("ConvNet", K, width=8, depth=2), K, real_per_class=4)
    config = DistillConfig(iterations=2, lr_img=0.1, lrs=lrs, learn_labels=learn_labels, progress=False)
    return objective, param, pool, config


def test_per_factor_learning_rates():
    """lrs=(("data/A", 0.0), ("data/B", 0.3)) on L = 0.5 ||decode(A, B) - T||^2: A frozen, B <- B - 0.3 A^T (AB - T)."""
    K, shape = 3, (8, 8, 1)
    x, y = toy_images(K, 12, shape)
    pool = make_pool(x, y, K)
    param = low_rank(2, ipc=2, image_shape=shape, init="noise")
    target = jnp.asarray(_rand((K * param.images_per_class, *shape), 7))

    def loss(syn, real, state, key):
        return 0.5 * jnp.sum(jnp.square(syn.x - target)), {}

    objective = Objective("quadratic", no_init, loss, real_per_class=0)
    config = DistillConfig(iterations=1, lr_img=0.1, lrs=(("data/A", 0.0), ("data/B", 0.3)), progress=False)
    key = jax.random.key(0)
    state, tx = init_state(key, objective, param, pool, config)
    new, metrics = jax.jit(lambda s: distill_step(objective, param, tx, s, pool, key))(state)
    A, B = state.syn["data"]["A"], state.syn["data"]["B"]
    np.testing.assert_array_equal(new.syn["data"]["A"], A)  # lr 0: frozen
    resid = jnp.transpose(decode_factors(A, B) - target, (0, 3, 1, 2))  # (n, c, h, w)
    expected = B - 0.3 * jnp.swapaxes(A, -1, -2) @ resid  # first SGD step: the momentum buffer starts at 0
    np.testing.assert_allclose(new.syn["data"]["B"], expected, rtol=1e-4, atol=1e-4)
    assert float(metrics["loss"]) == pytest.approx(float(0.5 * jnp.sum(resid ** 2)), rel=1e-5)


def test_label_layout_of_more_images_than_the_budget():
    objective, param, pool, config = _dm_case(learn_labels=True)
    m = param.images_per_class  # floor(2*64/32) = 4 images per class for a budget of 2
    assert m == 4
    state, _ = init_state(jax.random.key(0), objective, param, pool, config)
    syn = decode_synthetic(param, state.syn, 3)
    assert syn.x.shape == (12, 8, 8, 1)
    np.testing.assert_array_equal(np.argmax(syn.y, -1), np.repeat(np.arange(3), 4))
    hard = decode_synthetic(param, {"data": state.syn["data"]}, 3)
    np.testing.assert_array_equal(hard.y, np.repeat(np.arange(3), 4))


def test_registered_and_cli_reports_budget(tmp_path):
    from jaxdd.cli import main

    assert "low_rank" in available_parameterizations()
    out = tmp_path / "run"
    rc = main(["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--param", "low_rank", "--rank",
               "2", "--init", "noise", "--iterations", "2", "--real-per-class", "4", "--model", "ConvNetD1",
               "--out", str(out),
               "--no-progress"])
    assert rc == 0
    meta = json.loads((out / "synthetic.json").read_text())
    meta = meta.get("metadata", meta)
    # digits are 8x8x1: one rank-2 image costs 2*16 = 32 floats, a pixel image 64 -> 2 images per class
    assert meta["images_per_class"] == 2 and meta["num_images"] == 20
    assert meta["floats_stored"] == 10 * 2 * 32 == meta["floats_budget"]
    assert meta["parameterization"]["name"] == "low_rank" and meta["parameterization"]["init"] == "noise"
    assert meta["compression_vs_full"] == pytest.approx(meta_train_images(meta) * 64 / 640)
    assert main(["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--param", "low_rank", "--rank",
                 "5", "--iterations", "1", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2  # 80 > 64 floats


def meta_train_images(meta):
    # the training pool is the train split minus the validation split the pipeline carves out
    from jaxdd.data import load

    return load("digits", "train").num_examples - meta["val_per_class"] * meta["num_classes"]
