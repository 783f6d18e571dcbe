"""SRe2L recover and DWA (docs/methods.md 11): decoupled synthesis against a batch-norm teacher, and relabel evaluation.

SRe2L (Yin, Xing, Shen, NeurIPS 2023) synthesises each batch of images x~ (one image of every class) by minimising,
with the teacher f in eval mode,

    L(x~) = CE(f(A(x~)), y) + alpha_BN * sum_l w_l ( ||mu_l(A(x~)) - mu_l^BN||_2 + r_var ||sigma2_l(A(x~)) - sigma2_l^BN||_2 )

where mu_l, sigma2_l are the per-channel batch mean and biased variance of the INPUT of batch-norm layer l,
mu^BN/sigma2^BN the teacher's running statistics, the norms are unsquared, w_1 = ``first_bn_multiplier`` (10) and
w_l = 1 otherwise, and A is a random roll-jitter of the whole batch by up to ``jitter`` px per axis. SRe2L has
r_var = 1; DWA (Du et al., NeurIPS 2024) re-weights the variance term (r_var 11 on CIFAR) and, before synthesising a
batch, perturbs a FRESH copy of the teacher by K steps of normalised gradient ascent on the CE of the batch's real
images X_B (the real images the batch was initialised from):

    theta_k = theta_{k-1} + (rho / K) * g_k / ||g_k||_2,   g_k = grad_theta CE(f_theta_{k-1}(A(X_B)), y)

(global norm over all parameters, BN affine included; running statistics untouched; so ||Delta theta|| <= rho, with
equality for K = 1 or aligned steps). The batch is then recovered against its perturbed teacher.

jaxdd mapping onto the driver: the synthetic set is class-major (K*ipc images); batch b = image b of every class.
All ipc batches are synthesised at once: the loss is the SUM of the per-batch losses, vmapped over b (for DWA each
with its own perturbed teacher, a stacked parameter copy in the objective state). Because Adam is elementwise and
the batches share no parameters, this is exactly ipc independent SRe2L/DWA syntheses. After every Adam step the
pixels are clipped to the valid normalised range ``[(0 - mean) / std, (1 - mean) / std]`` (``Objective.project``).
Not reproduced on purpose: the official DWA code's carry-over of perturbed weights and accumulated teacher gradients
between class batches that share a teacher (ImageNet) and the ascent gradients leaking into the first input step.

Relabel: ``relabel_evaluate`` trains fresh students on the synthetic images with the teacher's soft labels computed
online on the same augmented/mixed batch (KL at temperature T, AdamW + cosine, shift/flip, MixUp or CutMix), and
``diversity`` measures the mean pairwise cosine distance of teacher embeddings within each class.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdd.objectives.base import Objective, Synthetic
from jaxdd.ops import safe_global_norm, safe_norm, safe_normalize
from jaxdd.models import apply_model, eval_module, init_model
from jaxdd.objectives.recover.teacher import shift_flip
from jaxdd.train import accuracy, batched_step, compiled, cross_entropy, default_group, fit, make_train_step, predict_many
from jaxdd.types import Batch, JaxddError, PRNGKey, PyTree

# --------------------------------------------------------------------------------------------------------------
# Batch-norm statistics loss


def forward_with_bn_inputs(module: nn.Module, variables: PyTree, x: jax.Array):
    """Eval-mode forward that also returns the input of every ``nn.BatchNorm`` call, in call order.

    Returns ``(logits, [(path, input), ...])`` where ``path`` is the BatchNorm module's path (its key in the
    ``batch_stats`` collection). Works for any Flax model built from ``nn.BatchNorm`` (ConvNetBN, ResNet*BN)."""
    records: list[tuple[tuple[str, ...], jax.Array]] = []

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            h = args[0] if args else kwargs.get("x", next(iter(kwargs.values())))
            records.append((tuple(context.module.path), h))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        logits = module.apply(variables, x, train=False)
    return logits, records


def _lookup(tree: PyTree, path: tuple[str, ...]) -> PyTree:
    for p in path:
        tree = tree[p]
    return tree


def bn_statistics_loss(records, batch_stats: PyTree, *, first_bn_multiplier: float = 10.0,
                       r_var: float = 1.0) -> jax.Array:
    """sum_l w_l (||mu_l - running_mean_l||_2 + r_var ||var_l - running_var_l||_2), w_1 = first_bn_multiplier.

    records: ``forward_with_bn_inputs``'s list; mu_l/var_l are per-channel (last axis) mean and biased variance of
    layer l's input over all other axes."""
    if not records:
        raise JaxddError("the teacher has no batch-norm layers; SRe2L/DWA need a BN teacher (ConvNetBN, ResNet8BN, "
                         "ResNet18BN)")
    total = jnp.zeros((), jnp.float32)
    for i, (path, h) in enumerate(records):
        stats = _lookup(batch_stats, path)
        axes = tuple(range(h.ndim - 1))
        mu = jnp.mean(h, axis=axes)
        var = jnp.mean(jnp.square(h - mu), axis=axes)
        term = safe_norm(mu - stats["mean"]) + r_var * safe_norm(var - stats["var"])
        total = total + (first_bn_multiplier if i == 0 else 1.0) * term
    return total


def roll_jitter(x: jax.Array, key: PRNGKey, limit: int) -> jax.Array:
    """Roll the whole batch (n, h, w, c) by one random (dy, dx) in [-limit, limit]^2 (torch.roll, wrap-around)."""
    if not limit:
        return x
    d = jax.random.randint(key, (2,), -limit, limit + 1)
    return jnp.roll(x, (d[0], d[1]), axis=(1, 2))


class RecoverConfig(NamedTuple):
    alpha_bn: float = 0.01
    first_bn_multiplier: float = 10.0
    r_var: float = 1.0
    jitter: int = 4


def recover_batch_loss(module: nn.Module, variables: PyTree, x: jax.Array, y: jax.Array, key: PRNGKey,
                       cfg: RecoverConfig = RecoverConfig()) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The SRe2L/DWA loss of one batch x (n, h, w, c) with labels y against ``variables`` (eval mode).

    Returns ``(CE + alpha_bn * L_BN, (CE, L_BN))``."""
    xj = roll_jitter(x, key, cfg.jitter)
    logits, records = forward_with_bn_inputs(module, variables, xj)
    ce = cross_entropy(logits, y)
    bn = bn_statistics_loss(records, variables["batch_stats"], first_bn_multiplier=cfg.first_bn_multiplier,
                            r_var=cfg.r_var)
    return ce + cfg.alpha_bn * bn, (ce, bn)


# --------------------------------------------------------------------------------------------------------------
# DWA: directed weight adjustment


def dwa_perturb(module: nn.Module, variables: PyTree, x: jax.Array, y: jax.Array, key: PRNGKey, *, rho: float,
                steps: int, jitter: int = 4) -> PyTree:
    """K = ``steps`` normalised gradient-ascent steps of size rho/K on the teacher's parameters (eval mode), on the
    CE of the real batch (x, y) under roll-jitter; returns the perturbed ``params`` (batch_stats untouched).
    Pure; vmap it over batches."""
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}

    def ce(p, k):
        logits = module.apply({**rest, "params": p}, roll_jitter(x, k, jitter), train=False)
        return cross_entropy(logits, y)

    for i in range(steps):
        g = jax.grad(ce)(params, jax.random.fold_in(key, i))
        norm = safe_global_norm(g)
        scale = (rho / steps) / jnp.maximum(norm, 1e-12)
        params = jax.tree.map(lambda p, gi: p + scale * gi, params, g)
    return params


# --------------------------------------------------------------------------------------------------------------
# The objective


def _batches(a: jax.Array, num_classes: int, ipc: int) -> jax.Array:
    """Class-major (K*ipc, ...) -> (ipc, K, ...): batch b holds image b of every class."""
    return a.reshape(num_classes, ipc, *a.shape[1:]).swapaxes(0, 1)


def clip_projection(lo: jax.Array, hi: jax.Array) -> Callable[[PyTree], PyTree]:
    """Project pixel data (n, h, w, c) onto the per-channel box [lo, hi]; other parameterizations pass through."""
    lo = jnp.asarray(lo, jnp.float32)
    hi = jnp.asarray(hi, jnp.float32)

    def project(data):
        if hasattr(data, "ndim") and data.ndim == 4 and data.shape[-1] == lo.shape[-1]:
            return jnp.clip(data, lo, hi)
        return data

    return project


def recover(module: nn.Module, teacher_variables: PyTree, num_classes: int, ipc: int, *,
            cfg: RecoverConfig = RecoverConfig(), perturb: bool = False, rho: float = 0.015, dwa_steps: int = 12,
            clip: tuple[Any, Any] | None = None, name: str | None = None,
            sample_real: Callable[[PRNGKey], jax.Array] | None = None) -> Objective:
    """The SRe2L (``perturb=False``) or DWA (``perturb=True``) recover objective.

    module/teacher_variables: the BN teacher ({"params", "batch_stats"}). ipc: images per class of the synthetic
    set (= number of class batches). clip: (lo, hi) per-channel bounds of the valid normalised range, applied after
    every step (None: no clipping). With ``perturb`` the objective state holds one perturbed parameter copy per batch,
    computed once from the real images the synthetic set is initialised from (``Objective.init_with_real``); with
    ``rho = 0`` it equals SRe2L exactly. ``sample_real(key) -> (K, ipc, h, w, c)`` serves callers that only call
    ``init(key)`` (e.g. a combinator that does not forward ``init_with_real``): DWA then perturbs on that independent
    real sample ("randomly selected real samples") instead of the init images; without it such a call is an error.
    """
    if ipc < 1:
        raise JaxddError(f"ipc must be >= 1, got {ipc}")
    if perturb and (rho < 0 or dwa_steps < 1):
        raise JaxddError(f"DWA needs rho >= 0 and dwa_steps >= 1, got rho={rho}, dwa_steps={dwa_steps}")
    teacher_variables = jax.tree.map(jnp.asarray, dict(teacher_variables))
    if "batch_stats" not in teacher_variables:
        raise JaxddError("the teacher has no batch_stats; SRe2L/DWA need a BN teacher (ConvNetBN, ResNet8BN, "
                         "ResNet18BN)")
    bstats = teacher_variables["batch_stats"]

    def init(key):
        if perturb:
            if sample_real is None:
                raise JaxddError("the DWA objective's state is built by Objective.init_with_real (from the real images "
                                 "the synthetic set starts from); a wrapper must forward init_with_real, or build "
                                 "recover(...) with sample_real=")
            k_real, k_pert = jax.random.split(key)
            return init_with_real(k_pert, sample_real(k_real))
        return {"params": teacher_variables["params"]}

    def batch_loss(params, x, y, key):
        return recover_batch_loss(module, {"params": params, "batch_stats": bstats}, x, y, key, cfg)

    def loss(syn: Synthetic, real: Batch, state, key):
        xb = _batches(syn.x, num_classes, ipc)
        yb = _batches(syn.y, num_classes, ipc)
        keys = jax.random.split(key, ipc)
        p_axis = 0 if perturb else None
        total, (ce, bn) = jax.vmap(batch_loss, in_axes=(p_axis, 0, 0, 0))(state["params"], xb, yb, keys)
        return jnp.sum(total), {"ce": jnp.mean(ce), "bn": jnp.mean(bn)}

    init_with_real = None
    if perturb:
        @jax.jit
        def _perturb_all(key, real):  # real: (K, m, h, w, c)
            xb = real[:, :ipc].swapaxes(0, 1)  # (ipc, K, h, w, c): the real images batch b is initialised from
            yb = jnp.broadcast_to(jnp.arange(num_classes, dtype=jnp.int32), (ipc, num_classes))
            keys = jax.random.split(key, ipc)
            fn = lambda x, y, k: dwa_perturb(module, teacher_variables, x, y, k, rho=rho,  # noqa: E731
                                             steps=dwa_steps, jitter=cfg.jitter)
            return jax.vmap(fn)(xb, yb, keys)

        def init_with_real(key, real):
            return {"params": _perturb_all(key, jnp.asarray(real, jnp.float32))}

    project = clip_projection(*clip) if clip is not None else None
    return Objective(name or ("dwa" if perturb else "sre2l"), init, loss, real_per_class=0,
                     init_with_real=init_with_real, project=project)


def sre2l(module: nn.Module, teacher_variables: PyTree, num_classes: int, ipc: int, *, alpha_bn: float = 0.01,
          first_bn_multiplier: float = 10.0, r_var: float = 1.0, jitter: int = 4,
          clip: tuple[Any, Any] | None = None) -> Objective:
    """SRe2L's recover objective against a BN teacher, with the paper's defaults (docs/methods.md 11.1): BN loss
    weight 0.01, first BN layer x10, variance term weight 1, roll-jitter 4 px. The driver settings (Adam 0.25, cosine,
    1000 iterations, noise init) are ``jaxdd.methods.get_method("sre2l").defaults``."""
    return recover(module, teacher_variables, num_classes, ipc, clip=clip, name="sre2l",
                   cfg=RecoverConfig(alpha_bn, first_bn_multiplier, r_var, jitter))


def dwa(module: nn.Module, teacher_variables: PyTree, num_classes: int, ipc: int, *, alpha_bn: float = 0.01,
        first_bn_multiplier: float = 10.0, r_var: float = 11.0, jitter: int = 4, rho: float = 0.015,
        dwa_steps: int = 12, clip: tuple[Any, Any] | None = None,
        sample_real: Callable[[PRNGKey], jax.Array] | None = None) -> Objective:
    """DWA (docs/methods.md 11.2): SRe2L's loss with the variance term weighted 11 and a fresh teacher per batch
    perturbed by ``dwa_steps`` = 12 normalised ascent steps within norm ``rho`` = 0.015 (the CIFAR defaults). The
    driver settings (Adam 0.25, cosine, 1000 iterations, real init) are ``get_method("dwa").defaults``."""
    return recover(module, teacher_variables, num_classes, ipc, clip=clip, name="dwa", perturb=True, rho=rho,
                   dwa_steps=dwa_steps, sample_real=sample_real,
                   cfg=RecoverConfig(alpha_bn, first_bn_multiplier, r_var, jitter))


def valid_range(preprocess) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel normalised images of [0, 1] pixels: ((0 - mean) / std, (1 - mean) / std)."""
    if preprocess.uses_zca:
        raise JaxddError("SRe2L/DWA clip pixels to the valid normalised range, which needs mean/std normalisation; "
                         "run without --zca")
    mean = np.asarray(preprocess.mean, np.float32)
    std = np.asarray(preprocess.std, np.float32)
    return (0.0 - mean) / std, (1.0 - mean) / std


def check_teacher(teacher, num_classes: int, image_shape, preprocess) -> None:
    """Raise a JaxddError if the teacher does not fit the data the method is run on."""
    meta = teacher.meta
    if int(meta["num_classes"]) != num_classes or tuple(meta["image_shape"]) != tuple(image_shape):
        raise JaxddError(f"the teacher was trained on {meta['num_classes']} classes of {tuple(meta['image_shape'])} "
                         f"images ({meta.get('dataset')}), but the data have {num_classes} classes of "
                         f"{tuple(image_shape)}; train a teacher on this dataset (jaxdd teacher ...)")
    pre = meta.get("preprocess") or {}
    if "mean" in pre and not (np.allclose(pre["mean"], np.asarray(preprocess.mean), atol=1e-5) and
                              np.allclose(pre["std"], np.asarray(preprocess.std), atol=1e-5)):
        raise JaxddError(f"the teacher's normalisation (mean {pre['mean']}, std {pre['std']}) differs from the "
                         f"run's (mean {np.asarray(preprocess.mean).tolist()}, std "
                         f"{np.asarray(preprocess.std).tolist()}); use a teacher trained with the same preprocessing")


# --------------------------------------------------------------------------------------------------------------
# Relabel (soft-label) evaluation and diversity


@dataclasses.dataclass(frozen=True)
class RelabelProtocol:
    """Students trained on the synthetic images with the teacher's soft labels (docs/methods.md 11.2 step 5, CIFAR
    recipe): AdamW (lr 1e-3, wd 0.01) with cosine decay to 0, batch 128, per-image random shift (+-``shift`` px) and
    flip, MixUp (``mixup`` alpha, 0 = off) or CutMix (``cutmix`` alpha; takes precedence), the teacher (eval mode) labels
    the same augmented, mixed batch; loss KL(softmax(t/T) || softmax(s/T)) averaged over the batch, times T^2 when
    ``t2`` (Tiny-ImageNet/ImageNet recipe). The final students are tested (the official CIFAR script reports the best
    of periodic test evaluations; jaxdd does not select on the test split)."""

    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 128
    temperature: float = 30.0
    t2: bool = False
    mixup: float = 0.8
    cutmix: float = 0.0
    shift: int = 4
    flip: bool = True

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.temperature <= 0:
            raise JaxddError(f"invalid RelabelProtocol {self}")


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float, t2: bool = False) -> jax.Array:
    """KL(softmax(t/T) || softmax(s/T)) summed over classes, mean over the batch (x T^2 if ``t2``)."""
    p_t = jax.nn.softmax(teacher_logits / temperature, -1)
    log_p_t = jax.nn.log_softmax(teacher_logits / temperature, -1)
    log_p_s = jax.nn.log_softmax(student_logits / temperature, -1)
    kl = jnp.sum(p_t * (log_p_t - log_p_s), -1).mean()
    return kl * temperature ** 2 if t2 else kl


def mix_batch(x: jax.Array, key: PRNGKey, mixup: float, cutmix: float) -> jax.Array:
    """MixUp (lam ~ Beta(a, a): lam x + (1 - lam) x[perm]) or CutMix (a box of area ~ 1 - lam from x[perm])."""
    if not mixup and not cutmix:
        return x
    k_perm, k_lam, k_box = jax.random.split(key, 3)
    perm = jax.random.permutation(k_perm, x.shape[0])
    other = x[perm]
    if cutmix:
        lam = jax.random.beta(k_lam, cutmix, cutmix)
        h, w = x.shape[1:3]
        cut = jnp.sqrt(1.0 - lam)
        ch, cw = (cut * h).astype(jnp.int32), (cut * w).astype(jnp.int32)
        cy = jax.random.randint(k_box, (), 0, h)
        cx = jax.random.randint(jax.random.fold_in(k_box, 1), (), 0, w)
        ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
        inside = ((ys >= jnp.clip(cy - ch // 2, 0, h)) & (ys < jnp.clip(cy + ch // 2, 0, h)) &
                  (xs >= jnp.clip(cx - cw // 2, 0, w)) & (xs < jnp.clip(cx + cw // 2, 0, w)))
        return jnp.where(inside[None, :, :, None], other, x)
    lam = jax.random.beta(k_lam, mixup, mixup)
    return lam * x + (1.0 - lam) * other


def relabel_evaluate(key: PRNGKey, images, teacher, test_images, test_labels, *, model: str = "ConvNet",
                     model_kwargs: dict | None = None, num_models: int = 3,
                     protocol: RelabelProtocol = RelabelProtocol(), group: int | None = None) -> dict:
    """Train ``num_models`` fresh ``model`` students on ``images`` with ``teacher``'s soft labels; returns
    {"mean", "std", "accuracies", "model", "protocol"} of their test accuracies. ``group``: students per vmapped
    program (default ``jaxdd.train.default_group``: all on GPU/TPU, one at a time on CPU); student i depends only
    on its key."""
    x = jnp.asarray(images, jnp.float32)
    n = x.shape[0]
    module = eval_module(model, int(teacher.meta["num_classes"]), model_kwargs)  # students train as evaluation does
    total_steps = protocol.epochs * math.ceil(n / min(protocol.batch_size, n))
    init, run = compiled(("relabel", module, teacher.module, tuple(x.shape[1:]), protocol, total_steps),
                         lambda: _relabel_programs(module, teacher.module, x.shape[1:], protocol, total_steps))
    keys = jax.random.split(key, num_models)
    group = default_group(num_models) if group is None else int(group)
    if group < 1:
        raise JaxddError(f"group must be >= 1, got {group}")
    accs = []
    for g in range(0, num_models, group):
        k_init, k_run = jax.vmap(lambda k: jax.random.split(k))(keys[g:g + group]).transpose(1, 0)
        variables, opt_state = init(k_init)
        variables, _ = fit(run, variables, opt_state, x, jnp.zeros((n,), jnp.int32), k_run, epochs=range(protocol.epochs),
                           batch_size=protocol.batch_size, aux=teacher.variables)
        logits = predict_many(module, variables, jnp.asarray(test_images))
        accs.append(np.asarray(jax.vmap(accuracy, in_axes=(0, None))(logits, jnp.asarray(test_labels))))
    accs = np.concatenate(accs)
    return {"mean": float(accs.mean()), "std": float(accs.std()), "accuracies": [float(a) for a in accs],
            "model": model, "protocol": dataclasses.asdict(protocol)}


def _relabel_programs(module, t_module, image_shape, protocol: RelabelProtocol, total_steps: int):
    """(vmapped init, batched KD step) of relabel_evaluate: the student sees the shifted, flipped, mixed batch and
    learns the teacher's (eval-mode) logits on that same batch."""
    tx = optax.adamw(optax.cosine_decay_schedule(protocol.lr, total_steps), weight_decay=protocol.weight_decay)

    def init(k):
        v = init_model(module, k, image_shape)
        return v, tx.init(v["params"])

    def augment(xb, k):
        k_aug, k_mix = jax.random.split(k)
        return mix_batch(shift_flip(xb, k_aug, protocol.shift, protocol.flip), k_mix, protocol.mixup, protocol.cutmix)

    step = make_train_step(
        module, tx, augment, loss=lambda logits, t: kd_loss(logits, t, protocol.temperature, protocol.t2),
        targets=lambda t_vars, xb, _: jax.lax.stop_gradient(t_module.apply(t_vars, xb, train=False)))
    return jax.jit(jax.vmap(init)), batched_step(step)


def diversity(module: nn.Module, variables: PyTree, images, labels, num_classes: int,
              feature: str = "embedding") -> dict:
    """Mean pairwise cosine distance (1 - cos) of the teacher's ``feature`` (eval mode) between distinct images of
    the same class, averaged over classes; also per class. Higher = more diverse. Needs >= 2 images per class."""
    x = jnp.asarray(images, jnp.float32)
    y = np.asarray(labels)
    y = y if y.ndim == 1 else y.argmax(-1)
    feats = apply_model(module, variables, x, train=False, features=True).features[feature]
    f = feats.reshape(feats.shape[0], -1)
    f = safe_normalize(f, axis=-1)
    per_class = []
    for c in range(num_classes):
        fc = f[np.where(y == c)[0]]
        m = fc.shape[0]
        if m < 2:
            raise JaxddError(f"diversity needs >= 2 images per class; class {c} has {m}")
        sim = fc @ fc.T
        per_class.append(float((m * m - jnp.sum(sim)) / (m * (m - 1))))  # mean of 1 - cos over i != j
    return {"mean": float(np.mean(per_class)), "per_class": per_class, "feature": feature}
