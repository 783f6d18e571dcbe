"""The branches jaxdd takes on GPU/TPU, checked against the CPU branches on toy data (marker ``accelerator``).

On an accelerator the methods resolve ``conv_impl="auto"`` to ``"xla"`` (cuDNN / the TPU convolution) and
``class_batch=-1`` to 0 (every class in one forward); evaluation trains all K networks in one vmapped program; and
``distill-many`` shards over the real devices. On CPU the defaults are the other branches, so each test here runs
both and compares them: in CI on CPU, and on a GPU with ``pytest -m accelerator`` (experiments/gpu, stage check).
The other tests of these branches carry the same marker: tests/test_models.py (every conv_impl against the model's
``lax.conv``), tests/test_train.py (K networks vmapped against one at a time), tests/test_sharding.py (8 host
devices).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.distill import DistillConfig, make_pool
from jaxdd.methods import MethodContext, get_method, resolve_options
from jaxdd.objectives import Synthetic
from jaxdd.synthetic import pixels
from jaxdd.types import Batch
from tests.conftest import toy_images

pytestmark = pytest.mark.accelerator

K, SHAPE, IPC = 3, (8, 8, 1), 2
MODEL_KW = {"width": 8, "depth": 2}
OPTS = {"dm": {"real_per_class": 4, "dsa": ""},
        "dc": {"outer_loop": 1, "inner_loop": 0, "real_per_class": 4},
        "dsa": {"outer_loop": 1, "inner_loop": 0, "real_per_class": 4}}


def _objective(method: str, pool, **extra):
    spec = get_method(method)
    ctx = MethodContext(K, SHAPE, IPC, "ConvNet", MODEL_KW, resolve_options(spec, {**OPTS[method], **extra}), "toy",
                        pool, None, jax.random.key(0))
    return spec.build(ctx)


def _loss_and_grad(objective, x, y):
    """The objective's loss and its gradient with respect to the synthetic images, at a fixed state and key."""
    syn_x = jnp.asarray(x[np.r_[0:IPC, 12:12 + IPC, 24:24 + IPC]]) + 0.1
    syn_y = jnp.repeat(jnp.arange(K, dtype=jnp.int32), IPC)
    state = objective.init(jax.random.key(3))
    real = Batch(jnp.asarray(x), jnp.asarray(y))

    def loss(s):
        return objective.loss(Synthetic(s, syn_y, {}), real, state, jax.random.key(1))[0]

    return jax.jit(jax.value_and_grad(loss))(syn_x)


@pytest.mark.parametrize("method", ["dm", "dc", "dsa"])
def test_all_classes_in_one_forward_equals_one_class_at_a_time(method):
    """class_batch=0 (the accelerator default) and class_batch=1 (the CPU default): the same loss and gradient."""
    x, y = toy_images(K, 12, SHAPE)
    pool = make_pool(x, y, K)
    l0, g0 = _loss_and_grad(_objective(method, pool, class_batch=0), x, y)
    l1, g1 = _loss_and_grad(_objective(method, pool, class_batch=1), x, y)
    assert np.isfinite(np.asarray(g0)).all() and np.isfinite(np.asarray(g1)).all()
    assert float(l0) > 0 and float(jnp.abs(g0).max()) > 0, "a zero loss or gradient would make the check vacuous"
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g0), rtol=1e-3, atol=1e-6 * float(jnp.abs(g0).max()))


@pytest.mark.parametrize("method", ["dm", "dc"])
def test_xla_convolution_equals_the_default(method):
    """conv_impl="xla" (the accelerator default) against "auto" (here: the CPU default), in the method's loss."""
    x, y = toy_images(K, 12, SHAPE)
    pool = make_pool(x, y, K)
    lx, gx = _loss_and_grad(_objective(method, pool, conv_impl="xla", class_batch=0), x, y)
    la, ga = _loss_and_grad(_objective(method, pool, conv_impl="auto", class_batch=0), x, y)
    assert float(jnp.abs(gx).max()) > 0
    np.testing.assert_allclose(float(la), float(lx), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(ga), np.asarray(gx), rtol=2e-3, atol=1e-5 * float(jnp.abs(gx).max()))


def test_sharded_over_this_backends_devices_equals_unsharded():
    """distill-many over a mesh of every device of the default backend (1 CPU in CI; the GPUs on a GPU node)."""
    from jaxdd import sharding as shd
    from jaxdd.distill import distill_many

    x, y = toy_images(K, 12, SHAPE)
    pool = make_pool(x, y, K)
    objective = _objective("dm", pool, class_batch=0)
    config = DistillConfig(iterations=2, progress=False, lr_img=1.0, log_every=1)
    n = jax.device_count()
    keys = jax.random.split(jax.random.key(4), 2 * n)  # two experiments per device
    plain = distill_many(keys, objective, pixels(IPC, "real"), pool, config)
    mesh = shd.make_mesh(2 * n)
    sharded = distill_many(keys, objective, pixels(IPC, "real"), pool, config, mesh=mesh, syn_sharding="class")
    assert len(sharded.state.syn["data"].sharding.device_set) == n
    assert np.isfinite(plain.images).all() and not np.allclose(plain.images[0], plain.images[1])
    np.testing.assert_allclose(sharded.images, plain.images, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([h[-1]["loss"] for h in sharded.histories], [h[-1]["loss"] for h in plain.histories],
                               rtol=1e-4)
