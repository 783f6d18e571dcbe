"""Smoke run of the real entry point: `python -m theory sweep --preset smoke` (first S1 point only, to keep the
suite short; compilation dominates) writes results, plots and a summary."""
import json
import os

from theory.__main__ import main


def test_cli_smoke_sweep(tmp_path):
    out = str(tmp_path / "smoke")
    assert main(["sweep", "--preset", "smoke", "--only", "S1", "--index", "0", "--out", out]) == 0
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    pts = res["sweeps"]["S1"]
    assert [p["config"]["d"] for p in pts] == [8] and pts[0]["index"] == 0
    for p in pts:
        assert len(p["stage1"]["M_star"]) == 2 and "free" in p["stage2"] and "subset" in p and "e2e" in p
    for fn in ("summary.md", "fits.json", "span_share.png"):
        assert os.path.getsize(os.path.join(out, fn)) > 0
    text = open(os.path.join(out, "summary.md")).read()
    assert "Fitted exponents" in text and "Verdict" in text
