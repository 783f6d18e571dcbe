import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.models import get_model
from jaxdd.objectives import Synthetic, dm
from jaxdd.types import Batch
from tests.conftest import toy_images


def _setup(strategy):
    x, y = toy_images(3, 4, (8, 8, 1))
    module = get_model("ConvNet", 3, width=8, depth=2)
    return x, y, dm(module, 3, strategy=strategy, real_per_class=4)


def test_dm_loss_zero_when_synthetic_equals_real():
    for strategy in (None, "color_crop_cutout_flip_scale_rotate"):
        x, y, obj = _setup(strategy)
        loss, _ = obj.loss(Synthetic(jnp.asarray(x), jnp.asarray(y), {}), Batch(x, y), (), jax.random.key(0))
        assert float(loss) < 1e-8


def test_dm_loss_positive_and_differentiable_when_different():
    x, y, obj = _setup("color_crop_cutout_flip_scale_rotate")
    syn = jnp.asarray(x)[::2]  # 2 per class, class-major
    loss_fn = lambda s: obj.loss(Synthetic(s, jnp.repeat(jnp.arange(3), 2), {}), Batch(x, y), (),
                                 jax.random.key(0))[0]
    loss, g = jax.value_and_grad(loss_fn)(syn)
    assert float(loss) > 0
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0


def test_dm_matches_explicit_per_class_computation():
    from jaxdd.models import apply_model, init_model

    x, y, obj = _setup(None)
    module = get_model("ConvNet", 3, width=8, depth=2)
    syn = jnp.asarray(x)[1::2]
    key = jax.random.key(7)
    loss, _ = obj.loss(Synthetic(syn, None, {}), Batch(x, y), (), key)
    v = init_model(module, jax.random.split(key)[0], (8, 8, 1))
    emb = lambda a: apply_model(module, v, a, features=True, train=True).features["embedding"]
    expect = sum(float(jnp.sum((emb(x[4 * c:4 * c + 4]).mean(0) - emb(syn[2 * c:2 * c + 2]).mean(0)) ** 2))
                 for c in range(3))
    np.testing.assert_allclose(float(loss), expect, rtol=1e-4)
