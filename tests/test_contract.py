"""The contract suite (optax-contrib style): every registered objective x every parameterization.

Each case builds the method through its MethodSpec with the spec's ``tiny`` option overrides on toy data and a
small network, runs 3 jitted distillation steps, and checks: the loss is finite, the synthetic set changed, the
state structure is stable, the step is traced once, the same key gives the same bits and another key differs.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.data import fit_preprocess
from jaxdd.distill import DistillConfig, distill_step, init_state, make_pool
from jaxdd.methods import MethodContext, available_methods, get_method, resolve_options
from jaxdd.api import _PARAMS, available_parameterizations
from tests.conftest import toy_images

K, SHAPE, IPC = 3, (8, 8, 1), 2
MODEL_KW = {"width": 8, "depth": 2}


def _case(method: str, param_name: str, tmp_path, seed: int = 0):
    spec = get_method(method)
    x, y = toy_images(K, 12, SHAPE)
    pool = make_pool(x, y, K)
    pre = fit_preprocess(x, (0.0,), (1.0,))
    param = _PARAMS[param_name](ipc=IPC, image_shape=SHAPE, num_classes=K, init="real")
    ctx = MethodContext(K, SHAPE, param.images_per_class, "ConvNet", MODEL_KW, resolve_options(spec, {}),
                        "toy", pool, pre, jax.random.key(seed))
    if spec.tiny is not None:
        ctx = ctx._replace(options=resolve_options(spec, spec.tiny(ctx, str(tmp_path))))
    objective = spec.build(ctx)
    cfg_fields = {"lr_img", "momentum", "optimizer", "learn_labels", "lrs"}
    kw = {k: v for k, v in spec.defaults.items() if k in cfg_fields}
    if isinstance(kw.get("lrs"), dict):
        kw["lrs"] = tuple(kw["lrs"].items())
    config = DistillConfig(iterations=3, progress=False, **kw)
    return objective, param, pool, config


def _runner(objective, param, pool, config):
    """run(key) -> (initial state, state after 3 steps, losses), through ONE jitted step traced once."""
    _, tx = init_state(jax.random.key(0), objective, param, pool, config)
    chex.clear_trace_counter()
    step = jax.jit(chex.assert_max_traces(lambda s, p, k: distill_step(objective, param, tx, s, p, k), n=1))

    def run(key, steps=3):
        state, _ = init_state(key, objective, param, pool, config)
        init = state
        losses = []
        for _ in range(steps):
            state, m = step(state, pool, key)
            losses.append(float(m["loss"]))
        return init, state, losses

    return run


CASES = [(m, p) for m in available_methods() for p in available_parameterizations()]


@pytest.mark.parametrize("method,param_name", CASES)
def test_contract(method, param_name, tmp_path):
    objective, param, pool, config = _case(method, param_name, tmp_path)
    run = _runner(objective, param, pool, config)
    key = jax.random.key(0)
    init, state, losses = run(key)
    assert all(np.isfinite(losses)), losses
    chex.assert_trees_all_equal_structs(init, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(init.syn, state.syn)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), init.syn["data"], state.syn["data"])
    assert any(jax.tree.leaves(changed)), "the synthetic set did not change"
    assert int(state.step) == 3
    _, again, _ = run(key)
    chex.assert_trees_all_equal(state.syn, again.syn)
    _, other, _ = run(jax.random.key(1))
    assert not all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state.syn, other.syn)))
