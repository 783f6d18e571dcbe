"""The real entry point: `python -m theory sweep --preset smoke` on one L point (compilation dominates), resumed
(the finished point is skipped), reported; and --dry-run."""
import json
import os

from theory.__main__ import main


def test_cli_smoke_point_resume_and_report(tmp_path, capsys):
    out = str(tmp_path / "smoke")
    assert main(["sweep", "--preset", "smoke", "--only", "L", "--index", "0", "--out", out]) == 0
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    p = res["points"]["L/0"]
    assert p["config"]["L"] == 16 and len(p["param"]["curves"]["param_rel"]) == 3
    assert p["regime"]["ok"] in (True, False) and "mse_full" in p["regime"]
    mtime = os.path.getmtime(os.path.join(out, "results.json"))
    capsys.readouterr()
    assert main(["sweep", "--preset", "smoke", "--only", "L", "--index", "0", "--out", out, "--no-report"]) == 0
    assert "already done, skipped" in capsys.readouterr().out
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["points"]["L/0"] == p
    text = open(os.path.join(out, "summary.md")).read()
    assert "PARTIAL RESULTS" in text and "Verdicts" in text and os.path.getmtime(os.path.join(out, "results.json")) >= mtime
    # another preset in the same directory is refused with a message, not a traceback
    assert main(["sweep", "--preset", "cpu", "--only", "L", "--index", "0", "--out", out]) == 2


def test_cli_dry_run(capsys):
    assert main(["sweep", "--preset", "cpu", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "DR/0" in text and "L/0" in text and "ABL/0" in text and "total" in text
