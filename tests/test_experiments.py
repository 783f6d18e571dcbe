"""The experiment studies: every study documents itself, its grid is well formed, its committed results are cells of
its current grid, the reports read them, and one cell runs end to end in tiny mode."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import report  # noqa: E402
import run as runner  # noqa: E402
import studies  # noqa: E402


@pytest.mark.parametrize("study", studies.STUDIES)
def test_study_documents_itself_and_has_unique_cells(study):
    mod = studies.load(study)
    assert all(word in mod.__doc__ for word in ("Command:", "Runtime:", "Paper:")), study
    cells = studies.cells(study)  # raises on a duplicate name
    assert cells and all(c["name"] == n for n, c in cells.items())


@pytest.mark.parametrize("study", ("baselines", "lowrank", "mim"))
def test_committed_results_are_cells_of_the_current_grid(study):
    """A result file whose cell left the grid, or whose config differs from its cell's, is stale."""
    cells = studies.cells(study)
    paths = sorted(studies.results_dir(study).glob("*.json"))
    assert paths, f"no committed results for {study}"
    for path in paths:
        assert path.stem in cells, f"{path} is not a cell of studies/{study}.py"
        rec = json.loads(path.read_text())
        want = {k: v for k, v in cells[path.stem].items() if k not in ("name", "tiny")}
        got = {k: v for k, v in rec["config"].items() if k not in ("name", "tiny")}
        got.setdefault("model", "ConvNet")
        want.setdefault("model", "ConvNet")
        assert json.loads(json.dumps(want)) == got, path.stem


def test_reports_read_the_committed_results():
    rows = report.rows()
    assert {r["cell"] for r in rows} >= {"baselines/dm_ipc10", "lowrank/dm_ipc1_r2", "mim/dm+mim_ipc10_seed2"}
    dm10 = next(r for r in rows if r["cell"] == "baselines/dm_ipc10")
    rec = json.loads((studies.results_dir("baselines") / "dm_ipc10.json").read_text())
    assert dm10["acc"] == f"{100 * rec['accuracy_mean']:.1f} +- {100 * rec['accuracy_std']:.1f}"
    assert studies.load("lowrank").report().count("\n") == 1 + 12  # header, rule, one row per committed result
    assert "| lowrank_dm |" in studies.load("continual").report()


def test_continual_cell_is_a_valid_jaxdd_command(tmp_path):
    from jaxdd.cli import build_parser

    mod = studies.load("continual")
    args = build_parser().parse_args(mod.argv(mod.CONFIG, str(tmp_path)))
    assert args.seeds == 3 and args.methods == "random,herding,dm,lowrank_dm" and args.model == "ConvNetW32"


def test_unknown_cell_is_refused():
    with pytest.raises(SystemExit, match="no cell"):
        runner.run("baselines", "nope", tiny=True)


def test_demo_cell_runs_tiny(tmp_path):
    import numpy as np

    from jaxdd import load_artifact

    rec = runner.run("baselines", "digits_dm_ipc5", tiny=True, out_root=str(tmp_path))
    assert rec["config"]["iterations"] == 2 and rec["eval"] == {"models": 1, "epochs": 1, "augment": True}
    run_dir = tmp_path / "baselines_tiny" / "digits_dm_ipc5"
    saved = json.loads((run_dir / "eval.json").read_text())
    # the record is what the run directory holds: the tiny overrides took effect (2 iterations, one 1-epoch model)
    assert rec["accuracies"] == saved["synthetic"]["accuracies"] and len(rec["accuracies"]) == 1
    assert saved["synthetic"]["protocol"]["epochs"] == 1 and rec["random_subset"] is not None
    art = load_artifact(run_dir)
    assert art.metadata["steps_done"] == 2 and art.images.shape == (50, 8, 8, 1)
    assert rec["images_per_class"] == 5 and rec["floats_stored"] == rec["floats_budget"] == 10 * 5 * 64
    assert rec["final_metrics"]["step"] == 2 and np.isfinite(rec["final_metrics"]["loss"])
    assert not (studies.results_dir("baselines") / "digits_dm_ipc5.json").exists()  # tiny runs write no result
