"""MIM4DD as a combinator: ``with_mutual_info(objective, ...)`` adds a contrastive mutual-information term to any
Objective (Shang, Yuan, Yan, NeurIPS 2023; docs/methods.md section 10), like ``optax.chain`` adds a transformation.

What the paper confirms: distillation maximises the mutual information (MI) between the synthetic and the real set
through a contrastive (NCE) lower bound on per-layer feature maps; a synthetic and a real sample with the same label
form a positive pair, different labels a negative pair; one pair of representations per layer, embedded into a
contrastive space; the term is an add-on to an existing matching method. Everything below that is more specific is
RECONSTRUCTED (the paper body and code were not available) and is an explicit option:

Network. Each step draws a network of the base method's architecture (``module``) at random, frozen, forward in
train mode, exactly like DM does. With ``networks=0`` (default) the draw uses the key the base loss receives, split
the way DM splits it (``jax.random.split(key)[0]``), so for DM the MIM features come from the very network DM
matches on that step (tested). For DC/DSA/MTT, whose networks are trained inside their own loss or state, the
wrapper cannot see that network without editing them: it uses a fresh random network of the same architecture
(a documented deviation). ``networks=P > 0`` instead draws P networks once at init and picks one per step.

Features and heads. For every layer k in ``layers`` (default: every ``block*`` output of the model, i.e. blocks 1..3
of the ConvNet, as in the paper's Fig. 2), the flattened feature map a_k of un-augmented images goes through a head
per layer and side, e_k(a) = l2_normalise(W_k a + b_k) (``head_dim`` = 128 as in CRD/CMIM). The synthetic side and
the real side have their own heads.

The NCE loss (InfoNCE with label-defined positives). Anchors are the synthetic embeddings s_i; candidates are the
real embeddings r_j of this step's real batch, plus (``negatives="bank"``) a FIFO memory bank of past real
embeddings. With logits l_ij = s_i . r_j / tau and P(i) the in-batch real samples with the label of s_i,

    L_k = mean_i mean_{j in P(i)} [ -l_ij + logsumexp_{c in all candidates} l_ic ],     L_NCE = sum_k L_k.

All candidates (also the other same-label ones) are in the denominator, which is what InfoNCE's bound needs: the
candidates of a class-balanced batch are a (stratified) draw from the real marginal, so

    I(S_k; R_k) >= log N - L_k        (N = number of valid candidates),

the diagnostic logged as ``mim_mi_lb`` (mean over layers) and ``mim_mi_lb_<layer>``. Because positives are defined
by labels, the bound saturates at log K (K classes) when every class is perfectly separated, which is the true MI
between two samples that share only their label. (CRD/CMIM's binary NCE critic exp(s/tau) / (exp(s/tau) + N/M)
needs an estimated normaliser Z to be non-degenerate at tau = 0.1; the softmax critic is normalised exactly, so we
use it.)

Training of the heads (a choice, justified): the heads are the critic of the MI estimator, not part of the distilled
data, so they are trained in ``update`` with their own Adam state inside the objective state (they maximise the
bound, i.e. minimise L_NCE, on the updated synthetic set and the step's real batch, through an independently drawn
network), not as synthetic learnables: that keeps them out of the synthetic set, its artifact and its optimiser
(whose learning rates are tuned for pixels, e.g. DM's SGD at lr 1.0), and needs no ``lrs`` entry in any method's
config. The memory bank is filled in ``update`` too, with the new real-side embeddings (bank entries are therefore
a few steps stale and from other random networks, as in MoCo/CRD memory banks).

The total loss is ``L_base + weight * L_NCE``; ``weight`` and ``temperature`` live in the objective state (a sweep
does not recompile). Real images: the wrapper asks the driver for max(base, ``real_per_class``) real images per
class and hands the base method the first ``base.real_per_class`` of each class, so with ``weight = 0`` a wrapped
method gives the same synthetic set as the base method (tested).

Defaults (the paper's values are unknown): temperature 0.1 and head_dim 128 (CRD and CMIM, the closest public
code); every block of the ConvNet (Fig. 2's "three pairs of representations, one for each layer"); in-batch
negatives (this reconstruction's default; the bank is an option); heads' Adam lr 1e-3. The weight is relative to the base
loss's scale, which differs per method: 20 is set for DM, where we measured on Fashion-MNIST (ConvNet-128, random
init, heads untrained) a gradient norm of the NCE term ~1/200 (IPC 1) to ~1/120 (IPC 10) of DM's, so weight 20 makes
it 10-20% of DM's gradient at the start (it grows as the heads learn). For another base, rescale it.

Derived methods: the registered methods in ``DERIVED_BASES`` (dm, dsa, mtt) get a ``<m>+mim`` twin
(``jaxdd distill --method dm+mim --mutual-info-weight 20 ...``) with the base's options and defaults plus the
``mutual_info_*`` options.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdd.models import apply_model, init_model
from jaxdd.objectives.base import Objective, Synthetic
from jaxdd.ops import safe_normalize
from jaxdd.types import Batch, JaxddError, PRNGKey, PyTree

NEGATIVES = ("batch", "bank")
# Defaults (the paper's values are unknown; see docs/methods.md section 10 and the module docstring).
DEFAULT_WEIGHT = 20.0
DEFAULT_TEMPERATURE = 0.1
DEFAULT_HEAD_DIM = 128
DEFAULT_REAL_PER_CLASS = 16
DEFAULT_BANK_SIZE = 4096
DEFAULT_HEAD_LR = 1e-3
_MASKED = -1e9


# --------------------------------------------------------------------------------------------------------------
# The NCE loss and its MI lower bound (pure functions, tested against hand computation)


def hard_labels(y: jax.Array) -> jax.Array:
    """(n,) int labels from hard (n,) or soft/learned (n, K) labels (argmax)."""
    return y if y.ndim == 1 else jnp.argmax(y, axis=-1)


def nce_loss(anchors: jax.Array, anchor_labels: jax.Array, cands: jax.Array, cand_labels: jax.Array,
             temperature, *, cand_valid: jax.Array | None = None,
             pos_valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """InfoNCE with label-defined positives. Returns (loss, mi_lower_bound).

    anchors (n, d) and cands (N, d) are (l2-normalised) embeddings with int labels (n,), (N,). ``cand_valid`` (N,)
    masks candidates out entirely (an empty memory-bank slot); ``pos_valid`` (N,) says which candidates may serve
    as positives (default: all valid ones; memory-bank entries are negatives only). The loss is the mean over
    anchors of the mean over their positives j of -log softmax_c(a . c / tau)[j]; the bound is log(N_valid) - loss.
    Anchors without any positive do not count.
    """
    n_c = cands.shape[0]
    cand_valid = jnp.ones((n_c,), bool) if cand_valid is None else cand_valid
    pos_valid = cand_valid if pos_valid is None else (pos_valid & cand_valid)
    logits = anchors @ cands.T / temperature
    logits = jnp.where(cand_valid[None, :], logits, _MASKED)
    logp = jax.nn.log_softmax(logits, axis=-1)
    pos = (anchor_labels[:, None] == cand_labels[None, :]) & pos_valid[None, :]
    n_pos = jnp.sum(pos, axis=-1)
    per_anchor = -jnp.sum(jnp.where(pos, logp, 0.0), axis=-1) / jnp.maximum(n_pos, 1)
    has = (n_pos > 0).astype(per_anchor.dtype)
    loss = jnp.sum(per_anchor * has) / jnp.maximum(jnp.sum(has), 1.0)
    mi_lb = jnp.log(jnp.sum(cand_valid).astype(loss.dtype)) - loss
    return loss, mi_lb


# --------------------------------------------------------------------------------------------------------------
# Heads and features


def layer_features(module: nn.Module, variables: PyTree, x: jax.Array, layers: tuple[str, ...]) -> dict:
    """{layer: (n, D_k)} flattened feature maps of a train-mode forward (as DM's forward)."""
    feats = apply_model(module, variables, x, train=True, features=True).features
    return {name: feats[name].reshape(x.shape[0], -1) for name in layers}


def embed(head: dict, f: jax.Array) -> jax.Array:
    """l2_normalise(f @ W + b): (n, D) -> (n, head_dim)."""
    z = f @ head["w"] + head["b"]
    return safe_normalize(z, axis=-1)


def init_heads(key: PRNGKey, dims: dict, head_dim: int) -> dict:
    """{"syn": {layer: {"w": (D, d), "b": (d,)}}, "real": {...}} with W ~ N(0, 1/D)."""
    heads = {}
    for side, k_side in zip(("syn", "real"), jax.random.split(key)):
        keys = jax.random.split(k_side, len(dims))
        heads[side] = {name: {"w": jax.random.normal(k, (d, head_dim)) / math.sqrt(d), "b": jnp.zeros(head_dim)}
                       for k, (name, d) in zip(keys, sorted(dims.items()))}
    return heads


def feature_dims(module: nn.Module, image_shape: tuple[int, int, int]) -> dict:
    """{feature name: flattened size} of ``module`` on images of ``image_shape`` (shape inference only)."""
    def fwd(x):
        variables = init_model(module, jax.random.key(0), image_shape)
        return apply_model(module, variables, x, train=True, features=True).features

    shapes = jax.eval_shape(fwd, jax.ShapeDtypeStruct((2, *image_shape), jnp.float32))
    return {k: math.prod(v.shape[1:]) for k, v in shapes.items()}


def resolve_layers(module: nn.Module, image_shape, layers, dims: dict | None = None) -> tuple[str, ...]:
    """``"auto"``/None: every ``block*`` feature of the model; else a comma string or sequence of feature names."""
    dims = feature_dims(module, image_shape) if dims is None else dims
    blocks = tuple(sorted(k for k in dims if k.startswith("block")))
    if layers in (None, "auto", ""):
        if not blocks:
            raise JaxddError(f"model {type(module).__name__} has no block features; pass layers from {sorted(dims)}")
        return blocks
    names = tuple(s.strip() for s in layers.split(",")) if isinstance(layers, str) else tuple(layers)
    bad = [n for n in names if n not in dims]
    if bad or not names:
        raise JaxddError(f"mutual-info layers {bad or names} are not features of {type(module).__name__}; "
                         f"choose from {sorted(dims)} (or 'auto' for every block)")
    return names


def _per_class_prefix(real: Batch, num_classes: int, m: int) -> Batch:
    """The first ``m`` images of every class of a class-major batch (K*n, ...) -> (K*m, ...)."""
    n = real.x.shape[0] // num_classes
    if m == n:
        return real
    x = real.x.reshape(num_classes, n, *real.x.shape[1:])[:, :m]
    y = real.y.reshape(num_classes, n, *real.y.shape[1:])[:, :m]
    return Batch(x.reshape(num_classes * m, *real.x.shape[1:]), y.reshape(num_classes * m, *real.y.shape[1:]))


def contrastive_terms(heads: dict, feats_syn: dict, y_syn: jax.Array, feats_real: dict, y_real: jax.Array,
                      temperature, bank: dict | None = None) -> dict:
    """{layer: (nce_loss, mi_lower_bound)} for every layer of ``feats_syn``: synthetic anchors embedded by
    ``heads["syn"][layer]`` against real candidates embedded by ``heads["real"][layer]`` (+ the memory ``bank``
    {"z": {layer: (B, d)}, "y": (B,) with -1 = empty}, as negatives only). Differentiable in heads and features."""
    out = {}
    for layer in feats_syn:
        zs = embed(heads["syn"][layer], feats_syn[layer])
        zr = embed(heads["real"][layer], feats_real[layer])
        if bank is None:
            out[layer] = nce_loss(zs, y_syn, zr, y_real, temperature)
            continue
        n = zr.shape[0]
        cands = jnp.concatenate([zr, bank["z"][layer]])
        labels = jnp.concatenate([y_real, bank["y"]])
        valid = jnp.concatenate([jnp.ones((n,), bool), bank["y"] >= 0])
        pos = jnp.concatenate([jnp.ones((n,), bool), jnp.zeros(bank["y"].shape, bool)])
        out[layer] = nce_loss(zs, y_syn, cands, labels, temperature, cand_valid=valid, pos_valid=pos)
    return out


# --------------------------------------------------------------------------------------------------------------
# The combinator


def with_mutual_info(objective: Objective, *, module: nn.Module, num_classes: int,
                     image_shape: tuple[int, int, int], weight: float = DEFAULT_WEIGHT,
                     temperature: float = DEFAULT_TEMPERATURE, layers=None, head_dim: int = DEFAULT_HEAD_DIM,
                     negatives: str = "batch", bank_size: int = DEFAULT_BANK_SIZE,
                     real_per_class: int = DEFAULT_REAL_PER_CLASS, head_lr: float = DEFAULT_HEAD_LR,
                     networks: int = 0) -> Objective:
    """``objective`` plus ``weight`` x the MIM4DD NCE loss on per-layer features of ``module`` (see module doc).

    module: the architecture the base method uses (a random frozen draw per step, or a pool of ``networks``).
    layers: feature names (``"block1,block2"``) or None/"auto" for every block. negatives: "batch" (in-batch real
    negatives) or "bank" (plus a FIFO memory bank of ``bank_size`` past real embeddings). real_per_class: real
    images per class the NCE term uses (the first ones of the base's class-major batch, or more if the base uses
    fewer). head_lr: Adam learning rate of the heads (trained in ``update``).
    """
    if negatives not in NEGATIVES:
        raise JaxddError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    if not temperature > 0:
        raise JaxddError(f"the mutual-info temperature must be > 0, got {temperature}")
    if weight < 0:
        raise JaxddError(f"the mutual-info weight must be >= 0, got {weight}")
    if real_per_class < 1:
        raise JaxddError(f"the NCE term needs real images: real_per_class must be >= 1, got {real_per_class}")
    if head_dim < 1 or networks < 0:
        raise JaxddError(f"head_dim must be >= 1 and networks >= 0, got {head_dim}, {networks}")
    if negatives == "bank" and bank_size < num_classes * real_per_class:
        raise JaxddError(f"the memory bank must hold at least one step of real embeddings: bank_size {bank_size} "
                         f"< num_classes x real_per_class = {num_classes * real_per_class}; raise bank_size")
    all_dims = feature_dims(module, tuple(image_shape))
    layers = resolve_layers(module, tuple(image_shape), layers, all_dims)
    dims = {k: all_dims[k] for k in layers}
    base_n = objective.real_per_class
    total_n = max(base_n, real_per_class)
    tx = optax.adam(head_lr)

    def draw_network(state, key):
        if networks:
            idx = jax.random.randint(jax.random.fold_in(key, 1), (), 0, networks)
            return jax.tree.map(lambda a: a[idx], state["nets"])
        return init_model(module, jax.random.split(key)[0], tuple(image_shape))  # DM's k_model for the same key

    def base_batch(real: Batch) -> Batch:
        if base_n == 0:
            return Batch(real.x[:0], real.y[:0])
        return _per_class_prefix(real, num_classes, base_n)

    def nce_terms(heads, state, feats_syn, y_syn, feats_real, y_real, temp):
        return contrastive_terms(heads, feats_syn, y_syn, feats_real, y_real, temp, bank=state.get("bank"))

    def init(key):
        k_base, k_heads, k_nets = jax.random.split(key, 3)
        state = {"base": objective.init(k_base), "heads": init_heads(k_heads, dims, head_dim),
                 "hparams": {"weight": jnp.asarray(weight, jnp.float32),
                             "temperature": jnp.asarray(temperature, jnp.float32)}}
        state["head_opt"] = tx.init(state["heads"])
        if negatives == "bank":
            state["bank"] = {"z": {k: jnp.zeros((bank_size, head_dim)) for k in layers},
                             "y": jnp.full((bank_size,), -1, jnp.int32), "ptr": jnp.zeros((), jnp.int32)}
        if networks:
            state["nets"] = jax.vmap(lambda k: init_model(module, k, tuple(image_shape)))(
                jax.random.split(k_nets, networks))
        return state

    def loss(syn: Synthetic, real: Batch, state, key):
        base_loss, aux = objective.loss(syn, base_batch(real), state["base"], key)
        variables = draw_network(state, key)
        mim_real = _per_class_prefix(real, num_classes, real_per_class)
        feats_syn = layer_features(module, variables, syn.x, layers)
        feats_real = jax.lax.stop_gradient(layer_features(module, variables, mim_real.x, layers))
        hp = state["hparams"]
        terms = nce_terms(jax.lax.stop_gradient(state["heads"]), state, feats_syn, hard_labels(syn.y), feats_real,
                          hard_labels(mim_real.y), hp["temperature"])
        nce = sum(t[0] for t in terms.values())
        aux = {**aux, "base_loss": base_loss, "mim_nce": nce,
               "mim_mi_lb": sum(t[1] for t in terms.values()) / len(terms),
               **{f"mim_mi_lb_{k}": t[1] for k, t in terms.items()}}
        return base_loss + hp["weight"] * nce, aux

    def update(state, syn: Synthetic, real: Batch, key):
        k_base, k_net = jax.random.split(key)
        new = dict(state)
        new["base"] = objective.update(state["base"], syn, base_batch(real), k_base)
        variables = draw_network(state, k_net)
        mim_real = _per_class_prefix(real, num_classes, real_per_class)
        feats_syn = jax.lax.stop_gradient(layer_features(module, variables, syn.x, layers))
        feats_real = jax.lax.stop_gradient(layer_features(module, variables, mim_real.x, layers))
        y_syn, y_real = hard_labels(jax.lax.stop_gradient(syn.y)), hard_labels(mim_real.y)
        temp = state["hparams"]["temperature"]

        def head_loss(heads):
            terms = nce_terms(heads, state, feats_syn, y_syn, feats_real, y_real, temp)
            return sum(t[0] for t in terms.values())

        grads = jax.grad(head_loss)(state["heads"])
        upd, new["head_opt"] = tx.update(grads, state["head_opt"], state["heads"])
        new["heads"] = optax.apply_updates(state["heads"], upd)
        if negatives == "bank":
            bank = state["bank"]
            n = mim_real.x.shape[0]
            idx = (bank["ptr"] + jnp.arange(n)) % bank_size
            z = {k: bank["z"][k].at[idx].set(embed(new["heads"]["real"][k], feats_real[k])) for k in layers}
            new["bank"] = {"z": z, "y": bank["y"].at[idx].set(y_real.astype(jnp.int32)),
                           "ptr": ((bank["ptr"] + n) % bank_size).astype(jnp.int32)}
        return new

    def init_with_real(key, real_init):  # the base's own hook (DWA perturbs its teacher on the real init images)
        return {**init(key), "base": objective.init_with_real(jax.random.split(key, 3)[0], real_init)}

    # _replace forwards every field this wrapper does not redefine (learnables, project, and any later hook)
    return objective._replace(name=f"{objective.name}+mim", init=init, loss=loss, update=update,
                              real_per_class=total_n,
                              init_with_real=None if objective.init_with_real is None else init_with_real)
