"""BPTT performance matching: the original dataset distillation (Wang, Zhu, Torralba, Efros 2018; docs/methods.md 6).

The synthetic set is cut into ``steps`` class-balanced batches (``ipc // steps`` images of every class each). From a
fresh random initialisation theta_0 (drawn from the step key: the paper's "unknown init"), ``T = steps * epochs``
plain SGD steps are unrolled, cycling through the batches,

    theta_{t+1} = theta_t - eta_t * grad CE(f_theta_t(batch_{t mod steps}))        eta_t = softplus(raw_lr_t)

and the loss is the cross-entropy of f_theta_T on a real batch (eval mode). Its gradient with respect to the images,
the per-step learning rates (learned: ``syn.extras["raw_lr"]``, shape (T,), init softplus^-1(0.02)) and, with
``DistillConfig.learn_labels``, the labels (used directly as the inner-loss targets, -sum_k y_k log p_k) is the exact
meta-gradient through all T steps (``jaxdd.train.unroll_sgd``; ``memory="remat"`` recomputes blocks of
``remat_every`` steps in the backward pass instead of storing them: same gradient, memory ~ T/k + k steps).
``nets`` initialisations are vmapped and their losses averaged.

Differences from the reference code: it backpropagates with a hand-written reverse pass of Hessian-vector products;
here reverse-mode autodiff of a ``lax.scan`` computes the same gradient. Batch-norm models are refused (the final
eval-mode loss would use the initial running statistics); use an instance-norm model.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdd.models import apply_model, has_batch_stats, init_model, with_conv_impl
from jaxdd.objectives.base import Objective, Synthetic, no_init
from jaxdd.train import MEMORY_STRATEGIES, cross_entropy, unroll_sgd
from jaxdd.types import Batch, JaxddError


def softplus_inverse(y: float) -> float:
    """raw such that softplus(raw) = y (> 0)."""
    return float(jnp.log(jnp.expm1(jnp.asarray(y, jnp.float32))))


def step_batches(x: jax.Array, y: jax.Array, num_classes: int, steps: int):
    """Cut a class-major set (K*m, ...) into ``steps`` class-balanced batches: (steps, K*(m//steps), ...)."""
    m = x.shape[0] // num_classes
    per = m // steps

    def cut(a):
        a = a.reshape(num_classes, steps, per, *a.shape[1:])
        a = jnp.moveaxis(a, 1, 0)
        return a.reshape(steps, num_classes * per, *a.shape[3:])

    return cut(x), cut(y)


def bptt(module: nn.Module, num_classes: int, image_shape: tuple[int, int, int], ipc: int, *, steps: int = 0,
         epochs: int = 3, real_per_class: int = 100, memory: str = "full", remat_every: int = 1, nets: int = 1,
         init_lr: float = 0.02, conv_impl: str | None = "auto") -> Objective:
    """The BPTT objective for a synthetic set of ``ipc`` images per class (see the module docstring).

    steps: inner batches (0 = ``ipc``, i.e. one image per class per step as in the paper); must divide ``ipc``.
    epochs: passes over the batches (T = steps * epochs). real_per_class: real images per class of the outer loss.
    conv_impl "auto": ``"fused"`` on CPU (fast inside the unrolled scan), ``"xla"`` on accelerators, for the jaxdd
    ConvNet/ResNet families (""/None: the module's own). The driver settings of the paper (Adam 0.01, noise init)
    are ``jaxdd.methods.get_method("bptt").defaults``.
    """
    module = with_conv_impl(module, conv_impl)
    steps = steps or ipc
    if steps < 1 or ipc % steps:
        raise JaxddError(f"steps={steps} must be >= 1 and divide the images per class ({ipc})")
    if epochs < 1 or nets < 1 or real_per_class < 1:
        raise JaxddError(f"need epochs, nets and real_per_class >= 1, got {epochs}, {nets}, {real_per_class}")
    if memory not in MEMORY_STRATEGIES:
        raise JaxddError(f"memory must be one of {MEMORY_STRATEGIES}, got {memory!r}")
    if init_lr <= 0:
        raise JaxddError(f"init_lr must be > 0, got {init_lr}")
    total = steps * epochs
    if memory == "remat" and (remat_every < 1 or total % remat_every):
        raise JaxddError(f"remat_every={remat_every} must divide the number of unrolled steps {total} "
                         f"(= steps {steps} x epochs {epochs})")
    probe = init_model(module, jax.random.key(0), image_shape)
    if has_batch_stats(probe):
        raise JaxddError("BPTT does not support batch-norm models (the final eval-mode loss would use untrained "
                         "running statistics); use an instance-norm model such as ConvNet")

    def step_loss(params, batch):
        x, y = batch
        return cross_entropy(apply_model(module, {"params": params}, x, train=True).logits, y)

    def loss(syn: Synthetic, real: Batch, state, key):
        xb, yb = step_batches(syn.x, syn.y, num_classes, steps)
        seq = jnp.arange(total) % steps
        xs = (xb[seq], yb[seq])
        lrs = jax.nn.softplus(syn.extras["raw_lr"])

        def one(k):
            params = init_model(module, k, image_shape)["params"]
            params = jax.tree.map(lambda a: a.astype(syn.x.dtype), params)
            final = unroll_sgd(step_loss, params, xs, lrs, memory=memory, checkpoint_every=remat_every)
            logits = apply_model(module, {"params": final}, real.x, train=False).logits
            return cross_entropy(logits, real.y), jnp.mean(jnp.argmax(logits, -1) == real.y)

        losses, accs = jax.vmap(one)(jax.random.split(key, nets))
        return jnp.mean(losses), {"real_acc": jnp.mean(accs), "inner_lr_mean": jnp.mean(lrs)}

    learnables = {"raw_lr": jnp.full((total,), softplus_inverse(init_lr), jnp.float32)}
    return Objective("bptt", no_init, loss, real_per_class=real_per_class, learnables=learnables)
