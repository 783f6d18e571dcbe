"""Functional training: losses, THE training loop, the evaluation protocol, and differentiable unrolled SGD.

- ``fit`` is the one training loop (a Python loop over one jitted step; nothing is differentiated through it):
  evaluation (``train_many``, ``train_protocol``), MTT's expert trajectories, SRe2L's teacher and relabelled
  students, and the experiment axis's evaluation (``jaxdd.protocols.multi.train_sets``) all train with it, each
  passing its step (``make_train_step``: loss, optimiser, augmentation; ``batched_step``: K networks vmapped, the
  batch gathered on device) and its per-epoch callback. Compiled programs live in one bounded cache (``compiled``).
  The loop lives on the host because XLA:CPU runs a convolution's weight gradient about 40x slower inside
  ``lax.scan`` than outside a loop (jax-ml/jax#12868). ``train_many`` trains K networks at once on an accelerator and
  one after the other on CPU by default (``default_group``).
- ``unroll_sgd`` (BPTT, MTT, anything differentiated through training): ``lax.scan`` over plain SGD steps, with
  the memory strategy a setting (``"full"`` or ``"remat"`` with ``jax.checkpoint`` every ``checkpoint_every``
  steps). Use a model with ``conv_impl="fused"`` (or ``"winograd"``, ``"vjp"``, ``"patches"``) there on CPU (see
  ``jaxdd.ops.conv``).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Any, Callable, Iterable, NamedTuple

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


# --------------------------------------------------------------------------------------------------------------
# The one training loop


_COMPILED: collections.OrderedDict = collections.OrderedDict()
MAX_COMPILED = 64  # compiled programs kept (least recently used evicted): one bounded cache for every caller


def compiled(key: Any, build: Callable[[], Any]) -> Any:
    """The cached value of ``build()`` under the hashable ``key`` (jitted steps, inits, forwards): the one place
    compiled programs are kept, bounded by ``MAX_COMPILED`` so long sweeps do not accumulate them."""
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    value = _COMPILED[key] = build()
    if len(_COMPILED) > MAX_COMPILED:
        _COMPILED.popitem(last=False)
    return value


def make_train_step(module: nn.Module, tx: optax.GradientTransformation, augment: str | Callable | None = None,
                    loss: Callable[[jax.Array, Any], jax.Array] = cross_entropy,
                    targets: Callable[[Any, jax.Array, jax.Array], Any] | None = None):
    """A pure step ``(variables, opt_state, x, y, key, aux) -> (variables, opt_state, loss)`` for one network.

    augment: None, a training-augmentation string (``aug.train_augment``: a DSA strategy or ``"dc:..."``) or a
    function ``(x, key) -> x``. loss(logits, target) (default cross-entropy with hard or soft labels); ``target`` is
    ``y``, or ``targets(aux, x_augmented, y)`` (e.g. a teacher's logits on the augmented batch, with the teacher's
    variables passed as ``aux``)."""
    if isinstance(augment, str):
        strategy = augment
        augment = lambda x, key: aug.train_augment(x, key, strategy)  # noqa: E731

    def step(variables, opt_state, x, y, key, aux=None):
        if augment:
            x = augment(x, key)
        target = y if targets is None else targets(aux, x, y)
        rest = {k: v for k, v in variables.items() if k != "params"}

        def loss_fn(params):
            out = apply_model(module, {"params": params, **rest}, x, train=True)
            return loss(out.logits, target), out.variables

        (value, new_vars), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        updates, opt_state = tx.update(grads, opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], updates)
        return {**new_vars, "params": params}, opt_state, value

    return step


def batched_step(step: Callable, *, stacked: bool = True, per_network: bool = False) -> Callable:
    """jit of ``(variables, opt_state, x, y, idx, key, aux) -> (variables, opt_state, loss)``: the batch
    ``x[idx], y[idx]`` is gathered inside the program. ``stacked``: K networks (leading axis of variables, opt_state,
    idx, key; vmapped); ``per_network``: x, y hold one set per network (M, n, ...) instead of one shared set."""
    def one(variables, opt_state, x, y, idx, key, aux):
        return step(variables, opt_state, x[idx], y[idx], key, aux)

    if stacked:
        data = 0 if per_network else None
        one = jax.vmap(one, in_axes=(0, 0, data, data, 0, 0, None))
    return jax.jit(one)


@functools.partial(jax.jit, static_argnums=(2, 3))
def epoch_plan(k_run: jax.Array, epoch, n: int, steps_per_epoch: int) -> tuple[jax.Array, jax.Array]:
    """The shuffles and step keys of one epoch for K networks, in one compiled call: (perms (K, n), step keys
    (steps_per_epoch, K)); network i's epoch key is fold_in(k_run[i], epoch), step s's key fold_in(that, s + 1).
    (Built eagerly, these vmaps cost tens of ms per epoch: as much as a small network's training step.)"""
    ek = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(k_run)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(ek)
    sks = jnp.stack([jax.vmap(lambda k: jax.random.fold_in(k, s + 1))(ek) for s in range(steps_per_epoch)])
    return perms, sks


def fit(run: Callable, variables: PyTree, opt_state: PyTree, x: jax.Array, y: jax.Array, k_run: jax.Array, *,
        epochs: Iterable[int], batch_size: int, stacked: bool = True, per_network: bool = False,
        drop_last: bool = False, aux: Any = None,
        on_epoch: Callable[[int, PyTree, PyTree, list], PyTree | None] | None = None) -> tuple[PyTree, PyTree]:
    """THE training loop: evaluation, expert trajectories, teacher fitting, relabelling and the experiment axis all
    train with it; each caller passes its step (``batched_step(make_train_step(...))``: loss, optimiser,
    augmentation) and its per-epoch callback.

    Epoch e shuffles network i's examples with ``permutation(fold_in(k_run[i], e), n)`` and gives step s the key
    ``fold_in(fold_in(k_run[i], e), s + 1)`` (``epoch_plan``), so a network's training depends only on its key.
    ``stacked``: K networks with a leading axis (k_run (K,)); otherwise one network (k_run one key). Batches of
    ``batch_size`` (at most n); the last partial batch is kept, or dropped with ``drop_last``.
    ``on_epoch(epoch, variables, opt_state, losses)`` runs after each epoch (losses: that epoch's per-step losses,
    device arrays); it may return a new opt_state (e.g. a learning-rate decay) or None.
    Returns (variables, opt_state)."""
    n = x.shape[1] if per_network else x.shape[0]
    if n == 0:
        raise JaxddError("cannot train on an empty set")
    bs = min(batch_size, n)
    steps = n // bs if drop_last else math.ceil(n / bs)
    keys = k_run if stacked else k_run[None]
    for epoch in epochs:
        perms, sks = epoch_plan(keys, epoch, n, steps)
        if not stacked:
            perms, sks = perms[0], sks[:, 0]
        losses = []
        for s in range(steps):
            variables, opt_state, loss = run(variables, opt_state, x, y, perms[..., s * bs:(s + 1) * bs], sks[s], aux)
            losses.append(loss)
        if on_epoch is not None:
            new = on_epoch(epoch, variables, opt_state, losses)
            opt_state = opt_state if new is None else new
    return variables, opt_state


# --------------------------------------------------------------------------------------------------------------
# The evaluation protocol


class ProtocolPrograms(NamedTuple):
    init: Callable  # (keys (K,), lr) -> (variables, opt_state), stacked
    run: Callable  # the batched step (``batched_step``)
    reinit: Callable  # (params, lr) -> a fresh opt_state at lr (the decay restarts the momentum, as the DD code)


def protocol_programs(module: nn.Module, protocol: TrainProtocol, image_shape, per_network: bool = False
                      ) -> ProtocolPrograms:
    """The vmapped init ``(keys, lr) -> (variables, opt_state)`` and step of ``protocol`` for K networks, cached."""
    def build():
        tx = sgd(protocol.momentum, protocol.weight_decay)

        def init(key, lr):
            variables = init_model(module, key, image_shape)
            return variables, _set_lr(tx.init(variables["params"]), lr)

        run = batched_step(make_train_step(module, tx, protocol.augment), per_network=per_network)
        reinit = jax.vmap(lambda p, lr: _set_lr(tx.init(p), lr), in_axes=(0, None))
        return ProtocolPrograms(jax.jit(jax.vmap(init, in_axes=(0, None))), run, jax.jit(reinit))

    return compiled(("protocol", module, protocol.momentum, protocol.weight_decay, protocol.augment,
                     tuple(image_shape), per_network), build)


def default_group(num_networks: int) -> int:
    """How many networks ``train_many`` trains in one vmapped program by default: all of them on GPU/TPU; one at
    a time on CPU, where vmapping a convolution over per-network weights turns it into a grouped convolution that
    XLA:CPU runs about 3x slower per network than K separate programs (experiments/bench/results/bench_dm.md); with the
    Winograd convolution 10 vmapped networks were 1.5x slower per network; with ``"fused"`` they are as fast (70
    vs 72 s per 300 epochs in bench_vs_reference.md, 66 vs 72 s a day earlier), and one at a
    time needs a tenth of the activation memory."""
    return num_networks if jax.default_backend() != "cpu" else 1


def train_protocol(keys: jax.Array, module: nn.Module, x: jax.Array, y: jax.Array, protocol: TrainProtocol, *,
                   variables: PyTree | None = None, per_network: bool = False,
                   progress: Callable[[int], None] | None = None) -> PyTree:
    """K fresh networks (one per key) trained with ``protocol`` in one vmapped program; returns stacked variables.
    ``per_network``: x (K, n, ...), y (K, n[, k]): network i trains on its own set."""
    comp = protocol_programs(module, protocol, x.shape[2:] if per_network else x.shape[1:], per_network)
    k_init, k_run = jax.vmap(lambda k: jax.random.split(k))(keys).transpose(1, 0)
    fresh, opt_state = comp.init(k_init, protocol.lr)

    def on_epoch(epoch, variables, opt_state, losses):
        if progress is not None:
            progress(epoch)
        if epoch == protocol.decay_after_epoch:
            return comp.reinit(variables["params"], protocol.lr * 0.1)

    variables, _ = fit(comp.run, fresh if variables is None else variables, opt_state, x, y, k_run,
                       epochs=range(protocol.epochs + 1), batch_size=protocol.batch_size, per_network=per_network,
                       on_epoch=on_epoch)
    return variables


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
    if x.shape[0] == 0:
        raise JaxddError("cannot train on an empty set")
    num = keys.shape[0]
    group = default_group(num) if group is None else int(group)
    if group < 1:
        raise JaxddError(f"group must be >= 1, got {group}")
    parts = [train_protocol(keys[i:i + group], module, x, y, protocol, progress=progress,
                            variables=None if variables is None else jax.tree.map(lambda a: a[i:i + group], variables))
             for i in range(0, num, group)]
    return parts[0] if len(parts) == 1 else jax.tree.map(lambda *a: jnp.concatenate(a), *parts)


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
    fwd = compiled(("predict", module), lambda: jax.jit(jax.vmap(
        lambda v, x: apply_model(module, v, x, train=False).logits, in_axes=(0, None))))
    rows = []
    for g in range(0, num, group):
        sub = jax.tree.map(lambda a: a[g:g + group], variables)
        rows.append(jnp.concatenate([fwd(sub, x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)],
                                    axis=1))
    return jnp.concatenate(rows, axis=0)


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
