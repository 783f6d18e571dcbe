"""README's commands work: its Python snippets run as written (in order, in one namespace, in a fresh process), and
every ``jaxdd`` command line in it parses; the distill/evaluate lines also run, on their own dataset with the budgets
shrunk (iterations, real images, networks, epochs), in README's order (so the second distill extends the first)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path


README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def _jaxdd_commands() -> list[list[str]]:
    cmds = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("jaxdd "):
                cmds.append(shlex.split(line)[1:])
    return cmds


def test_readme_python_snippets_run(tmp_path):
    code = "\n".join(_blocks("python"))
    assert "distill_dataset" in code and "make_step" in code
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs" / "quick" / "eval.json").exists() and (tmp_path / "runs" / "own" / "eval.json").exists()


def test_readme_jaxdd_commands_parse_and_run(tmp_path, capsys):
    from jaxdd.cli import build_parser, main

    cmds = _jaxdd_commands()
    assert {c[0] for c in cmds} >= {"methods", "distill", "evaluate"}
    parser = build_parser()
    for argv in cmds:
        parser.parse_args(argv)  # every line is a valid command as written
    shrink = {"300": "2", "600": "3"}  # README's iteration counts, in order, become 2 then 3 (an extension)
    for argv in cmds:
        if "--paper-protocol" in argv or any(a.startswith("runs/") and a != "runs/dm10" for a in argv):
            continue  # 20 networks x 1000 epochs (tested in tests/test_train.py); the GPU section's same forms
        argv = [str(tmp_path / a) if a.startswith("runs/") else a for a in argv]
        if argv[0] == "distill":
            i = argv.index("--iterations")
            argv[i + 1] = shrink[argv[i + 1]]
            argv += ["--real-per-class", "4", "--no-progress"]
        elif argv[0] == "evaluate":
            argv += ["--models", "1", "--epochs", "1"]
        assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr()
    assert "extending the run" in out.err and "iterations 2 -> 3" in out.err
