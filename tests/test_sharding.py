"""Sharding on 8 host CPU devices: sharded == unsharded (DM and DC), sharded evaluation, sharded checkpoints.

The device count is fixed when JAX initialises, so the 8-device checks run in a subprocess (this file run as a
script with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``); it writes its measurements to a JSON file the
tests read. A sharded checkpoint written there (8 devices) is restored here (this process's 1 device) and onto a 2
and 4 device sub-mesh there. Multi-host start-up is exercised with two local processes joined by
``jax.distributed.initialize`` (2 CPU devices each).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.accelerator  # sharding is an accelerator branch (tests/test_accelerator.py)
K, SHAPE, IPC, E = 4, (8, 8, 1), 2, 2
MODEL_KW = {"width": 8, "depth": 2}


def _setup(method: str):
    import jax

    from jaxdd.distill import DistillConfig, make_pool
    from jaxdd.methods import MethodContext, get_method, resolve_options
    from jaxdd.synthetic import pixels
    from tests.conftest import toy_images

    x, y = toy_images(K, 12, SHAPE)
    pool = make_pool(x, y, K)
    spec = get_method(method)
    opts = {"real_per_class": 4} if method == "dm" else {"outer_loop": 2, "inner_loop": 0, "real_per_class": 4}
    if method == "dm":
        opts["dsa"] = ""
    param = pixels(IPC, "real")
    ctx = MethodContext(K, SHAPE, IPC, "ConvNet", MODEL_KW, resolve_options(spec, opts), "toy", pool, None,
                        jax.random.key(0))
    objective = spec.build(ctx)
    config = DistillConfig(iterations=2, progress=False, lr_img=spec.defaults["lr_img"], log_every=1)
    return objective, param, pool, config


def _worker(out: Path) -> None:
    """Runs with 8 host devices: every check's numbers go to out/result.json."""
    import jax

    from jaxdd import sharding as shd
    from jaxdd.evaluate import evaluate_synthetic
    from jaxdd.distill import distill_many
    from jaxdd.protocols.multi import evaluate_many
    from jaxdd.train import TrainProtocol
    from tests.conftest import toy_images

    assert jax.device_count() == 8, jax.devices()
    res: dict = {"devices": jax.device_count()}
    keys = jax.random.split(jax.random.key(3), E)
    for method, syn in (("dm", "class"), ("dc", "replicated")):
        objective, param, pool, config = _setup(method)
        plain = distill_many(keys, objective, param, pool, config)
        mesh = shd.make_mesh(E, exp=2, data=4)
        sharded = distill_many(keys, objective, param, pool, config, mesh=mesh, syn_sharding=syn,
                               split_pool=method == "dm")
        data = sharded.state.syn["data"]
        res[method] = {
            "max_abs_diff": float(np.abs(plain.images - sharded.images).max()),
            # the momentum buffer holds the accumulated image gradients: non-zero means the sets moved
            "max_abs_change": float(np.abs(np.asarray(
                plain.state.opt_state.inner_states["data"].inner_state.inner_state[0].trace["data"])).max()),
            "spec": str(data.sharding.spec), "shards": len(data.addressable_shards),
            "shard_shape": list(data.addressable_shards[0].data.shape),
            "loss_plain": [h[-1]["loss"] for h in plain.histories],
            "loss_sharded": [h[-1]["loss"] for h in sharded.histories],
        }
        if method == "dm":
            np.save(out / "dm_plain.npy", plain.images)
            # save the sharded stacked state (8 devices, exp axis split) and restore it onto 4 and 2 devices
            state = sharded.state
            shd.save_sharded(out / "ckpt", 2, state)
            np.savez(out / "saved.npz", syn=np.asarray(state.syn["data"]), step=np.asarray(state.step),
                     lr=np.asarray(state.opt_state.inner_states["data"].inner_state.hyperparams["learning_rate"]))
            for n in (4, 2):
                small = shd.make_mesh(exp=2, data=n // 2, devices=jax.devices()[:n])
                back = shd.restore_sharded(out / "ckpt", state, shd.state_sharding(state, small))
                res[f"restore_{n}"] = {
                    "equal": bool(np.array_equal(np.asarray(back.syn["data"]), np.asarray(state.syn["data"]))),
                    "devices": len(back.syn["data"].sharding.device_set),
                    "spec": str(back.syn["data"].sharding.spec)}
    # evaluation: E x K networks split over the 8 devices == unsharded == evaluate_synthetic per experiment
    x, y = toy_images(K, 6, SHAPE, seed=1)
    xt, yt = toy_images(K, 10, SHAPE, seed=2)
    sets = np.stack([x, x + 0.1]), np.stack([y, y])
    proto = TrainProtocol(epochs=2, batch_size=8)
    mesh = shd.make_mesh(E * 4)
    kw = dict(num_classes=K, model="ConvNet", num_models=4, protocol=proto, model_kwargs=MODEL_KW)
    acc_sh = evaluate_many(keys, *sets, xt, yt, mesh=mesh, **kw)
    ref = np.stack([evaluate_synthetic(keys[i], sets[0][i], sets[1][i], xt, yt, **kw).accuracies for i in range(E)])
    res["eval"] = {"sharded": acc_sh.tolist(), "reference": ref.tolist()}
    (out / "result.json").write_text(json.dumps(res, indent=1))


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("method", ["dm", "dc"])
def test_sharded_equals_unsharded(worker, method):
    _, res = worker
    r = res[method]
    assert res["devices"] == 8
    # the state really is split: the experiment axis over 2 devices, replicated over the data axis (8 shards)
    assert r["spec"] == str(("exp",)) or "exp" in r["spec"], r["spec"]
    assert r["shards"] == 8 and r["shard_shape"][0] == 1
    assert r["max_abs_change"] > 1e-4, "the synthetic sets did not move: the comparison would be vacuous"
    assert r["max_abs_diff"] < 1e-4 * max(1.0, r["max_abs_change"]), r
    np.testing.assert_allclose(r["loss_sharded"], r["loss_plain"], rtol=1e-4)


def test_sharded_checkpoint_restores_on_other_device_counts(worker):
    import jax

    from jaxdd import sharding as shd
    from jaxdd.distill import init_states

    out, res = worker
    for n in (4, 2):
        assert res[f"restore_{n}"]["equal"] and res[f"restore_{n}"]["devices"] == n, res[f"restore_{n}"]
    # this process has 1 device: restore the 8-device checkpoint here
    assert jax.device_count() == 1
    objective, param, pool, config = _setup("dm")
    target, _ = init_states(jax.random.split(jax.random.key(3), E), objective, param, pool, config)
    mesh = shd.make_mesh(E)
    back = shd.restore_sharded(out / "ckpt", target, shd.state_sharding(target, mesh))
    saved = np.load(out / "saved.npz")
    np.testing.assert_array_equal(np.asarray(back.syn["data"]), saved["syn"])
    np.testing.assert_array_equal(np.asarray(back.step), saved["step"])
    lr = back.opt_state.inner_states["data"].inner_state.hyperparams["learning_rate"]
    np.testing.assert_array_equal(np.asarray(lr), saved["lr"])
    assert not np.array_equal(np.asarray(target.syn["data"]), saved["syn"])


def test_sharded_evaluation_equals_reference(worker):
    _, res = worker
    r = res["eval"]
    # the E x K networks split over 8 devices reach exactly the accuracies evaluate_synthetic gives each set
    np.testing.assert_allclose(r["sharded"], r["reference"], atol=1e-6)
    assert len({a for row in r["reference"] for a in row}) > 1, "all networks agree: the check is too weak"


def test_make_mesh_and_errors():
    import jax

    from jaxdd import sharding as shd
    from jaxdd.types import JaxddError

    mesh = shd.make_mesh(3)
    assert dict(mesh.shape) == {"exp": 1, "data": jax.device_count()}
    with pytest.raises(JaxddError, match="multiply"):
        shd.make_mesh(exp=2, data=3)
    with pytest.raises(JaxddError, match="syn sharding"):
        objective, *_ = _setup("dm")
        shd.shard_objective(objective, mesh, syn="rows")


def _distributed_worker(pid: int, port: int, out: Path) -> None:
    """One of 2 processes x 2 CPU devices: jax.distributed on localhost, DM over a 2 x 2 (exp, data) mesh."""
    from jaxdd.sharding import initialize_distributed, make_mesh

    info = initialize_distributed(f"localhost:{port}", 2, pid)
    import jax

    from jaxdd.distill import distill_many

    objective, param, pool, config = _setup("dm")
    mesh = make_mesh(E, exp=2, data=2)
    res = distill_many(jax.random.split(jax.random.key(3), E), objective, param, pool, config, mesh=mesh,
                       syn_sharding="class")
    np.save(out / f"dist_{pid}.npy", res.images)
    (out / f"dist_{pid}.json").write_text(json.dumps(info))


def test_two_processes_jax_distributed(worker):
    """jax.distributed.initialize with 2 local processes (2 CPU devices each, gloo collectives): the global
    4-device mesh gives every process the same sets as the single-process unsharded run."""
    import socket

    out, _ = worker
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, __file__, "dist", str(i), str(port), str(out)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-2000:] for log in logs)
    plain = np.load(out / "dm_plain.npy")
    for i in range(2):
        info = json.loads((out / f"dist_{i}.json").read_text())
        assert info == {"process_index": i, "process_count": 2, "local_devices": 2, "global_devices": 4}
        np.testing.assert_allclose(np.load(out / f"dist_{i}.npy"), plain, atol=1e-5)


if __name__ == "__main__":
    if sys.argv[1] == "dist":
        _distributed_worker(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    else:
        _worker(Path(sys.argv[1]))
