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


def test_class_batch_same_embeddings_and_batchnorm_keeps_one_forward():
    from jaxdd.models import init_model
    from jaxdd.objectives import class_mean_embeddings

    x, _, _ = _setup(None)
    for model in ("ConvNet", "ConvNetBN"):
        module = get_model(model, 3, width=8, depth=2)
        v = init_model(module, jax.random.key(1), (8, 8, 1))
        means = {cb: class_mean_embeddings(module, v, jnp.asarray(x), 3, cb) for cb in (0, 1, 2)}
        assert means[0].shape[0] == 3
        for cb in (1, 2):  # instance norm: the same numbers; batch norm: class_batch ignored (statistics over all)
            np.testing.assert_allclose(means[cb], means[0], rtol=1e-5, atol=1e-6)
    # batch norm over one class alone would differ: the test above would catch a per-class forward
    module = get_model("ConvNetBN", 3, width=8, depth=2)
    v = init_model(module, jax.random.key(1), (8, 8, 1))
    alone = class_mean_embeddings(module, v, jnp.asarray(x)[:4], 1)
    assert float(jnp.abs(alone[0] - class_mean_embeddings(module, v, jnp.asarray(x), 3)[0]).max()) > 1e-3


def test_auto_defaults_resolve_per_backend(monkeypatch):
    import pytest

    from jaxdd.models import resolve_conv_impl, with_conv_impl
    from jaxdd.objectives.base import auto_class_batch
    from jaxdd.types import JaxddError

    assert resolve_conv_impl("auto") == "fused" and auto_class_batch(-1) == 1  # this suite runs on CPU
    assert with_conv_impl(get_model("ConvNet", 3), "auto").conv_impl == "fused"
    assert resolve_conv_impl("vjp") == "vjp" and auto_class_batch(0) == 0 and auto_class_batch(3) == 3
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_conv_impl("auto") == "xla" and auto_class_batch(-1) == 0
    with pytest.raises(JaxddError, match="class_batch must be"):
        auto_class_batch(-2)
