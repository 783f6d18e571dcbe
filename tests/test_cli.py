"""Smoke runs of the real entry points: the CLI and every experiments config in tiny mode."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxdd.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "distill" in out and "evaluate" in out


def test_distill_then_evaluate_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "2",
                 "--real-per-class", "4", "--model", "ConvNetD1", "--out", str(out), "--no-progress"]) == 0
    assert main(["evaluate", str(out), "--models", "2", "--epochs", "2", "--baseline"]) == 0
    res = json.loads((out / "eval.json").read_text())
    assert len(res["synthetic"]["accuracies"]) == 2 and "random_subset" in res
    assert res["split"] == "test"


@pytest.mark.parametrize("argv,msg", [
    (["--dataset", "nope", "--ipc", "1"], "unknown dataset|nope"),
    (["--dataset", "digits", "--ipc", "1000"], "class"),
    (["--dataset", "digits", "--ipc", "1", "--model", "ResNet9000"], "unknown model"),
    (["--dataset", "digits", "--ipc", "0"], "positive"),
])
def test_bad_inputs_exit_2_with_message(tmp_path, capsys, argv, msg):
    code = main(["distill", "--method", "dm", "--iterations", "1", "--out", str(tmp_path / "r"), "--no-progress",
                 *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert "jaxdd: error:" in err
    import re

    assert re.search(msg, err, re.I), err


def test_evaluate_missing_run_is_clear(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not a finished jaxdd run" in capsys.readouterr().err


def test_experiment_configs_run_tiny(tmp_path):
    import run as runner

    names = runner.list_configs()
    assert names
    for name in names:
        cfg = runner.load_config(name)
        doc = (ROOT / "experiments" / "configs" / f"{name}.py").read_text()
        assert "Command:" in doc and "Runtime:" in doc and "Paper:" in doc, f"{name}: docstring incomplete"
        assert {"method", "dataset", "ipc"} <= set(cfg)
    # run the cheapest config end to end in tiny mode (digits demo); others are covered by the contract suite
    rec = runner.run("dm_digits_demo", tiny=True, out_root=str(tmp_path))
    assert 0.0 <= rec["accuracy_mean"] <= 1.0


def test_shared_option_choices_are_the_union_and_each_method_checks_its_own():
    # --conv-impl is an option of dc/dsa (which accept '' = the model's own), bptt and mtt (which do not)
    from jaxdd.cli import build_parser
    from jaxdd.methods import get_method, resolve_options
    from jaxdd.types import JaxddError

    base = ["distill", "--method", "dc", "--dataset", "digits", "--ipc", "1", "--out", "r"]
    assert build_parser().parse_args([*base, "--conv-impl", ""]).opt_conv_impl == ""
    assert resolve_options(get_method("dc"), {"conv_impl": ""})["conv_impl"] == ""
    with pytest.raises(JaxddError, match="conv_impl='' of method 'mtt' must be one of"):
        resolve_options(get_method("mtt"), {"conv_impl": ""})
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--conv-impl", "bogus"])
