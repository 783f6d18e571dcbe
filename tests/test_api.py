"""The public API a notebook user meets (issue 22): names without traps, own arrays and own flax modules through
distill_dataset / evaluate_run / evaluate_synthetic, logging callbacks, figures without global side effects."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import flax.linen as nn
import jax
import numpy as np
import pytest

import jaxdd
from jaxdd.types import JaxddError


class TinyCNN(nn.Module):
    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train=False, features=False):
        emb = nn.relu(nn.Conv(4, (3, 3))(x)).mean(axis=(1, 2))
        logits = nn.Dense(self.num_classes)(emb)
        return (logits, {"embedding": emb}) if features else logits


def _arrays(n_per_class=20, seed=0):
    """uint8 toy images (n, 8, 8) of 3 classes (each a different bright region) and int labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    x = rng.integers(0, 60, (len(y), 8, 8))
    for c in range(3):
        x[y == c, :, 2 * c:2 * c + 3] += 180
    return x.astype(np.uint8), y


def test_public_names_have_no_traps():
    from jaxdd import augment, objectives, train

    assert isinstance(jaxdd.train, types.ModuleType) and jaxdd.train is train
    assert jaxdd.train.predict_many is train.predict_many is jaxdd.predict_many
    assert jaxdd.train_model is train.train
    net, loops = jaxdd.get_model("ConvNet", 3, width=4, depth=1), {"outer_loop": 1, "inner_loop": 1}
    obj = jaxdd.dsa(net, 3, (8, 8, 1), **loops)  # the method, like jaxdd.dm and jaxdd.dc
    assert isinstance(obj, jaxdd.Objective) and obj.name == objectives.dsa(net, 3, (8, 8, 1), **loops).name
    with pytest.raises(JaxddError, match="jaxdd.dsa_augment"):  # the old call of the augmentation
        jaxdd.dsa(np.zeros((2, 8, 8, 1), np.float32), jax.random.key(0), jaxdd.DSA_DEFAULT)
    assert jaxdd.dsa_augment is augment.dsa and jaxdd.augment is augment
    for name in ("dm", "dc", "dsa", "mtt", "kip", "bptt", "recover", "gradient_matching", "with_mutual_info",
                 "pixels", "low_rank", "register_model", "register_dataset", "register_method",
                 "register_parameterization", "from_arrays", "check_model", "MODEL_CONTRACT", "show_synthetic",
                 "save_image_grid", "JsonlLogger", "predict_many", "train_many", "evaluate_synthetic"):
        assert hasattr(jaxdd, name), name


def test_import_and_artifact_saving_leave_matplotlib_alone(tmp_path):
    """Importing jaxdd imports no matplotlib; saving an artifact (its PNG) keeps the user's backend and pyplot."""
    code = f"""
import sys
import jaxdd
assert "matplotlib" not in sys.modules, "jaxdd imported matplotlib"
import matplotlib
matplotlib.use("svg")
import numpy as np
x = np.random.default_rng(0).random((4, 5, 5, 1), dtype=np.float32)
pre = jaxdd.fit_preprocess(x)
jaxdd.save_artifact({str(tmp_path)!r}, x, np.array([0, 0, 1, 1]), pre, {{}}, class_names=("a", "b"))
fig = jaxdd.show_synthetic(jaxdd.load_artifact({str(tmp_path)!r}))
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules, "jaxdd imported pyplot"
print("ok", type(fig).__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", "Figure"]
    assert (tmp_path / "synthetic.png").stat().st_size > 0


def test_show_synthetic_rows_named_by_class():
    from matplotlib.figure import Figure

    x = np.random.default_rng(0).random((6, 5, 5, 1), dtype=np.float32)
    y = np.array([2, 0, 1, 2, 0, 1])
    fig = jaxdd.show_synthetic(x, y, class_names=("cat", "dog", "emu"), max_per_class=1)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "emu"]
    assert ax.images[0].get_array().shape == (3 * 6 + 1, 6 + 1)  # one row per class, max_per_class=1 column
    soft = jax.nn.one_hot(y, 3)  # learned (soft) labels: rows by argmax; without names the class ids
    fig = jaxdd.show_synthetic(x, soft)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["0", "1", "2"]
    with pytest.raises(JaxddError, match="needs labels"):
        jaxdd.show_synthetic(x)


def test_save_image_grid_draws_the_class_names(tmp_path):
    x = np.random.default_rng(0).random((4, 5, 5, 1), dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    jaxdd.save_image_grid(x, y, tmp_path / "a.png", class_names=("cat", "dog"))
    jaxdd.save_image_grid(x, y, tmp_path / "b.png", class_names=("zebra", "yak"))
    jaxdd.save_image_grid(x, y, tmp_path / "c.png", class_names=("cat", "dog"))
    a, b, c = ((tmp_path / f).read_bytes() for f in ("a.png", "b.png", "c.png"))
    assert a == c and a != b


def test_own_arrays_and_module_distil_log_and_evaluate(tmp_path):
    """distill_dataset on (x, y) with an own module; the callback sees what metrics.jsonl holds; evaluate_run needs
    the test arrays and the module again, and says so."""
    x, y = _arrays()
    x_test, y_test = _arrays(5, seed=1)
    rows = []
    run = tmp_path / "run"
    out = jaxdd.distill_dataset("dm", (x, y), 1, iterations=3, model=TinyCNN(), out_dir=str(run), progress=False,
                                method_options={"real_per_class": 4, "dsa": ""}, val_per_class=2,
                                callbacks=[lambda step, m: rows.append({"step": step, **m})])
    meta = json.loads((run / "synthetic.json").read_text())
    assert meta["dataset"] is None and meta["model"] == "TinyCNN" and meta["model_module"] is True
    assert meta["data"]["sha256"] == jaxdd.fingerprint(jaxdd.from_arrays(x, y))
    assert meta["num_classes"] == 3 and meta["image_shape"] == [8, 8, 1] and meta["data"]["num_examples"] == 60
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == logged and [r["step"] for r in rows] == [1, 3] and "loss" in rows[0]
    assert out["images"].shape == (3, 8, 8, 1) and out["preprocess"] is not None

    with pytest.raises(JaxddError, match="own flax module TinyCNN; pass it again"):
        jaxdd.evaluate_run(str(run), test=(x_test, y_test), num_models=1, epochs=1)
    with pytest.raises(JaxddError, match=r"distilled from arrays \(sha256 .*test=\(x_test, y_test\)"):
        jaxdd.evaluate_run(str(run), model=TinyCNN(), num_models=1, epochs=1)
    with pytest.raises(JaxddError, match=r"train=\(x_train, y_train\)"):
        jaxdd.evaluate_run(str(run), model=TinyCNN(), test=(x_test, y_test), baseline=True, num_models=1, epochs=1)
    res = jaxdd.evaluate_run(str(run), model=TinyCNN(), test=(x_test, y_test), train=(x, y), baseline=True,
                             num_models=1, epochs=1, augment=False)
    assert res["synthetic"]["model"] == "TinyCNN" and 0.0 <= res["synthetic"]["mean"] <= 1.0
    assert res["test_sha256"] == jaxdd.fingerprint(jaxdd.from_arrays(x_test, y_test, num_classes=3))
    assert "random_subset" in res and json.loads((run / "eval.json").read_text()) == res


def test_evaluate_synthetic_takes_a_module_and_checks_it():
    x, y = _arrays(4)
    xs = np.asarray(x, np.float32)[..., None] / 255.0
    res = jaxdd.evaluate_synthetic(jax.random.key(0), xs, y, xs, y, num_classes=3, model=TinyCNN(), num_models=1,
                                   protocol=jaxdd.TrainProtocol(epochs=1))
    assert res.model == "TinyCNN" and res.accuracies.shape == (1,)
    with pytest.raises(JaxddError, match=r"logits have shape \(2, 3\), expected \(2, 5\)"):
        jaxdd.evaluate_synthetic(jax.random.key(0), xs, y, xs, y, num_classes=5, model=TinyCNN(), num_models=1,
                                 protocol=jaxdd.TrainProtocol(epochs=1))


def test_module_errors_in_distill_dataset_say_what_to_do():
    x, y = _arrays(6)
    with pytest.raises(JaxddError, match="model contract"):  # checked before anything runs
        jaxdd.distill_dataset("dm", (x, y), 1, iterations=1, model=TinyCNN(num_classes=4), progress=False)
    with pytest.raises(JaxddError, match=r"register your module first: jaxdd.register_model\('TinyCNN'"):
        jaxdd.distill_dataset("mtt", (x, y), 1, iterations=1, model=TinyCNN(), progress=False)
    with pytest.raises(JaxddError, match="name .*Dataset or a pair"):
        jaxdd.distill_dataset("dm", {"x": x}, 1, iterations=1, progress=False)


def test_registered_dataset_and_model_by_name_record_names(tmp_path, monkeypatch):
    from jaxdd import models
    from jaxdd.data import datasets

    monkeypatch.setattr(datasets, "REGISTERED", dict(datasets.REGISTERED))
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    splits = {"train": _arrays(), "test": _arrays(5, seed=1)}
    jaxdd.register_dataset("toy3", lambda split: splits[split], class_names=("left", "mid", "right"))
    jaxdd.register_model("Tiny", lambda num_classes, **kw: TinyCNN(num_classes=num_classes, **kw))
    run = tmp_path / "run"
    jaxdd.distill_dataset("dm", "toy3", 1, iterations=1, model="Tiny", out_dir=str(run), progress=False,
                          method_options={"real_per_class": 4, "dsa": ""}, val_per_class=2)
    meta = json.loads((run / "synthetic.json").read_text())
    assert meta["dataset"] == "toy3" and meta["model"] == "Tiny" and "data" not in meta
    assert meta["class_names"] == ["left", "mid", "right"]
    res = jaxdd.evaluate_run(str(run), num_models=1, epochs=1, augment=False)  # test split found by name
    assert res["dataset"] == "toy3" and "test_sha256" not in res


def test_constructors_are_the_one_source_of_method_defaults():
    """The composable API and the CLI/registry agree: each registered option's default is the constructor's, and
    jaxdd.dm(module, K) with no options computes the same loss, to the bit, as the registry-built objective."""
    import inspect

    from jaxdd.distill import make_pool, sample_real
    from jaxdd.methods import MethodContext, get_method, resolve_options
    from jaxdd.objectives import Synthetic

    ctor = {"dm": jaxdd.dm, "dc": jaxdd.objectives.gradient.gradient_matching, "bptt": jaxdd.bptt, "kip": jaxdd.kip,
            "mtt": jaxdd.mtt, "sre2l": jaxdd.sre2l, "dwa": jaxdd.dwa}
    for name, fn in ctor.items():
        params = inspect.signature(fn).parameters
        shared = [o for o in get_method(name).options if o.name in params]
        assert shared, name
        assert all(o.default == params[o.name].default for o in shared), name
    x, y = np.random.default_rng(0).random((40, 8, 8, 1), np.float32), np.repeat(np.arange(4), 10)
    pool = make_pool(x, y, 4)
    spec = get_method("dm")
    opts = resolve_options(spec, {"real_per_class": 5})
    ctx = MethodContext(4, (8, 8, 1), 2, "ConvNetD1", {}, opts, "toy", pool, None, jax.random.key(0))
    by_registry = spec.build(ctx)
    by_hand = jaxdd.dm(jaxdd.get_model("ConvNetD1", 4), 4, real_per_class=5)
    syn = Synthetic(x[::5], y[::5], {})
    real = sample_real(pool, jax.random.key(1), 5)
    key = jax.random.key(2)
    assert float(by_registry.loss(syn, real, (), key)[0]) == float(by_hand.loss(syn, real, (), key)[0])


def test_dc_without_loops_takes_the_papers_for_the_set_size():
    """jaxdd.dc(module, K, shape) needs no outer_loop/inner_loop: at 10 images per class it runs the paper's 10
    matching rounds per fresh network (the round counter wraps after 10 updates)."""
    from jaxdd.objectives import Synthetic

    k, ipc = 3, 10
    obj = jaxdd.dc(jaxdd.get_model("MLP", k, width=8), k, (4, 4, 1), real_per_class=2)
    x = np.random.default_rng(0).random((k * ipc, 4, 4, 1), np.float32)
    syn = Synthetic(x, np.repeat(np.arange(k), ipc), {})
    update = jax.jit(obj.update)
    state = obj.init(jax.random.key(0))
    rounds = []
    for i in range(11):
        rounds.append(int(state["round"]))
        state = update(state, syn, None, jax.random.key(i))
    assert rounds == list(range(10)) + [0]
    with pytest.raises(JaxddError, match="outer_loop"):
        jaxdd.dc(jaxdd.get_model("MLP", k), k, (4, 4, 1), outer_loop=-1)


def test_distill_without_iterations_says_it_runs_the_paper_count(capsys):
    from jaxdd.methods import get_method
    from jaxdd.api import method_config

    assert method_config(get_method("dm")).iterations == 20000
    assert "iterations not given: dm runs its paper's 20000" in capsys.readouterr().err
    method_config(get_method("dm"), iterations=5)
    assert capsys.readouterr().err == ""


def test_one_budget_check_for_distill_and_distill_many(tmp_path, monkeypatch):
    """Both dataset-level drivers go through one setup (jaxdd.api._prepare): a parameterization storing more floats
    than the pixel budget is refused before any step runs, by distill_dataset and by distill_many_dataset alike."""
    import jax.numpy as jnp

    from jaxdd.synthetic import registry

    def double(ipc, image_shape, num_classes, init, **_):  # stores two images per decoded image
        return jaxdd.Parameterization(
            "double", lambda key, real: {"a": jnp.concatenate([real, real], 1)},
            lambda p: p["a"][:, :ipc].reshape(-1, *image_shape), ipc, lambda p: int(p["a"].size), {})

    monkeypatch.setitem(registry.PARAMETERIZATIONS, "double", double)
    for fn, kw in ((jaxdd.distill_dataset, {}), (jaxdd.distill_many_dataset, {"num_exp": 2})):
        with pytest.raises(JaxddError, match="over the budget of 1 pixel images per class"):
            fn("dm", "digits", 1, param="double", iterations=10 ** 6, out_dir=str(tmp_path / fn.__name__),
               progress=False, **kw)
        assert not (tmp_path / fn.__name__ / "checkpoints").exists()
