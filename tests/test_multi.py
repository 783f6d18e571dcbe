"""The experiment axis: N distillations in one vmapped program equal N separate runs with the same keys (and each
experiment's own hyperparameter), resume from per-experiment checkpoints (also by the single-run driver), vmapped
evaluation equals ``train_many``, CLI and benchmark smoke runs."""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.distill import DistillConfig, distill, distill_step, init_state, make_pool
from jaxdd.models import get_model
from jaxdd.distill import distill_many, hyperparameters, init_states, set_hyperparameters
from jaxdd.protocols.multi import train_sets
from jaxdd.objectives import dm
from jaxdd.synthetic import pixels
from jaxdd.train import TrainProtocol, train_many
from jaxdd.types import JaxddError
from tests.conftest import toy_images

K, SHAPE, IPC = 3, (8, 8, 1), 2
LRS = (0.5, 1.0, 2.0)
STEPS = 4


@pytest.fixture(scope="module")
def setup():
    x, y = toy_images(K, 12, SHAPE)
    pool = make_pool(x, y, K)
    objective = dm(get_model("ConvNet", K, width=8, depth=2), K, strategy=None, real_per_class=4)
    param = pixels(IPC, "real")
    config = DistillConfig(iterations=3, progress=False, log_every=1, checkpoint_every=1)
    keys = jax.random.split(jax.random.key(7), len(LRS))
    # reference: each experiment alone, its lr given through DistillConfig, one jitted distill_step
    refs = []
    step = None
    for i, lr in enumerate(LRS):
        state, tx = init_state(keys[i], objective, param, pool, dataclasses.replace(config, lr_img=lr))
        if step is None:  # the lr lives in the optimiser state, so one compiled step serves every lr
            step = jax.jit(lambda s, p, k: distill_step(objective, param, tx, s, p, k))
        traj = []
        for _ in range(STEPS):
            state, _ = step(state, pool, keys[i])
            traj.append(np.asarray(state.syn["data"]))
        refs.append(traj)
    return pool, objective, param, config, keys, refs


def test_multi_equals_separate_runs(setup, tmp_path):
    pool, objective, param, config, keys, refs = setup
    out = tmp_path / "many"
    res = distill_many(keys, objective, param, pool, dataclasses.replace(config, iterations=2),
                       hparams={"data": LRS}, out_dir=out)
    for i in range(len(LRS)):
        np.testing.assert_allclose(res.images[i], refs[i][1], atol=1e-5)
    assert not np.allclose(refs[0][1], refs[1][1], atol=1e-3)  # keys and lrs differ: a vacuous check otherwise
    np.testing.assert_allclose(np.asarray(hyperparameters(res.state.opt_state)["data:learning_rate"]), LRS)
    # rerun with more iterations: resumes from every experiment's step-2 checkpoint and continues exactly
    res3 = distill_many(keys, objective, param, pool, config, hparams={"data": LRS}, out_dir=out)
    for i in range(len(LRS)):
        np.testing.assert_allclose(res3.images[i], refs[i][2], atol=1e-5)
        rows = [json.loads(r) for r in (out / f"exp_{i:03d}" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2, 3]
    # one experiment continued alone by the single-run driver from its own checkpoints
    alone = distill(keys[1], objective, param, pool, dataclasses.replace(config, iterations=STEPS, lr_img=LRS[1]),
                    out_dir=out / "exp_001")
    np.testing.assert_allclose(np.asarray(alone.images), refs[1][STEPS - 1], atol=1e-5)


def test_hyperparameter_errors(setup):
    pool, objective, param, config, keys, _ = setup
    with pytest.raises(JaxddError, match="one value per experiment"):
        init_states(keys, objective, param, pool, config, hparams={"data": [1.0, 2.0]})
    with pytest.raises(JaxddError, match="schedule='constant'"):
        init_states(keys, objective, param, pool, dataclasses.replace(config, schedule="cosine"),
                    hparams={"data": LRS})
    state, _ = init_state(keys[0], objective, param, pool, config)
    with pytest.raises(JaxddError, match="no lr group"):
        set_hyperparameters(state.opt_state, {"labels": 0.1})
    mom = set_hyperparameters(state.opt_state, {"data:momentum": 0.9})
    assert float(hyperparameters(mom)["data:momentum"]) == pytest.approx(0.9)
    with pytest.raises(JaxddError, match="1-D array of jax.random.key"):
        distill_many(jnp.zeros((2,)), objective, param, pool, config)


def test_train_sets_equals_train_many():
    x, y = toy_images(K, 5, SHAPE, seed=3)
    module = get_model("MLP", K, width=16)  # the loop is model-agnostic; an MLP keeps the compile short
    proto = TrainProtocol(epochs=2, batch_size=8, augment="flip")
    keys = jax.random.split(jax.random.key(1), 2)
    sets = np.stack([x, -x]), np.stack([y, y])
    got = train_sets(keys, module, *sets, proto)
    for j in range(2):
        want = train_many(keys[j:j + 1], module, jnp.asarray(sets[0][j]), jnp.asarray(sets[1][j]), proto)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a[j]), np.asarray(b[0]), atol=1e-5),
                     got, want)
    diff = jax.tree.map(lambda a: float(jnp.abs(a[0] - a[1]).max()), got["params"])
    assert max(jax.tree.leaves(diff)) > 1e-3  # the two networks trained on different sets


def test_cli_distill_many_and_evaluate_many(tmp_path, capsys):
    from jaxdd.cli import main

    out = tmp_path / "cli"
    rc = main(["distill-many", "--num-exp", "2", "--lr-img-grid", "0.5,1", "--method", "dm", "--dataset", "digits",
               "--ipc", "1", "--iterations", "2", "--model", "MLP", "--real-per-class", "4", "--dsa", "",
               "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr()
    for i in range(2):
        meta = json.loads((out / f"exp_{i:03d}" / "synthetic.json").read_text())
        assert meta["seed"] == i and meta["hparams"] == {"data": [0.5, 1.0][i]}
        assert np.load(out / f"exp_{i:03d}" / "synthetic.npz")["images"].shape == (10, 8, 8, 1)
    rc = main(["evaluate-many", str(out), "--models", "2", "--epochs", "1", "--augment", "none"])
    assert rc == 0
    summary = json.loads((out / "eval_many.json").read_text())
    assert summary["networks"] == 4 and all(0 <= r["mean"] <= 1 for r in summary["experiments"])
    assert main(["distill-many", "--num-exp", "3", "--lr-img-grid", "0.5,1", "--method", "dm", "--dataset",
                 "digits", "--ipc", "1", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    capsys.readouterr()
    # a rerun with another grid would mix runs: refused, naming the field
    assert main(["distill-many", "--num-exp", "2", "--lr-img-grid", "0.5,2", "--method", "dm", "--dataset", "digits",
                 "--ipc", "1", "--iterations", "2", "--model", "MLP", "--real-per-class", "4", "--dsa", "",
                 "--out", str(out), "--no-progress"]) == 2
    assert "  hparams.data: [0.5, 1.0] -> [0.5, 2.0]" in capsys.readouterr().err
