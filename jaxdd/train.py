"""Functional training: losses, the evaluation-protocol trainer, and differentiable unrolled SGD.

Two kinds of loop live here, because XLA:CPU runs a convolution's weight gradient about 40x slower inside
``lax.scan`` than outside a loop (jax-ml/jax#12868), and measured on this machine a scanned ConvNet step with
``conv_impl="xla"`` never finished in minutes where the same step jitted alone took ~1 s:

- ``train`` / ``train_many`` (evaluation, DC's inner training, experts): a Python loop over ONE jitted step.
  Nothing is differentiated through it, so the loop may live on the host; ``train_many`` vmaps the step over K
  independent networks, which is how evaluation trains K models at once on an accelerator (on CPU it trains them
  one after the other by default, see ``default_group``).
- ``unroll_sgd`` (BPTT, MTT, anything differentiated through training): ``lax.scan`` over plain SGD steps, with
  the memory strategy a setting (``"full"`` or ``"remat"`` with ``jax.checkpoint`` every ``checkpoint_every``
  steps). Use a model with ``conv_impl="fused"`` (or ``"winograd"``, ``"vjp"``, ``"patches"``) there on CPU (see
  ``jaxdd.models.convnet``).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdd import augment as aug
from jaxdd.models import apply_model, init_model
from jaxdd.types import JaxddError, PRNGKey, PyTree


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy. y: (n,) int class ids, or (n, k) soft label distributions."""
    if y.ndim == 1:
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return optax.softmax_cross_entropy(logits, y).mean()


def accuracy(logits: jax.Array, y: jax.Array) -> jax.Array:
    target = y if y.ndim == 1 else jnp.argmax(y, -1)
    return jnp.mean(jnp.argmax(logits, -1) == target)


@dataclasses.dataclass(frozen=True)
class TrainProtocol:
    """How a fresh network is trained on a (synthetic) set: docs/methods.md 1.4.

    The loop runs ``epochs + 1`` epochs (as the DD code does); after epoch ``epochs // 2 + 1`` the learning rate is
    multiplied by 0.1 and, as in the reference code which builds a new optimiser there, the momentum buffer restarts.
    ``augment`` is None, a DSA strategy string applied non-Siamese (every image its own draw), or ``"dc:"`` and a
    DC-augmentation strategy (``"dc:crop_scale_rotate"``: the DC code's evaluation augmentation, ``aug.dc_augment``);
    see ``jaxdd.augment.parse_train_augment``.
    """

    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: str | None = None

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise JaxddError(f"invalid TrainProtocol {self}: epochs >= 0, batch_size >= 1 and lr > 0 are required")
        if self.augment:
            aug.parse_train_augment(self.augment)

    @property
    def decay_after_epoch(self) -> int:
        return self.epochs // 2 + 1


def default_protocol(augment: str | None = aug.DSA_DEFAULT, epochs: int | None = None, lr: float = 0.01
                     ) -> TrainProtocol:
    """The standard protocol: 1000 epochs with augmentation (DSA or DC), 300 without (unless ``epochs`` is given).
    ``augment``: as ``TrainProtocol.augment``; which one a method's paper uses is
    ``jaxdd.evaluate.standard_eval_augment``."""
    augmented = aug.parse_train_augment(augment)[0] != "none"
    if epochs is None:
        epochs = 1000 if augmented else 300
    return TrainProtocol(epochs=epochs, lr=lr, augment=augment if augmented else None)


def sgd(momentum: float, weight_decay: float) -> optax.GradientTransformation:
    """PyTorch-style SGD (decay added to the gradient before momentum) with the lr as a state hyperparameter."""
    return optax.inject_hyperparams(
        lambda learning_rate: optax.chain(optax.add_decayed_weights(weight_decay),
                                          optax.sgd(learning_rate, momentum=momentum if momentum else None))
    )(learning_rate=0.0)


def _set_lr(opt_state, lr):
    hp = dict(opt_state.hyperparams)
    hp["learning_rate"] = jnp.asarray(lr, jnp.float32) * jnp.ones_like(hp["learning_rate"])
    return opt_state._replace(hyperparams=hp)


def make_train_step(module: nn.Module, tx: optax.GradientTransformation, augment: str | None):
    """A pure step ``(variables, opt_state, x, y, key) -> (variables, opt_state, loss)`` for one network."""

    def step(variables, opt_state, x, y, key):
        if augment:
            x = aug.train_augment(x, key, augment)
        rest = {k: v for k, v in variables.items() if k != "params"}

        def loss_fn(params):
            out = apply_model(module, {"params": params, **rest}, x, train=True)
            return cross_entropy(out.logits, y), out.variables

        (loss, new_vars), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        updates, opt_state = tx.update(grads, opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], updates)
        return {**new_vars, "params": params}, opt_state, loss

    return step


class _Compiled(NamedTuple):
    init: Callable
    step: Callable
    tx: optax.GradientTransformation


_CACHE: dict[Any, _Compiled] = {}


def _compiled(module: nn.Module, protocol: TrainProtocol, image_shape, many: bool) -> _Compiled:
    """jit-compiled init and step, cached per (module, protocol, shape) so repeated evaluations do not retrace."""
    cache_key = (module, protocol.momentum, protocol.weight_decay, protocol.augment, tuple(image_shape), many)
    if cache_key not in _CACHE:
        tx = sgd(protocol.momentum, protocol.weight_decay)
        step = make_train_step(module, tx, protocol.augment)

        def init(key, lr):
            variables = init_model(module, key, image_shape)
            return variables, _set_lr(tx.init(variables["params"]), lr)

        if many:
            step = jax.vmap(step, in_axes=(0, 0, 0, 0, 0))
            init = jax.vmap(init, in_axes=(0, None))
        _CACHE[cache_key] = _Compiled(jax.jit(init), jax.jit(step), tx)
    return _CACHE[cache_key]


@functools.partial(jax.jit, static_argnums=(2, 3))
def epoch_plan(k_run: jax.Array, epoch, n: int, steps_per_epoch: int) -> tuple[jax.Array, jax.Array]:
    """The shuffles and step keys of one epoch for K networks, in one compiled call: (perms (K, n), step keys
    (steps_per_epoch, K)); network i's epoch key is fold_in(k_run[i], epoch), step s's key fold_in(that, s + 1).
    (Built eagerly, these vmaps cost tens of ms per epoch: as much as a small network's training step.)"""
    ek = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(k_run)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(ek)
    sks = jnp.stack([jax.vmap(lambda k: jax.random.fold_in(k, s + 1))(ek) for s in range(steps_per_epoch)])
    return perms, sks


def default_group(num_networks: int) -> int:
    """How many networks ``train_many`` trains in one vmapped program by default: all of them on GPU/TPU; one at
    a time on CPU, where vmapping a convolution over per-network weights turns it into a grouped convolution that
    XLA:CPU runs about 3x slower per network than K separate programs (experiments/bench/results/bench_dm.md); with the
    Winograd convolution 10 vmapped networks were 1.5x slower per network; with ``"fused"`` they are as fast (70
    vs 72 s per 300 epochs in bench_vs_reference.md, 66 vs 72 s a day earlier), and one at a
    time needs a tenth of the activation memory."""
    return num_networks if jax.default_backend() != "cpu" else 1


def train_many(keys: jax.Array, module: nn.Module, x: jax.Array, y: jax.Array, protocol: TrainProtocol,
               variables: PyTree | None = None, progress: Callable[[int], None] | None = None,
               group: int | None = None) -> PyTree:
    """Train K fresh networks (one per key, vmapped) on (x, y) with ``protocol``; returns stacked variables.

    keys: (K,) PRNG keys. x: (n, h, w, c), y: (n,) or (n, k). Each network gets its own init, shuffles and
    augmentation draws. ``variables`` (stacked, leading K) starts from given weights instead of fresh ones.
    ``group``: networks per vmapped program (default ``default_group(K)``); the networks run group by group. A
    network's training depends only on its key, not on the grouping (same function; the bits can differ in the
    last place between groupings because a vmapped program is compiled differently).
    """
    n = x.shape[0]
    if n == 0:
        raise JaxddError("cannot train on an empty set")
    num = keys.shape[0]
    group = default_group(num) if group is None else int(group)
    if group < 1:
        raise JaxddError(f"group must be >= 1, got {group}")
    if group < num:
        parts = [train_many(keys[i:i + group], module, x, y, protocol, progress=progress, group=group,
                            variables=None if variables is None else jax.tree.map(lambda a: a[i:i + group], variables))
                 for i in range(0, num, group)]
        return jax.tree.map(lambda *a: jnp.concatenate(a), *parts)
    comp = _compiled(module, protocol, x.shape[1:], many=True)
    k_init, k_run = jax.vmap(lambda k: jax.random.split(k))(keys).transpose(1, 0)
    fresh, opt_state = comp.init(k_init, protocol.lr)
    if variables is None:
        variables = fresh
    bs = min(protocol.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    for epoch in range(protocol.epochs + 1):
        perms, sks = epoch_plan(k_run, epoch, n, steps_per_epoch)
        for s in range(steps_per_epoch):
            idx = perms[:, s * bs:(s + 1) * bs]
            variables, opt_state, _ = comp.step(variables, opt_state, x[idx], y[idx], sks[s])
        if epoch == protocol.decay_after_epoch:
            opt_state = jax.vmap(lambda p: _set_lr(comp.tx.init(p), protocol.lr * 0.1))(variables["params"])
        if progress is not None:
            progress(epoch)
    return variables


def train(key: PRNGKey, module: nn.Module, x: jax.Array, y: jax.Array, protocol: TrainProtocol,
          variables: PyTree | None = None) -> PyTree:
    """Train one network (``train_many`` with K = 1, unstacked)."""
    stacked = None if variables is None else jax.tree.map(lambda a: a[None], variables)
    out = train_many(key[None], module, x, y, protocol, variables=stacked)
    return jax.tree.map(lambda a: a[0], out)


def predict_many(module: nn.Module, variables: PyTree, x: jax.Array, batch_size: int = 250,
                 group: int | None = None) -> jax.Array:
    """Logits of K stacked networks on x, in chunks: (K, n, num_classes). Eval mode (running BN statistics).

    ``group``: networks per vmapped forward (default ``default_group(K)``: all on GPU/TPU, one on CPU)."""
    num = jax.tree.leaves(variables)[0].shape[0]
    group = default_group(num) if group is None else int(group)
    fwd = _predict_fn(module)
    rows = []
    for g in range(0, num, group):
        sub = jax.tree.map(lambda a: a[g:g + group], variables)
        rows.append(jnp.concatenate([fwd(sub, x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)],
                                    axis=1))
    return jnp.concatenate(rows, axis=0)


_PRED: dict[Any, Callable] = {}


def _predict_fn(module):
    if module not in _PRED:
        _PRED[module] = jax.jit(jax.vmap(lambda v, x: apply_model(module, v, x, train=False).logits,
                                         in_axes=(0, None)))
    return _PRED[module]


# --------------------------------------------------------------------------------------------------------------
# Differentiable unrolled SGD (meta-gradients)

MEMORY_STRATEGIES = ("full", "remat")


def unroll_sgd(step_loss: Callable[[PyTree, Any], jax.Array], params: PyTree, xs: Any, lrs: jax.Array, *,
               memory: str = "full", checkpoint_every: int = 1, unroll: int = 1) -> PyTree:
    """N plain SGD steps ``p_{k+1} = p_k - lrs[k] * grad step_loss(p_k, xs[k])``, differentiable end to end.

    step_loss: (params, x_k) -> scalar, where x_k is the k-th slice of the pytree ``xs`` (leading axis N; e.g. a
    minibatch, indices, or keys). lrs: (N,) per-step learning rates (or a scalar). memory: ``"full"`` keeps every
    step's residuals for the backward pass (memory linear in N); ``"remat"`` wraps blocks of ``checkpoint_every``
    steps in ``jax.checkpoint`` so only block boundaries are stored and the block is recomputed in the backward
    pass (memory ~ N / checkpoint_every + checkpoint_every steps). Both give the same gradient.
    """
    if memory not in MEMORY_STRATEGIES:
        raise JaxddError(f"memory must be one of {MEMORY_STRATEGIES}, got {memory!r}")
    n = jax.tree.leaves(xs)[0].shape[0]
    lrs = jnp.broadcast_to(jnp.asarray(lrs), (n,))

    def one(p, inp):
        x, lr = inp
        g = jax.grad(step_loss)(p, x)
        return jax.tree.map(lambda a, b: a - lr * b, p, g), None

    if memory == "full":
        return jax.lax.scan(one, params, (xs, lrs), unroll=unroll)[0]
    k = int(checkpoint_every)
    if k < 1 or n % k:
        raise JaxddError(f"checkpoint_every={k} must be >= 1 and divide the number of steps {n}")
    blocks = jax.tree.map(lambda a: a.reshape(n // k, k, *a.shape[1:]), (xs, lrs))

    @jax.checkpoint
    def block(p, inp):
        return jax.lax.scan(one, p, inp, unroll=unroll)[0], None

    return jax.lax.scan(block, params, blocks)[0]
