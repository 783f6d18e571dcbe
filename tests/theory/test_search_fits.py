"""Memory accounting, the minimal-memory search and the log-log / two-term fits on synthetic data."""
import numpy as np
import pytest

import theory as th
from theory import fits
from theory import search as sr


def test_memory_accounting():
    assert th.memory_points(4, 32) == 132
    assert th.memory_stage2("free", 5, 32, 4) == 165
    assert th.memory_stage2("span", 5, 32, 4) == 25
    assert th.memory_stage2("line", 5, 32, 4) == 42
    assert th.memory_model(128, 256) == 128 * 256 + 512
    assert th.memory_claim(128, 2, 256) == 768  # THEORY.md section 5 example column


def test_grid_and_buckets():
    g = sr.default_grid(40)
    assert g[:12] == list(range(1, 13)) and g[12:] == [16, 20, 24, 32, 40]
    assert sr.default_grid(10) == list(range(1, 11))
    assert sr.default_grid(30)[-1] == 30
    b = sr.bucketize(g)
    assert b[0] == (16, list(range(1, 13)) + [16]) and b[1] == (32, [20, 24, 32]) and b[2] == (64, [40])


def test_first_hit_uses_monotone_envelope():
    errs = np.array([[0.5, 0.1, 0.3, 0.05], [0.9, 0.8, 0.7, 0.6]])
    np.testing.assert_array_equal(sr.first_hit(errs, [0.2, 0.2]), [1, -1])
    np.testing.assert_array_equal(sr.first_hit(errs, [0.04, 0.65]), [-1, 3])


def test_search_stops_early_and_censors():
    calls = []

    def run(sizes, pad):
        calls.append(pad)
        s = np.asarray(sizes, float)
        errs = np.stack([1.0 / s, 2.0 / s])  # seed 0 reaches 0.1 at M=10, seed 1 at M=20
        return None, dict(err=errs)

    res = sr.search(run, sr.default_grid(128), [("err", np.array([0.1, 0.1]))])
    assert calls == [16, 32]
    np.testing.assert_array_equal(sr.m_star(res, "err", [0.1, 0.1]), [10, 20])
    assert np.isnan(sr.m_star(res, "err", [0.1, 0.001])[1])


def test_loglog_fit_recovers_slope():
    rng = np.random.default_rng(0)
    x = np.array([16, 32, 64, 128, 256])
    Y = 3.0 * x[:, None] ** 1.5 * np.exp(0.05 * rng.standard_normal((5, 5)))
    f = fits.loglog_fit(x, Y, n_boot=300)
    assert abs(f["slope"] - 1.5) < 0.1
    assert f["ci"][0] < 1.5 < f["ci"][1] and f["ci"][1] - f["ci"][0] < 0.3
    # censoring: a point with most seeds censored is dropped
    Y[0, :4] = np.nan
    assert fits.loglog_fit(x, Y, n_boot=10)["used"][0] is False
    # same seed, same intervals
    assert fits.loglog_fit(x, Y, n_boot=50, seed=3) == fits.loglog_fit(x, Y, n_boot=50, seed=3)


def test_joint_and_two_term_fits():
    rng = np.random.default_rng(1)
    d = np.array([16, 32, 64, 128, 32, 32, 32, 32, 32, 32, 32, 32])
    r = np.array([2, 2, 2, 2, 1, 3, 4, 6, 2, 2, 2, 2])
    L = np.array([256, 256, 256, 256, 256, 256, 256, 256, 64, 512, 2048, 8192])
    truth = 2.0 * r**2 * d + 1.0 * L
    Y = truth[:, None] * np.exp(0.02 * rng.standard_normal((12, 4)))
    tf = fits.two_term_fit(d, r, L, Y, n_boot=20)
    assert abs(tf["a_d"] - 1) < 0.15 and abs(tf["b_r"] - 2) < 0.15 and abs(tf["c_L"] - 1) < 0.15
    Yp = (3.0 * d**1.0 * r**2.0 * L**0.5)[:, None] * np.exp(0.02 * rng.standard_normal((12, 4)))
    jf = fits.joint_fit(d, r, L, Yp, n_boot=50)
    assert abs(jf["alpha_d"] - 1) < 0.05 and abs(jf["beta_r"] - 2) < 0.05 and abs(jf["gamma_L"] - 0.5) < 0.05


@pytest.mark.parametrize("ci,pred,rival,expect", [
    ([0.8, 1.2], 1.0, None, "supported"), ([1.5, 2.5], 2.0, 1.0, "supported"),
    ([0.8, 2.2], 2.0, 1.0, "not separable"), ([0.9, 1.3], 2.0, 1.0, "contradicted"),
    ([None, None], 1.0, 0.0, "not separable")])
def test_verdict_rule(ci, pred, rival, expect):
    assert fits.verdict_for(ci, pred, rival) == expect


def test_shared_configurations_are_measured_once():
    """A configuration that two sweeps share runs once, with the union of their stages and criteria, under the key
    of its first occurrence (cpu preset: S1 d = 32 is S2 r = 2, S1 d = 16 is S3 L = 256)."""
    from theory import sweep

    pre = sweep.PRESETS["cpu"]
    todo, merged = sweep.plan_points(pre)
    assert len(todo) == len(pre.s1_d) + len(pre.s2_r) + len(pre.s3_L) + len(pre.s4)
    assert len(merged) == len(todo) - 2
    shared = merged[tuple(sorted(dict(d=16, r=2, L=256).items()))]
    assert shared["first"] == ("S1", 0) and shared["subset"] is True
    assert set(shared["criteria2"]) == {"generalise", "reproduce"} and set(shared["stage2_kinds"]) == {"free", "span"}
    assert merged[tuple(sorted(dict(d=32, r=2, L=256).items()))]["first"] == ("S1", 1)
    # selecting one sweep measures its points under its own keys
    todo2, merged2 = sweep.plan_points(pre, only=("S2",), index=(1,))
    assert [(s, j) for s, j, _, _ in todo2] == [("S2", 1)] and len(merged2) == 1
