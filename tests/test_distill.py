"""The driver: resume after a hard kill gives the bits of an uninterrupted run; artifacts; clear errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.checkpoint import load_artifact
from jaxdd.distill import DistillConfig, distill, make_pool
from jaxdd.models import get_model
from jaxdd.objectives import dm
from jaxdd.synthetic import pixels
from jaxdd.types import JaxddError
from tests.conftest import toy_images

ROOT = Path(__file__).resolve().parents[1]


def _toy_run(out_dir, iterations, key=0, checkpoint_every=2):
    x, y = toy_images(3, 10, (8, 8, 1))
    pool = make_pool(x, y, 3)
    obj = dm(get_model("ConvNet", 3, width=8, depth=2), 3, real_per_class=4)
    cfg = DistillConfig(iterations=iterations, checkpoint_every=checkpoint_every, log_every=1, progress=False)
    return distill(jax.random.key(key), obj, pixels(2), pool, cfg, out_dir=out_dir)


def test_continue_from_checkpoint_equals_uninterrupted(tmp_path):
    full = _toy_run(tmp_path / "a", 6)
    _toy_run(tmp_path / "b", 3, checkpoint_every=3)  # stops at 3 with a checkpoint
    resumed = _toy_run(tmp_path / "b", 6)
    np.testing.assert_array_equal(np.asarray(full.images), np.asarray(resumed.images))
    rows = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # no duplicated steps after resume
    times = [r["time"] for r in rows]
    assert times == sorted(times)  # wall time accumulates across the resume (a reset would drop at step 4)


def test_interrupt_saves_checkpoint(tmp_path):
    x, y = toy_images(3, 10, (8, 8, 1))
    pool = make_pool(x, y, 3)
    obj = dm(get_model("ConvNet", 3, width=8, depth=2), 3, real_per_class=4)

    def evaluator(images, labels, step):  # simulates Ctrl-C in the middle of a run
        raise KeyboardInterrupt

    cfg = DistillConfig(iterations=6, checkpoint_every=100, eval_every=3, progress=False)
    with pytest.raises(KeyboardInterrupt):
        distill(jax.random.key(0), obj, pixels(2), pool, cfg, out_dir=tmp_path, evaluator=evaluator)
    from jaxdd.checkpoint import Checkpointer

    assert Checkpointer(tmp_path / "checkpoints").latest_step() == 3


CLI = [sys.executable, "-m", "jaxdd.cli", "distill", "--method", "dm", "--dataset", "digits", "--ipc", "2",
       "--iterations", "12", "--real-per-class", "8", "--checkpoint-every", "2", "--no-progress",
       "--model", "ConvNetD1"]


def _env(opt_level: str) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if opt_level == "default":  # drop the suite's --xla_backend_optimization_level=0 (tests/conftest.py)
        env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                    if not f.startswith("--xla_backend_optimization_level"))
    return env


_REFS: dict = {}


def _reference(tmp_path_factory, opt_level: str) -> Path:
    """An uninterrupted CLI run (made once per optimisation level and shared by the tests below)."""
    if opt_level not in _REFS:
        ref = tmp_path_factory.mktemp(f"ref_{opt_level}") / "ref"
        subprocess.run(CLI + ["--out", str(ref)], check=True, env=_env(opt_level), capture_output=True, timeout=600)
        _REFS[opt_level] = ref
    return _REFS[opt_level]


def _wait_for_checkpoint(proc, ckpts: Path, step: int) -> bool:
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.exists() else []
        if any(s >= step for s in steps):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("opt_level", ["suite", "default"])
def test_kill_9_then_resume_gives_identical_bits(tmp_path, tmp_path_factory, opt_level):
    """Once with the suite's LLVM opt level 0 (tests/conftest.py) and once at XLA's default level, which users run."""
    env = _env(opt_level)
    ref = _reference(tmp_path_factory, opt_level)
    run = tmp_path / "run"
    proc = subprocess.Popen(CLI + ["--out", str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    reached = _wait_for_checkpoint(proc, run / "checkpoints", 4)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached and killed, "the run finished before it could be killed; make it longer"
    assert not (run / "synthetic.npz").exists()
    subprocess.run(CLI + ["--out", str(run)], check=True, env=env, capture_output=True, timeout=600)
    a, b = load_artifact(ref), load_artifact(run)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.metadata["method"] == "dm" and "jaxdd_version" in a.metadata
    assert (run / "synthetic.png").exists()
    np.testing.assert_allclose(b.preprocess.mean, [0.3055], atol=1e-3)


def test_sigterm_exits_130_after_a_checkpoint_and_resumes_to_identical_bits(tmp_path, tmp_path_factory):
    env = _env("suite")
    ref = _reference(tmp_path_factory, "suite")
    run = tmp_path / "run"
    proc = subprocess.Popen(CLI + ["--out", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert _wait_for_checkpoint(proc, run / "checkpoints", 2), "the run finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "SIGTERM received" in err and "interrupted" in err and "Traceback" not in err
    assert not (run / "synthetic.npz").exists()
    from jaxdd.checkpoint import Checkpointer

    stopped = Checkpointer(run / "checkpoints").latest_step()
    assert 2 <= stopped < 12
    subprocess.run(CLI + ["--out", str(run)], check=True, env=env, capture_output=True, timeout=600)
    a, b = load_artifact(ref), load_artifact(run)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_nan_loss_and_nan_inputs_give_clear_errors(tmp_path):
    from jaxdd.objectives import Objective, no_init

    x, y = toy_images(3, 10, (8, 8, 1))
    pool = make_pool(x, y, 3)
    nan_obj = Objective("nan", no_init, lambda syn, real, st, k: (jnp.nan * jnp.sum(syn.x), {}))
    cfg = DistillConfig(iterations=3, log_every=1, progress=False)
    with pytest.raises(JaxddError, match="loss became nan"):
        distill(jax.random.key(0), nan_obj, pixels(2), pool, cfg)
    bad = x.copy()
    bad[3, 1, 1, 0] = np.nan
    with pytest.raises(JaxddError, match="NaN|finite"):
        make_pool(bad, y, 3)


def test_ipc_larger_than_class_is_clear():
    x, y = toy_images(3, 3, (8, 8, 1))
    pool = make_pool(x, y, 3)
    obj = dm(get_model("ConvNet", 3, width=8, depth=2), 3, real_per_class=2)
    with pytest.raises(JaxddError, match="ipc|class"):
        distill(jax.random.key(0), obj, pixels(5), pool, DistillConfig(iterations=1, progress=False))
