"""Many distillations as ONE compiled program: an experiment axis over seeds and float hyperparameters.

``distill_many`` runs E independent distillations that share the objective, parameterization, real pool and
config, each with its own key (and, optionally, its own float hyperparameters such as the image learning rate): the
state is a ``DistillState`` with a leading experiment axis (E, ...) and the step is
``jit(vmap(jaxdd.distill.distill_step, spmd_axis_name="exp"))``. Experiment i gives the same synthetic set as
``jaxdd.distill.distill(keys[i], ...)`` (to float tolerance: the batched program may reduce in another order).

Hyperparameters: DistillConfig's optimisers use ``optax.inject_hyperparams``, so each lr group's learning rate
(and momentum, adam's b1/b2/eps) is an array in ``opt_state``; ``hparams={"data": [0.5, 1, 2]}`` (or
``"data:momentum"``, ``"extras/syn_lr"``, ``"labels"``) gives experiment i its own value without recompiling.

Each experiment has its own run directory ``out_dir/exp_000``, ``exp_001``, ... holding ``checkpoints/`` (the
unstacked per-experiment state, so one experiment can be resumed alone with ``distill(keys[i], ...,
out_dir=out_dir/exp_00i)``), ``metrics.jsonl`` and, from the CLI, the artifact (``synthetic.npz`` ...), so
``jaxdd evaluate out/exp_003`` works on it. ``evaluate_many`` trains the E x K evaluation networks of all
experiments together (one vmapped program, split over the devices).

With a ``mesh`` (``jaxdd.sharding.make_mesh``) the experiment axis is split over the mesh's "exp" axis and each
step's real batch over its "data" axis (``shard_objective``); see ``jaxdd.sharding``.

CLI::

    jaxdd distill-many --num-exp 4 --method dm --dataset fashion_mnist --ipc 10 --iterations 200 --out runs/dm4
    jaxdd distill-many --num-exp 3 --lr-img-grid 0.3,1,3 --method dc --dataset digits --ipc 1 --out runs/dc_lr
    jaxdd evaluate-many runs/dm4 --models 3 --epochs 300

Experiment i of ``distill-many --seed s`` uses the run key of ``jaxdd distill --seed s+i`` with the data split and
method built from seed s, so experiment 0 reproduces ``jaxdd distill --seed s`` exactly.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdd import sharding as shd
from jaxdd.distill import (CheckpointClock, DistillConfig, DistillState, RealPool, _Interrupt, _read_metrics,
                           check_resumed_step, decode_synthetic, distill_step, init_state)
from jaxdd.models import apply_model, init_model
from jaxdd.objectives.base import Objective
from jaxdd.synthetic.base import Parameterization
from jaxdd.train import TrainProtocol, accuracy, epoch_plan, make_train_step, sgd
from jaxdd.types import JaxddError, PyTree

EXP_DIR = "exp_{:03d}"


def exp_dir(out_dir, i: int) -> Path:
    return Path(out_dir) / EXP_DIR.format(i)


# --------------------------------------------------------------------------------------------------------------
# Hyperparameters in the optimiser state


def _split_name(name: str) -> tuple[str, str]:
    group, _, hp = name.partition(":")
    group = {"lr_img": "data", "lr": "data"}.get(group, group)
    return group, hp or "learning_rate"


def hyperparameters(opt_state: PyTree) -> dict[str, jax.Array]:
    """The state hyperparameters of a DistillState's ``opt_state``: {"data:learning_rate": ..., ...}."""
    out = {}
    for group, node in opt_state.inner_states.items():
        while not hasattr(node, "hyperparams"):
            node = node.inner_state
        for hp, v in node.hyperparams.items():
            out[f"{group}:{hp}"] = v
    return out


def set_hyperparameters(opt_state: PyTree, values: dict[str, Any]) -> PyTree:
    """Replace state hyperparameters: keys "<group>" (its learning rate) or "<group>:<name>" (e.g.
    "data:momentum"); groups are DistillConfig's lr groups ("data", "labels", "extras/<name>"; "lr_img" = "data").
    Values must broadcast to the stored shape ((E,) for a stacked state)."""
    inner = dict(opt_state.inner_states)
    for name, value in values.items():
        group, hp = _split_name(name)
        if group not in inner:
            raise JaxddError(f"hyperparameter {name!r}: no lr group {group!r}; the groups are {sorted(inner)}")

        def replace(node):
            if hasattr(node, "hyperparams"):
                if hp not in node.hyperparams:
                    raise JaxddError(f"hyperparameter {name!r}: the {group!r} optimiser has "
                                     f"{sorted(node.hyperparams)}")
                old = node.hyperparams[hp]
                new = jnp.broadcast_to(jnp.asarray(value, old.dtype), old.shape)
                return node._replace(hyperparams={**node.hyperparams, hp: new})
            return node._replace(inner_state=replace(node.inner_state))

        inner[group] = replace(inner[group])
    return opt_state._replace(inner_states=inner)


# --------------------------------------------------------------------------------------------------------------
# The stacked state and the vmapped step


def init_states(keys: jax.Array, objective: Objective, param: Parameterization, pool: RealPool,
                config: DistillConfig, hparams: dict[str, Sequence[float]] | None = None
                ) -> tuple[DistillState, optax.GradientTransformation]:
    """The stacked step-0 states of E experiments (``init_state`` vmapped over ``keys`` (E,)) and the shared
    optimiser. ``hparams``: name -> E values (see ``set_hyperparameters``)."""
    keys = jnp.asarray(keys)
    num = keys.shape[0]
    holder: list = []
    index = pool.index  # concrete: init_state checks the class counts on the host

    def one(k, images, labels):
        state, tx = init_state(k, objective, param, RealPool(images, labels, index), config)
        holder.append(tx)
        return state

    states = jax.jit(jax.vmap(one, in_axes=(0, None, None)))(keys, pool.images, pool.labels)
    tx = holder[0]
    if hparams:
        vals = {}
        for name, v in hparams.items():
            v = np.asarray(v, np.float32).reshape(-1)
            if v.shape[0] != num:
                raise JaxddError(f"hyperparameter grid {name!r} has {v.shape[0]} values for {num} experiments; "
                                 "give one value per experiment")
            if _split_name(name)[1] == "learning_rate" and config.schedule != "constant":
                raise JaxddError(f"a learning-rate grid ({name!r}) needs schedule='constant': with "
                                 f"schedule={config.schedule!r} the lr is recomputed from the schedule every step")
            vals[name] = v
        states = states._replace(opt_state=set_hyperparameters(states.opt_state, vals))
    return states, tx


def make_multi_step(objective: Objective, param: Parameterization, tx: optax.GradientTransformation,
                    mesh=None, state_shardings: PyTree | None = None) -> Callable:
    """``jit(vmap(distill_step))``: ``(stacked state, pool, keys (E,)) -> (stacked state, metrics of (E,))``.

    With a mesh the vmapped axis is the mesh's "exp" axis (``spmd_axis_name``), the state keeps
    ``state_shardings`` and the metrics come back replicated (every process can read them)."""
    def one(state, pool, key):
        return distill_step(objective, param, tx, state, pool, key)

    if mesh is None:
        return jax.jit(jax.vmap(one, in_axes=(0, None, 0)))
    stepped = jax.vmap(one, in_axes=(0, None, 0), spmd_axis_name=shd.EXP)
    return jax.jit(stepped, out_shardings=(state_shardings, shd.replicated(mesh)))


def decode_many(param: Parameterization, states: DistillState, num_classes: int, mesh=None):
    """Decoded synthetic sets of every experiment: images (E, n, h, w, c), labels (E, n) or (E, n, K); with a
    mesh they come back replicated, so every process can read them."""
    def dec(syn):
        out = jax.vmap(lambda s: decode_synthetic(param, s, num_classes))(syn)
        return out.x, out.y

    return jax.jit(dec, out_shardings=None if mesh is None else shd.replicated(mesh))(states.syn)


class MultiResult(NamedTuple):
    state: DistillState  # stacked: every leaf (E, ...)
    images: np.ndarray  # (E, n, h, w, c)
    labels: np.ndarray  # (E, n) or (E, n, K)
    histories: list[list[dict]]  # per experiment, as DistillResult.history
    diverged: list[int]  # experiments whose loss became non-finite (their sets are not usable)


def _take_fn(mesh):
    def take(states, i):
        return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), states)

    return jax.jit(take, out_shardings=None if mesh is None else shd.replicated(mesh))


def _stack(trees: list[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def distill_many(keys: jax.Array, objective: Objective, param: Parameterization, pool: RealPool,
                 config: DistillConfig, *, hparams: dict[str, Sequence[float]] | None = None, mesh=None,
                 syn_sharding: str = "replicated", split_pool: bool = False, out_dir=None,
                 evaluator: Callable[[jax.Array, jax.Array, int], dict] | None = None) -> MultiResult:
    """Run E = len(keys) distillations in one program for ``config.iterations`` steps (see the module docstring).

    keys: (E,) PRNG keys, experiment i's run key. hparams: per-experiment float hyperparameters. mesh: a
    ``jaxdd.sharding.make_mesh`` mesh (E divisible by its "exp" axis); ``syn_sharding``/``split_pool`` as in
    ``shard_objective``/``shard_pool``. out_dir: per-experiment checkpoints and metrics under ``out_dir/exp_00i``;
    a rerun resumes from the newest step every experiment has. evaluator(images (E,...), labels, step) -> dict of
    (E,) arrays, called every ``config.eval_every`` steps and at the end (validation data only).
    """
    from jaxdd.checkpoint import Checkpointer

    keys = jnp.asarray(keys)
    if keys.ndim != 1 or not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        raise JaxddError("keys must be a 1-D array of jax.random.key keys, e.g. "
                         "jax.random.split(jax.random.key(0), num_experiments)")
    num = int(keys.shape[0])
    states, tx = init_states(keys, objective, param, pool, config, hparams)
    k = pool.num_classes
    run_obj, run_pool, shardings = objective, pool, None
    if mesh is not None:
        if num % shd.axis_size(mesh, shd.EXP):
            raise JaxddError(f"{num} experiments do not split over the mesh's exp axis of "
                             f"{shd.axis_size(mesh, shd.EXP)}; make_mesh(num_exp={num}) picks a fitting one")
        run_obj = shd.shard_objective(objective, mesh, syn=syn_sharding)
        run_pool = shd.shard_pool(pool, mesh, split=split_pool)
        shardings = shd.state_sharding(states, mesh)
        states = shd.put(states, shardings)
        keys = shd.put(keys, shd.leading_sharding(keys, mesh))
    step_fn = make_multi_step(run_obj, param, tx, mesh, shardings)
    take = _take_fn(mesh)
    lead = jax.process_index() == 0
    ckpts: list = []
    paths: list = [None] * num
    histories: list[list[dict]] = [[] for _ in range(num)]
    if out_dir is not None:
        for i in range(num):
            d = exp_dir(out_dir, i)
            d.mkdir(parents=True, exist_ok=True)
            ckpts.append(Checkpointer(d / "checkpoints", max_to_keep=config.keep_checkpoints))
            paths[i] = d / "metrics.jsonl"
        latest = [c.latest_step() for c in ckpts]
        if all(s is not None for s in latest):
            step0 = min(latest)
            target = take(states, 0)
            check_resumed_step(step0, config, out_dir)
            while True:  # the newest step every experiment can read (a corrupt step falls back per experiment)
                restored = [c.restore(target, step0) for c in ckpts]
                got = [int(r.step) for r in restored]
                if min(got) == max(got):
                    break
                step0 = min(got)
            states = _stack(restored)
            if mesh is not None:
                states = shd.put(states, shardings)
            for i in range(num):
                histories[i] = _read_metrics(paths[i], step0)
                if lead:
                    paths[i].write_text("".join(json.dumps(r) + "\n" for r in histories[i]))
        elif lead:
            for p in paths:
                if p.exists():
                    p.unlink()

    def log(i: int, row: dict):
        histories[i].append(row)
        if paths[i] is not None and lead:
            with paths[i].open("a") as f:
                f.write(json.dumps(row) + "\n")

    def save(step: int):
        for i, c in enumerate(ckpts):
            c.save(step, take(states, i))

    def evaluate(step: int):
        if evaluator is None:
            return
        images, labels = decode_many(param, states, k, mesh)
        vals = {n: np.asarray(v).reshape(num) for n, v in evaluator(images, labels, step).items()}
        for i in range(num):
            log(i, {"step": step, **{n: float(v[i]) for n, v in vals.items()}})

    diverged: set[int] = set()
    start = int(jax.device_get(take(states.step, 0)))
    try:
        with _Interrupt() as stop:
            clock = CheckpointClock(config)
            t0 = time.perf_counter()
            for step in range(start, config.iterations):
                states, metrics = step_fn(states, run_pool, keys)
                done = step + 1
                if done % config.log_every == 0 or done == config.iterations or done == start + 1:
                    vals = {n: np.asarray(jax.device_get(v)).reshape(num) for n, v in metrics.items()}
                    elapsed = time.perf_counter() - t0
                    for i in range(num):
                        row = {"step": done, "time": elapsed, **{n: float(v[i]) for n, v in vals.items()}}
                        if not np.isfinite(row["loss"]) and i not in diverged:
                            diverged.add(i)
                            print(f"jaxdd: experiment {i} diverged at step {done} (loss {row['loss']}); the other "
                                  "experiments continue")
                        log(i, row)
                    if config.progress and lead:
                        print(f"[{objective.name} x{num}] step {done}/{config.iterations} loss "
                              f"{np.nanmean(vals['loss']):.4g} (mean over experiments) {elapsed:.1f}s", flush=True)
                if config.eval_every and done % config.eval_every == 0 and done != config.iterations:
                    evaluate(done)
                if ckpts and clock.due(done):
                    save(done)
                    clock.saved()
                stop.check()
    except KeyboardInterrupt:
        cur = int(jax.device_get(take(states.step, 0)))
        for i, c in enumerate(ckpts):
            if cur > (c.latest_step() or 0):
                c.save(cur, take(states, i))
        raise
    finally:
        for c in ckpts:
            c.close()
    if config.eval_every and (not histories[0] or histories[0][-1].get("step") != config.iterations
                              or "val_acc" not in histories[0][-1]):
        evaluate(int(jax.device_get(take(states.step, 0))))
    images, labels = decode_many(param, states, k, mesh)
    images, labels = np.asarray(jax.device_get(images)), np.asarray(jax.device_get(labels))
    for i in range(num):
        if not np.all(np.isfinite(images[i])):
            diverged.add(i)
    return MultiResult(states, images, labels, histories, sorted(diverged))


# --------------------------------------------------------------------------------------------------------------
# Evaluation of all experiments x seeds at once


def _set_lr(opt_state, lr):
    hp = dict(opt_state.hyperparams)
    hp["learning_rate"] = jnp.asarray(lr, jnp.float32) * jnp.ones_like(hp["learning_rate"])
    return opt_state._replace(hyperparams=hp)


_EVAL_FNS: dict = {}


def _eval_fns(module, protocol: TrainProtocol, image_shape):
    ck = (module, protocol.momentum, protocol.weight_decay, protocol.augment, tuple(image_shape))
    if ck not in _EVAL_FNS:
        tx = sgd(protocol.momentum, protocol.weight_decay)
        step1 = make_train_step(module, tx, protocol.augment)

        def init(key, lr):
            variables = init_model(module, key, image_shape)
            return variables, _set_lr(tx.init(variables["params"]), lr)

        def step(variables, opt_state, xs, ys, idx, keys):
            xb = jax.vmap(lambda x, i: x[i])(xs, idx)
            yb = jax.vmap(lambda y, i: y[i])(ys, idx)
            return jax.vmap(step1)(variables, opt_state, xb, yb, keys)[:2]

        def reinit(params, lr):
            return jax.vmap(lambda p: _set_lr(tx.init(p), lr))(params)

        def predict(variables, x):
            return jax.vmap(lambda v: apply_model(module, v, x, train=False).logits)(variables)

        _EVAL_FNS[ck] = (jax.jit(jax.vmap(init, in_axes=(0, None))), jax.jit(step),
                         epoch_plan, jax.jit(reinit), jax.jit(predict))
    return _EVAL_FNS[ck]


def train_sets(keys: jax.Array, module, xs: jax.Array, ys: jax.Array, protocol: TrainProtocol, *,
               mesh=None) -> PyTree:
    """Train M fresh networks, network j on its own set (xs[j], ys[j]), all in one vmapped program.

    keys (M,), xs (M, n, h, w, c), ys (M, n) or (M, n, K). Network j follows exactly the schedule
    ``jaxdd.train.train_many`` gives a network with key keys[j] (init, shuffles, augmentation, lr decay), so
    ``train_sets`` on M copies of one set equals ``train_many`` on it. With a mesh the M networks are split over
    every device (M divisible by the device count; else over the "exp" axis, else not split)."""
    m, n = xs.shape[0], xs.shape[1]
    if n == 0:
        raise JaxddError("cannot train on an empty set")
    init, step, plan, reinit, _ = _eval_fns(module, protocol, xs.shape[2:])
    k_init, k_run = jax.vmap(lambda k: jax.random.split(k))(keys).transpose(1, 0)
    variables, opt_state = init(k_init, protocol.lr)
    if mesh is not None:
        s = _network_sharding(mesh, m)
        if s is not None:
            variables, opt_state, xs, ys = jax.device_put((variables, opt_state, xs, ys), s)
    bs = min(protocol.batch_size, n)
    spe = math.ceil(n / bs)
    for epoch in range(protocol.epochs + 1):
        perms, sks = plan(k_run, epoch, n, spe)
        for s_ in range(spe):
            variables, opt_state = step(variables, opt_state, xs, ys, perms[:, s_ * bs:(s_ + 1) * bs], sks[s_])
        if epoch == protocol.decay_after_epoch:
            opt_state = reinit(variables["params"], protocol.lr * 0.1)
    return variables


def _network_sharding(mesh, m: int):
    from jax.sharding import NamedSharding, PartitionSpec as P

    if m % mesh.devices.size == 0:
        return shd.eval_sharding(mesh)
    if m % shd.axis_size(mesh, shd.EXP) == 0 and shd.axis_size(mesh, shd.EXP) > 1:
        return NamedSharding(mesh, P(shd.EXP))
    return None


def evaluate_many(keys: jax.Array, images: jax.Array, labels: jax.Array, test_images, test_labels, *,
                  num_classes: int, model: str = "ConvNet", num_models: int = 5,
                  protocol: TrainProtocol = TrainProtocol(), model_kwargs: dict | None = None, mesh=None,
                  batch_size: int = 1000) -> np.ndarray:
    """Test accuracies (E, K) of K fresh networks trained on each of E synthetic sets, all E x K in one program.

    keys (E,): experiment e's networks use ``jax.random.split(keys[e], K)``, as ``evaluate_synthetic(keys[e],
    images[e], ...)`` does, so row e equals that call's accuracies (to float tolerance). images (E, n, h, w, c),
    labels (E, n) or (E, n, K), in the test images' normalised space."""
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    e = images.shape[0]
    if labels.shape[:2] != images.shape[:2] or keys.shape[0] != e:
        raise JaxddError(f"need keys (E,), images (E, n, ...) and labels (E, n[, K]) with the same E and n; got "
                         f"{keys.shape}, {images.shape}, {labels.shape}")
    if num_models < 1:
        raise JaxddError(f"num_models must be >= 1, got {num_models}")
    if images.shape[2:] != tuple(np.shape(test_images)[1:]):
        raise JaxddError(f"synthetic images {images.shape[2:]} but test images {np.shape(test_images)[1:]}")
    from jaxdd.models import eval_module

    module = eval_module(model, num_classes, model_kwargs)  # the network evaluate_synthetic trains
    net_keys = jax.vmap(lambda k: jax.random.split(k, num_models))(keys).reshape(-1)  # (E*K,) experiment-major
    xs = jnp.repeat(images, num_models, axis=0)
    ys = jnp.repeat(labels, num_models, axis=0)
    variables = train_sets(net_keys, module, xs, ys, protocol, mesh=mesh)
    predict = _eval_fns(module, protocol, images.shape[2:])[4]
    test_images, test_labels = jnp.asarray(test_images), jnp.asarray(test_labels)
    correct = jnp.zeros((e * num_models,), jnp.float32)
    for i in range(0, test_images.shape[0], batch_size):
        logits = predict(variables, test_images[i:i + batch_size])
        correct = correct + jax.vmap(accuracy, in_axes=(0, None))(logits, test_labels[i:i + batch_size]) * \
            logits.shape[1]
    return np.asarray(correct / test_images.shape[0]).reshape(e, num_models)


# --------------------------------------------------------------------------------------------------------------
# Dataset-level entry points (what `jaxdd distill-many` / `jaxdd evaluate-many` run)


def _config(spec, iterations, overrides, eval_every, progress) -> DistillConfig:
    from jaxdd.pipeline import method_config

    return method_config(spec, iterations, overrides, eval_every, progress)


def distill_many_dataset(method: str, dataset: str, ipc: int, *, num_exp: int, out_dir: str | None = None,
                         seed: int = 0, hparams: dict[str, Sequence[float]] | None = None,
                         iterations: int | None = None, model: str = "ConvNet", model_kwargs: dict | None = None,
                         param: str = "pixels", param_options: dict | None = None, init: str | None = None,
                         method_options: dict | None = None, config_overrides: dict | None = None,
                         zca: bool = False, data_dir: str | None = None, val_per_class: int | None = None,
                         mesh_exp: int | None = None, mesh_data: int | None = None, use_mesh: bool = True,
                         syn_sharding: str = "replicated", split_pool: bool = False, eval_every: int = 0,
                         eval_models: int = 2, eval_epochs: int = 100, progress: bool = True) -> dict:
    """``jaxdd.pipeline.distill_dataset`` for ``num_exp`` experiments in one program; returns a summary dict.

    Data split, preprocessing and the method are built from ``seed``; experiment i's run key is the one
    ``distill_dataset(seed=seed + i)`` uses, so experiment 0 equals ``distill_dataset(seed=seed)``. Each experiment
    writes ``out_dir/exp_00i/`` (checkpoints, metrics.jsonl, synthetic.npz/.json/.png); ``out_dir/experiments.json``
    lists them. The mesh spans every device (``make_mesh``; ``use_mesh=False``: no mesh, default placement)."""
    from jaxdd import __version__
    from jaxdd.checkpoint import save_artifact
    from jaxdd.distill import make_pool
    from jaxdd.methods import MethodContext, get_method, resolve_options
    from jaxdd.pipeline import _PARAMS, available_parameterizations, prepare_data, run_config, start_run
    from jaxdd.synthetic import pixel_budget, tree_floats
    from jaxdd.evaluate import standard_eval_augment
    from jaxdd.train import default_protocol

    if num_exp < 1:
        raise JaxddError(f"num_exp must be >= 1, got {num_exp}")
    spec = get_method(method)
    opts = resolve_options(spec, method_options or {})
    if param not in _PARAMS:
        raise JaxddError(f"unknown parameterization {param!r}; available: {available_parameterizations()}")
    init = init or spec.defaults.get("init", "real")
    config = _config(spec, iterations, config_overrides, eval_every, progress)
    grid = {n: [float(v) for v in np.asarray(vals, np.float32).reshape(-1)] for n, vals in (hparams or {}).items()}
    if out_dir is not None and jax.process_index() == 0:
        cfg = run_config(method, dataset, ipc, seed=seed, opts=opts, config=config, model=model,
                         model_kwargs=model_kwargs, param=param, param_options=param_options, init=init, zca=zca,
                         val_per_class=val_per_class)
        start_run(out_dir, "distill-many", {**cfg, "num_exp": num_exp, "hparams": grid}, config)
    train, val, pre, x_train, x_val = prepare_data(dataset, data_dir=data_dir, zca=zca,
                                                   val_per_class=val_per_class, seed=seed)
    k, shape = train.num_classes, train.image_shape
    parameterization = _PARAMS[param](ipc=ipc, image_shape=shape, num_classes=k, init=init, **(param_options or {}))
    k_build, _, k_eval = jax.random.split(jax.random.key(seed), 3)
    keys = jnp.stack([jax.random.split(jax.random.key(seed + i), 3)[1] for i in range(num_exp)])
    pool = make_pool(x_train, train.labels, k)
    ctx = MethodContext(k, shape, parameterization.images_per_class, model, dict(model_kwargs or {}), opts, dataset,
                        pool, pre, k_build, data_dir)
    objective = spec.build(ctx)
    mesh = shd.make_mesh(num_exp, exp=mesh_exp, data=mesh_data) if use_mesh else None
    eval_augment = standard_eval_augment(method, dataset, model)

    evaluator = None
    if config.eval_every and val is not None:
        protocol = default_protocol(eval_augment, epochs=eval_epochs)

        def evaluator(images, labels, step):
            ek = jnp.stack([jax.random.fold_in(k_eval, step)] * num_exp)
            accs = evaluate_many(ek, images, labels, x_val, val.labels, num_classes=k, model=model,
                                 num_models=eval_models, protocol=protocol, model_kwargs=model_kwargs, mesh=mesh)
            return {"val_acc": accs.mean(1), "val_acc_std": accs.std(1)}

    t0 = time.perf_counter()
    result = distill_many(keys, objective, parameterization, pool, config, hparams=hparams, mesh=mesh,
                          syn_sharding=syn_sharding, split_pool=split_pool, out_dir=out_dir, evaluator=evaluator)
    seconds = time.perf_counter() - t0
    budget = pixel_budget(k, ipc, shape)
    stored = tree_floats(jax.tree.map(lambda a: a[0], result.state.syn["data"]))
    base = {
        "jaxdd_version": __version__, "method": method, "dataset": dataset, "ipc_budget": ipc,
        "images_per_class": parameterization.images_per_class, "num_images": int(result.images.shape[1]),
        "floats_stored": stored, "floats_budget": budget,
        "compression_vs_full": float(train.num_examples * math.prod(shape) / stored),
        "parameterization": {"name": parameterization.name, **parameterization.config},
        "model": model, "model_kwargs": model_kwargs or {}, "method_options": opts,
        "config": dataclasses.asdict(config), "steps_done": int(jax.device_get(result.state.step[0])), "zca": zca,
        "eval_augment": eval_augment, "num_classes": k,
        "class_names": list(train.class_names), "image_shape": list(shape),
        "val_per_class": None if val is None else int(val.num_examples // k),
    }
    experiments = []
    for i in range(num_exp):
        meta = {**base, "seed": seed + i, "data_seed": seed,
                "key": f"jax.random.split(jax.random.key({seed + i}), 3)[1]", "experiment": i,
                "num_experiments": num_exp, "hparams": {n: v[i] for n, v in grid.items()},
                "diverged": i in result.diverged,
                "final_metrics": result.histories[i][-1] if result.histories[i] else {}}
        if spec.artifact_metadata is not None:
            meta.update(spec.artifact_metadata(
                jax.tree.map(lambda a: np.asarray(a)[i], jax.device_get(result.state.syn.get("extras", {}))), opts))
        if out_dir is not None and jax.process_index() == 0 and i not in result.diverged:
            save_artifact(exp_dir(out_dir, i), result.images[i], result.labels[i], pre, meta,
                          class_names=train.class_names)
        experiments.append(meta)
    summary = {"num_experiments": num_exp, "seconds": seconds, "mesh": shd.describe(mesh), "hparams": grid,
               "diverged": result.diverged,
               "experiments": [{"dir": EXP_DIR.format(i), "seed": m["seed"], "hparams": m["hparams"],
                                "final_metrics": m["final_metrics"]} for i, m in enumerate(experiments)]}
    if out_dir is not None and jax.process_index() == 0:
        Path(out_dir, "experiments.json").write_text(json.dumps({**base, **summary}, indent=2, default=float))
    return {**base, **summary, "images": result.images, "labels": result.labels, "histories": result.histories}


def evaluate_many_runs(out_dir: str, *, num_models: int = 5, epochs: int | None = None, model: str | None = None,
                       seed: int = 0, augment: str | None | bool = True, lr: float | None = None,
                       data_dir: str | None = None, use_mesh: bool = True, save: bool = True) -> dict:
    """``jaxdd.pipeline.evaluate_run`` for every finished experiment of a ``distill-many`` directory at once:
    the E x ``num_models`` networks train together. Experiment i's result equals ``evaluate_run(out_dir/exp_00i,
    seed=seed, ...)`` (same keys); writes each experiment's ``eval.json`` and ``out_dir/eval_many.json``."""
    from jaxdd.checkpoint import check_artifact, load_artifact
    from jaxdd.data import apply_preprocess, load
    from jaxdd.train import default_protocol

    dirs = sorted(p for p in Path(out_dir).glob("exp_*") if (p / "synthetic.npz").exists())
    if not dirs:
        raise JaxddError(f"{out_dir} holds no finished experiments (exp_*/synthetic.npz); run `jaxdd distill-many "
                         f"... --out {out_dir}` first")
    arts = [load_artifact(d) for d in dirs]
    meta = arts[0].metadata
    dataset = meta.get("dataset")
    if dataset is None:
        raise JaxddError(f"{dirs[0]}/synthetic.json names no dataset; cannot find its test split")
    test = load(dataset, "test", data_dir)
    for d, a in zip(dirs, arts):
        check_artifact(a, test.num_classes, test.image_shape, where=f"{d}/synthetic.npz")
    x_test = apply_preprocess(arts[0].preprocess, test.images)
    strategy = meta.get("eval_augment") if augment is True else (augment or None)
    lrs = {float(a.metadata.get("eval_lr", 0.01)) if lr is None else lr for a in arts}
    if len(lrs) != 1:
        raise JaxddError(f"the experiments record different evaluation lrs {sorted(lrs)}; pass lr= to use one")
    protocol = default_protocol(strategy, epochs=epochs, lr=lrs.pop())
    model = model or meta.get("model", "ConvNet")
    images = np.stack([a.images for a in arts])
    labels = np.stack([a.labels for a in arts])
    keys = jnp.stack([jax.random.key(seed)] * len(arts))
    mesh = shd.make_mesh(len(arts) * num_models) if use_mesh else None
    t0 = time.perf_counter()
    accs = evaluate_many(keys, images, labels, x_test, test.labels, num_classes=test.num_classes, model=model,
                         num_models=num_models, protocol=protocol, model_kwargs=meta.get("model_kwargs") or None,
                         mesh=mesh)
    seconds = time.perf_counter() - t0
    rows = []
    for d, a, acc in zip(dirs, arts, accs):
        res = {"mean": float(acc.mean()), "std": float(acc.std()), "accuracies": [float(v) for v in acc],
               "model": model, "protocol": dataclasses.asdict(protocol)}
        out = {"synthetic": res, "dataset": dataset, "split": "test", "seed": seed}
        if save and jax.process_index() == 0:
            (d / "eval.json").write_text(json.dumps(out, indent=2))
        rows.append({"dir": d.name, "hparams": a.metadata.get("hparams", {}), **res})
    summary = {"experiments": rows, "mean_of_means": float(accs.mean(1).mean()),
               "std_of_means": float(accs.mean(1).std()), "seconds": seconds, "networks": int(accs.size)}
    if save and jax.process_index() == 0:
        Path(out_dir, "eval_many.json").write_text(json.dumps(summary, indent=2))
    return summary
