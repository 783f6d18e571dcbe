"""MTT: matching training trajectories (Cazenavette et al., CVPR 2022; docs/methods.md section 5), with the memory of
the meta-gradient a setting.

Per call: draw an expert e and a start epoch t < max_start_epoch from the key; theta_0 = theta*_{e,t}, target
theta*_{e,t+M} (M = expert_epochs), both streamed from the expert buffer on disk (``jaxdd.objectives.trajectory.experts``). The student
takes N = syn_steps plain SGD steps on minibatches of ``batch_syn`` synthetic images (a fresh permutation of the set,
cycled; DSA non-Siamese, a fresh draw per step), with the learned inner learning rate alpha::

    theta_{k+1} = theta_k - alpha * grad CE(f_theta_k(A_k(X[idx_k])), y[idx_k])
    L = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2      (sums over all parameters)

alpha is a synthetic learnable (``syn.extras["syn_lr"]``; its optimiser lr is ``DistillConfig.lrs``'s
``extras/syn_lr``), used as is (``lr_param="raw"``, MTT) or through softplus (``lr_param="softplus"``, a labelled
jaxdd extension that keeps alpha positive). The learned alpha is written to the artifact as ``eval_lr``, which
``evaluate_run`` trains with.

Memory strategies for the meta-gradient (all exact except "tesla"):

- ``"full"``: ``lax.scan`` keeps every step's residuals (activations of the double backward): memory ~ N.
- ``"remat"``: ``jax.checkpoint`` around blocks of ``remat_every`` steps: block boundaries are stored, a block is
  recomputed in the backward pass.
- ``"constant"``: ``unroll_sgd_adjoint``, a ``jax.custom_vjp``: the forward pass stores only the N parameter
  vectors theta_k (no activations); the backward pass sweeps k = N-1..0 and at each step takes the VJP of that single
  SGD step with respect to (theta_k, synthetic data, alpha), recomputing the step's graph: the adjoint of theta is
  propagated through the step (the Hessian-vector term) and the data/alpha cotangents are accumulated. This is
  reverse-mode autodiff through the loop with per-step recomputation, so it is exact; peak memory is one step's
  graph plus N*P floats for the stored parameters.
- ``"tesla"``: the approximation of TESLA's published code (docs/methods.md section 8): the same sweep without
  propagating the adjoint through the steps (every step sees the final adjoint 2(theta_N - theta*)/D0), i.e. the
  Hessian-vector terms through later steps are dropped. Not exact; ``tests/test_trajectory.py`` and
  ``experiments/bench_mtt_memory.py`` measure its error against full unroll.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd import augment as aug
from jaxdd.objectives.base import Objective, Synthetic, no_init
from jaxdd.types import Batch, JaxddError, PyTree

MEMORY = ("full", "remat", "constant", "tesla")
LR_PARAMS = ("raw", "softplus")


# ----------------------------------------------------------------------------------------------------------------
# The exact constant-memory unroll


def _zero_cotangent(a):
    a = np.asarray(a) if not isinstance(a, jax.Array) else a
    if jnp.issubdtype(a.dtype, jnp.inexact):
        return jnp.zeros_like(a)
    return np.zeros(a.shape, jax.dtypes.float0)


def _tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)


def unroll_sgd_adjoint(step_loss: Callable[[PyTree, PyTree, PyTree, Any], jax.Array], params: PyTree,
                       data: PyTree, consts: PyTree, xs: Any, lr: jax.Array, *, exact: bool = True) -> PyTree:
    """N plain SGD steps ``p_{k+1} = p_k - lr * grad_p step_loss(p_k, data, consts, xs[k])`` with a bounded-memory
    reverse pass.

    Differentiable with respect to ``params``, ``data`` (a pytree of float arrays, e.g. the synthetic images) and
    ``lr`` (a scalar); ``consts`` (e.g. integer labels) and ``xs`` (per-step minibatch indices and raw key data,
    leading axis N) are not differentiated. ``step_loss`` must not close over traced values: pass them as ``data``
    or ``consts``.

    The forward pass stores the N parameter pytrees p_0..p_{N-1} only. The backward pass runs a reverse
    ``lax.scan``: at step k it recomputes that step's graph and applies its VJP to the adjoint of p_{k+1}, giving the
    adjoint of p_k (``exact=True``) and this step's contribution to the data and lr cotangents. ``exact=False``
    keeps the adjoint fixed at its final value (TESLA's published approximation, which drops the Hessian-vector terms
    through later steps).
    """

    def step(p, d, c, lr_, x):
        g = jax.grad(step_loss)(p, d, c, x)
        return jax.tree.map(lambda a, b: a - lr_ * b, p, g)

    @jax.custom_vjp
    def run(p, d, c, lr_, xs_):
        return jax.lax.scan(lambda q, x: (step(q, d, c, lr_, x), None), p, xs_)[0]

    def fwd(p, d, c, lr_, xs_):
        def body(q, x):
            return step(q, d, c, lr_, x), q

        p_n, ps = jax.lax.scan(body, p, xs_)
        return p_n, (ps, d, c, lr_, xs_)

    def bwd(res, ct):
        ps, d, c, lr_, xs_ = res

        def body(carry, inp):
            ct_p, ct_d, ct_lr = carry
            p_k, x = inp
            _, vjp = jax.vjp(lambda q, dd, ll: step(q, dd, c, ll, x), p_k, d, lr_)
            c_p, c_d, c_lr = vjp(ct_p)
            return ((c_p if exact else ct_p), _tree_add(ct_d, c_d), ct_lr + c_lr), None

        init = (ct, jax.tree.map(jnp.zeros_like, d), jnp.zeros_like(lr_))
        (ct_p0, ct_d, ct_lr), _ = jax.lax.scan(body, init, (ps, xs_), reverse=True)
        return (ct_p0, ct_d, jax.tree.map(_zero_cotangent, c), ct_lr, jax.tree.map(_zero_cotangent, xs_))

    run.defvjp(fwd, bwd)
    return run(params, data, consts, jnp.asarray(lr, jnp.result_type(float)), xs)


def unroll_student(step_loss: Callable[[PyTree, PyTree, PyTree, Any], jax.Array], params: PyTree, data: PyTree,
                   consts: PyTree, xs: Any, lr: jax.Array, *, memory: str = "constant",
                   remat_every: int = 1) -> PyTree:
    """The student's N SGD steps with the chosen memory strategy (see the module docstring); same result for all."""
    from jaxdd.train import unroll_sgd

    if memory not in MEMORY:
        raise JaxddError(f"memory must be one of {MEMORY}, got {memory!r}")
    if memory in ("constant", "tesla"):
        return unroll_sgd_adjoint(step_loss, params, data, consts, xs, lr, exact=memory == "constant")
    return unroll_sgd(lambda p, x: step_loss(p, data, consts, x), params, xs, lr,
                      memory="full" if memory == "full" else "remat", checkpoint_every=remat_every)


def trajectory_distance(theta_n: jax.Array, start: jax.Array, target: jax.Array) -> jax.Array:
    """||theta_N - target||^2 / ||start - target||^2 for flat parameter vectors."""
    return jnp.sum(jnp.square(theta_n - target)) / jnp.sum(jnp.square(start - target))


def minibatch_indices(key, n: int, steps: int, batch: int) -> jax.Array:
    """(steps, batch) indices: consecutive chunks of fresh permutations of range(n) (MTT's cycling sampler)."""
    reps = math.ceil(steps * batch / n)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, reps))
    return perms.reshape(-1)[: steps * batch].reshape(steps, batch)


def make_step_loss(module, rest: PyTree, unravel: Callable, strategy: str | None) -> Callable:
    """CE of the student (flat params theta) on minibatch ``idx`` of the synthetic set, DSA-augmented with the
    step's own key (non-Siamese). data: {"x": (n,h,w,c)[, "y": (n,K) soft]}; consts: {"y": (n,) int} or {}.
    x_k = (idx (B,), raw key data)."""
    from jaxdd.models import apply_model
    from jaxdd.train import cross_entropy

    def step_loss(theta, data, consts, xk):
        idx, kraw = xk
        x = data["x"][idx]
        y = (data["y"] if "y" in data else consts["y"])[idx]
        if strategy:
            x = aug.dsa(x, jax.random.wrap_key_data(kraw), strategy, siamese=False)
        out = apply_model(module, {"params": unravel(theta), **rest}, x, train=True)
        return cross_entropy(out.logits, y)

    return step_loss


def lr_value(raw: jax.Array, lr_param: str) -> jax.Array:
    return jax.nn.softplus(raw) if lr_param == "softplus" else raw


def lr_raw(lr: float, lr_param: str) -> float:
    """The stored value of the learnable for an initial inner lr (inverse softplus when ``lr_param="softplus"``)."""
    if lr_param == "softplus":
        return float(lr + math.log(-math.expm1(-lr)))
    return float(lr)


# ----------------------------------------------------------------------------------------------------------------
# The objective


def mtt(module, num_classes: int, buffer, *, syn_steps: int = 20, expert_epochs: int = 3, max_start_epoch: int = 25,
        batch_syn: int = 0, memory: str = "constant", remat_every: int = 1, strategy: str | None = aug.DSA_DEFAULT,
        lr_teacher: float = 0.01, lr_param: str = "raw", image_shape: tuple[int, int, int] | None = None,
        conv_impl: str | None = "auto") -> Objective:
    """The MTT objective. ``module``: the student network; ``buffer``: an ``jaxdd.objectives.trajectory.experts.ExpertBuffer`` of experts
    of the same architecture. ``batch_syn`` 0 = the whole set per step. conv_impl "auto": the student's convolutions
    ``"fused"`` on CPU (fast inside the unrolled scan), ``"xla"`` on accelerators, for the jaxdd ConvNet/ResNet
    families (""/None: the module's own). The defaults are the code's flag defaults; the driver settings (lr_img
    1000, lr of the learned inner lr 1e-5, 5000 iterations) are ``jaxdd.methods.get_method("mtt").defaults``."""
    from jax.flatten_util import ravel_pytree

    from jaxdd.objectives.trajectory.experts import param_layout
    from jaxdd.models import init_model, with_conv_impl

    module = with_conv_impl(module, conv_impl)

    if memory not in MEMORY:
        raise JaxddError(f"memory must be one of {MEMORY}, got {memory!r}")
    if lr_param not in LR_PARAMS:
        raise JaxddError(f"lr_param must be one of {LR_PARAMS}, got {lr_param!r}")
    if syn_steps < 1 or expert_epochs < 1 or max_start_epoch < 1 or batch_syn < 0:
        raise JaxddError("syn_steps, expert_epochs and max_start_epoch must be >= 1 and batch_syn >= 0 (0 = all)")
    if memory == "remat" and syn_steps % remat_every:
        raise JaxddError(f"remat_every={remat_every} must divide syn_steps={syn_steps}")
    if max_start_epoch - 1 + expert_epochs > buffer.epochs:
        raise JaxddError(f"max_start_epoch {max_start_epoch} + expert_epochs {expert_epochs} needs experts trained "
                         f"for at least {max_start_epoch - 1 + expert_epochs} epochs; the buffer has {buffer.epochs}")
    if strategy:
        aug.parse_strategy(strategy)
    shape = tuple(image_shape or buffer.meta["image_shape"])
    variables = init_model(module, jax.random.key(0), shape)
    flat, unravel = ravel_pytree(variables["params"])
    if param_layout(variables["params"]) != buffer.meta["layout"] or flat.size != buffer.num_params:
        raise JaxddError(f"the student network's parameters do not match the experts' ({buffer.meta['model']} "
                         f"{buffer.meta['model_kwargs']}): distil with the model the experts were trained with")
    rest = {k: v for k, v in variables.items() if k != "params"}
    step_loss = make_step_loss(module, rest, unravel, strategy or None)
    num_experts, p = buffer.num_experts, buffer.num_params
    out_shape = (jax.ShapeDtypeStruct((p,), jnp.float32),) * 2
    fetch = functools.partial(buffer.fetch, span=expert_epochs)

    def loss(syn: Synthetic, real: Batch, state, key):
        k_e, k_t, k_idx, k_aug = jax.random.split(key, 4)
        expert = jax.random.randint(k_e, (), 0, num_experts)
        start = jax.random.randint(k_t, (), 0, max_start_epoch)
        theta0, target = jax.pure_callback(fetch, out_shape, expert, start, vmap_method="broadcast_all")
        n = syn.x.shape[0]
        idx = minibatch_indices(k_idx, n, syn_steps, batch_syn or n)
        kraw = jax.random.key_data(jax.random.split(k_aug, syn_steps))
        soft = jnp.issubdtype(syn.y.dtype, jnp.floating)
        data = {"x": syn.x, "y": syn.y} if soft else {"x": syn.x}
        consts = {} if soft else {"y": syn.y}
        alpha = lr_value(syn.extras["syn_lr"], lr_param)
        theta_n = unroll_student(step_loss, theta0, data, consts, (idx, kraw), alpha, memory=memory,
                                 remat_every=remat_every)
        value = trajectory_distance(theta_n, theta0, target)
        return value, {"syn_lr": alpha, "start_epoch": start, "expert": expert}

    learn = {"syn_lr": jnp.asarray(lr_raw(lr_teacher, lr_param), jnp.float32)}
    return Objective("mtt", no_init, loss, real_per_class=0, learnables=learn)


# ----------------------------------------------------------------------------------------------------------------
# Registration


def student_module(model: str, num_classes: int, model_kwargs: dict, conv_impl: str):
    """The student network: ``model`` with ``conv_impl`` where the architecture has convolutions."""
    from jaxdd.models import get_model, with_conv_impl

    return with_conv_impl(get_model(model, num_classes, **model_kwargs), conv_impl)
