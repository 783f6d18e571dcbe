import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.evaluate import (PAPER_EVAL_MODELS, dc_eval_augment, eval_module, evaluate_synthetic, paper_eval_models,
                            standard_eval_augment)
from jaxdd.models import apply_model, get_model, init_model
from jaxdd.train import (TrainProtocol, accuracy, cross_entropy, default_protocol, predict_many, train_many,
                         unroll_sgd)
from jaxdd.types import JaxddError
from tests.conftest import toy_images

PROTO = TrainProtocol(epochs=30, lr=0.05, batch_size=16)


def test_evaluation_separable_high_and_shuffled_chance():
    x, y = toy_images(3, 16, (8, 8, 1), seed=0)
    xt, yt = toy_images(3, 40, (8, 8, 1), seed=0)  # same class prototypes (seed 0), different noise draws
    kw = dict(num_classes=3, num_models=3, protocol=PROTO, model_kwargs={"width": 16, "depth": 2})
    good = evaluate_synthetic(jax.random.key(0), x, y, xt, yt, **kw)
    assert good.mean > 0.9, good
    y_shuf = np.random.default_rng(1).permutation(y)
    bad = evaluate_synthetic(jax.random.key(0), x, y_shuf, xt, yt, **kw)
    assert bad.mean < 0.6, bad
    assert good.accuracies.shape == (3,)


def test_evaluation_is_deterministic_and_models_differ():
    x, y = toy_images(3, 8, (8, 8, 1))
    proto = TrainProtocol(epochs=2, batch_size=8)
    mk = {"width": 8, "depth": 2}
    kw = dict(num_classes=3, num_models=2, protocol=proto, model_kwargs=mk)
    a = evaluate_synthetic(jax.random.key(3), x, y, x, y, **kw)
    b = evaluate_synthetic(jax.random.key(3), x, y, x, y, **kw)
    np.testing.assert_array_equal(a.accuracies, b.accuracies)
    # the two networks evaluate_synthetic trains (keys split from its key): different inits, different weights and
    # different logits, and they are the networks whose accuracies it reported
    nets = train_many(jax.random.split(jax.random.key(3), 2), eval_module("ConvNet", 3, mk), jnp.asarray(x),
                      jnp.asarray(y), proto)
    for leaf in jax.tree.leaves(nets["params"]):
        assert not np.allclose(leaf[0], leaf[1])
    logits = predict_many(get_model("ConvNet", 3, **mk), nets, jnp.asarray(x))
    assert float(jnp.abs(logits[0] - logits[1]).max()) > 1e-3
    np.testing.assert_array_equal(jax.vmap(accuracy, in_axes=(0, None))(logits, jnp.asarray(y)), a.accuracies)


def test_dc_evaluation_augmentation_follows_the_reference_rule():
    """The DC code's get_daparam: MNIST -> crop_scale_rotate; evaluation network ConvNetBN -> crop_noise (wins);
    otherwise none. Only DC follows it; DSA/DM/MTT evaluate with DSA; KIP/BPTT without augmentation."""
    assert dc_eval_augment("mnist", "ConvNet") == "dc:crop_scale_rotate"
    assert dc_eval_augment("mnist", "ConvNetBN") == "dc:crop_noise"
    assert dc_eval_augment("cifar10", "ConvNetBN") == "dc:crop_noise"
    for dataset in ("fashion_mnist", "cifar10", "digits", "svhn_cropped"):
        assert dc_eval_augment(dataset, "ConvNet") is None
    assert dc_eval_augment("fashion_mnist", "ConvNetASwishBN") is None  # the reference names ConvNetBN only
    assert standard_eval_augment("dc", "mnist", "ConvNet") == "dc:crop_scale_rotate"
    assert standard_eval_augment("dc", "fashion_mnist", "ConvNet") is None
    assert standard_eval_augment("dc", "fashion_mnist", "ConvNetBN") == "dc:crop_noise"
    for method in ("dsa", "dm", "mtt", "dm+mim"):
        assert standard_eval_augment(method, "mnist", "ConvNetBN") == "color_crop_cutout_flip_scale_rotate"
    assert standard_eval_augment("dsa", "mnist", "ConvNet", eval_augment="crop") == "crop"  # what the run recorded
    for method in ("kip", "bptt", "no-such-method", None):
        assert standard_eval_augment(method, "mnist", "ConvNetBN") is None
    # epochs: 1000 with either augmentation, 300 without
    assert default_protocol("dc:crop_scale_rotate").epochs == 1000
    assert default_protocol("dc:crop_scale_rotate").augment == "dc:crop_scale_rotate"
    assert default_protocol(None).epochs == 300 and default_protocol("none") == default_protocol(None)
    assert paper_eval_models("dc") == paper_eval_models("dm") == PAPER_EVAL_MODELS == 20
    assert paper_eval_models("mtt") == 5
    with pytest.raises(JaxddError, match="DC-augmentation"):
        TrainProtocol(augment="dc:crop_flip")


def test_training_with_dc_augmentation_is_deterministic_and_augments():
    x, y = toy_images(3, 6, (8, 8, 1))
    module = get_model("ConvNet", 3, width=8, depth=1)
    keys = jax.random.split(jax.random.key(1), 1)
    plain = train_many(keys, module, x, y, TrainProtocol(epochs=1, batch_size=8))
    proto = TrainProtocol(epochs=1, batch_size=8, augment="dc:crop_noise")
    a = train_many(keys, module, x, y, proto)
    chex.assert_trees_all_equal(a, train_many(keys, module, x, y, proto))
    assert not np.allclose(a["params"]["classifier"]["kernel"], plain["params"]["classifier"]["kernel"])


def test_evaluate_run_protocol_and_paper_flag(tmp_path):
    """evaluate_run picks the augmentation by the rule (a DC set evaluated on ConvNetBN: DC crop_noise), records the
    protocol in eval.json, and the paper protocol refuses the settings it fixes."""
    import json

    from jaxdd.checkpoint import save_artifact
    from jaxdd.data import apply_preprocess, fit_preprocess, load
    from jaxdd.api import evaluate_run

    ds = load("digits", "train")
    pre = fit_preprocess(ds.images, ds.mean, ds.std)
    idx = np.array([np.nonzero(ds.labels == c)[0][0] for c in range(10)])
    meta = {"method": "dc", "dataset": "digits", "model": "ConvNetBN", "model_kwargs": {"width": 8, "depth": 1},
            "eval_augment": None}
    run = tmp_path / "dc"
    save_artifact(run, apply_preprocess(pre, ds.images[idx]), ds.labels[idx], pre, meta)
    out = evaluate_run(str(run), num_models=1, epochs=1)
    ev = json.loads((run / "eval.json").read_text())["evaluation"]
    assert ev == out["evaluation"]
    assert ev["augment"] == out["synthetic"]["protocol"]["augment"] == "dc:crop_noise"
    assert "ConvNetBN" in ev["augment_from"] and ev["epochs"] == out["synthetic"]["protocol"]["epochs"] == 1
    assert not ev["paper_protocol"] and ev["num_models"] == 1 and ev["paper_num_models"] == 20
    assert evaluate_run(str(run), num_models=1, epochs=1, augment=False, save=False)["evaluation"]["augment"] is None
    for bad in ({"num_models": 2}, {"epochs": 1}, {"augment": False}, {"lr": 0.1}):
        with pytest.raises(JaxddError, match="paper protocol"):
            evaluate_run(str(run), paper_protocol=True, **bad)


@pytest.mark.accelerator
def test_grouping_networks_trains_the_same_networks():
    """K networks vmapped together, in groups, or one at a time: each network depends only on its key."""
    x, y = toy_images(3, 6, (8, 8, 1))
    module = get_model("ConvNet", 3, width=8, depth=2)
    keys = jax.random.split(jax.random.key(5), 3)
    proto = TrainProtocol(epochs=3, batch_size=8, augment="flip_crop")
    together = train_many(keys, module, x, y, proto, group=3)
    chex.assert_trees_all_close(train_many(keys, module, x, y, proto, group=1), together, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(train_many(keys, module, x, y, proto, group=2), together, atol=1e-5, rtol=1e-5)
    with pytest.raises(JaxddError, match="group"):
        train_many(keys, module, x, y, proto, group=0)


def test_evaluation_bad_inputs():
    x, y = toy_images(3, 4, (8, 8, 1))
    kw = dict(num_classes=3, num_models=1, protocol=TrainProtocol(epochs=1))
    with pytest.raises(JaxddError, match="shape"):
        evaluate_synthetic(jax.random.key(0), x, y, np.zeros((4, 9, 9, 1), np.float32), y[:4], **kw)
    with pytest.raises(JaxddError):
        evaluate_synthetic(jax.random.key(0), x.astype(np.int32), y, x, y, **kw)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(JaxddError, match="NaN|nan|finite"):
        evaluate_synthetic(jax.random.key(0), bad, y, x, y, **kw)
    with pytest.raises(JaxddError, match="epochs"):
        TrainProtocol(epochs=-1)


def test_cross_entropy_soft_equals_hard_for_one_hot():
    logits = jax.random.normal(jax.random.key(0), (5, 4))
    y = jnp.array([0, 3, 1, 2, 2])
    np.testing.assert_allclose(cross_entropy(logits, y), cross_entropy(logits, jax.nn.one_hot(y, 4)), rtol=1e-6)


def _unroll_problem():
    m = get_model("ConvNet", 3, width=4, depth=1, conv_impl="patches")
    p0 = init_model(m, jax.random.key(0), (6, 6, 1))["params"]
    xs = jax.random.normal(jax.random.key(1), (4, 3, 6, 6, 1))  # 4 steps of 3 images
    ys = jnp.array([0, 1, 2])

    def outer(xs, memory, k=1):
        def step_loss(p, x):
            return cross_entropy(apply_model(m, {"params": p}, x).logits, ys)

        p = unroll_sgd(step_loss, p0, xs, jnp.full((4,), 0.1), memory=memory, checkpoint_every=k)
        return step_loss(p, xs[0])

    return outer, xs


def test_unroll_remat_equals_full():
    outer, xs = _unroll_problem()
    g_full = jax.grad(outer)(xs, "full")
    for k in (2, 4):
        chex.assert_trees_all_close(jax.grad(outer)(xs, "remat", k), g_full, rtol=1e-5, atol=1e-7)
    with pytest.raises(JaxddError, match="divide"):
        outer(xs, "remat", 3)
