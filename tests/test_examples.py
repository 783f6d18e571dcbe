"""Smoke runs of the scripts under examples/ in their tiny modes (as the flax examples test theirs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_own_data_and_model_example_tiny(tmp_path):
    """examples/own_data_and_model.py --tiny: DM on own arrays with an own flax model, evaluation on the test arrays,
    the figure, a TensorBoard-style callback and a custom objective under make_step; about 25 s on 2 CPU cores."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "own_data_and_model.py"), "--tiny", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    for k in ("dm", "random_subset", "moments"):
        assert 0.0 <= summary[k] <= 1.0, summary
    assert summary["moments_final_loss"] > 0
    for png in ("dm_synthetic.png", "moments_synthetic.png", "dm/synthetic.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    meta = json.loads((tmp_path / "dm" / "synthetic.json").read_text())
    assert meta["model"] == "SmallCNN" and meta["dataset"] is None and len(meta["data"]["sha256"]) == 64
    assert meta["class_names"][:2] == ["zero", "one"]
    logged = [json.loads(line) for line in (tmp_path / "dm" / "metrics.jsonl").read_text().splitlines()]
    scalars = (tmp_path / "tensorboard" / "distill_loss.csv").read_text().splitlines()
    assert len(scalars) == 1 + len(logged)  # header + one scalar per logged row, through the callback
    assert [float(r.split(",")[1]) for r in scalars[1:]] == [r["loss"] for r in logged]
    assert "DM test accuracy" in proc.stdout and "custom objective" in proc.stdout
