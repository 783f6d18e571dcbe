import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.models import apply_model, available_models, get_model, init_model
from jaxdd.models.convnet import conv3x3_patches
from jaxdd.types import JaxddError


def test_patches_conv_equals_xla_conv():
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3))
    k = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
    for pad in (1, 3):
        ref = jax.lax.conv_general_dilated(x, k, (1, 1), ((pad, pad), (pad, pad)),
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        np.testing.assert_allclose(conv3x3_patches(x, k, pad), ref, rtol=1e-5, atol=1e-5)


def test_convnet_impls_same_function_and_gradients():
    x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
    y = jnp.array([0, 1, 2, 3])
    a = get_model("ConvNet", 10, width=16)
    b = get_model("ConvNet", 10, width=16, conv_impl="patches")
    v = init_model(a, jax.random.key(1), (28, 28, 1))

    def loss(m, p, x):
        logits = apply_model(m, {"params": p}, x).logits
        return -jax.nn.log_softmax(logits)[jnp.arange(4), y].mean()

    np.testing.assert_allclose(apply_model(a, v, x).logits, apply_model(b, v, x).logits, rtol=1e-4, atol=1e-5)
    ga = jax.grad(loss, argnums=(1, 2))(a, v["params"], x)
    gb = jax.grad(loss, argnums=(1, 2))(b, v["params"], x)
    chex.assert_trees_all_close(ga, gb, rtol=1e-3, atol=1e-5)


def test_convnet_shapes_and_28px_padding_rule():
    m = get_model("ConvNet", 10)
    v = init_model(m, jax.random.key(0), (28, 28, 1))
    out = apply_model(m, v, jnp.zeros((2, 28, 28, 1)), features=True)
    # first conv of a 1-channel input pads by 3: 28 -> 32 -> 16 -> 8 -> 4, embedding 128*4*4 = 2048
    assert out.features["block1"].shape == (2, 16, 16, 128)
    assert out.features["embedding"].shape == (2, 2048)
    assert out.logits.shape == (2, 10)
    v3 = init_model(m, jax.random.key(0), (32, 32, 3))
    assert apply_model(m, v3, jnp.zeros((2, 32, 32, 3)), features=True).features["embedding"].shape == (2, 2048)


def test_torch_default_init_bounds():
    m = get_model("ConvNet", 10)
    p = init_model(m, jax.random.key(0), (32, 32, 3))["params"]
    bound = 1 / np.sqrt(9 * 128)
    assert float(jnp.abs(p["conv1"]["kernel"]).max()) <= bound
    assert float(jnp.abs(p["conv1"]["kernel"]).max()) > 0.9 * bound


@pytest.mark.parametrize("name", ["ConvNetD1", "ConvNetD4", "ConvNetW32", "ConvNetBN", "ConvNetLN", "ConvNetGN",
                                  "ConvNetNN", "ConvNetMP", "ConvNetNP", "ConvNetAS", "MLP"])
def test_zoo_variants_run(name):
    m = get_model(name, 10, **({} if name == "MLP" else {"width": 8}) if name != "ConvNetW32" else {})
    v = init_model(m, jax.random.key(0), (32, 32, 3))
    out = apply_model(m, v, jnp.ones((3, 32, 32, 3)), train=True)
    assert out.logits.shape == (3, 10)
    assert bool(jnp.all(jnp.isfinite(out.logits)))


def test_batchnorm_train_updates_running_stats():
    m = get_model("ConvNetBN", 4, width=8)
    v = init_model(m, jax.random.key(0), (8, 8, 3))
    x = jax.random.normal(jax.random.key(1), (5, 8, 8, 3)) + 3.0
    out = apply_model(m, v, x, train=True)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), v["batch_stats"], out.variables["batch_stats"])
    assert all(jax.tree.leaves(changed))


def test_unknown_model_error():
    with pytest.raises(JaxddError, match="available models"):
        get_model("ConvNet9000", 10)
    assert "ConvNet" in available_models()


def test_with_conv_impl_switches_only_models_that_have_it():
    from jaxdd.models import with_conv_impl

    assert with_conv_impl(get_model("ConvNet", 10), "patches").conv_impl == "patches"
    assert with_conv_impl(get_model("ResNet18", 10), "patches").conv_impl == "patches"
    assert with_conv_impl(get_model("ConvNet", 10, conv_impl="patches"), "").conv_impl == "patches"
    mlp = get_model("MLP", 10)
    assert with_conv_impl(mlp, "patches") is mlp
