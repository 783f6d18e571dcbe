"""Expert buffers: resumable writing, detection of half-written files, metadata checks, storage, CLI."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxdd.objectives.trajectory.experts import MANIFEST, ExpertBuffer, ExpertProtocol, train_experts
from jaxdd.models import get_model, init_model
from jaxdd.types import JaxddError
from tests.conftest import toy_images

K, SHAPE = 3, (8, 8, 1)
KW = {"width": 4, "depth": 1}
PROTO = ExpertProtocol(epochs=3, lr=0.05, batch_size=12, augment=None)  # 12 images: one full-batch step per epoch


class Stop(Exception):
    pass


def _data():
    return toy_images(K, 4, SHAPE)


def _train(path, **kw):
    x, y = _data()
    args = dict(num_classes=K, num_experts=2, model="ConvNet", model_kwargs=KW, protocol=PROTO, progress=False)
    return train_experts(jax.random.key(0), x, y, path, **{**args, **kw})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-expert buffer."""
    return _train(tmp_path_factory.mktemp("ref"))


def test_snapshot_zero_is_the_init_and_epochs_move(reference):
    module = get_model("ConvNet", K, **KW)
    k_init = jax.random.split(jax.random.fold_in(jax.random.key(0), 1))[0]
    flat, _ = ravel_pytree(init_model(module, k_init, SHAPE)["params"])
    traj = reference.trajectory(1)
    assert traj.shape == (PROTO.epochs + 1, flat.size)
    np.testing.assert_array_equal(traj[0], np.asarray(flat))
    assert np.all(np.linalg.norm(np.diff(traj, axis=0), axis=1) > 1e-4)
    assert not np.allclose(reference.trajectory(0), traj)  # experts differ
    a, b = reference.fetch(np.array([0, 1]), np.array([1, 0]), 2)
    np.testing.assert_array_equal(a, np.stack([reference.snapshot(0, 1), reference.snapshot(1, 0)]))
    np.testing.assert_array_equal(b, np.stack([reference.snapshot(0, 3), reference.snapshot(1, 2)]))


def test_interrupted_buffer_is_refused_then_resumes_to_the_same_bits(reference, tmp_path):
    def hook(first, epoch):
        if first == 1 and epoch == 2:  # expert 0 is written, expert 1 is mid-training
            raise Stop

    with pytest.raises(Stop):
        _train(tmp_path, on_epoch=hook)
    with pytest.raises(JaxddError, match="incomplete"):
        ExpertBuffer(tmp_path)
    partial = ExpertBuffer(tmp_path, allow_partial=True)
    assert partial.num_experts == 1
    assert (tmp_path / "progress.npz").exists()
    resumed = _train(tmp_path)
    assert resumed.num_experts == 2 and not (tmp_path / "progress.npz").exists()
    for i in range(2):
        np.testing.assert_array_equal(resumed.trajectory(i), reference.trajectory(i))


def test_half_written_files_are_never_read(reference, tmp_path):
    import shutil

    d = tmp_path / "buf"
    shutil.copytree(reference.directory, d)
    (d / "expert_00002.npy.tmp").write_bytes(b"\x93NUMPY garbage")  # a write that never finished: ignored
    assert ExpertBuffer(d).num_experts == 2
    f = d / "expert_00001.npy"
    f.write_bytes(f.read_bytes()[:-100])  # truncated after the manifest was written (disk damage)
    with pytest.raises(JaxddError, match="wrong size"):
        ExpertBuffer(d).snapshot(1, 0)
    manifest = json.loads((d / MANIFEST).read_text())
    del manifest["complete"]["0"]
    (d / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(JaxddError, match="corrupt"):
        ExpertBuffer(d)


def test_different_request_on_same_dir_raises(reference):
    with pytest.raises(JaxddError, match=r"would mix two runs[\s\S]*\n  protocol\.lr: 0\.0[0-9]* -> 0\.1\n") as e:
        _train(reference.directory, protocol=ExpertProtocol(epochs=3, lr=0.1, batch_size=12, augment=None))
    assert str(e.value).count(" -> ") == 2  # the header's "(saved -> this command)" and the one differing field


def test_vmapped_group_and_bf16_storage(reference, tmp_path):
    grouped = _train(tmp_path / "g", group=2, dtype="bfloat16")
    assert grouped.meta["dtype"] == "bfloat16"
    size = (tmp_path / "g" / "expert_00000.npy").stat().st_size
    assert size < 0.6 * (reference.directory / "expert_00000.npy").stat().st_size
    for i in range(2):
        ref = reference.trajectory(i)
        np.testing.assert_allclose(grouped.trajectory(i), ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())


def test_cli_experts_on_digits(tmp_path):
    from jaxdd.cli import main

    out = tmp_path / "digits_experts"
    rc = main(["experts", "--dataset", "digits", "--num-experts", "1", "--epochs", "2", "--out", str(out),
               "--model-kwargs", json.dumps(KW), "--augment", "none", "--max-per-class", "20", "--no-progress"])
    assert rc == 0
    buf = ExpertBuffer(out)
    assert buf.num_experts == 1 and buf.epochs == 2
    assert buf.meta["info"]["dataset"] == "digits" and buf.meta["num_train"] == 200
    assert buf.preprocess().mean.shape == (1,)
