"""KIP: kernel inducing points (Nguyen, Chen, Lee, ICLR 2021; Nguyen et al., NeurIPS 2021; docs/methods.md 7).

Kernel ridge regression from the synthetic support set (X_s, Y_s) to a class-balanced real target batch (X_t, Y_t):

    Y_hat_t = K_ts (K_ss + lambda * tr(K_ss) / n_s * I)^(-1) Y_s        L = 0.5 * mean((Y_hat_t - Y_t)^2)

with centred one-hot labels (e_y - 1/K), lambda = 1e-6. Learned labels (``DistillConfig.learn_labels``) enter as
Y_s - 1/K. The prediction is invariant to a positive rescaling of the kernel, so no kernel normalisation is needed.

**Kernel.** The paper uses the infinite-width NTK/NNGP of google/neural-tangents. neural-tangents 0.6.5 (the latest
release) does not work with the pinned JAX 0.10.2: its package import needs TensorFlow (pulled in with tf2jax) and
its ``_src/empirical.py`` imports ``jax.core.Jaxpr``, which JAX 0.10 no longer exports. jaxdd therefore uses
**empirical kernels of a finite network**, drawn afresh from the step key every step (a Monte-Carlo estimate of the
expected finite-width kernel; ``fresh=False`` fixes one draw in the objective state):

- ``"ntk"``: the empirical NTK of output 0 of the network, K(x, x') = <d f_0(x)/d theta, d f_0(x')/d theta>
  (Jacobians by ``vmap(grad)``, so memory ~ (n_s + n_t) x #params floats: use a narrow kernel network);
- ``"nngp"``: the empirical NNGP / random-feature kernel of the embedding, K(x, x') = <psi(x), psi(x')> / d.

The solve uses a Cholesky factorisation (``assume_a="pos"``) in the synthetic set's dtype (float32 by default; the
Colab's x64 is not switched on globally).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from jaxdd.models import apply_model, init_model
from jaxdd.objectives.base import Objective, Synthetic
from jaxdd.types import Batch, JaxddError

KERNELS = ("ntk", "nngp")


def kernel_ridge_predict(k_ts: jax.Array, k_ss: jax.Array, y_s: jax.Array, reg: float = 1e-6) -> jax.Array:
    """K_ts (K_ss + reg * tr(K_ss) / n_s * I)^(-1) y_s. k_ts: (n_t, n_s), k_ss: (n_s, n_s), y_s: (n_s, k)."""
    n = k_ss.shape[0]
    a = k_ss + reg * jnp.trace(k_ss) / n * jnp.eye(n, dtype=k_ss.dtype)
    return k_ts @ jsl.solve(a, y_s, assume_a="pos")


def centred_labels(y: jax.Array, num_classes: int, dtype=jnp.float32) -> jax.Array:
    """e_y - 1/K for hard labels (n,), or y - 1/K for label vectors (n, K)."""
    y = jax.nn.one_hot(y, num_classes, dtype=dtype) if y.ndim == 1 else y.astype(dtype)
    return y - 1.0 / num_classes


def empirical_ntk_features(module: nn.Module, variables, x: jax.Array) -> jax.Array:
    """(n, P) Jacobian of output 0 of the network with respect to all its parameters, one row per image."""
    rest = {c: v for c, v in variables.items() if c != "params"}

    def f(params, xi):
        return apply_model(module, {"params": params, **rest}, xi[None], train=False).logits[0, 0]

    jac = jax.vmap(jax.grad(f), in_axes=(None, 0))(variables["params"], x)
    return jnp.concatenate([j.reshape(x.shape[0], -1) for j in jax.tree.leaves(jac)], axis=1)


def nngp_features(module: nn.Module, variables, x: jax.Array) -> jax.Array:
    """(n, d) embedding features / sqrt(d) of the network (eval mode)."""
    emb = apply_model(module, variables, x, train=False, features=True).features["embedding"]
    return emb / jnp.sqrt(emb.shape[-1])


def kip(module: nn.Module, num_classes: int, image_shape: tuple[int, int, int], *, kernel: str = "ntk",
        reg: float = 1e-6, real_per_class: int = 100, fresh: bool = True) -> Objective:
    """The KIP objective with an empirical kernel of ``module`` (see the module docstring).

    real_per_class: target images per class each step. fresh: a new random network (kernel) every step."""
    if kernel not in KERNELS:
        raise JaxddError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if real_per_class < 1:
        raise JaxddError(f"KIP needs a real target batch: real_per_class must be >= 1, got {real_per_class}")
    if reg < 0:
        raise JaxddError(f"the ridge parameter must be >= 0, got {reg}")
    feats = empirical_ntk_features if kernel == "ntk" else nngp_features

    def init(key):
        return () if fresh else init_model(module, key, image_shape)

    def loss(syn: Synthetic, real: Batch, state, key):
        variables = init_model(module, key, image_shape) if fresh else state
        variables = jax.tree.map(lambda a: a.astype(syn.x.dtype), variables)
        phi_s = feats(module, variables, syn.x)
        phi_t = jax.lax.stop_gradient(feats(module, variables, real.x))
        k_ss = phi_s @ phi_s.T
        k_ts = phi_t @ phi_s.T
        y_s = centred_labels(syn.y, num_classes, syn.x.dtype)
        y_t = centred_labels(real.y, num_classes, syn.x.dtype)
        pred = kernel_ridge_predict(k_ts, k_ss, y_s, reg)
        loss_value = 0.5 * jnp.mean(jnp.square(pred - y_t))
        return loss_value, {"target_acc": jnp.mean(jnp.argmax(pred, -1) == real.y)}

    return Objective("kip", init, loss, real_per_class=real_per_class)
