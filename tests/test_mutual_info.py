"""MIM4DD add-on: the NCE loss against hand computation, its behaviour, gradients, heads, bank and composition."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdd.distill import DistillConfig, distill_step, init_state, make_pool
from jaxdd.methods import DERIVED_BASES, available_methods, derive_mim, get_method
from jaxdd.models import get_model, init_model
from jaxdd.objectives import Objective, Synthetic, dm, no_init
from jaxdd.objectives.distribution import class_mean_embeddings
from jaxdd.objectives.mutual_info import (
    contrastive_terms, embed, init_heads, layer_features, nce_loss, with_mutual_info,
)
from jaxdd.synthetic import pixels
from jaxdd.types import Batch, JaxddError
from tests.conftest import toy_images

K, SHAPE = 3, (8, 8, 1)
MODULE = get_model("ConvNet", K, width=8, depth=2)


def _normed(rng, n, d):
    z = rng.normal(size=(n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _reference_nce(a, ya, c, yc, tau, valid=None, posok=None):
    """Plain numpy loops: mean over anchors of mean over positives of -log softmax."""
    valid = np.ones(len(c), bool) if valid is None else valid
    posok = valid if posok is None else posok & valid
    losses = []
    for i in range(len(a)):
        logits = np.array([a[i] @ c[j] / tau for j in range(len(c)) if valid[j]])
        idx = [j for j in range(len(c)) if valid[j]]
        lse = np.log(np.sum(np.exp(logits)))
        terms = [-(logits[idx.index(j)] - lse) for j in range(len(c)) if posok[j] and yc[j] == ya[i]]
        if terms:
            losses.append(np.mean(terms))
    loss = np.mean(losses)
    return loss, np.log(valid.sum()) - loss


def test_nce_matches_hand_computation():
    # 2 anchors, 3 candidates in 2-d, tau 0.5: written out by hand.
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    ya = np.array([0, 1])
    c = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    yc = np.array([0, 0, 1])
    tau = 0.5
    # anchor 0: logits (2, 1.2, 0); positives 0 and 1.  anchor 1: logits (0, 1.6, 2); positive 2.
    lse0 = np.log(np.exp(2.0) + np.exp(1.2) + np.exp(0.0))
    lse1 = np.log(np.exp(0.0) + np.exp(1.6) + np.exp(2.0))
    hand = 0.5 * ((lse0 - 2.0 + lse0 - 1.2) / 2 + (lse1 - 2.0))
    loss, mi = nce_loss(jnp.asarray(a), jnp.asarray(ya), jnp.asarray(c), jnp.asarray(yc), tau)
    np.testing.assert_allclose(float(loss), hand, rtol=1e-6)
    np.testing.assert_allclose(float(mi), np.log(3) - hand, rtol=1e-6)
    # A random case with masked (empty bank) slots and negatives-only candidates against the loop reference.
    rng = np.random.default_rng(0)
    a, c = _normed(rng, 5, 4), _normed(rng, 9, 4)
    ya, yc = rng.integers(0, 3, 5), np.concatenate([np.repeat(np.arange(3), 2), rng.integers(0, 3, 3)])
    valid = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1], bool)
    posok = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0], bool)
    loss, mi = nce_loss(jnp.asarray(a), jnp.asarray(ya), jnp.asarray(c), jnp.asarray(yc), 0.3,
                        cand_valid=jnp.asarray(valid), pos_valid=jnp.asarray(posok))
    ref_loss, ref_mi = _reference_nce(a, ya, c, yc, 0.3, valid, posok)
    np.testing.assert_allclose([float(loss), float(mi)], [ref_loss, ref_mi], rtol=1e-5)


def test_nce_decreases_when_positives_pulled_together_and_bound_saturates_at_log_k():
    rng = np.random.default_rng(1)
    n_per, d, tau = 4, 16, 0.1
    ya = np.arange(K)
    yc = np.repeat(np.arange(K), n_per)
    a, c = _normed(rng, K, d), _normed(rng, K * n_per, d)
    prev = np.inf
    for t in (0.0, 0.3, 0.6, 0.9):  # move every real sample towards its class's synthetic anchor
        moved = (1 - t) * c + t * a[yc]
        moved /= np.linalg.norm(moved, axis=1, keepdims=True)
        loss, _ = nce_loss(jnp.asarray(a), jnp.asarray(ya), jnp.asarray(moved), jnp.asarray(yc), tau)
        assert float(loss) < prev
        prev = float(loss)
    # Perfectly separated classes (orthogonal anchors, candidates equal to their anchor): the bound -> log K.
    eye = np.eye(K, d)
    loss, mi = nce_loss(jnp.asarray(eye), jnp.asarray(ya), jnp.asarray(eye[yc]), jnp.asarray(yc), 0.01)
    np.testing.assert_allclose(float(mi), np.log(K), atol=1e-4)
    np.testing.assert_allclose(float(loss), np.log(n_per), atol=1e-4)


def test_nce_invariant_to_permuting_the_batch():
    rng = np.random.default_rng(2)
    layers = {"block1": 12, "block2": 6}
    heads = init_heads(jax.random.key(0), layers, 5)
    fs = {k: jnp.asarray(rng.normal(size=(6, d)), jnp.float32) for k, d in layers.items()}
    fr = {k: jnp.asarray(rng.normal(size=(9, d)), jnp.float32) for k, d in layers.items()}
    ys, yr = jnp.asarray(np.repeat(np.arange(K), 2)), jnp.asarray(np.repeat(np.arange(K), 3))
    bank = {"z": {k: jnp.asarray(_normed(rng, 7, 5), jnp.float32) for k in layers},
            "y": jnp.asarray([0, 2, -1, 1, 1, -1, 0], jnp.int32)}
    terms = jax.jit(contrastive_terms)
    ps, pr, pb = rng.permutation(6), rng.permutation(9), rng.permutation(7)
    for b, b_perm in ((None, None), (bank, {"z": {k: v[pb] for k, v in bank["z"].items()}, "y": bank["y"][pb]})):
        ref = terms(heads, fs, ys, fr, yr, 0.2, bank=b)
        perm = terms(heads, {k: v[ps] for k, v in fs.items()}, ys[ps],
                                 {k: v[pr] for k, v in fr.items()}, yr[pr], 0.2, bank=b_perm)
        for k in layers:
            np.testing.assert_allclose(np.array(ref[k]), np.array(perm[k]), rtol=1e-5)


def _toy():
    x, y = toy_images(K, 6, SHAPE)
    real = Batch(jnp.asarray(x), jnp.asarray(y))
    syn = Synthetic(jnp.asarray(x.reshape(K, 6, *SHAPE)[:, :2].reshape(-1, *SHAPE) + 0.1),
                    jnp.repeat(jnp.arange(K), 2), {})
    return syn, real


def _zero_base(real_per_class=0):
    return Objective("zero", no_init, lambda syn, real, state, key: (jnp.zeros(()), {}),
                     real_per_class=real_per_class)


def test_gradients_reach_synthetic_images_and_heads():
    syn, real = _toy()
    module = get_model("ConvNet", K, width=4, depth=2)
    obj = with_mutual_info(_zero_base(), module=module, num_classes=K, image_shape=SHAPE, weight=1.0,
                           temperature=0.5, head_dim=4, real_per_class=3, networks=1)
    state32 = obj.init(jax.random.key(0))
    with jax.enable_x64(True):
        state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if a.dtype == jnp.float32 else a, state32)
        key = jax.random.key(3)
        sx = syn.x.astype(jnp.float64)
        rx = Batch(real.x.astype(jnp.float64), real.y)

        @jax.jit
        def loss_of_images(x):
            return obj.loss(syn._replace(x=x), rx, state, key)[0]

        g = jax.grad(loss_of_images)(sx)
        assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
        check_grads(loss_of_images, (sx,), order=1, modes=("rev",), atol=1e-4, rtol=1e-4, eps=1e-4)
        # heads: both sides get gradient, and it matches finite differences
        variables = jax.tree.map(lambda a: a[0], state["nets"])
        fs = layer_features(module, variables, sx, ("block1", "block2"))
        fr = layer_features(module, variables, rx.x[:9], ("block1", "block2"))

        @jax.jit
        def loss_of_heads(heads):
            terms = contrastive_terms(heads, fs, syn.y, fr, rx.y[:9], 0.5)
            return sum(t[0] for t in terms.values())

        gh = jax.grad(loss_of_heads)(state["heads"])
        for side in ("syn", "real"):
            for layer in ("block1", "block2"):
                assert float(jnp.abs(gh[side][layer]["w"]).max()) > 0
        check_grads(loss_of_heads, (state["heads"],), order=1, modes=("rev",), atol=1e-4, rtol=1e-4, eps=1e-4)


def test_update_trains_heads_and_fills_the_bank():
    syn, real = _toy()
    obj = with_mutual_info(_zero_base(), module=MODULE, num_classes=K, image_shape=SHAPE, weight=1.0,
                           temperature=0.2, head_dim=8, real_per_class=2, negatives="bank", bank_size=8,
                           head_lr=1e-2, networks=1)  # one network: loss and update see the same features
    assert obj.real_per_class == 2
    real = Batch(real.x.reshape(K, 6, *SHAPE)[:, :2].reshape(-1, *SHAPE), jnp.repeat(jnp.arange(K), 2))
    state = obj.init(jax.random.key(0))
    loss = jax.jit(obj.loss)
    update = jax.jit(obj.update)
    key = jax.random.key(1)
    l0, aux0 = loss(syn, real, state, key)
    assert int(jnp.sum(state["bank"]["y"] >= 0)) == 0
    np.testing.assert_allclose(float(aux0["mim_mi_lb"]), np.log(6) - float(l0) / 2, rtol=1e-5)
    s = state
    for i in range(5):
        s = update(s, syn, real, jax.random.fold_in(key, i))
    # FIFO: 5 steps x 6 real embeddings into 8 slots -> full, pointer at 30 % 8
    assert int(s["bank"]["ptr"]) == 30 % 8 and int(jnp.sum(s["bank"]["y"] >= 0)) == 8
    np.testing.assert_allclose(np.linalg.norm(np.asarray(s["bank"]["z"]["block1"]), axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(s["heads"]["syn"]["block1"]["w"], state["heads"]["syn"]["block1"]["w"])
    # heads trained on the same features without the bank: the NCE loss went down
    s_nobank = {**s, "bank": state["bank"]}
    l1, _ = loss(syn, real, s_nobank, key)
    assert float(l1) < float(l0)
    # the bank adds candidates: log N in the bound grows from log 6 to log 14
    l2, aux2 = loss(syn, real, s, key)
    np.testing.assert_allclose(float(aux2["mim_mi_lb"]), np.log(14) - float(l2) / 2, rtol=1e-5)


def test_network_draw_is_dms_and_weight_zero_reproduces_dm():
    syn, real = _toy()
    base = dm(MODULE, K, strategy=None, real_per_class=4)  # no DSA: a cheaper compile, the same key use
    key = jax.random.key(7)
    # the wrapper's network for key `key` is the one DM matches on: recompute DM's loss with it
    variables = init_model(MODULE, jax.random.split(key)[0], SHAPE)
    base_real = Batch(real.x.reshape(K, 6, *SHAPE)[:, :4].reshape(-1, *SHAPE), real.y[:12])
    manual = jnp.sum(jnp.square(class_mean_embeddings(MODULE, variables, syn.x, K)
                                - class_mean_embeddings(MODULE, variables, base_real.x, K)))
    np.testing.assert_allclose(float(base.loss(syn, base_real, (), key)[0]), float(manual), rtol=1e-5)
    # weight 0: the same synthetic set as DM after 3 distillation steps (same real batch, same keys)
    x, y = toy_images(K, 12, SHAPE)
    pool = make_pool(x, y, K)
    wrapped = with_mutual_info(base, module=MODULE, num_classes=K, image_shape=SHAPE, weight=0.0, head_dim=4,
                               real_per_class=2)
    assert wrapped.real_per_class == 4 and wrapped.name == "dm+mim"
    param = pixels(2, "real")
    cfg = DistillConfig(iterations=3, progress=False, lr_img=1.0, momentum=0.5)
    finals = []
    for obj in (base, wrapped):
        state, tx = init_state(jax.random.key(0), obj, param, pool, cfg)
        step = jax.jit(lambda s, p, k, obj=obj, tx=tx: distill_step(obj, param, tx, s, p, k))
        for _ in range(3):
            state, m = step(state, pool, jax.random.key(0))
        finals.append(state.syn["data"])
    np.testing.assert_allclose(np.asarray(finals[1]), np.asarray(finals[0]), rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(finals[0]), np.asarray(init_state(jax.random.key(0), base, param, pool,
                                                                         cfg)[0].syn["data"]))
    assert np.isfinite(float(m["mim_mi_lb"])) and float(m["base_loss"]) == pytest.approx(float(m["loss"]))


def test_derived_methods_and_errors():
    names = available_methods()
    assert "dm+mim" in names
    for n in names:
        if n in DERIVED_BASES:
            assert n + "+mim" in names
    from jaxdd.methods import register_method
    spec = register_method(derive_mim(get_method("dm")))  # re-derive explicitly: the same name, the same options
    assert spec.name == "dm+mim" and spec.defaults == get_method("dm").defaults
    spec = get_method("dm+mim")
    opts = {o.name for o in spec.options}
    assert {"real_per_class", "dsa", "mutual_info_weight", "mutual_info_temperature", "mutual_info_layers",
            "mutual_info_negatives"} <= opts
    from jaxdd.cli import build_parser
    args = build_parser().parse_args(["distill", "--method", "dm+mim", "--dataset", "digits", "--ipc", "1",
                                      "--out", "x", "--mutual-info-weight", "0.5", "--mutual-info-negatives",
                                      "bank"])
    assert args.opt_mutual_info_weight == 0.5 and args.opt_mutual_info_negatives == "bank"
    kw = dict(module=MODULE, num_classes=K, image_shape=SHAPE)
    with pytest.raises(JaxddError, match="block3"):
        with_mutual_info(_zero_base(), layers="block1,block3", **kw)
    with pytest.raises(JaxddError, match="negatives"):
        with_mutual_info(_zero_base(), negatives="queue", **kw)
    with pytest.raises(JaxddError, match="bank_size"):
        with_mutual_info(_zero_base(), negatives="bank", bank_size=4, real_per_class=2, **kw)
    with pytest.raises(JaxddError, match="temperature"):
        with_mutual_info(_zero_base(), temperature=0.0, **kw)
    obj = with_mutual_info(_zero_base(), layers="block2", head_dim=3, **kw)
    assert set(obj.init(jax.random.key(0))["heads"]["syn"]) == {"block2"}
    z = embed({"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}, jnp.ones((2, 4)))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)


def test_wrapper_forwards_every_hook_of_the_base_objective():
    """with_mutual_info keeps the base's optional hooks (DWA's init_with_real and project): the real-init hook builds
    the base state under "base" exactly as the base alone would, and project is the base's own function."""
    seen = {}

    def base_init_with_real(key, real_init):
        seen["real_init"] = real_init
        return {"teacher": real_init.sum()}

    def project(data):
        return jnp.clip(data, -1.0, 1.0)

    base = Objective("toy", no_init, lambda syn, real, state, key: (jnp.sum(syn.x ** 2), {}), real_per_class=2,
                     learnables={"lr": 0.1}, init_with_real=base_init_with_real, project=project)
    wrapped = with_mutual_info(base, module=get_model("ConvNetD1", 3, width=8), num_classes=3, image_shape=(8, 8, 1),
                               real_per_class=2)
    assert wrapped.project is project and wrapped.learnables == {"lr": 0.1} and wrapped.real_per_class == 2
    assert wrapped.init_with_real is not None and wrapped.name == "toy+mim"
    real_init = jnp.ones((3, 1, 8, 8, 1))
    state = wrapped.init_with_real(jax.random.key(0), real_init)
    assert float(state["base"]["teacher"]) == 192.0 and seen["real_init"] is real_init
    assert set(state) >= {"base", "heads", "head_opt", "hparams"}
    # a base without the hook gives a wrapper without it (the driver then calls init)
    plain = with_mutual_info(base._replace(init_with_real=None, project=None), module=get_model("ConvNetD1", 3, width=8),
                             num_classes=3, image_shape=(8, 8, 1), real_per_class=2)
    assert plain.init_with_real is None and plain.project is None
