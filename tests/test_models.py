import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.models import apply_model, available_models, get_model, init_model
from jaxdd.ops.conv import (WINOGRAD_MIN_CHANNELS, conv3x3_patches, conv3x3_vjp, conv3x3_winograd,
                            conv_instnorm_relu_avgpool)
from jaxdd.types import JaxddError


def _lax_conv(x, k, pad):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((pad, pad), (pad, pad)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_patches_conv_equals_xla_conv():
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3))
    k = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
    for pad in (1, 3):
        np.testing.assert_allclose(conv3x3_patches(x, k, pad), _lax_conv(x, k, pad), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pad", [0, 1, 2, 3])
@pytest.mark.parametrize("conv", [conv3x3_vjp, conv3x3_winograd])
def test_conv_equals_lax_conv_to_second_order_and_in_scan(conv, pad):
    c = WINOGRAD_MIN_CHANNELS  # the Winograd path proper (fewer channels fall back to conv3x3_vjp)
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, c))  # odd output sizes: Winograd tiles padded and cropped
    k = jax.random.normal(jax.random.key(1), (3, 3, c, 4)) / 12  # unit-variance outputs

    def f(conv, x, k):
        return jnp.sum(jnp.sin(conv(x, k, pad)) ** 2)

    def sq_grad(conv, x, k):  # d/d(x, k) of |d f / d(x, k)|^2: the DC/DSA and meta-gradient pattern
        return sum(jnp.sum(g ** 2) for g in jax.grad(f, (1, 2))(conv, x, k))

    def scanned(conv, x, k):  # three SGD steps on k inside lax.scan, then a loss of x: differentiated in x
        k = jax.lax.scan(lambda q, _: (q - 0.01 * jax.grad(f, 2)(conv, x, q), None), k, None, length=3)[0]
        return f(conv, x, k)

    chex.assert_trees_all_close(conv(x, k, pad), _lax_conv(x, k, pad), rtol=1e-5, atol=1e-5)
    for fn in (f, sq_grad, scanned):
        got = jax.grad(fn, (1, 2))(conv, x, k)
        want = jax.grad(fn, (1, 2))(_lax_conv, x, k)
        for g, w in zip(got, want):  # float32 rounding relative to the leaf's scale (sums of ~1e3 terms)
            scale = float(jnp.abs(w).max())
            assert scale > 1e-3  # a vanishing gradient would compare trivially
            assert float(jnp.abs(g - w).max()) <= 1e-4 * scale


def test_winograd_runs_no_convolution_op_and_falls_back_below_min_channels():
    def ops(c):
        x, k = jnp.zeros((2, 8, 8, c)), jnp.zeros((3, 3, c, 4))
        return str(jax.make_jaxpr(jax.grad(lambda x, k: jnp.sum(conv3x3_winograd(x, k, 1) ** 2), (0, 1)))(x, k))

    assert "conv_general_dilated" not in ops(WINOGRAD_MIN_CHANNELS)
    assert "conv_general_dilated" in ops(WINOGRAD_MIN_CHANNELS - 1)


def _block_by_layers(x, k, b, s, t, pad):
    z = _lax_conv(x, k, pad) + b
    mean = z.mean(axis=(1, 2), keepdims=True)
    y = (z - mean) * jax.lax.rsqrt(jnp.square(z - mean).mean(axis=(1, 2), keepdims=True) + 1e-5) * s + t
    return jax.lax.reduce_window(jax.nn.relu(y), 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4


@pytest.mark.parametrize("shape,pad", [((28, 28, 1), 3), ((9, 7, 3), 1), ((8, 8, 2), 0)])
def test_fused_first_block_equals_the_layers_to_second_order_and_in_scan(shape, pad):
    ks = jax.random.split(jax.random.key(0), 6)
    o = 8
    x = jax.random.normal(ks[0], (3, *shape))
    k = jax.random.normal(ks[1], (3, 3, shape[-1], o)) / 3
    b = jax.random.normal(ks[2], (o,))
    s = 1 + 0.2 * jax.random.normal(ks[3], (o,))
    t = 0.2 * jax.random.normal(ks[4], (o,))  # some channels' ReLU is mostly off: the mask matters
    w = jax.random.normal(ks[5], _block_by_layers(x, k, b, s, t, pad).shape[1:])

    def f(block, x, k, b, s, t):
        return jnp.sum(jnp.tanh(block(x, k, b, s, t, pad)) * w)

    def sq_grad(block, x, k, b, s, t):  # the DC/DSA pattern: a function of the parameter gradients
        return sum(jnp.sum(g ** 2) for g in jax.grad(f, (2, 4, 5))(block, x, k, b, s, t))

    def scanned(block, x, k, b, s, t):  # the MTT pattern: SGD steps inside lax.scan, differentiated in x
        def step(p, _):
            return jax.tree.map(lambda a, g: a - 0.1 * g, p, jax.grad(lambda p: f(block, x, *p))(p)), None
        return f(block, x, *jax.lax.scan(step, (k, b, s, t), None, length=3)[0])

    chex.assert_trees_all_close(conv_instnorm_relu_avgpool(x, k, b, s, t, pad), _block_by_layers(x, k, b, s, t, pad),
                                rtol=1e-5, atol=1e-5)
    for fn in (f, sq_grad, scanned):
        grad = jax.jit(jax.grad(fn, (1, 2, 3, 4, 5)), static_argnums=0)
        got = grad(conv_instnorm_relu_avgpool, x, k, b, s, t)
        want = grad(_block_by_layers, x, k, b, s, t)
        ref_scale = float(jnp.abs(want[1]).max())  # the kernel's
        for i, (g, wnt) in enumerate(zip(got, want)):
            scale = float(jnp.abs(wnt).max())
            if i == 2:  # the conv bias cancels in the norm: exactly 0 fused, rounding noise layer by layer
                if fn is f:
                    assert not bool(jnp.any(g)) and scale < 1e-4 * ref_scale
                continue
            assert scale > 1e-3
            assert float(jnp.abs(g - wnt).max()) <= 1e-4 * scale, (fn.__name__, i)
    # vmapped over per-network parameters (vmapped evaluation)
    vk, vs = jnp.stack([k, 2 * k]), jnp.stack([s, -s])
    got = jax.vmap(jax.grad(f, (2, 4)), (None, None, 0, None, 0, None))(conv_instnorm_relu_avgpool, x, vk, b, vs, t)
    want = jax.vmap(jax.grad(f, (2, 4)), (None, None, 0, None, 0, None))(_block_by_layers, x, vk, b, vs, t)
    for g, wnt in zip(got, want):  # per network, at 1e-4 of that gradient's scale, as above
        scale = jnp.abs(wnt).max(axis=tuple(range(1, wnt.ndim)))
        assert bool(jnp.all(scale > 1e-3)) and bool(jnp.all(jnp.abs(g - wnt).max(axis=tuple(range(1, wnt.ndim)))
                                                              <= 1e-4 * scale))


def test_fused_convnet_takes_the_stem_only_where_it_applies():
    def conv_ops(name, shape):
        m = get_model(name, 10, width=WINOGRAD_MIN_CHANNELS, conv_impl="fused")  # layers 2-3: Winograd
        v = init_model(m, jax.random.key(0), shape)
        x = jnp.ones((2, *shape))
        return str(jax.make_jaxpr(lambda p: apply_model(m, p, x).logits)(v)).count("conv_general_dilated")

    assert conv_ops("ConvNet", (28, 28, 1)) == 0 and conv_ops("ConvNet", (32, 32, 3)) == 0
    assert conv_ops("ConvNetBN", (28, 28, 1)) == 1  # batch norm, max pooling, other activations: layer by layer
    assert conv_ops("ConvNetMP", (28, 28, 1)) == 1 and conv_ops("ConvNetAS", (28, 28, 1)) == 1
    assert conv_ops("ConvNet", (8, 8, 4)) == 1  # more than STEM_MAX_CHANNELS input channels


@pytest.mark.accelerator
@pytest.mark.parametrize("impl", ["patches", "vjp", "winograd", "fused"])
def test_convnet_impls_same_function_and_gradients(impl):
    x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
    y = jnp.array([0, 1, 2, 3])
    a = get_model("ConvNet", 10, width=16)
    b = get_model("ConvNet", 10, width=16, conv_impl=impl)
    v = init_model(a, jax.random.key(1), (28, 28, 1))
    chex.assert_trees_all_equal(init_model(b, jax.random.key(1), (28, 28, 1)), v)  # same parameters, same names

    def loss(m, p, x):
        logits = apply_model(m, {"params": p}, x).logits
        return -jax.nn.log_softmax(logits)[jnp.arange(4), y].mean()

    np.testing.assert_allclose(apply_model(a, v, x).logits, apply_model(b, v, x).logits, rtol=1e-4, atol=1e-5)
    ga = jax.grad(loss, argnums=(1, 2))(a, v["params"], x)
    gb = jax.grad(loss, argnums=(1, 2))(b, v["params"], x)
    chex.assert_trees_all_close(ga, gb, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("impl", ["patches", "vjp", "winograd", "fused"])
def test_resnet_impls_same_function_and_gradients(impl):
    # strided 3x3 and 1x1 shortcut convolutions included (stage 2 has stride 2 and a width change); widths of 16
    # and more take the Winograd path proper
    kw = {"blocks": (1, 1), "widths": (16, 24), "strides": (1, 2), "norm": "instancenorm"}
    a, b = get_model("ResNet18", 5, **kw), get_model("ResNet18", 5, conv_impl=impl, **kw)
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 3))
    v = init_model(a, jax.random.key(1), (8, 8, 3))

    def loss(m, p, x):
        return jnp.sum(jax.nn.log_softmax(apply_model(m, {"params": p}, x).logits)[:, 0])

    chex.assert_trees_all_close(apply_model(b, v, x).logits, apply_model(a, v, x).logits, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(jax.grad(loss, (1, 2))(b, v["params"], x), jax.grad(loss, (1, 2))(a, v["params"], x),
                                rtol=1e-3, atol=1e-5)


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
    with pytest.raises(JaxddError, match="conv_impl must be one of"):
        with_conv_impl(get_model("ConvNet", 10), "pathces")


def test_get_model_resolves_auto_and_refuses_unknown_conv_impl():
    assert get_model("ConvNet", 10, conv_impl="auto").conv_impl == "fused"  # the suite runs on CPU
    with pytest.raises(JaxddError, match="conv_impl must be one of"):
        get_model("ConvNet", 10, conv_impl="pathces")


# ------------------------------------------------------------------------------------- the model contract (issue 22)

import flax.linen as nn  # noqa: E402


class _Good(nn.Module):
    num_classes: int = 3
    width: int = 4

    @nn.compact
    def __call__(self, x, train=False, features=False):
        emb = nn.relu(nn.Conv(self.width, (3, 3))(x)).mean(axis=(1, 2))
        logits = nn.Dense(self.num_classes)(emb)
        return (logits, {"embedding": emb}) if features else logits


class _NoKeywords(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class _NoFeatures(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class _NoEmbedding(nn.Module):
    @nn.compact
    def __call__(self, x, train=False, features=False):
        logits = nn.Dense(3)(x.reshape(x.shape[0], -1))
        return (logits, {"block1": x}) if features else logits


class _LogitsOnly(nn.Module):
    @nn.compact
    def __call__(self, x, train=False, features=False):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_check_model_accepts_the_contract_and_get_model_passes_modules_through():
    from jaxdd.models import check_model, model_name

    m = _Good()
    check_model(m, (8, 8, 1), 3)
    check_model(get_model("ConvNet", 10, width=8, depth=2), (8, 8, 1), 10)  # every zoo model satisfies it
    check_model(get_model("ResNet18BN", 10), (8, 8, 3), 10)
    assert get_model(m, 3) is m
    assert get_model(m, 3, width=6).width == 6 and m.width == 4  # overrides clone
    assert model_name(m) == "_Good" and model_name("ConvNet") == "ConvNet"


@pytest.mark.parametrize("module,match", [
    (_NoKeywords(), "unexpected keyword argument 'train'"),
    (_NoFeatures(), "unexpected keyword argument 'features'"),
    (_NoEmbedding(), "no 'embedding' entry"),
    (_LogitsOnly(), "not a pair"),
    (_Good(num_classes=4), r"logits have shape \(2, 4\), expected \(2, 3\)"),
])
def test_check_model_states_the_contract(module, match):
    from jaxdd.models import check_model

    with pytest.raises(JaxddError, match=match) as e:
        check_model(module, (8, 8, 1), 3)
    assert "__call__(x, train=False, features=False)" in str(e.value)
    assert 'return (logits, {"embedding": emb}) if features else logits' in str(e.value)  # the example


def test_objective_with_a_module_missing_the_keywords_raises_the_contract_not_a_typeerror():
    import jaxdd

    x = np.random.default_rng(0).random((12, 8, 8, 1), dtype=np.float32)
    pool = jaxdd.make_pool(x, np.arange(12) % 3, 3)
    obj, param = jaxdd.dm(_NoFeatures(), 3, real_per_class=2), jaxdd.pixels(1)
    state, tx = jaxdd.init_state(jax.random.key(0), obj, param, pool, jaxdd.DistillConfig())
    with pytest.raises(JaxddError, match="model contract.*'features'"):
        jaxdd.make_step(obj, param, tx)(state, pool, jax.random.key(0))


def test_get_model_errors_and_register_model(monkeypatch):
    from jaxdd import models

    with pytest.raises(JaxddError, match="unknown model 'Nope'"):
        get_model("Nope", 10)
    with pytest.raises(JaxddError, match="registered name or a flax.linen Module"):
        get_model(42, 10)
    with pytest.raises(JaxddError, match="do not apply to your module"):
        get_model(_Good(), 3, depth=5)
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    models.register_model("TinyGood", lambda num_classes, **kw: _Good(num_classes=num_classes, **kw))
    assert "TinyGood" in available_models() and get_model("TinyGood", 7).num_classes == 7
    with pytest.raises(JaxddError, match="non-empty name and a callable"):
        models.register_model("", None)
