"""Resume never mixes two runs, and survives damaged checkpoints (issue 20).

- A rerun with another seed / lr / ipc / method is refused, naming each differing field (old -> new); a larger
  --iterations extends the run to the bits of a fresh run of that length; a smaller one is refused.
- A corrupted latest checkpoint (data file cut in half, manifest cut in half, flipped bytes) falls back to the previous
  one with a one-line warning and ends with the bits of an uninterrupted run; with none left, one clear error.
- (SIGTERM through the real CLI, and kill -9 at both LLVM optimisation levels: tests/test_distill.py.)
- The default checkpoint cadence is by wall time; a checkpoint is never written in a way that changes the result.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdd.checkpoint import Checkpointer, load_artifact
from jaxdd.fileio import resume_run
from jaxdd.cli import main
from jaxdd.distill import DistillConfig, distill, make_pool
from jaxdd.models import get_model
from jaxdd.objectives import dm
from jaxdd.synthetic import pixels
from jaxdd.types import JaxddError
from tests.conftest import toy_images

BASE = ["distill", "--method", "dm", "--dataset", "digits", "--real-per-class", "4", "--model", "ConvNetD1",
        "--no-progress", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step DM run on digits (ipc 1, seed 0)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    assert main([*BASE, "--ipc", "1", "--iterations", "4", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("change,fields", [
    (["--seed", "1"], ["seed: 0 -> 1"]),
    (["--lr-img", "2"], ["lr_img: 1.0 -> 2.0"]),
    (["--ipc", "2"], ["ipc: 1 -> 2"]),
    (["--seed", "5", "--lr-img", "0.5"], ["lr_img: 1.0 -> 0.5", "seed: 0 -> 5"]),
    (["--iterations", "3"], ["iterations: 4 -> 3"]),
    (["--real-per-class", "8"], ["method_options.real_per_class: 4 -> 8"]),
])
def test_changed_configuration_is_refused_with_each_field(finished, capsys, change, fields):
    before = {p.name: p.stat().st_mtime_ns for p in finished.iterdir()}
    argv = [*BASE, "--ipc", "1", "--iterations", "4", "--out", str(finished)]
    for flag, value in zip(change[::2], change[1::2]):  # replace the flag's value, or add it
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "resuming would mix two runs" in err and "another output directory" in err
    listed = [line for line in err.splitlines() if line.startswith("  ") and " -> " in line]
    assert listed == [f"  {f}" for f in fields], err  # exactly the differing fields, each old -> new
    assert {p.name: p.stat().st_mtime_ns for p in finished.iterdir()} == before  # nothing was touched


def test_changed_method_is_refused(finished, capsys):
    argv = ["distill", "--method", "kip", "--dataset", "digits", "--ipc", "1", "--iterations", "4",
            "--model", "ConvNetD1", "--no-progress", "--out", str(finished)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert '  method: "dm" -> "kip"\n' in err and '  lr_img: 1.0 -> 0.04\n' in err


def test_same_command_reruns_the_finished_run_unchanged(finished, capsys):
    before = load_artifact(finished)
    assert main([*BASE, "--ipc", "1", "--iterations", "4", "--out", str(finished)]) == 0
    after = load_artifact(finished)
    np.testing.assert_array_equal(before.images, after.images)
    assert after.metadata["config"]["iterations"] == 4 and after.metadata["steps_done"] == 4


def test_longer_iterations_extends_to_the_bits_of_a_fresh_run(tmp_path, capsys):
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    assert main([*BASE, "--ipc", "1", "--iterations", "3", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main([*BASE, "--ipc", "1", "--iterations", "6", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "extending the run" in err and "iterations 3 -> 6" in err
    assert main([*BASE, "--ipc", "1", "--iterations", "6", "--out", str(fresh)]) == 0
    a, b = load_artifact(run), load_artifact(fresh)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.metadata["config"]["iterations"] == 6 and a.metadata["steps_done"] == 6  # metadata = the images
    assert json.loads((run / "run.json").read_text())["config"]["iterations"] == 6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6
    assert main([*BASE, "--ipc", "1", "--iterations", "3", "--out", str(run)]) == 2  # no shrinking back
    assert "iterations: 6 -> 3" in capsys.readouterr().err


def test_cosine_schedule_is_not_extendable(tmp_path):
    cfg = {"iterations": 4, "schedule": "cosine"}
    from jaxdd.api import start_run

    start_run(tmp_path, "distill", cfg, DistillConfig(iterations=4, schedule="cosine"))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "4").mkdir()
    with pytest.raises(JaxddError, match=r"iterations: 4 -> 8"):
        start_run(tmp_path, "distill", {**cfg, "iterations": 8}, DistillConfig(iterations=8, schedule="cosine"))


def test_run_json_rules(tmp_path):
    d = tmp_path / "r"
    assert resume_run(d, "distill", {"a": 1, "n": 2}, extendable=("n",)) == []
    # nothing computed yet (no checkpoint): a first attempt that failed may be retried with other settings
    assert resume_run(d, "distill", {"a": 2, "n": 2}, extendable=("n",)) == []
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "2").mkdir()
    with pytest.raises(JaxddError, match=r"  a: 2 -> 3\n"):
        resume_run(d, "distill", {"a": 3, "n": 2})
    with pytest.raises(JaxddError, match="holds a `jaxdd distill` run, not a `jaxdd teacher` one"):
        resume_run(d, "teacher", {"a": 2, "n": 2})
    assert resume_run(d, "distill", {"a": 2, "n": 5}, extendable=("n",), log=lambda s: None) == [("n", 2, 5)]
    with pytest.raises(JaxddError, match=r"  added: \(absent\) -> 1\n"):
        resume_run(d, "distill", {"a": 2, "n": 5, "added": 1})
    legacy = tmp_path / "old"
    (legacy / "checkpoints" / "3").mkdir(parents=True)
    with pytest.raises(JaxddError, match="without run.json"):
        resume_run(legacy, "distill", {"a": 1})


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: corruption detected and survived


def _toy(out_dir, iterations, checkpoint_every=2):
    x, y = toy_images(3, 10, (8, 8, 1))
    pool = make_pool(x, y, 3)
    obj = dm(get_model("ConvNet", 3, width=8, depth=2), 3, real_per_class=4)
    cfg = DistillConfig(iterations=iterations, checkpoint_every=checkpoint_every, log_every=1, progress=False)
    return distill(jax.random.key(0), obj, pixels(2), pool, cfg, out_dir=out_dir)


def _files(step_dir: Path) -> list[Path]:
    return [p for p in step_dir.rglob("*") if p.is_file() and p.name != "jaxdd_digest.json"]


def _corrupt(step_dir: Path, how: str) -> None:
    if how == "manifest":
        target = next(p for p in _files(step_dir) if p.name == "manifest.ocdbt")
    else:  # the largest data file holds the synthetic images
        target = max((p for p in _files(step_dir) if p.parent.name == "d"), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    if how == "flip":
        for i in range(len(data) // 3, len(data) // 3 + 64):
            data[i] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    target.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _toy(tmp_path_factory.mktemp("ref") / "ref", 6)


@pytest.mark.parametrize("how", ["data", "manifest", "flip"])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, reference, how):
    _toy(tmp_path, 4)  # checkpoints at steps 2 and 4
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [2, 4]
    _corrupt(tmp_path / "checkpoints" / "4", how)
    capsys.readouterr()
    resumed = _toy(tmp_path, 6)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    warn = [line for line in err.splitlines() if "warning" in line]
    assert len(warn) == 1 and "checkpoint step 4" in warn[0] and "falling back to step 2" in warn[0], warn
    assert (tmp_path / "checkpoints.corrupt" / "4").is_dir()  # kept aside, not deleted
    np.testing.assert_array_equal(np.asarray(resumed.images), np.asarray(reference.images))


def test_no_readable_checkpoint_is_one_clear_error(tmp_path, capsys):
    _toy(tmp_path, 4)
    for step in (2, 4):
        _corrupt(tmp_path / "checkpoints" / str(step), "flip")
    with pytest.raises(JaxddError, match=f"no readable checkpoint left under {tmp_path / 'checkpoints'}"):
        _toy(tmp_path, 6)


def test_checkpoint_of_other_shapes_is_refused_not_quarantined(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save(1, {"a": np.zeros(3, np.float32)})
    with pytest.raises(JaxddError, match="other shapes"):
        ck.restore({"a": np.zeros(4, np.float32)})
    assert ck.all_steps() == [1] and not Path(str(tmp_path) + ".corrupt").exists()


def test_default_cadence_is_by_wall_time(tmp_path):
    assert DistillConfig().checkpoint_every is None and DistillConfig().checkpoint_seconds == 60.0
    x, y = toy_images(3, 10, (8, 8, 1))
    pool = make_pool(x, y, 3)
    obj = dm(get_model("ConvNet", 3, width=8, depth=2), 3, real_per_class=4)
    runs = {}
    for name, seconds in (("slow", 1e9), ("fast", 1e-9)):
        cfg = DistillConfig(iterations=4, checkpoint_seconds=seconds, progress=False)
        runs[name] = distill(jax.random.key(0), obj, pixels(2), pool, cfg, out_dir=tmp_path / name)
    assert Checkpointer(tmp_path / "slow" / "checkpoints").all_steps() == [4]  # only the final one
    assert Checkpointer(tmp_path / "fast" / "checkpoints").all_steps() == [3, 4]  # one per step (keeps 2)
    np.testing.assert_array_equal(np.asarray(runs["slow"].images), np.asarray(runs["fast"].images))
    with pytest.raises(JaxddError, match="checkpoint_every"):
        DistillConfig(checkpoint_every=0)
    with pytest.raises(JaxddError, match="checkpoint_seconds"):
        DistillConfig(checkpoint_seconds=0)
