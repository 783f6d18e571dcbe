"""Device meshes for distillation: an experiment axis and a data axis, over the devices of one host or many.

The mesh has two named axes::

    exp   independent experiments (seeds, hyperparameters): the leading axis of a stacked DistillState
          (``jaxdd.distill.distill_many``) is split over it; experiments never talk to each other, so this axis is free of
          communication and is filled first.
    data  the real batch of each step (and, optionally, the synthetic set by class) is split over it; the
          per-class means / gradients are reduced across it by XLA.

Nothing here names a device or a platform: ``make_mesh`` takes ``jax.devices()`` (all processes' devices after
``initialize_distributed``), and the same program runs on 8 host CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), one GPU, a GPU node or a TPU pod.

Placement helpers::

    mesh = make_mesh(num_exp=4)                     # exp axis = gcd(4, devices), data axis = the rest
    pool = shard_pool(pool, mesh)                   # real training split replicated (default) or split on "data"
    obj = shard_objective(objective, mesh)          # real batch split on "data"; syn replicated or by class
    state = put(stacked_state, state_sharding(stacked_state, mesh))  # leading exp axis split on "exp"

One experiment, data-parallel, with the unchanged driver: ``distill(key, shard_objective(obj, mesh), param,
shard_pool(pool, mesh), config)`` (the computation follows the data and the constraints inside the loss).

Several hosts (multi-controller JAX: every host runs the SAME program on its own devices)::

    # on every host, before anything else touches jax:
    from jaxdd.sharding import initialize_distributed
    initialize_distributed()            # TPU pods, SLURM and Open MPI are detected automatically, or pass
                                        # coordinator_address="host0:1234", num_processes=N, process_id=i
    # then exactly the single-host code: make_mesh() sees every process's devices.

``jaxdd distill-many --distributed ...`` does the same from the CLI. Each host loads the dataset itself (the pool is
placed with ``jax.make_array_from_callback``, which only asks each host for the slices its devices hold); only
process 0 writes metrics and artifacts; orbax checkpoints are written collectively.
"""
from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdd.objectives.base import Objective, Synthetic
from jaxdd.types import Batch, JaxddError, PyTree

EXP = "exp"
DATA = "data"
SYN_SHARDINGS = ("replicated", "class")


# --------------------------------------------------------------------------------------------------------------
# Start-up and meshes


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_ids=None, **kwargs) -> dict:
    """Start multi-controller JAX (``jax.distributed.initialize``); call once per host, before any computation.

    With no arguments JAX detects the cluster (Cloud TPU pods, SLURM, Open MPI, or the ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` environment variables). Otherwise pass, on every host, the same
    ``coordinator_address="host0:1234"`` and ``num_processes``, and this host's ``process_id``. On CPU-only
    machines (several processes on one box, as the tests do) the gloo collectives are switched on.

    Returns {"process_index", "process_count", "local_devices", "global_devices"}.
    """
    kw = dict(kwargs)
    env = {"coordinator_address": ("JAX_COORDINATOR_ADDRESS", str), "num_processes": ("JAX_NUM_PROCESSES", int),
           "process_id": ("JAX_PROCESS_ID", int)}
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    for name, (var, typ) in env.items():
        value = given[name] if given[name] is not None else (typ(os.environ[var]) if var in os.environ else None)
        if value is not None:
            kw[name] = value
    if local_device_ids is not None:
        kw["local_device_ids"] = local_device_ids
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or kw.pop("cpu_collectives", False):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kw)
    except Exception as e:  # noqa: BLE001  (JAX raises RuntimeError/ValueError with its own message)
        raise JaxddError(
            f"jax.distributed.initialize failed ({e}); call it before any other JAX use, on every host, with the "
            "same coordinator_address (host:port reachable by all hosts) and num_processes and a distinct "
            "process_id (or set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID)") from e
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "local_devices": jax.local_device_count(), "global_devices": jax.device_count()}


def make_mesh(num_exp: int | None = None, *, exp: int | None = None, data: int | None = None,
              devices=None) -> Mesh:
    """A 2-D ``Mesh`` with axes ("exp", "data") over ``devices`` (default: ``jax.devices()``, every process's).

    Give the axis sizes (``exp * data`` must equal the device count), or ``num_exp`` (the number of experiments)
    and the experiment axis becomes ``gcd(num_exp, devices)`` (experiments first: they need no communication) with
    the data axis taking the remaining factor. Neither: everything on the data axis.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if exp is None and data is None:
        exp = math.gcd(num_exp, n) if num_exp else 1
    if exp is None:
        exp = n // data if data and n % data == 0 else -1
    if data is None:
        data = n // exp if exp > 0 and n % exp == 0 else -1
    if exp < 1 or data < 1 or exp * data != n:
        raise JaxddError(f"mesh axes exp={exp} x data={data} must multiply to the {n} devices; choose sizes whose "
                         f"product is {n} (e.g. exp={n}, data=1)")
    if num_exp is not None and num_exp % exp:
        raise JaxddError(f"{num_exp} experiments do not split over an experiment axis of {exp} devices; use a "
                         f"number of experiments divisible by {exp} or a smaller exp axis")
    return Mesh(np.asarray(devices, dtype=object).reshape(exp, data), (EXP, DATA))


def axis_size(mesh: Mesh | None, name: str) -> int:
    return 1 if mesh is None else int(mesh.shape[name])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


# --------------------------------------------------------------------------------------------------------------
# Placement


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def put(tree: PyTree, shardings: PyTree | NamedSharding) -> PyTree:
    """Place host or single-device arrays with ``shardings`` (a matching pytree, or one sharding for every leaf).

    On one process this is ``jax.device_put``. With several processes every host passes the same full values (each
    computed them deterministically) and ``jax.make_array_from_callback`` keeps only the slices its devices hold.
    """
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, s):
        if _is_key(x):
            impl = jax.random.key_impl(x)
            data = np.asarray(jax.random.key_data(x))
            spec = P(*(tuple(s.spec) + (None,) * (data.ndim - len(s.spec))))
            raw = jax.make_array_from_callback(data.shape, NamedSharding(s.mesh, spec), lambda i: data[i])
            return jax.random.wrap_key_data(raw, impl=impl)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, s, lambda i: host[i])

    return jax.tree.map(one, tree, shardings)


def leading_sharding(tree: PyTree, mesh: Mesh, axis: str | tuple[str, ...] = EXP) -> PyTree:
    """A pytree of ``NamedSharding`` that splits every leaf's leading axis over mesh ``axis``; scalars replicated."""
    return jax.tree.map(lambda x: NamedSharding(mesh, P(axis) if np.ndim(x) >= 1 else P()), tree)


def state_sharding(state: PyTree, mesh: Mesh) -> PyTree:
    """Shardings of a stacked DistillState (leading experiment axis): every leaf split over "exp"."""
    return leading_sharding(state, mesh, EXP)


def shard_pool(pool, mesh: Mesh, *, split: bool = False):
    """Place a ``RealPool`` on ``mesh``: replicated (default; every device samples locally), or with ``split=True``
    its images split over the "data" axis (for pools too large for one device; padded with zero rows up to a
    multiple of the axis size: the class index never points at the padding, so sampling is unchanged).

    The sampled real batch of each step is split over "data" by ``shard_objective`` either way."""
    from jaxdd.data import RealPool

    rep = replicated(mesh)
    images, labels = pool.images, pool.labels
    if split:
        d = axis_size(mesh, DATA)
        pad = (-images.shape[0]) % d
        if pad:
            images = jnp.concatenate([images, jnp.zeros((pad, *images.shape[1:]), images.dtype)])
            labels = jnp.concatenate([labels, jnp.zeros((pad,), labels.dtype)])
        img_s = NamedSharding(mesh, P(DATA))
    else:
        img_s = rep
    return RealPool(put(images, img_s), put(labels, img_s), put(pool.index, rep))


def constrain(x: jax.Array, mesh: Mesh, spec: P) -> jax.Array:
    """``with_sharding_constraint`` when the constrained axis divides evenly, else leave placement to XLA."""
    for dim, name in enumerate(spec):
        if name is not None and x.shape[dim] % int(np.prod([mesh.shape[a] for a in np.atleast_1d(name)])):
            return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def shard_objective(objective: Objective, mesh: Mesh, *, syn: str = "replicated") -> Objective:
    """The same objective with sharding constraints inside its loss: the real batch (class-major, (K*n, ...)) split
    over the "data" axis, the decoded synthetic images replicated (``syn="replicated"``) or split by class over
    "data" (``syn="class"``: class-major rows, so each device holds whole classes when K*m divides evenly).

    Under ``jax.vmap(..., spmd_axis_name="exp")`` (``jaxdd.distill.distill_many``) every constraint also splits the experiment
    axis. The math is unchanged: results equal the unsharded objective's up to float reduction order.
    """
    if syn not in SYN_SHARDINGS:
        raise JaxddError(f"syn sharding must be one of {SYN_SHARDINGS}, got {syn!r}")
    if axis_size(mesh, DATA) == 1 and syn == "replicated":
        return objective
    inner = objective.loss
    syn_spec = P(DATA) if syn == "class" else P()

    def loss(s: Synthetic, real: Batch, state, key):
        if real.x.shape[0]:
            real = Batch(constrain(real.x, mesh, P(DATA)), constrain(real.y, mesh, P(DATA)))
        s = Synthetic(constrain(s.x, mesh, syn_spec), s.y, s.extras)
        return inner(s, real, state, key)

    return objective._replace(loss=loss)


def eval_sharding(mesh: Mesh) -> NamedSharding:
    """Networks trained together (experiments x seeds flattened) split over every device of the mesh."""
    return NamedSharding(mesh, P((EXP, DATA)))


# --------------------------------------------------------------------------------------------------------------
# Checkpoints of sharded state


def abstract_like(tree: PyTree, shardings: PyTree | NamedSharding | None = None) -> PyTree:
    """``ShapeDtypeStruct``s of ``tree`` carrying ``shardings`` (the target an orbax restore places data onto)."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)),
                            tree)
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)


def save_sharded(directory, step: int, state: PyTree, max_to_keep: int = 2) -> None:
    """Save a (sharded) pytree with orbax: each process writes the shards its devices hold."""
    from jaxdd.checkpoint import Checkpointer

    ckpt = Checkpointer(directory, max_to_keep=max_to_keep)
    ckpt.save(step, state)
    ckpt.close()


def restore_sharded(directory, target: PyTree, shardings: PyTree | NamedSharding | None = None,
                    step: int | None = None) -> PyTree:
    """Restore a checkpoint written by ``save_sharded`` (or ``Checkpointer``) onto ``shardings``, which may live
    on a different mesh or device count than the one that saved it. ``target``: concrete or abstract pytree of
    the saved shapes (e.g. ``jax.eval_shape`` of the init)."""
    from jaxdd.checkpoint import Checkpointer

    ckpt = Checkpointer(directory)
    try:
        return ckpt.restore(abstract_like(target, shardings), step)
    finally:
        ckpt.close()


def describe(mesh: Mesh | None) -> dict[str, Any]:
    if mesh is None:
        return {"devices": 1, "exp": 1, "data": 1}
    return {"devices": int(mesh.devices.size), "exp": axis_size(mesh, EXP), "data": axis_size(mesh, DATA),
            "platform": mesh.devices.flat[0].platform, "processes": jax.process_count()}
