"""The M* definition (pass rate over seeds, whole curve, censoring), the censored fits (planted exponents), memory
accounting, the plan of the presets and resuming."""
import json

import numpy as np
import pytest

import theory as th
from jaxdd.types import JaxddError
from theory import fits
from theory import search as sr
from theory import sweep


def test_memory_accounting():
    assert th.memory_points(4, 32) == 132
    assert th.memory_stage2("free", 5, 32, 4) == 165
    assert th.memory_model(128, 256) == 128 * 256 + 512
    assert th.memory_claim(128, 2, 256) == 768


def test_grid_and_buckets():
    g = sr.default_grid(40)
    assert g[:12] == list(range(1, 13)) and g[12:] == [16, 20, 24, 32, 40]
    assert sr.default_grid(10) == list(range(1, 11)) and sr.default_grid(30)[-1] == 30
    assert sr.bucketize(g)[0] == (16, list(range(1, 13)) + [16])


def test_m_star_is_pass_rate_over_the_whole_curve():
    sizes = [1, 2, 3, 4, 5, 6]
    # 4 seeds; a lucky early pass at size 2 (3 of 4 seeds) is followed by a failure at size 3 (1 of 4)
    P = np.array([[0, 1, 0, 1, 1, 1],
                  [0, 1, 0, 0, 1, 1],
                  [0, 1, 1, 1, 1, 1],
                  [0, 0, 0, 0, 0, 1]], bool)
    assert sr.m_star_rate(sizes, P) == (4.0, False)        # rate 1/2 at 4 and above, not at 3
    assert sr.m_star_rate(sizes, P, rate=1.0) == (6.0, False)
    np.testing.assert_array_equal(sr.m_star_per_seed(sizes, P), [4, 5, 2, 6])
    # censored: pass rate below 1/2 at the cap
    Pc = P.copy()
    Pc[:3, -1] = False
    assert sr.m_star_rate(sizes, Pc) == (6.0, True)
    assert np.isnan(sr.m_star_per_seed(sizes, Pc)[0])


def test_m_star_of_a_planted_noisy_curve():
    """Error curves err_s(M) = 1/M + noise per seed: the pass-rate M* at threshold 1/8 sits at the planted 8
    (within the noise), whatever the single lucky dips of individual seeds below the threshold at small M."""
    rng = np.random.default_rng(0)
    sizes = sr.default_grid(40)
    S = 12
    errs = 1.0 / np.asarray(sizes, float)[None, :] * np.exp(0.15 * rng.standard_normal((S, len(sizes))))
    errs[0, 1] = 0.0      # a lucky dip of one seed at M = 2
    P = sr.passes(errs, 1 / 8)
    m, c = sr.m_star_rate(sizes, P)
    assert not c and 7 <= m <= 9
    # a running minimum would have let seed 0 pass at M = 2
    assert sr.m_star_per_seed(sizes, P)[0] >= 7
    # NaN never passes
    assert not sr.passes([[np.nan]], 1.0)[0, 0]


def _planted_points(x, slope, S=10, cap=None, rng=None, noise=0.1, c=5.0):
    """PointData with M* = c x^slope (per seed with noise) on a unit grid up to ``cap``; above the cap -> censored."""
    pts = []
    for xi in x:
        mtrue = c * xi**slope
        grid = np.arange(1, int(cap if cap else 4 * mtrue) + 1, dtype=float)
        ms = mtrue * np.exp(noise * rng.standard_normal(S))
        P = grid[None, :] >= ms[:, None]
        pts.append(fits.PointData(dict(L=xi), [(grid, P)]))
    return pts


def test_censored_loglog_recovers_a_planted_slope_with_censoring():
    rng = np.random.default_rng(1)
    x = np.array([64, 128, 256, 512, 1024, 2048])
    pts = _planted_points(x, 1.0, rng=rng, cap=3000, c=2.0)   # the last point (~4096) is censored at the cap 3000
    assert pts[-1].value()[1] and not pts[0].value()[1]
    f = fits.censored_loglog(pts, "L", n_boot=100)
    assert f["n_censored"] == 1 and abs(f["slope"] - 1.0) < 0.1
    assert f["ci"][0] < 1.0 < f["ci"][1]
    # dropping the censored point as if it were exact (value = cap) biases the slope down; Tobit does not
    lx = np.log(x)
    naive = fits.ols(lx[:, None], np.log([p.value()[0] for p in pts]))[1]
    assert naive < f["slope"]
    # out-of-regime points are not fitted; fewer than 3 in-regime points: no fit
    for p in pts[2:]:
        p.in_regime = False
    g = fits.censored_loglog(pts, "L", n_boot=10)
    assert g["slope"] is None and g["n_out_of_regime"] == 4
    # same seed, same intervals
    pts = _planted_points(x[:4], 0.5, rng=np.random.default_rng(2))
    assert fits.censored_loglog(pts, "L", n_boot=30, seed=3) == fits.censored_loglog(pts, "L", n_boot=30, seed=3)


@pytest.mark.parametrize("k", [1.0, 2.0])
def test_a_r_slope_recovers_r_d_against_r2_d(k):
    """Mem = (2 r^k) d + 10 on a d x r grid: the slope of log A(r) on log r recovers k, and its interval separates
    1 from 2."""
    rng = np.random.default_rng(3)
    pts = []
    for r in (1, 2, 3, 4, 6):
        for m in (16, 24, 32):
            d = m * r
            mtrue = 2 * r**k * d + 10
            ms = mtrue * np.exp(0.03 * rng.standard_normal(10))
            grid = np.unique(np.round(np.geomspace(1, 3 * mtrue, 400)))
            pts.append(fits.PointData(dict(d=d, r=r), [(grid, grid[None, :] >= ms[:, None])]))
    f = fits.a_r_slope(pts, n_boot=60)
    assert abs(f["slope"] - k) < 0.1
    other = 3.0 - k
    assert f["ci"][0] <= k <= f["ci"][1] and not f["ci"][0] <= other <= f["ci"][1]
    # an r with a censored point is excluded and said so
    pts[0] = fits.PointData(pts[0].x, [(np.arange(1, 5.0), np.zeros((10, 4), bool))])
    g = fits.a_r_slope(pts, n_boot=5)
    assert g["excluded_r"] == {"1": "censored point"} and g["r_used"] == [2, 3, 4, 6]


def test_point_value_is_the_joint_minimum_over_alternatives():
    g = np.arange(1, 11.0)
    P1 = np.tile(g >= 6, (4, 1))
    P2 = np.tile(g >= 3, (4, 1))
    pd = fits.PointData({}, [(10 + g, P1), (20 + g, P2)])
    assert pd.value() == (16.0, False)
    pd = fits.PointData({}, [(g, np.zeros((4, 10), bool))])
    assert pd.value() == (10.0, True)


@pytest.mark.parametrize("ci,pred,rival,expect", [
    ([0.8, 1.2], 1.0, None, "holds the prediction and excludes the rival"),
    ([0.8, 2.2], 2.0, 1.0, "holds both the prediction and the rival"),
    ([0.9, 1.3], 2.0, 1.0, "excludes the prediction"), ([None, None], 1.0, 0.0, "no interval")])
def test_verdict_rule(ci, pred, rival, expect):
    assert fits.verdict_for(ci, pred, rival) == expect


def test_plan_of_the_presets():
    pre = sweep.PRESETS["cpu"]
    pl_ = sweep.plan(pre)
    dr = [s for s in pl_ if s[0] == "DR"]
    assert all(sp["d"] >= 16 * sp["r"] for _, _, sp in dr)
    assert {sp["r"] for _, _, sp in dr} == set(pre.dr_r + pre.dr_late_r)
    assert pl_[-1][0] == "DR" and pl_[-1][2]["r"] == max(pre.dr_late_r)      # late r values run last
    for r in pre.dr_r + pre.dr_late_r:                                       # d values per r (late ones own)
        want = (pre.dr_late_m or pre.dr_m) if r in pre.dr_late_r else pre.dr_m
        assert sorted(sp["d"] for _, _, sp in dr if sp["r"] == r) == sorted(m * r for m in want)
    assert len(pre.dr_m) >= 3                                                # a residual dof in A(r) d + B(r)
    assert [sp["L"] for s, _, sp in pl_ if s == "L"] == list(pre.l_L)
    assert [sp["mult"] for s, _, sp in pl_ if s == "ABL"] == list(pre.abl_mult)
    lines = []
    total = sweep.print_plan("gpu", out=lines.append)
    assert total > 0 and lines[-1].startswith("total")


def test_resume_refuses_another_preset(tmp_path):
    with open(tmp_path / "results.json", "w") as f:
        json.dump(dict(preset="cpu", key_seed=0, preset_config={}, points={}), f)
    with pytest.raises(JaxddError, match="different preset"):
        sweep.run_sweep("smoke", str(tmp_path))


def test_an_m_star_at_the_cap_can_count_as_censored():
    g = np.arange(1, 6.0)
    P = np.tile(g >= 5, (4, 1))
    assert fits.PointData({}, [(g, P)]).value() == (5.0, False)
    assert fits.PointData({}, [(g, P)], cap_censors=True).value() == (5.0, True)


def test_a_r_slope_through_origin():
    rng = np.random.default_rng(4)
    pts = []
    for r in (1, 2, 3, 4):
        for m in (16, 24):
            d = m * r
            mtrue = 3 * r * d
            grid = np.unique(np.round(np.geomspace(1, 3 * mtrue, 400)))
            ms = mtrue * np.exp(0.03 * rng.standard_normal(10))
            pts.append(fits.PointData(dict(d=d, r=r), [(grid, grid[None, :] >= ms[:, None])]))
    f = fits.a_r_slope(pts, n_boot=40, through_origin=True)
    assert abs(f["slope"] - 1.0) < 0.1 and all(v == 0.0 for v in f["B"].values())


def test_stage_curve_by_buckets_keeps_the_grid_order():
    """one_bucket=False runs each padded bucket separately (16, 32, ...) and concatenates the metrics in grid
    order; one_bucket=True pads the whole grid to one size. The estimate charges less work for buckets."""
    grid = sr.default_grid(22)
    seen = []

    def run(sz, pad):
        seen.append((pad, list(sz)))
        return pad, {"m": np.tile(np.asarray(sz, float) + 1000 * pad, (3, 1))}

    cur = sweep._curve(run, grid, 32, one_bucket=False)
    assert cur.sizes == grid and [p for p, _ in seen] == [16, 32] and cur.pads == [16, 32]
    assert np.array_equal(cur.metrics["m"][0], np.asarray(grid) + 1000.0 * np.where(np.asarray(grid) > 16, 32, 16))
    seen.clear()
    cur = sweep._curve(run, grid, 32, one_bucket=True)
    assert seen == [(32, grid)] and cur.pads == [32]
    import dataclasses
    pre = sweep.PRESETS["cpu"]
    spec = dict(d=64, r=4, L=pre.dr_L)
    t_multi = sweep.estimate_seconds(dataclasses.replace(pre, one_bucket=False), "DR", spec, 30.0, 0.0)
    t_one = sweep.estimate_seconds(dataclasses.replace(pre, one_bucket=True), "DR", spec, 30.0, 0.0)
    assert t_multi < t_one


def test_r_verdict_refuses_a_too_wide_interval():
    from theory import report
    wide = report._r_verdict(dict(slope=-1.86, ci=[-2.46, 1.93], r_used=[1, 2, 3]))
    assert "too noisy for a verdict" in wide and "NOT observed" not in wide
    narrow = report._r_verdict(dict(slope=1.0, ci=[0.7, 1.3], r_used=[1, 2, 3]))
    assert "NOT observed" in narrow


def test_d_slope_recovers_a_planted_d_exponent():
    """Mem = 3 r^1.5 d^k on a d x r grid (three d per r): the common log-log slope in d recovers k; a censored
    point removes its r group."""
    rng = np.random.default_rng(5)
    for k in (1.0, 0.5):
        pts = []
        for r in (1, 2, 3):
            for m in (16, 24, 32):
                d = m * r
                mtrue = 3 * r**1.5 * d**k
                grid = np.unique(np.round(np.geomspace(1, 3 * mtrue, 400)))
                ms = mtrue * np.exp(0.03 * rng.standard_normal(10))
                pts.append(fits.PointData(dict(d=d, r=r), [(grid, grid[None, :] >= ms[:, None])]))
        f = fits.d_slope(pts, n_boot=40)
        assert abs(f["slope"] - k) < 0.08 and f["ci"][0] <= k <= f["ci"][1] and f["n_points"] == 9
    pts[0] = fits.PointData(pts[0].x, [(np.arange(1, 5.0), np.zeros((10, 4), bool))])
    assert fits.d_slope(pts, n_boot=5)["r_used"] == [2, 3]
