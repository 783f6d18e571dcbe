"""Smoke runs of the real entry points: the CLI and every experiments config in tiny mode."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import numpy as np

from jaxdd.checkpoint import load_artifact
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
    art = load_artifact(out)
    assert art.images.shape == (10, 8, 8, 1) and sorted(art.labels.tolist()) == list(range(10))
    assert art.metadata["config"]["iterations"] == 2 and art.metadata["steps_done"] == 2
    capsys.readouterr()
    assert main(["evaluate", str(out), "--models", "2", "--epochs", "30", "--augment", "none", "--baseline"]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "eval.json").read_text())
    s, b = res["synthetic"], res["random_subset"]
    assert len(s["accuracies"]) == 2 and len(b["accuracies"]) == 2 and res["split"] == "test"
    assert s["protocol"]["epochs"] == 30 and s["protocol"]["augment"] is None and s["model"] == "ConvNetD1"
    # one image per class of 8x8 digits teaches a network well above chance (10 %); measured 27 % (synthetic) here;
    # labels that did not match the images, or an untrained network, would sit at chance
    assert s["mean"] > 0.2 and b["mean"] > 0.2, res
    assert f"synthetic: {100 * s['mean']:.2f} +- {100 * s['std']:.2f} %" in printed


# ----------------------------------------------------------------------------------------------------------------
# Every user mistake: one clear message naming the problem, a non-zero exit, no traceback.
# (command line, a fragment of the message that names the problem, exit code). Placeholders: {tmp} a fresh
# directory, {run} a finished DM digits run (ipc 1, 2 iterations), {file} an existing regular file, {trunc} /
# {badlabels} / {badshape} / {nanimg} runs whose synthetic.npz is truncated / has labels outside the 10 classes /
# images of another shape / NaN pixels, {teacherdir} a directory holding a `jaxdd teacher` run, {legacy} a run
# directory with checkpoints but no run.json (an older jaxdd).

D = ["distill", "--method", "dm", "--dataset", "digits", "--iterations", "2", "--real-per-class", "4",
     "--model", "ConvNetD1", "--no-progress"]
RUN = [*D, "--ipc", "1", "--out", "{run}"]  # the command that made {run}
DM = [*D, "--ipc", "1"]
BAD_INPUTS = [
    # distill: values
    ([*D, "--dataset", "nope", "--ipc", "1", "--out", "{tmp}"], "Unknown dataset 'nope'", 2),
    ([*DM, "--ipc", "1000", "--out", "{tmp}"], "ipc=1000 exceeds the smallest class", 2),
    ([*D, "--ipc", "0", "--out", "{tmp}"], "argument --ipc: must be >= 1, got 0", 2),
    ([*DM, "--model", "ResNet9000", "--out", "{tmp}"], "unknown model 'ResNet9000'", 2),
    ([*DM, "--iterations", "0", "--out", "{tmp}"], "argument --iterations: must be >= 1, got 0", 2),
    ([*DM, "--iterations", "ten", "--out", "{tmp}"], "argument --iterations: 'ten' is not a positive integer", 2),
    ([*DM, "--checkpoint-every", "0", "--out", "{tmp}"], "argument --checkpoint-every: must be >= 1, got 0", 2),
    ([*DM, "--checkpoint-seconds", "0", "--out", "{tmp}"], "argument --checkpoint-seconds: must be > 0", 2),
    ([*DM, "--lr-img", "-1", "--out", "{tmp}"], "argument --lr-img: must be > 0", 2),
    ([*DM, "--eval-every", "-1", "--out", "{tmp}"], "argument --eval-every: must be >= 0", 2),
    ([*DM, "--param", "bogus", "--out", "{tmp}"], "unknown parameterization 'bogus'", 2),
    ([*DM, "--param", "low_rank", "--rank", "100", "--out", "{tmp}"], "rank must be an int in [1, min(h, w) = 8]",
     2),
    ([*DM, "--syn-steps", "5", "--out", "{tmp}"], "options ['syn_steps'] do not apply to --method dm", 2),
    (["distill", "--method", "bogus", "--dataset", "digits", "--ipc", "1", "--out", "{tmp}"],
     "argument --method: invalid choice: 'bogus'", 2),
    (["distill", "--method", "mtt", "--dataset", "digits", "--ipc", "1", "--conv-impl", "", "--out", "{tmp}"],
     "option conv_impl='' of method 'mtt' must be one of", 2),
    (["distill", "--method", "mtt", "--dataset", "digits", "--ipc", "1", "--out", "{tmp}", "--no-progress"],
     "mtt needs an expert buffer: pass --experts DIR", 2),
    ([*DM, "--allow-partial-buffer", "maybe", "--method", "mtt", "--out", "{tmp}"], "'maybe' is not a boolean", 2),
    ([*DM, "--fresh-kernel", "x", "--method", "kip", "--out", "{tmp}"], "argument --fresh-kernel: invalid int value",
     2),
    # distill: the output directory
    ([*DM, "--out", "{file}"], "is an existing file, not a directory", 2),
    ([*DM, "--out", "/sys/jaxdd_test_run"], "cannot write the run directory --out /sys/jaxdd_test_run", 2),
    ([*DM, "--out", "{file}/sub"], "cannot write the run directory --out", 2),
    ([*DM, "--out", "{teacherdir}"], "holds a `jaxdd teacher` run, not a `jaxdd distill` one", 2),
    ([*DM, "--out", "{legacy}"], "holds a run without run.json", 2),
    # distill: a rerun that would mix two runs
    ([*RUN, "--seed", "1"], "  seed: 0 -> 1", 2),
    ([*RUN, "--lr-img", "3"], "  lr_img: 1.0 -> 3.0", 2),
    ([*RUN[:-4], "--ipc", "2", "--out", "{run}"], "  ipc: 1 -> 2", 2),
    ([*RUN, "--iterations", "1"], "  iterations: 2 -> 1", 2),
    ([*RUN, "--zca"], "  zca: false -> true", 2),
    ([*RUN, "--init", "noise"], '  init: "real" -> "noise"', 2),
    ([*RUN, "--model", "MLP"], '  model: "ConvNetD1" -> "MLP"', 2),
    # evaluate
    (["evaluate", "{tmp}/nothing"], "not a finished jaxdd run", 2),
    (["evaluate", "{trunc}", "--epochs", "1"], "synthetic.npz is truncated or corrupt", 2),
    (["evaluate", "{badlabels}", "--epochs", "1"], "labels outside the 10 classes of the dataset (0...9): [10, 11]",
     2),
    (["evaluate", "{badshape}", "--epochs", "1"], "holds images of shape (10, 4, 4, 1)", 2),
    (["evaluate", "{nanimg}", "--epochs", "1"], "holds NaN or inf pixels", 2),
    (["evaluate", "{run}", "--epochs", "0"], "argument --epochs: must be >= 1, got 0", 2),
    (["evaluate", "{run}", "--models", "0"], "argument --models: must be >= 1, got 0", 2),
    # experts / teacher / continual / distill-many / evaluate-many / relabel-eval
    (["experts", "--dataset", "digits", "--num-experts", "1", "--epochs", "0", "--out", "{tmp}"],
     "argument --epochs: must be >= 1, got 0", 2),
    (["experts", "--dataset", "digits", "--num-experts", "0", "--epochs", "1", "--out", "{tmp}"],
     "argument --num-experts: must be >= 1, got 0", 2),
    (["experts", "--dataset", "digits", "--num-experts", "1", "--epochs", "1", "--model-kwargs", "{width", "--out",
      "{tmp}"], "--model-kwargs must be a JSON object", 2),
    (["experts", "--dataset", "digits", "--num-experts", "1", "--epochs", "1", "--out", "{file}"],
     "is an existing file, not a directory", 2),
    (["teacher", "--dataset", "digits", "--epochs", "0", "--out", "{tmp}"], "argument --epochs: must be >= 1", 2),
    (["teacher", "--dataset", "digits", "--model-kwargs", "[1]", "--out", "{tmp}"],
     "--model-kwargs must be a JSON object", 2),
    (["teacher", "--dataset", "digits", "--out", "{run}"], "holds a `jaxdd distill` run, not a `jaxdd teacher` one",
     2),
    (["continual", "--dataset", "digits", "--steps", "3", "--methods", "random", "--out", "{tmp}"],
     "10 classes cannot be split into 3 equal steps", 2),
    (["continual", "--dataset", "digits", "--methods", "random,bogus", "--out", "{tmp}"],
     "unknown memory builders ['bogus']", 2),
    (["continual", "--dataset", "digits", "--eval-epochs", "0", "--out", "{tmp}"],
     "argument --eval-epochs: must be >= 1", 2),
    (["continual", "--dataset", "digits", "--iterations", "0", "--out", "{tmp}"],
     "argument --iterations: must be >= 1", 2),
    (["distill-many", *DM[1:], "--num-exp", "0", "--out", "{tmp}"], "argument --num-exp: must be >= 1", 2),
    (["distill-many", *DM[1:], "--lr-img-grid", "1,x", "--out", "{tmp}"], "a grid is comma-separated floats", 2),
    (["distill-many", *DM[1:], "--num-exp", "3", "--lr-img-grid", "0.5,1", "--out", "{tmp}"],
     "hyperparameter grid 'data' has 2 values for 3 experiments", 2),
    (["distill-many", *DM[1:], "--out", "{run}"], "holds a `jaxdd distill` run, not a `jaxdd distill-many` one", 2),
    (["evaluate-many", "{tmp}"], "holds no finished experiments", 2),
    (["evaluate-many", "{tmp}", "--epochs", "0"], "argument --epochs: must be >= 1", 2),
    (["relabel-eval", "{run}", "--teacher", "{tmp}/none"], "holds no finished teacher", 2),
]


@pytest.fixture(scope="module")
def bad_dirs(tmp_path_factory):
    """The directories the placeholders name (one finished DM run, the rest made from its files)."""
    import shutil

    root = tmp_path_factory.mktemp("bad")
    run = root / "run"
    assert main([a.replace("{run}", str(run)) for a in RUN]) == 0
    dirs = {"run": run}
    for name in ("trunc", "badlabels", "badshape", "nanimg"):
        d = dirs[name] = root / name
        d.mkdir()
        shutil.copy(run / "synthetic.json", d / "synthetic.json")
        with np.load(run / "synthetic.npz") as z:
            arrays = {k: z[k] for k in z.files}
        if name == "badlabels":
            arrays["labels"] = arrays["labels"].copy()
            arrays["labels"][:2] = [10, 11]
        if name == "badshape":
            arrays["images"] = arrays["images"][:, :4, :4]
        if name == "nanimg":
            arrays["images"] = arrays["images"].copy()
            arrays["images"][3, 2, 2, 0] = np.nan
        np.savez(d / "synthetic.npz", **arrays)
        if name == "trunc":
            data = (d / "synthetic.npz").read_bytes()
            (d / "synthetic.npz").write_bytes(data[: len(data) // 2])
    dirs["file"] = root / "a_file"
    dirs["file"].write_text("not a directory")
    t = dirs["teacherdir"] = root / "teacher"
    (t / "checkpoints" / "1").mkdir(parents=True)
    (t / "run.json").write_text(json.dumps({"kind": "teacher", "config": {}}))
    legacy = dirs["legacy"] = root / "legacy"
    (legacy / "checkpoints" / "2").mkdir(parents=True)
    return dirs


def test_bad_input_table_count(capsys):
    with capsys.disabled():
        print(f"\nbad-input table: {len(BAD_INPUTS)} cases")
    assert len(BAD_INPUTS) >= 50


@pytest.mark.parametrize("argv,fragment,code", BAD_INPUTS, ids=[f"{i:02d}" for i in range(len(BAD_INPUTS))])
def test_bad_inputs_give_one_clear_message(tmp_path, capsys, bad_dirs, argv, fragment, code):
    fill = {f"{{{k}}}": str(v) for k, v in bad_dirs.items()} | {"{tmp}": str(tmp_path / "out")}
    args = []
    for a in argv:
        for k, v in fill.items():
            a = a.replace(k, v)
        args.append(a)
    try:
        rc = main(args)
    except SystemExit as e:  # argparse: a bad value of an option
        rc = e.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert fragment in err, err
    assert "Traceback" not in err
    assert err.count("error:") == 1, err  # one message


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


def _help(argv) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(buf.getvalue().split())  # argparse wraps lines: compare with single spaces


def test_help_shows_every_default_and_each_methods_own():
    from jaxdd.cli import build_parser

    text = _help(["distill"])
    # shared options: each method's own default, not the first registrant's
    assert "(default: 100 (bptt, kip); 256 (dc, dm, dm+mim, dsa, dsa+mim))" in text, text
    assert "(default: 'full' (bptt); 'constant' (mtt, mtt+mim))" in text
    assert "distillation steps (default per method: 400 (bptt);" in text
    assert "(default: 60.0)" in text and "(default: by wall time" in text
    # every optional argument of our subcommands names its default (flags are off by default and say so or not)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("distill", "evaluate", "experts", "teacher", "continual", "distill-many", "evaluate-many"):
        for action in sub.choices[name]._actions:
            if not action.option_strings or action.required or action.nargs == 0:
                continue  # positional, required, --help and store_true flags
            help_text = sub.choices[name].formatter_class("x")._get_help_string(action)
            assert "default" in help_text, f"jaxdd {name} {action.option_strings[0]}: {help_text!r}"
