"""The GPU kit (experiments/gpu): every stage's --smoke mode on CPU, resume, the time guard, the data script, and
jaxdd without tensorflow-datasets / array_record (the GPU machine has neither)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")

NO_TFDS = """
import sys
sys.modules["tensorflow_datasets"] = None   # `import tensorflow_datasets` now raises ImportError
sys.modules["array_record"] = None
import jaxdd
out = jaxdd.distill_dataset("dm", "digits", 1, iterations=2, model="MLP", model_kwargs={"width": 16},
                            method_options={"real_per_class": 4, "dsa": ""}, progress=False)
assert out["images"].shape == (10, 8, 8, 1), out["images"].shape
print("FMNIST", jaxdd.data.load("fashion_mnist", "test", data_dir=sys.argv[1]).images.shape if sys.argv[1] else None)
assert sys.modules["tensorflow_datasets"] is None and sys.modules["array_record"] is None
print("OK")
"""


def test_jaxdd_imports_and_runs_without_tfds_and_array_record(tmp_path):
    data = ""
    if FMNIST.is_dir():  # the IDX files through a data directory, as on the GPU machine (prepare_data.sh's layout)
        subprocess.run(["bash", str(ROOT / "experiments/gpu/prepare_data.sh"), str(FMNIST), str(tmp_path)], check=True,
                       capture_output=True)
        data = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", NO_TFDS, data], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")
    if data:
        assert "FMNIST (10000, 28, 28, 1)" in proc.stdout


def test_prepare_data_copies_the_four_idx_files_or_says_what_is_missing(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte.gz"]
    for n in names[:3]:
        (src / n).write_bytes(b"x")
    script = str(ROOT / "experiments/gpu/prepare_data.sh")
    bad = subprocess.run(["bash", script, str(src), str(dst)], capture_output=True, text=True)
    assert bad.returncode == 1 and "found 3 of the 4" in bad.stderr
    (src / names[3]).write_bytes(b"x")
    subprocess.run(["bash", script, str(src), str(dst)], check=True, capture_output=True)
    assert sorted(p.name for p in (dst / "fashion_mnist").iterdir()) == sorted(names)


def _kit(argv):
    """A stage in this process. The budget is generous: a loaded CI machine must not turn cells into 'pending'
    (the guard itself is tested with --budget-s 0)."""
    from experiments.gpu.kit import main

    return main(argv if "--budget-s" in argv else [*argv, "--budget-s", "1200"])


def _cells(out: Path, stage: str) -> dict:
    rec = json.loads((out / f"{stage}.json").read_text())
    assert (out / f"{stage}.md").read_text().startswith(f"# experiments/gpu stage `{stage}` (smoke)")
    return rec


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_dm_stage_smoke_cli_resume_and_time_guard(tmp_path):
    out, work = tmp_path / "dm", tmp_path / "work"
    cmd = [sys.executable, "-m", "experiments.gpu", "dm", "--out", str(out), "--smoke", "--work", str(work),
           "--budget-s", "1200"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rec = _cells(out, "dm")
    assert rec["calls"][0]["environment"]["backend"] == "cpu" and rec["smoke"]
    dm = rec["cells"]["dm_ipc1"]
    assert dm["status"] == "done" and dm["loss_finite"] and _finite(dm["final_metrics"]["loss"])
    assert dm["iterations"] == 4 and [c["steps"] for c in dm["chunks"]] == [2, 2]  # chunked, resumed, at the cap
    assert 0 <= dm["accuracy_mean"] <= 1 and len(dm["accuracies"]) == 2 and (out / "dm_ipc1_synthetic.npz").is_file()
    assert rec["cells"]["random_ipc1"]["status"] == "done"
    # resumed: a second call keeps the done cells and runs nothing
    assert _kit(["dm", "--out", str(out), "--smoke", "--work", str(work), "--resume", str(out / "dm.json")]) == 0
    again = _cells(out, "dm")
    assert again["cells"]["dm_ipc1"] == dm and again["calls"][-1]["ran"] == [] and len(again["calls"]) == 2
    # the time guard: no budget left, every cell pending, the record still written
    assert _kit(["dm", "--out", str(tmp_path / "none"), "--smoke", "--budget-s", "0"]) == 0
    none = _cells(tmp_path / "none", "dm")
    assert none["cells"] == {} and set(none["calls"][-1]["pending"]) == {"dm_ipc1", "random_ipc1"}


def test_dc_mtt_and_theory_stage_smokes(tmp_path):
    assert _kit(["dc", "--out", str(tmp_path / "dc"), "--smoke", "--cells", "dc_ipc1", "--work", str(tmp_path / "w")]) == 0
    dc = _cells(tmp_path / "dc", "dc")["cells"]["dc_ipc1"]
    # finite losses (issue 20: a NaN loss must fail the kit, not pass as a timing)
    assert dc["status"] == "done" and dc["loss_finite"] and dc["paper_iterations"] == 1 and dc["outer_loop"] == 2
    assert _kit(["mtt", "--out", str(tmp_path / "mtt"), "--smoke", "--work", str(tmp_path / "w")]) == 0
    mtt = _cells(tmp_path / "mtt", "mtt")
    cell = mtt["cells"]["mtt_ipc1"]
    assert cell["status"] == "done" and cell["loss_finite"] and cell["experts"]["num_experts"] == 1
    assert _kit(["theory", "--out", str(tmp_path / "th"), "--smoke", "--work", str(tmp_path / "w")]) == 0
    th = _cells(tmp_path / "th", "theory")["cells"]
    (name, r), = th.items()
    assert r["rc"] == 0 and "--preset smoke" in r["command"] and (tmp_path / "th" / f"{name}_results.json").is_file()


def test_check_stage_smoke(tmp_path):
    cells = "tests,determinism,timing_dm,timing_dc,timing_mtt_constant_2,timing_eval,timing_multi"
    assert _kit(["check", "--out", str(tmp_path / "c"), "--smoke", "--cells", cells, "--work", str(tmp_path / "w")]) == 0
    c = _cells(tmp_path / "c", "check")["cells"]
    assert c["tests"]["rc"] == 0 and "accelerator" in c["tests"]["command"]
    assert c["determinism"]["default"]["identical"], c["determinism"]
    for m in ("timing_dm", "timing_dc"):
        assert c[m]["loss_finite"] and all(_finite(v) for v in c[m]["losses"]) and c[m]["seconds_per_step"] > 0, c[m]
    assert c["timing_dc"]["seconds_per_paper_iteration"] == pytest.approx(2 * c["timing_dc"]["seconds_per_step"])
    mtt = c["timing_mtt_constant_2"]
    assert mtt["loss_finite"] and mtt["seconds_per_meta_step"] > 0 and mtt["xla_mib"] > 0
    ev = c["timing_eval"]
    assert ev["vmapped_seconds"] > 0 and ev["one_at_a_time_measured"] >= 1 and ev["networks"] == 2
    multi = c["timing_multi"]
    assert multi["loss_finite"] and multi["experiments"] == 2 and multi["speedup"] > 0
