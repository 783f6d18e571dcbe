"""Continual learning (docs/methods.md 9.1): class orders, herding, per-step condensation with label remapping, the
protocol end to end on toy data (memory growth, global labels, resume), and the CLI subcommand."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxdd.protocols.continual import (ContinualConfig, check_methods, class_order, condense_classes,
                                       herding_select, herding_subset, parse_builder, run_continual, split_steps)
from jaxdd.types import JaxddError
from tests.conftest import toy_images

K, SHAPE = 4, (8, 8, 1)
SMALL = {"width": 8, "depth": 2}


def _herding_reference(f, k):
    mu, total, chosen = f.mean(0), np.zeros(f.shape[1]), []
    for t in range(k):
        d = ((mu - (total + f) / (t + 1)) ** 2).sum(1)
        d[chosen] = np.inf
        i = int(np.argmin(d))
        chosen.append(i)
        total = total + f[i]
    return chosen


def test_herding_matches_reference_and_tracks_the_mean():
    f = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float64)
    idx = np.asarray(herding_select(f, 8))
    assert list(idx) == _herding_reference(f, 8)
    assert len(set(idx.tolist())) == 8
    err = np.linalg.norm(f[idx].mean(0) - f.mean(0))
    rng = np.random.default_rng(1)
    rand = [np.linalg.norm(f[rng.choice(40, 8, replace=False)].mean(0) - f.mean(0)) for _ in range(200)]
    assert err < np.percentile(rand, 5)  # herding's subset mean is closer to the class mean than random subsets
    assert sorted(np.asarray(herding_select(f[:6], 6)).tolist()) == list(range(6))
    with pytest.raises(JaxddError):
        herding_select(f[:3], 4)


def test_class_orders_and_steps():
    o0, o0b, o1 = class_order(0, 10), class_order(0, 10), class_order(1, 10)
    assert sorted(o0.tolist()) == list(range(10)) and np.array_equal(o0, o0b) and not np.array_equal(o0, o1)
    steps = split_steps(o0, 5)
    assert len(steps) == 5 and all(len(s) == 2 for s in steps) and np.array_equal(np.concatenate(steps), o0)
    with pytest.raises(JaxddError, match="steps"):
        split_steps(o0, 3)


def test_condense_step_uses_only_its_classes_with_global_labels():
    x, y = toy_images(K, 12, SHAPE)
    config = ContinualConfig(steps=2, ipc=2, iterations=0, real_per_class=4, model_kwargs=SMALL)
    # pixel DM with 0 iterations = its real init: every image is a real image of the class its global label names
    sx, sy, info = condense_classes(jax.random.key(0), "dm", x, y, [3, 1], config)
    assert info["images_per_class"] == 2 and sx.shape == (4, *SHAPE)
    np.testing.assert_array_equal(sy, [1, 1, 3, 3])
    for img, lab in zip(sx, sy):
        match = np.flatnonzero(np.all(np.isclose(x, img), axis=(1, 2, 3)))
        assert match.size and np.all(y[match] == lab)
    # low-rank DM stores floor(2*64 / (2*16)) = 4 images per class within the same floats
    lx, ly, linfo = condense_classes(jax.random.key(0), "lowrank_dm", x, y, [3, 1], config)
    assert linfo["images_per_class"] == 4 and lx.shape == (8, *SHAPE) and linfo["floats"] <= 2 * 2 * 64
    np.testing.assert_array_equal(ly, [1] * 4 + [3] * 4)
    # the parameterization comes from the registry: "dm@low_rank" is the same builder as its alias "lowrank_dm"
    assert parse_builder("dm@low_rank") == parse_builder("lowrank_dm") == ("dm", "low_rank")
    assert parse_builder("dsa") == ("dsa", "pixels")
    np.testing.assert_array_equal(condense_classes(jax.random.key(0), "dm@low_rank", x, y, [3, 1], config)[0], lx)
    with pytest.raises(JaxddError, match="dm@nope"):
        check_methods(["dm@nope"])
    hx, hy = herding_subset(jax.random.key(0), x, y, [2, 0], 3, model_kwargs=SMALL)
    np.testing.assert_array_equal(hy, [2, 2, 2, 0, 0, 0])
    for img, lab in zip(hx, hy):
        assert np.all(y[np.flatnonzero(np.all(x == img, axis=(1, 2, 3)))] == lab)


def test_protocol_end_to_end_and_resume(tmp_path):
    x, y = toy_images(K, 12, SHAPE)
    xt, yt = toy_images(K, 6, SHAPE, seed=1)
    config = ContinualConfig(steps=2, ipc=1, seeds=(1,), methods=("random", "lowrank_dm"), rank=2,
                             iterations=1, real_per_class=4, lr_img=0.1, model_kwargs=SMALL, eval_models=2,
                             eval_epochs=2, eval_augment=None)
    rec = run_continual(x, y, xt, yt, K, config, out_dir=str(tmp_path), log=None)
    for seed in (1,):
        groups = split_steps(class_order(seed, K), 2)
        for method, per_class in (("random", 1), ("lowrank_dm", 2)):  # 8x8, r=2: 2 low-rank images per pixel one
            for step in range(2):
                cell = rec["cells"][f"{seed}/{method}/{step}"]
                assert cell["classes"] == groups[step].tolist()
                assert cell["memory_images"] == (step + 1) * 2 * per_class  # the memory grows by the new classes
                assert len(cell["accuracies"]) == 2 and all(0 <= a <= 1 for a in cell["accuracies"])
            z = np.load(tmp_path / "sets" / f"seed{seed}_{method}_step1.npz")
            assert sorted(set(z["y"].tolist())) == sorted(groups[1].tolist())  # global labels of the new classes
    for method in ("random", "lowrank_dm"):
        r = rec["results"][method]
        assert len(r["mean"]) == 2 and r["n"] == [2, 2] and len(r["per_seed"]) == 1
        accs = rec["cells"][f"1/{method}/0"]["accuracies"]
        assert r["mean"][0] == pytest.approx(np.mean(accs)) and r["std"][0] == pytest.approx(np.std(accs))
    saved = json.loads((tmp_path / "continual.json").read_text())
    assert saved["results"] == rec["results"]
    again = run_continual(x, y, xt, yt, K, config, out_dir=str(tmp_path), log=None)  # resumes: nothing recomputed
    assert again["cells"] == rec["cells"]




def test_cli_continual_end_to_end_on_digits_resumes_and_refuses_changes(tmp_path, capsys):
    from jaxdd.cli import main

    out = tmp_path / "cl"
    argv = ["continual", "--dataset", "digits", "--steps", "2", "--ipc", "1", "--seeds", "1", "--methods",
            "random,dm", "--iterations", "2", "--real-per-class", "4", "--eval-models", "1", "--eval-epochs", "20",
            "--model", "ConvNetD1", "--augment", "none", "--out", str(out)]
    assert main(argv) == 0
    rec = json.loads((out / "continual.json").read_text())
    groups = split_steps(class_order(0, 10), 2)
    for method in ("random", "dm"):
        r = rec["results"][method]
        assert r["n"] == [1, 1] and len(r["mean"]) == 2
        for step in range(2):
            cell = rec["cells"][f"0/{method}/{step}"]
            assert cell["classes"] == groups[step].tolist() and cell["memory_images"] == 5 * (step + 1)
            z = np.load(out / "sets" / f"seed0_{method}_step{step}.npz")
            assert z["x"].shape == (5, 8, 8, 1) and sorted(z["y"].tolist()) == sorted(groups[step].tolist())
        # well above chance on the classes seen so far (20 % after step 1, 10 % after step 2); measured
        # random 72 / 61 %, dm 57 / 24 %
        assert r["mean"][0] > 0.3 and r["mean"][1] > 0.15, (method, r)
    assert (out / "continual.png").stat().st_size > 0
    assert main(argv) == 0  # a rerun resumes: every cell is already done, nothing is recomputed
    assert json.loads((out / "continual.json").read_text())["cells"] == rec["cells"]
    capsys.readouterr()
    changed = [*argv[:argv.index("--ipc")], "--ipc", "2", *argv[argv.index("--ipc") + 2:]]
    assert main(changed) == 2
    assert "  ipc: 1 -> 2" in capsys.readouterr().err
