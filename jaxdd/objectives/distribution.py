"""DM: distribution matching (Zhao & Bilen, WACV 2023; docs/methods.md section 4).

Every call draws a fresh randomly initialised network (parameters frozen, train mode) and matches, per class, the
mean embedding psi (the flattened last-block features) of the synthetic images against that of a batch of real
images of the same class, both augmented with the same Siamese DSA draw (one draw per class):

    L = sum_c || mean_i psi(A_wc(x_ci)) - mean_j psi(A_wc(s_cj)) ||^2

Batch-norm models send all classes through one forward per side, so they mix classes in their batch statistics
exactly as the reference code does. For other models (instance norm: the classes are independent) the real side is
embedded ``class_batch`` classes per forward (``lax.map``; the same numbers): on XLA:CPU one class at a time is
faster than one 2560-image forward, whose activations (1.3 GB a layer) stream through memory
(experiments/bench/PROFILE.md); option ``class_batch`` (-1 = 1 on CPU, all classes on accelerators).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdd import augment as aug
from jaxdd.models import apply_model, has_batch_stats, init_model, with_conv_impl
from jaxdd.objectives.base import Objective, Synthetic, auto_class_batch, no_init
from jaxdd.types import Batch, JaxddError


def per_class_siamese_dsa(syn_x: jax.Array, real_x: jax.Array, key, num_classes: int, strategy: str | None):
    """Augment class-major syn and real batches with one Siamese DSA draw per class (shared by both sides).

    syn_x: (K*m, h, w, c), real_x: (K*n, h, w, c). Returns the two augmented arrays, same shapes."""
    if not strategy:
        return syn_x, real_x
    keys = jax.random.split(key, num_classes)

    def by_class(x):
        xc = x.reshape(num_classes, -1, *x.shape[1:])
        return jax.vmap(lambda a, k: aug.dsa(a, k, strategy, siamese=True))(xc, keys).reshape(x.shape)

    return by_class(syn_x), by_class(real_x)


def class_mean_embeddings(module: nn.Module, variables, x: jax.Array, num_classes: int,
                          class_batch: int = 0) -> jax.Array:
    """(K, d) per-class means of the embedding of a class-major batch x (K*m, h, w, c), train-mode forward.

    class_batch: classes per forward (``lax.map``; 0 = all in one). Batch-norm models always take one forward."""
    def class_means(xb, k):
        emb = apply_model(module, variables, xb, train=True, features=True).features["embedding"]
        return emb.reshape(k, -1, emb.shape[-1]).mean(axis=1)

    if not 0 < class_batch < num_classes or has_batch_stats(variables):
        return class_means(x, num_classes)
    per_class = x.reshape(num_classes, -1, *x.shape[1:])
    return jax.lax.map(lambda xc: class_means(xc, 1)[0], per_class, batch_size=class_batch)


def dm(module: nn.Module, num_classes: int, *, strategy: str | None = aug.DSA_DEFAULT,
       real_per_class: int = 256, class_batch: int = -1, conv_impl: str | None = "auto") -> Objective:
    """The DM objective for ``module`` (a fresh random instance every call). ``strategy`` None disables DSA.

    The defaults are the paper's (256 real images per class, DSA ``color_crop_cutout_flip_scale_rotate``) and the
    backend's fast settings, which give the same numbers: class_batch -1 = one class per real-side forward on CPU,
    all at once on accelerators (0 = all; see the module docstring); conv_impl "auto" = ``"fused"`` on CPU and
    ``"xla"`` on accelerators for the jaxdd ConvNet/ResNet families (other modules are used as they are; "" or None
    keeps the module's own). The driver settings of the paper (lr_img 1, momentum 0.5, 20 000 iterations, real init)
    are ``jaxdd.methods.get_method("dm").defaults``."""
    module = with_conv_impl(module, conv_impl)
    class_batch = auto_class_batch(class_batch)
    if strategy:
        aug.parse_strategy(strategy)
    if real_per_class < 1:
        raise JaxddError(f"DM needs real images: real_per_class must be >= 1, got {real_per_class}")

    def loss(syn: Synthetic, real: Batch, state, key):
        k_model, k_aug = jax.random.split(key)
        variables = init_model(module, k_model, syn.x.shape[1:])
        sx, rx = per_class_siamese_dsa(syn.x, real.x, k_aug, num_classes, strategy)
        mu_syn = class_mean_embeddings(module, variables, sx, num_classes)
        mu_real = jax.lax.stop_gradient(class_mean_embeddings(module, variables, rx, num_classes, class_batch))
        per_class = jnp.sum(jnp.square(mu_real - mu_syn), axis=-1)
        return jnp.sum(per_class), {"dm_per_class_max": jnp.max(per_class)}

    return Objective("dm", no_init, loss, real_per_class=real_per_class)
