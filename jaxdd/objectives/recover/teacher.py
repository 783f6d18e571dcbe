"""Squeeze (SRe2L/DWA, docs/methods.md 11.1 step 1): fit a batch-norm teacher on the real training split.

    jaxdd teacher --dataset fashion_mnist --model ConvNetBN --epochs 5 --out runs/teacher_fmnist
    jaxdd distill --method dwa --teacher runs/teacher_fmnist --dataset fashion_mnist --ipc 10 --out runs/dwa10

From Python::

    from jaxdd import TeacherConfig, train_teacher, load_teacher
    info = train_teacher("fashion_mnist", "ConvNetBN", "runs/teacher", config=TeacherConfig(epochs=5))
    teacher = load_teacher("runs/teacher")        # Teacher(module, variables, meta)

This module holds the pure part (``fit_teacher`` on arrays, with the training loop of ``jaxdd.train``);
``jaxdd.api.train_teacher`` makes the resumable teacher directory and ``jaxdd.checkpoint`` saves and loads it.

Training follows the SRe2L CIFAR recipe scaled down: SGD (PyTorch-style weight decay 5e-4, momentum 0.9), cosine
learning rate from ``lr`` (0.1) to 0 over all steps, batch 128, random shift (+-4 px, zero fill) and horizontal flip,
each applied to every image independently; the last partial batch of an epoch is dropped (static shapes). The data
are the training split minus the class-stratified validation split of ``jaxdd.api.prepare_data`` (the same
carving and normalisation ``jaxdd distill`` uses with the same seed), so the teacher never sees the test split; its
validation and test accuracies are recorded, not used for selection.

A teacher directory holds ``teacher.json`` (model name and overrides, classes, image shape, dataset, normalisation
constants, config, accuracies), ``checkpoints/`` (orbax, the whole training state after every epoch: rerunning the
same command resumes) and ``final/`` (orbax, the trained variables ``{"params", "batch_stats"}``).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdd.models import has_batch_stats, init_model
from jaxdd.train import accuracy, batched_step, compiled, fit, make_train_step, predict_many
from jaxdd.types import JaxddError, PRNGKey, PyTree



@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    epochs: int = 5
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    shift: int = 4  # random shift of every image by up to this many pixels per axis (zero fill); 0 = off
    flip: bool = True  # horizontal flip with probability 0.5 per image

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.shift < 0:
            raise JaxddError(f"invalid TeacherConfig {self}: epochs >= 1, batch_size >= 1, lr > 0, shift >= 0")


class Teacher(NamedTuple):
    module: nn.Module
    variables: PyTree  # {"params", "batch_stats"}
    meta: dict


def shift_flip(x: jax.Array, key: PRNGKey, shift: int, flip: bool) -> jax.Array:
    """Per-image random shift in [-shift, shift] px per axis (zero fill) and horizontal flip (p = 0.5)."""
    n, h, w, _ = x.shape
    k1, k2, k3 = jax.random.split(key, 3)
    if shift:
        dy = jax.random.randint(k1, (n,), -shift, shift + 1)
        dx = jax.random.randint(k2, (n,), -shift, shift + 1)
        pad = jnp.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        x = jax.vmap(lambda img, a, b: jax.lax.dynamic_slice(img, (shift - a, shift - b, 0), (h, w, x.shape[-1])))(
            pad, dy, dx)
    if flip:
        f = jax.random.bernoulli(k3, 0.5, (n, 1, 1, 1))
        x = jnp.where(f, x[:, :, ::-1, :], x)
    return x


def _optimizer(config: TeacherConfig, total_steps: int) -> optax.GradientTransformation:
    sched = optax.cosine_decay_schedule(config.lr, max(total_steps, 1))
    return optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.sgd(sched, momentum=config.momentum or None))


def fit_teacher(key: PRNGKey, module: nn.Module, x: jax.Array, y: jax.Array, config: TeacherConfig, *,
                state: dict | None = None, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``module`` on (x, y) (normalised images, int labels); returns the training state
    ``{"variables", "opt_state", "epoch"}``. ``state`` resumes a saved one; ``on_epoch(epoch, state)`` is called
    after every epoch (checkpointing, progress). Epoch e shuffles with ``fold_in(key, e)``; deterministic."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    n = x.shape[0]
    bs = min(config.batch_size, n)
    steps = n // bs
    tx = _optimizer(config, steps * config.epochs)
    k_init, k_run = jax.random.split(key)
    if state is None:
        variables = jax.jit(lambda k: init_model(module, k, x.shape[1:]))(k_init)
        if not has_batch_stats(variables):
            raise JaxddError(f"{type(module).__name__} has no batch norm; SRe2L/DWA teachers need one "
                             "(use ConvNetBN, ResNet8BN or ResNet18BN)")
        state = {"variables": variables, "opt_state": tx.init(variables["params"]), "epoch": jnp.zeros((), jnp.int32)}

    run = compiled(("teacher", module, config, steps, tuple(x.shape[1:])), lambda: batched_step(
        make_train_step(module, tx, lambda xb, k: shift_flip(xb, k, config.shift, config.flip)), stacked=False))

    def finished(epoch, variables, opt_state, losses):
        if on_epoch is not None:
            on_epoch(epoch + 1, {"variables": variables, "opt_state": opt_state,
                                 "epoch": jnp.asarray(epoch + 1, jnp.int32),
                                 "loss": float(np.mean([float(v) for v in losses]))})

    variables, opt_state = fit(run, state["variables"], state["opt_state"], x, y, k_run,
                               epochs=range(int(state["epoch"]), config.epochs), batch_size=bs, stacked=False,
                               drop_last=True, on_epoch=finished)
    return {"variables": variables, "opt_state": opt_state, "epoch": jnp.asarray(config.epochs, jnp.int32)}


def teacher_accuracy(module: nn.Module, variables: PyTree, x, y) -> float:
    logits = predict_many(module, jax.tree.map(lambda a: a[None], variables), jnp.asarray(x))[0]
    return float(accuracy(logits, jnp.asarray(y)))
