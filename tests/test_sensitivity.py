"""Analyses read after the confirmatory run (gift_lite/sensitivity.py) and the intervals beside the
pre-registered one (stats.seed_paired_difference, the t-based detectable difference)."""

import math

import numpy as np
import pandas as pd
import pytest

from gift_lite import claims, plotting, sensitivity, stats


def test_seeds_paired_by_number_is_a_t_interval_over_per_seed_differences():
    a = pd.DataFrame({0: [0.5, 0.7], 1: [0.4, 0.6], 2: [0.6, 0.8], 9: [0.0, 0.0]}, index=["p0", "p1"])
    b = pd.DataFrame({0: [0.4, 0.6], 1: [0.4, 0.4], 2: [0.4, 0.6], 5: [1.0, 1.0]}, index=["p0", "p1"])
    d = stats.seed_paired_difference(a, b, what="x", sign=1, margin=0.02)
    per_seed = np.array([0.1, 0.1, 0.2])  # seeds 0, 1, 2 only: 9 and 5 have no partner
    half = stats.t_quantile(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3)
    assert d.estimate == pytest.approx(per_seed.mean()) and d.df == 2
    assert (d.low, d.high) == (pytest.approx(per_seed.mean() - half, abs=1e-9), pytest.approx(per_seed.mean() + half, abs=1e-9))
    with pytest.raises(ValueError, match="1 shared seeds"):
        stats.seed_paired_difference(a[[0]], b, what="x", sign=1, margin=0.02)


def test_detectable_difference_uses_the_t_multiplier_of_the_interval():
    normal = stats.Difference("x", 0.3, 0.2, 0.0, 0.2, 0.01, 1, 0.02)  # a bootstrap: df inf
    assert normal.t_multiplier == pytest.approx(2.8016, abs=1e-4) and normal.detectable == pytest.approx(0.028)
    t10 = stats.Difference("x", 0.3, 0.2, 0.0, 0.2, 0.01, 1, 0.02, df=10)
    assert t10.t_multiplier == pytest.approx(2.2281 + 0.8791, abs=1e-3)
    assert t10.detectable_t == pytest.approx(t10.t_multiplier * 0.01) and t10.detectable == pytest.approx(0.028)
    welch = stats.welch_difference([0.30, 0.31, 0.29], [0.15, 0.16, 0.14], what="e", sign=1, margin=0.01)
    assert welch.df == pytest.approx(4.0) and welch.t_multiplier > 3.5  # few seeds: far above 2.8


def _results(rows):
    return pd.DataFrame([dict(zip(("method", "beta", "seed", "stage", "split", "metric", "value"), r)) for r in rows])


def test_ood_transfer_compares_every_seed_with_the_base():
    inf = math.inf
    results = _results([("base", 0.0, 0, "base", "ood", "pass@1", 0.15),
                        ("sft", inf, 0, "init", "ood", "pass@1", 0.20), ("sft", inf, 1, "init", "ood", "pass@1", 0.22),
                        ("sft", inf, 0, "rl", "ood", "pass@1", 0.30), ("sft", inf, 1, "rl", "ood", "pass@1", 0.14),
                        ("rl_only", inf, 0, "rl", "ood", "pass@1", 0.25), ("rl_only", inf, 1, "rl", "ood", "pass@1", 0.27)])
    table = sensitivity.ood_transfer(results, [("sft", inf), ("rl_only", inf)]).set_index("method")
    assert table.loc["sft", "ood before RL"] == pytest.approx(0.21) and table.loc["sft", "lowest seed after RL"] == 0.14
    assert not table.loc["sft", "every seed above the base"]  # one seed fell below the base
    assert table.loc["rl_only", "ood before RL"] == 0.15 and table.loc["rl_only", "every seed above the base"]


def _counts(method, beta, stage, correct_by_seed):
    return [{"method": method, "beta": beta, "stage": stage, "split": split, "seed": seed, "problem_id": f"p{i}",
             "correct": c} for seed, column in correct_by_seed.items() for split in ("id", "ood")
            for i, c in enumerate(column)]


def test_placebo_finds_identical_counts_before_rl_and_reports_the_difference_after():
    inf = math.inf
    before = {0: [1, 3, 5, 7], 1: [2, 2, 6, 8], 2: [0, 4, 4, 6]}
    rows = (_counts("gift", 20.0, "init", before) + _counts("sft", inf, "init", {**before, 3: [8, 8, 8, 8]})
            + _counts("gift", 20.0, "rl", {0: [2, 3, 5, 7], 1: [2, 2, 6, 8], 2: [0, 4, 4, 6]})
            + _counts("sft", inf, "rl", before))
    data = claims.ProtocolData(pd.DataFrame(), pd.DataFrame(rows), pd.DataFrame(), num_samples=8, curve_samples=8)
    table = sensitivity.placebo(data, 20.0).set_index("stage")
    assert table.loc["init", "identical counts"] and table.loc["init", "counts compared"] == 24  # seed 3 left out
    assert not table.loc["rl", "identical counts"] and table.loc["rl", "counts that differ"] == 2  # id and ood
    assert table.loc["rl", "diff"] == pytest.approx(1 / 8 / 4 / 3) and table.loc["init", "diff"] == 0.0


def test_beta_curve_on_shared_seeds_and_where_it_stops_falling():
    inf = math.inf
    means = {("rl_only", inf): 0.40, ("gift", 0.5): 0.38, ("gift", 1.0): 0.36, ("gift", 4.0): 0.37, ("sft", inf): 0.35}
    rows = [(m, b, seed, "rl", "id", "pass@1", v + (0.5 if seed == 7 else 0.0))
            for (m, b), v in means.items() for seed in (0, 1, 7)]
    curve = sensitivity.beta_curve_on_seeds(_results(rows), (0, 1))
    assert curve["mean"].tolist() == pytest.approx([0.40, 0.38, 0.36, 0.37, 0.35])  # seed 7 left out
    assert curve["below previous"].tolist() == [False, True, True, False, True]
    assert sensitivity.falls_until(curve) == 1.0
    assert sensitivity.falls_until(curve[curve["beta"] != 4.0]) == inf  # falls all the way


def test_forest_plot_draws_one_row_per_comparison_with_its_margin():
    up = stats.Difference("id/pass@1 (rl)", 0.37, 0.36, 0.001, 0.02, 0.005, 1, 0.02)
    down = stats.Difference("kl_to_base (init)", 0.02, 0.08, -0.06, -0.05, 0.002, -1, 0.005)
    grey = stats.Difference("id/pass@1 (init), reported only", 0.17, 0.19, -0.03, -0.01, 0.004, 1, 0.01)
    with plotting.style():
        fig = plotting.plot_forest({1: [down], 2: [up]}, {2: [grey]})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "1 · kl_to_base (init)", "2 · id/pass@1 (rl)", "2 · id/pass@1 (init), reported only"]
    ticks = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"]
    assert ticks == [-0.005, 0.02]  # the margins in the claimed directions; none for the reported row
