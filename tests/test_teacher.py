"""Squeeze (jaxdd.objectives.recover.teacher, jaxdd.api.train_teacher): BN teacher training is deterministic and resumable, save/load round-trips, the
augmentation is a per-image shift/flip, the relabel evaluation runs end to end on a tiny teacher, and the CLI
subcommands exist. Tiny shapes (8x8x1, 3 classes, width-8 ConvNetBN)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.models import get_model
from jaxdd.objectives.recover import RelabelProtocol, relabel_evaluate
from jaxdd.checkpoint import load_teacher, save_teacher
from jaxdd.objectives.recover.teacher import TeacherConfig, fit_teacher, shift_flip, teacher_accuracy
from jaxdd.types import JaxddError
from tests.conftest import toy_images

K, SHAPE = 3, (8, 8, 1)
CFG = TeacherConfig(epochs=10, batch_size=12, lr=0.05, shift=1)


@pytest.fixture(scope="module")
def data():
    x, y = toy_images(K, 12, SHAPE)
    return jnp.asarray(x), jnp.asarray(y)


@pytest.fixture(scope="module")
def module():
    return get_model("ConvNetBN", K, width=8, depth=2)


@pytest.fixture(scope="module")
def trained(module, data):
    rows = []
    st = fit_teacher(jax.random.key(0), module, *data, CFG, on_epoch=lambda e, s: rows.append(s["loss"]))
    return st, rows


def test_teacher_learns_and_updates_running_stats(module, data, trained):
    st, losses = trained
    assert int(st["epoch"]) == 10 and len(losses) == 10
    assert losses[-1] < losses[0]
    assert teacher_accuracy(module, st["variables"], *data) > 0.9  # separable toy classes
    stats = st["variables"]["batch_stats"]["norm0"]
    assert float(jnp.max(jnp.abs(stats["mean"]))) > 0 and float(jnp.min(stats["var"])) != 1.0


def test_resume_equals_uninterrupted(module, data, trained):
    st_full, _ = trained
    saved = {}

    class Stop(Exception):
        pass

    def stop_after_first(epoch, s):
        saved.update({k: v for k, v in s.items() if k != "loss"})
        raise Stop

    with pytest.raises(Stop):
        fit_teacher(jax.random.key(0), module, *data, CFG, on_epoch=stop_after_first)
    assert int(saved["epoch"]) == 1
    resumed = fit_teacher(jax.random.key(0), module, *data, CFG, state=saved)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 resumed["variables"], st_full["variables"])


def test_save_load_roundtrip_and_errors(module, trained, tmp_path):
    st, _ = trained
    save_teacher(tmp_path / "t", "ConvNetBN", {"width": 8, "depth": 2}, st["variables"],
                 {"num_classes": K, "image_shape": list(SHAPE), "epochs_done": 10})
    t = load_teacher(tmp_path / "t")
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), t.variables,
                 st["variables"])
    assert t.meta["model"] == "ConvNetBN" and t.meta["model_kwargs"] == {"width": 8, "depth": 2}
    with pytest.raises(JaxddError, match="no finished teacher"):
        load_teacher(tmp_path / "missing")
    with pytest.raises(JaxddError, match="batch norm"):
        fit_teacher(jax.random.key(0), get_model("ConvNet", K, width=8, depth=1), jnp.zeros((4, *SHAPE)),
                    jnp.zeros(4, jnp.int32), CFG)


def test_shift_flip_is_a_per_image_shift_or_flip():
    x = jax.random.normal(jax.random.key(0), (16, 6, 6, 1))
    out = shift_flip(x, jax.random.key(1), 2, True)
    pad = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    moves = set()
    for i in range(16):
        ok = False
        for flip in (False, True):
            src = pad[i, :, ::-1] if flip else pad[i]
            for dy in range(5):
                for dx in range(5):
                    if bool(jnp.allclose(src[dy:dy + 6, dx:dx + 6], out[i])):
                        ok = True
                        moves.add((flip, dy, dx))
        assert ok, f"image {i} is not a shifted/flipped copy"
    assert len(moves) > 3  # images get their own draws


def test_relabel_evaluate_runs_and_is_deterministic(module, data, trained):
    from jaxdd.objectives.recover.teacher import Teacher

    st, _ = trained
    teacher = Teacher(module, st["variables"], {"num_classes": K})
    x, y = data
    proto = RelabelProtocol(epochs=2, batch_size=8, shift=1, mixup=0.8)
    a = relabel_evaluate(jax.random.key(0), x[::4], teacher, x, y, model="ConvNet",
                         model_kwargs={"width": 8, "depth": 1}, num_models=2, protocol=proto)
    b = relabel_evaluate(jax.random.key(0), x[::4], teacher, x, y, model="ConvNet",
                         model_kwargs={"width": 8, "depth": 1}, num_models=2, protocol=proto)
    assert a["accuracies"] == b["accuracies"] and len(a["accuracies"]) == 2
    assert all(0.0 <= v <= 1.0 for v in a["accuracies"])
    # students trained one at a time (the CPU default) or together: a student depends only on its key (the bits of
    # a vmapped program may differ in the last place, so allow one test image of difference)
    one, two = (relabel_evaluate(jax.random.key(0), x[::4], teacher, x, y, model="ConvNet",
                                 model_kwargs={"width": 8, "depth": 1}, num_models=2, protocol=proto, group=g)
                for g in (1, 2))
    np.testing.assert_allclose(one["accuracies"], two["accuracies"], atol=1.01 / len(y))


def test_cli_parses_method_options_of_dwa():
    from jaxdd.cli import build_parser

    p = build_parser()
    args = p.parse_args(["teacher", "--dataset", "digits", "--out", "x"])
    assert args.model == "ConvNetBN" and args.epochs == TeacherConfig.epochs
    args = p.parse_args(["relabel-eval", "run", "--teacher", "t", "--cutmix", "1.0"])
    assert args.cutmix == 1.0 and args.temperature == RelabelProtocol.temperature
    args = p.parse_args(["distill", "--method", "dwa", "--teacher", "t", "--dataset", "digits", "--ipc", "2",
                         "--out", "o", "--rho", "0.02"])
    assert args.opt_teacher == "t" and args.opt_rho == 0.02


def test_cli_teacher_then_relabel_eval_on_digits(tmp_path, capsys):
    import json

    from jaxdd.cli import main

    t = tmp_path / "teacher"
    argv = ["teacher", "--dataset", "digits", "--model", "ConvNetBN", "--model-kwargs", '{"width": 16, "depth": 2}',
            "--epochs", "3", "--batch-size", "32", "--out", str(t)]
    assert main(argv) == 0
    teacher = load_teacher(t)
    assert teacher.meta["epochs_done"] == 3 and teacher.meta["dataset"] == "digits"
    assert teacher.meta["model_kwargs"] == {"width": 16, "depth": 2}
    assert teacher.meta["test_accuracy"] > 0.2 and teacher.meta["val_accuracy"] > 0.2  # chance: 10 %; measured ~40 %
    capsys.readouterr()
    assert main([*argv[:-4], "--epochs", "4", *argv[-2:]]) == 2  # the cosine lr spans all epochs: another teacher
    assert "  epochs: 3 -> 4" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "2",
                 "--real-per-class", "4", "--model", "ConvNetD1", "--no-progress", "--out", str(run)]) == 0
    assert main(["relabel-eval", str(run), "--teacher", str(t), "--models", "2", "--epochs", "2"]) == 0
    res = json.loads((run / "relabel_eval.json").read_text())
    s = res["soft_label"]
    assert len(s["accuracies"]) == 2 and s["model"] == "ConvNetD1" and s["protocol"]["epochs"] == 2
    assert all(0.0 <= a <= 1.0 for a in s["accuracies"])
    assert res["teacher_test_accuracy"] == pytest.approx(teacher.meta["test_accuracy"])
