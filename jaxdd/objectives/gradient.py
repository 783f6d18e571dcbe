"""DC and DSA: gradient matching (Zhao, Mopuri, Bilen, ICLR 2021; Zhao & Bilen, ICML 2021; docs/methods.md 2 and 3).

Per class c, the gradient of the cross-entropy with respect to the network parameters theta on the synthetic images
of class c is matched to the (stop-gradient) gradient on a batch of real images of class c:

    L = sum_c D( grad_theta CE(f_theta(A_wc(S_c)), c), sg(grad_theta CE(f_theta(A_wc(B_c)), c)) )

with A the Siamese DSA augmentation (one draw w_c per class, shared by both sides; DSA only) and D the layer-wise
distance of :func:`layerwise_distance`. The per-class gradients are computed for all classes at once (``vmap`` over
classes; ``class_batch`` bounds how many classes are batched together on the real side, via ``lax.map``).

**Mapping of the paper's loops onto the driver.** The reference code runs, per iteration, a fresh network and
``outer_loop`` rounds of [match -> one synthetic update -> train the network ``inner_loop`` epochs on the current
synthetic set] (no training after the last round). The driver's ``distill_step`` makes exactly one synthetic update,
so one jaxdd step is one round: ``loss`` is the matching loss under the network held in the objective state, and
``update`` (after the synthetic update) either trains that network for ``inner_loop`` epochs on the updated synthetic
set or, after the ``outer_loop``-th round, replaces it with a fresh random network. Hence

    jaxdd steps (``iterations``) = paper iterations x outer_loop        (IPC 1: 1000; IPC 10: 10000 for the paper's 1000)

and ``aux["dc_round"]`` says which round a step was. The inner training (SGD, lr ``net_lr`` 0.01, no momentum, batch
256, DSA non-Siamese for DSA) is a ``lax.scan`` inside the jitted step. The registered methods build the network
with ``conv_impl="auto"`` by default (option ``conv_impl``; on CPU Winograd with the fused first block, the library
convolution on accelerators): XLA:CPU runs a convolution weight gradient ~40x slower inside scan (jax-ml/jax#12868),
and the per-class (vmapped) second-order gradients of the matching ran 6.3x faster with patches than with
``lax.conv`` (4.1 s vs 25.8 s for IPC 1, 8 real images/class, ConvNet-3 on 28x28, loaded 2-core CPU); "vjp"
(``lax.conv`` forward, matmul and forward-convolution gradients) is 16 % faster again than patches on a DC IPC-10
iteration, and "winograd" and "fused" faster again (experiments/bench/PROFILE.md). The implementations are numerically
equal and share the parameter tree. On CPU the real-side gradients run one class at a time (``class_batch`` -1 = 1
there): a DC IPC-10 iteration takes 239 s instead of 323 s with all 2560 images in one batch
(experiments/bench/PROFILE.md).

Batch-norm models: as in the reference, a train-mode forward of (up to) 16 real images per class sets the batch
statistics, which are then frozen (eval mode) for the matching.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdd import augment as aug
from jaxdd.models import apply_model, has_batch_stats, init_model, with_conv_impl
from jaxdd.objectives.base import Objective, Synthetic, auto_class_batch
from jaxdd.objectives.distribution import per_class_siamese_dsa
from jaxdd.ops import cosine_similarity
from jaxdd.types import Batch, JaxddError, PyTree

DISTANCES = ("ours", "mse", "cos")
# (outer_loop, inner_loop) by images per class [code: DC main.py]
PAPER_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
EPS = 1e-6


def paper_loops(ipc: int) -> tuple[int, int]:
    """The reference (outer_loop, inner_loop) for ``ipc`` images per class; other values must be given."""
    if ipc not in PAPER_LOOPS:
        raise JaxddError(f"the DC code defines (outer_loop, inner_loop) only for ipc in {sorted(PAPER_LOOPS)}; "
                         f"got ipc={ipc}: pass outer_loop and inner_loop explicitly (e.g. --outer-loop 10 "
                         f"--inner-loop 50)")
    return PAPER_LOOPS[ipc]


def _rows(g: jax.Array) -> jax.Array:
    """A flax parameter tensor as (rows, row_length) with one row per output unit.

    Flax kernels keep the output axis last (conv HWIO (kh, kw, in, out), dense (in, out), our LayerNorm affine
    (H, W, C)), so a row is one index of the last axis: the transposed flatten of the leading axes. This is the
    reference's (out, in*kh*kw) / (out, in) / (C, H*W) reshape of the PyTorch layouts."""
    return g.reshape(-1, g.shape[-1]).T


def _ours_tensor(gr: jax.Array, gs: jax.Array) -> jax.Array:
    if gr.ndim <= 1:  # biases, norm scales and shifts contribute nothing
        return jnp.zeros((), gr.dtype)
    return jnp.sum(1.0 - cosine_similarity(_rows(gr), _rows(gs), axis=-1, eps=EPS))


def layerwise_distance(g_real: PyTree, g_syn: PyTree, kind: str = "ours") -> jax.Array:
    """The DC gradient distance between two gradient pytrees of the same structure (docs/methods.md 2).

    ``"ours"``: sum over parameter tensors of sum over output rows of ``1 - <g_i, h_i> / (|g_i| |h_i| + 1e-6)``;
    1-D tensors contribute 0. ``"mse"``: squared Euclidean distance of the concatenated vectors. ``"cos"``:
    ``1 - <g, h> / (|g| |h| + 1e-6)`` of the concatenated vectors.

    A zero row (or vector) on either side (a dead unit, an unused input) has cosine 0, and the norms take the
    reference's ``torch.norm`` gradient 0 there (``jaxdd.ops.safe_norm``), so value and gradient stay finite and
    equal the reference's: a zero ``h_i`` gets the gradient ``-g_i / 1e-6``; any ``h_i`` against a zero ``g_i``
    gets 0."""
    lr, ls = jax.tree.leaves(g_real), jax.tree.leaves(g_syn)
    if len(lr) != len(ls):
        raise JaxddError("gradient trees differ in structure")
    if kind == "ours":
        return sum((_ours_tensor(a, b) for a, b in zip(lr, ls)), jnp.zeros(()))
    vr = jnp.concatenate([a.reshape(-1) for a in lr])
    vs = jnp.concatenate([b.reshape(-1) for b in ls])
    if kind == "mse":
        return jnp.sum(jnp.square(vr - vs))
    if kind == "cos":
        return 1.0 - cosine_similarity(vr, vs, axis=-1, eps=EPS)
    raise JaxddError(f"distance must be one of {DISTANCES}, got {kind!r}")


def _per_example_ce(logits: jax.Array, y: jax.Array) -> jax.Array:
    if y.ndim == 1:
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return optax.softmax_cross_entropy(logits, y)


def _class_major(a: jax.Array, k: int) -> jax.Array:
    return a.reshape(k, a.shape[0] // k, *a.shape[1:])


def train_on_set(module: nn.Module, variables: PyTree, x: jax.Array, y: jax.Array, key, *, epochs: int,
                 lr: float, batch_size: int = 256, strategy: str | None = None) -> PyTree:
    """``epochs`` epochs of plain SGD on (x, y) as one ``lax.scan`` (jittable; not meant to be differentiated).

    Every epoch is a fresh permutation cut into ceil(n / batch_size) batches; the last, shorter batch is padded
    and masked, so every batch has one static shape. ``strategy``: DSA applied non-Siamese per batch."""
    n = x.shape[0]
    bs = min(batch_size, n)
    spe = math.ceil(n / bs)
    pad = spe * bs - n

    def step(variables, inp):
        idx, mask, k = inp
        xb, yb = x[idx], y[idx]
        if strategy:
            xb = aug.dsa(xb, k, strategy, siamese=False)
        rest = {c: v for c, v in variables.items() if c != "params"}

        def loss_fn(params):
            out = apply_model(module, {"params": params, **rest}, xb, train=True)
            return jnp.sum(mask * _per_example_ce(out.logits, yb)) / jnp.sum(mask), out.variables

        grads, new_vars = jax.grad(loss_fn, has_aux=True)(variables["params"])
        params = jax.tree.map(lambda p, g: p - lr * g, variables["params"], grads)
        return {**new_vars, "params": params}, None

    def epoch(variables, k):
        k_perm, k_aug = jax.random.split(k)
        perm = jnp.concatenate([jax.random.permutation(k_perm, n), jnp.zeros((pad,), jnp.int32)])
        mask = jnp.concatenate([jnp.ones((n,)), jnp.zeros((pad,))])
        inp = (perm.reshape(spe, bs), mask.reshape(spe, bs), jax.random.split(k_aug, spe))
        return jax.lax.scan(step, variables, inp)[0], None

    return jax.lax.scan(epoch, variables, jax.random.split(key, epochs))[0]


def gradient_matching(module: nn.Module, num_classes: int, image_shape: tuple[int, int, int], *,
                      outer_loop: int = 0, inner_loop: int = -1, strategy: str | None = None, distance: str = "ours",
                      real_per_class: int = 256, net_lr: float = 0.01, batch_size: int = 256,
                      inner_module: nn.Module | None = None, class_batch: int = -1, bn_real: int = 16,
                      conv_impl: str | None = "auto", inner_conv_impl: str | None = "",
                      name: str | None = None) -> Objective:
    """The DC objective (DSA when ``strategy`` is a DSA strategy string). See the module docstring.

    module: the network whose gradients are matched (a fresh random instance every ``outer_loop`` steps); it keeps
    one in its state, hence ``image_shape``. outer_loop 0 / inner_loop -1: the paper's values for the synthetic
    set's images per class (``paper_loops``, read from the set's shape when the objective is traced).
    inner_module: the same network for the inner training (default: ``module``). class_batch: classes batched
    together for the real-side gradients (0 = all; -1 = 1 on CPU, all on accelerators: the same numbers).
    conv_impl "auto": ``"fused"`` on CPU, ``"xla"`` on accelerators for the jaxdd ConvNet/ResNet families (""/None:
    the module's own); inner_conv_impl: the inner-trained twin's, "" = as ``conv_impl``. The driver settings of the
    paper (lr_img 0.1, momentum 0.5, 1000 iterations x outer_loop rounds) are ``get_method("dc").defaults``."""
    module = with_conv_impl(module, conv_impl)
    inner_module = with_conv_impl(module if inner_module is None else inner_module, inner_conv_impl)
    class_batch = auto_class_batch(class_batch)
    if distance not in DISTANCES:
        raise JaxddError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if outer_loop < 0 or inner_loop < -1:
        raise JaxddError(f"need outer_loop >= 1 (0: the paper's) and inner_loop >= 0 (-1: the paper's), got "
                         f"({outer_loop}, {inner_loop})")
    if real_per_class < 1:
        raise JaxddError(f"gradient matching needs real images: real_per_class must be >= 1, got {real_per_class}")
    if strategy:
        aug.parse_strategy(strategy)
    k = num_classes

    def loops(syn_x) -> tuple[int, int]:
        """(outer_loop, inner_loop), the paper's for the set's images per class where not given (static)."""
        if outer_loop > 0 and inner_loop >= 0:
            return outer_loop, inner_loop
        po, pi = paper_loops(syn_x.shape[0] // k)
        return (outer_loop or po), (pi if inner_loop < 0 else inner_loop)
    name = name or ("dsa" if strategy else "dc")

    def init(key):
        return {"net": init_model(module, key, image_shape), "round": jnp.zeros((), jnp.int32)}

    def class_grad(variables, x, y):
        rest = {c: v for c, v in variables.items() if c != "params"}

        def ce(params):
            logits = apply_model(module, {"params": params, **rest}, x, train=False).logits
            return jnp.mean(_per_example_ce(logits, y))

        return jax.grad(ce)(variables["params"])

    def loss(syn: Synthetic, real: Batch, state, key):
        variables = state["net"]
        if has_batch_stats(variables):  # set BN statistics from a few real images per class, then freeze them
            xr = _class_major(real.x, k)[:, :bn_real].reshape(-1, *real.x.shape[1:])
            variables = jax.lax.stop_gradient(apply_model(module, variables, xr, train=True).variables)
        sx, rx = per_class_siamese_dsa(syn.x, real.x, key, k, strategy)
        g_syn = jax.vmap(class_grad, in_axes=(None, 0, 0))(variables, _class_major(sx, k), _class_major(syn.y, k))
        real_in = (_class_major(rx, k), _class_major(real.y, k))
        if class_batch and class_batch < k:
            g_real = jax.lax.map(lambda a: class_grad(variables, *a), real_in, batch_size=class_batch)
        else:
            g_real = jax.vmap(class_grad, in_axes=(None, 0, 0))(variables, *real_in)
        g_real = jax.lax.stop_gradient(g_real)
        per_class = jax.vmap(lambda a, b: layerwise_distance(a, b, distance))(g_real, g_syn)
        return jnp.sum(per_class), {"dc_round": state["round"].astype(jnp.float32),
                                     "dc_per_class_max": jnp.max(per_class)}

    def update(state, syn: Synthetic, real: Batch, key):
        k_new, k_train = jax.random.split(key)
        x, y = jax.lax.stop_gradient((syn.x, syn.y))

        def fresh(_):
            return init_model(module, k_new, image_shape)

        outer, inner = loops(x)

        def train(net):
            if inner == 0:
                return net
            return train_on_set(inner_module, net, x, y, k_train, epochs=inner, lr=net_lr,
                                batch_size=batch_size, strategy=strategy)

        last = state["round"] >= outer - 1
        net = fresh(None) if outer == 1 else jax.lax.cond(last, fresh, train, state["net"])
        return {"net": net, "round": jnp.where(last, 0, state["round"] + 1).astype(jnp.int32)}

    return Objective(name, init, loss, update, real_per_class=real_per_class)


def dc(module, num_classes, image_shape, **kw) -> Objective:
    """DC: gradient matching without augmentation (``gradient_matching`` with ``strategy=None``)."""
    return gradient_matching(module, num_classes, image_shape, strategy=None, **kw)


def dsa(module, num_classes, image_shape, strategy: str = aug.DSA_DEFAULT, **kw) -> Objective:
    """DSA: gradient matching with the Siamese augmentation on both sides (one draw per class per step)."""
    if not strategy:
        raise JaxddError("DSA needs a DSA strategy string (use method 'dc' for no augmentation)")
    return gradient_matching(module, num_classes, image_shape, strategy=strategy, **kw)
