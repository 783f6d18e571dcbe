"""The multi-experiment protocol: train and test the evaluation networks of E synthetic sets at once.

The experiment axis itself is part of the driver: ``jaxdd.distill.distill_many`` runs E distillations (seeds and
float hyperparameters as a dimension) with ``distill``'s loop, and ``jaxdd.api.distill_many_dataset`` /
``evaluate_many_runs`` are the dataset-level entry points (``jaxdd distill-many`` / ``jaxdd evaluate-many``). Here:
``train_sets`` (M networks, network j on its own set, with the training loop of ``jaxdd.train``) and
``evaluate_many`` (the E x K evaluation networks of E sets in one vmapped program, split over the devices).

CLI::

    jaxdd distill-many --num-exp 4 --method dm --dataset fashion_mnist --ipc 10 --iterations 200 --out runs/dm4
    jaxdd distill-many --num-exp 3 --lr-img-grid 0.3,1,3 --method dc --dataset digits --ipc 1 --out runs/dc_lr
    jaxdd evaluate-many runs/dm4 --models 3 --epochs 300

Experiment i of ``distill-many --seed s`` uses the run key of ``jaxdd distill --seed s+i`` with the data split and
method built from seed s, so experiment 0 reproduces ``jaxdd distill --seed s`` exactly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd import sharding as shd
from jaxdd.train import TrainProtocol, accuracy, predict_many, train_protocol
from jaxdd.types import JaxddError, PyTree

# --------------------------------------------------------------------------------------------------------------
# Evaluation of all experiments x seeds at once


def train_sets(keys: jax.Array, module, xs: jax.Array, ys: jax.Array, protocol: TrainProtocol, *,
               mesh=None) -> PyTree:
    """Train M fresh networks, network j on its own set (xs[j], ys[j]), all in one vmapped program.

    keys (M,), xs (M, n, h, w, c), ys (M, n) or (M, n, K). Network j follows exactly the schedule
    ``jaxdd.train.train_many`` gives a network with key keys[j] (init, shuffles, augmentation, lr decay: the same
    loop, ``jaxdd.train.train_protocol``), so ``train_sets`` on M copies of one set equals ``train_many`` on it. With
    a mesh the M networks are split over every device (M divisible by the device count; else over the "exp" axis,
    else not split)."""
    if mesh is not None:
        s = _network_sharding(mesh, xs.shape[0])
        if s is not None:
            keys, xs, ys = jax.device_put((keys, xs, ys), s)
    return train_protocol(keys, module, xs, ys, protocol, per_network=True)


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
    logits = predict_many(module, variables, jnp.asarray(test_images), batch_size=batch_size, group=e * num_models)
    accs = jax.vmap(accuracy, in_axes=(0, None))(logits, jnp.asarray(test_labels))
    return np.asarray(accs).reshape(e, num_models)
