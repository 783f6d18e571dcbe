import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.evaluate import evaluate_synthetic
from jaxdd.models import apply_model, get_model, init_model
from jaxdd.train import TrainProtocol, cross_entropy, train_many, unroll_sgd
from jaxdd.types import JaxddError
from tests.conftest import toy_images

PROTO = TrainProtocol(epochs=30, lr=0.05, batch_size=16)


def test_evaluation_separable_high_and_shuffled_chance():
    x, y = toy_images(3, 16, (8, 8, 1), seed=0)
    xt, yt = toy_images(3, 40, (8, 8, 1), seed=0)  # same class prototypes (seed 0), different noise draws
    kw = dict(num_classes=3, num_models=3, protocol=PROTO, model_kwargs={"width": 16, "depth": 2})
    good = evaluate_synthetic(jax.random.key(0), x, y, xt, yt, **kw)
    assert good.mean > 0.9, good
    y_shuf = np.random.default_rng(1).permutation(y)
    bad = evaluate_synthetic(jax.random.key(0), x, y_shuf, xt, yt, **kw)
    assert bad.mean < 0.6, bad
    assert good.accuracies.shape == (3,)


def test_evaluation_is_deterministic_and_models_differ():
    x, y = toy_images(3, 8, (8, 8, 1))
    kw = dict(num_classes=3, num_models=2, protocol=TrainProtocol(epochs=2, batch_size=8),
              model_kwargs={"width": 8, "depth": 2})
    a = evaluate_synthetic(jax.random.key(3), x, y, x, y, **kw)
    b = evaluate_synthetic(jax.random.key(3), x, y, x, y, **kw)
    np.testing.assert_array_equal(a.accuracies, b.accuracies)


@pytest.mark.accelerator
def test_grouping_networks_trains_the_same_networks():
    """K networks vmapped together, in groups, or one at a time: each network depends only on its key."""
    x, y = toy_images(3, 6, (8, 8, 1))
    module = get_model("ConvNet", 3, width=8, depth=2)
    keys = jax.random.split(jax.random.key(5), 3)
    proto = TrainProtocol(epochs=3, batch_size=8, augment="flip_crop")
    together = train_many(keys, module, x, y, proto, group=3)
    chex.assert_trees_all_close(train_many(keys, module, x, y, proto, group=1), together, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(train_many(keys, module, x, y, proto, group=2), together, atol=1e-5, rtol=1e-5)
    with pytest.raises(JaxddError, match="group"):
        train_many(keys, module, x, y, proto, group=0)


def test_evaluation_bad_inputs():
    x, y = toy_images(3, 4, (8, 8, 1))
    kw = dict(num_classes=3, num_models=1, protocol=TrainProtocol(epochs=1))
    with pytest.raises(JaxddError, match="shape"):
        evaluate_synthetic(jax.random.key(0), x, y, np.zeros((4, 9, 9, 1), np.float32), y[:4], **kw)
    with pytest.raises(JaxddError):
        evaluate_synthetic(jax.random.key(0), x.astype(np.int32), y, x, y, **kw)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(JaxddError, match="NaN|nan|finite"):
        evaluate_synthetic(jax.random.key(0), bad, y, x, y, **kw)
    with pytest.raises(JaxddError, match="epochs"):
        TrainProtocol(epochs=-1)


def test_cross_entropy_soft_equals_hard_for_one_hot():
    logits = jax.random.normal(jax.random.key(0), (5, 4))
    y = jnp.array([0, 3, 1, 2, 2])
    np.testing.assert_allclose(cross_entropy(logits, y), cross_entropy(logits, jax.nn.one_hot(y, 4)), rtol=1e-6)


def _unroll_problem():
    m = get_model("ConvNet", 3, width=4, depth=1, conv_impl="patches")
    p0 = init_model(m, jax.random.key(0), (6, 6, 1))["params"]
    xs = jax.random.normal(jax.random.key(1), (4, 3, 6, 6, 1))  # 4 steps of 3 images
    ys = jnp.array([0, 1, 2])

    def outer(xs, memory, k=1):
        def step_loss(p, x):
            return cross_entropy(apply_model(m, {"params": p}, x).logits, ys)

        p = unroll_sgd(step_loss, p0, xs, jnp.full((4,), 0.1), memory=memory, checkpoint_every=k)
        return step_loss(p, xs[0])

    return outer, xs


def test_unroll_remat_equals_full():
    outer, xs = _unroll_problem()
    g_full = jax.grad(outer)(xs, "full")
    for k in (2, 4):
        chex.assert_trees_all_close(jax.grad(outer)(xs, "remat", k), g_full, rtol=1e-5, atol=1e-7)
    with pytest.raises(JaxddError, match="divide"):
        outer(xs, "remat", 3)
