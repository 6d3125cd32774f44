"""The confirmatory protocol (data/mini_conf/PROTOCOL.md): its world, its interval and its power analysis."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from gift_lite import protocol, stats
from gift_lite.presets import MINI_CONF, MINI_FT
from gift_lite.repro import repo_root
from gift_lite.world import build_world

SPLITS = ("pretrain", "sft", "rl", "val", "id_test", "ood_test")


# -- the world -------------------------------------------------------------------------------------
def test_the_ood_family_is_in_pretraining_and_nowhere_else():
    world = build_world(dataclasses.replace(MINI_CONF.world, corpus_size=10))
    sizes = {n: len(world.split(n)) for n in SPLITS}
    assert sizes == {"pretrain": 2363 + 1224, "sft": 500, "rl": 2400, "val": 200, "id_test": 1000, "ood_test": 500}
    keys = [set(p.key for p in world.split(n)) for n in SPLITS]
    assert sum(map(len, keys)) == len(set().union(*keys))  # disjoint by problem
    for name in ("sft", "rl", "val", "id_test"):
        assert max(p.target for p in world.split(name)) <= 50
    assert sum(p.target > 50 for p in world.pretrain) == 1224
    assert min(p.target for p in world.ood_test) > 50
    # the pilot's world draws the same problems as before the option existed
    pilot = build_world(dataclasses.replace(MINI_FT.world, corpus_size=10))
    assert len(pilot.pretrain) == 1262 and all(p.target <= 50 for p in pilot.pretrain)
    with pytest.raises(ValueError, match="ood_pretrain"):
        build_world(dataclasses.replace(MINI_CONF.world, ood_pretrain=1300))


def test_the_decisive_starts_get_ten_seeds_and_the_unified_methods_run_from_the_base():
    rl = MINI_CONF.units("rl")
    per_start = pd.Series([(m, b) for m, b, _ in rl]).value_counts()
    assert per_start[("sft", math.inf)] == per_start[("rl_only", math.inf)] == 10
    assert per_start[("gift", MINI_CONF.decisive_beta)] == 10
    assert per_start[("luffy", math.inf)] == per_start[("relift", math.inf)] == 3
    assert len(rl) == 13 * 3 + 3 * 7 and len(MINI_CONF.units("init")) == 10 * 3 + 2 * 7


# -- the random-effects interval -------------------------------------------------------------------
def test_t_quantiles():
    for df, value in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)):
        assert stats.t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)
    assert stats.t_quantile(0.975, math.inf) == pytest.approx(1.95996, abs=1e-5)
    with pytest.raises(ValueError, match="df=0.5"):
        stats.t_quantile(0.975, 0.5)


def _crossed(rng, problems, seeds, *, shift=0.0, seed_sd=0.02, noise_sd=0.1, difficulty=None):
    """(problems x seeds) scores with a problem effect, a seed effect and noise."""
    difficulty = rng.uniform(0.1, 0.6, problems) if difficulty is None else difficulty
    table = difficulty[:, None] + shift + rng.normal(0, seed_sd, seeds)[None, :] + rng.normal(0, noise_sd, (problems, seeds))
    return pd.DataFrame(table, index=[f"p{i:04d}" for i in range(problems)])


def test_random_effects_se_matches_the_spread_of_the_estimate_over_replications():
    """The SE the method reports is the SD of D over fresh draws of problems, seeds and noise."""
    rng = np.random.default_rng(0)
    estimates, ses = [], []
    for _ in range(300):
        difficulty = rng.uniform(0.1, 0.6, 200)
        a = _crossed(rng, 200, 5, difficulty=difficulty + rng.normal(0, 0.05, 200))
        b = _crossed(rng, 200, 5, difficulty=difficulty)
        d = stats.random_effects_difference(a, b, what="x", sign=1, margin=0.02)
        estimates.append(d.estimate)
        ses.append(d.se)
    assert np.mean(ses) == pytest.approx(np.std(estimates, ddof=1), rel=0.15)


def test_random_effects_interval_decides_and_is_deterministic():
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0.1, 0.6, 1000)
    a = _crossed(rng, 1000, 10, shift=0.05, difficulty=difficulty)
    b = _crossed(rng, 1000, 10, difficulty=difficulty)
    d = stats.random_effects_difference(a, b, what="x", sign=1, margin=0.02)
    assert d.verdict == "reproduced" and d.low < d.estimate < d.high
    assert d == stats.random_effects_difference(a, b, what="x", sign=1, margin=0.02)  # no RNG
    assert stats.random_effects_difference(b, a, what="x", sign=1, margin=0.02).verdict == "not reproduced"
    with pytest.raises(ValueError, match="share 0 problems"):
        stats.random_effects_difference(a, b.rename(index=lambda i: "q" + i), what="x", sign=1, margin=0.02)


def test_tie_rule_an_end_on_the_boundary_does_not_exclude_it():
    same = pd.DataFrame({0: [0.2, 0.4], 1: [0.2, 0.4]}, index=["p0", "p1"])
    d = stats.random_effects_difference(same, same, what="x", sign=1, margin=0.02)
    assert (d.low, d.high, d.verdict) == (0.0, 0.0, "not reproduced")  # 0 is not "above 0"
    assert stats.random_effects_difference(same, same, what="x", sign=1, margin=0.0).verdict == "inconclusive"


def test_welch_difference():
    d = stats.welch_difference([0.30, 0.31, 0.29], [0.15, 0.16, 0.14], what="entropy", sign=1, margin=0.01)
    se = math.sqrt(0.01 ** 2 / 3 + 0.01 ** 2 / 3)
    assert d.se == pytest.approx(se) and d.high - d.estimate == pytest.approx(stats.t_quantile(0.975, 4) * se, abs=1e-8)
    assert d.verdict == "reproduced"
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stats.welch_difference([0.3], [0.1, 0.2], what="x", sign=1, margin=0.01)


# -- power -----------------------------------------------------------------------------------------
def test_projection_at_the_pilot_size_is_the_interval_obtained():
    rng = np.random.default_rng(2)
    a, b = _crossed(rng, 200, 5), _crossed(rng, 200, 5)
    components = stats.variance_components(a, b)
    d = stats.random_effects_difference(a, b, what="x", sign=1, margin=0.02)
    assert stats.projected_se(components, 5, 200) == pytest.approx(d.se, rel=1e-6)
    assert stats.projected_se(components, 20, 1000) < stats.projected_se(components, 5, 1000) < d.se


def test_committed_power_table_is_what_the_pilot_gives_and_chooses_ten_seeds():
    committed = pd.read_csv(repo_root() / "data/mini_conf/power.csv")
    fresh = protocol.power_analysis(repo_root() / "data/mini_ft", (3, 5, 8, 10, 12, 15, 20), (200, 500, 1000))
    pd.testing.assert_frame_equal(fresh, committed, check_exact=False, rtol=1e-9)
    equal = committed[(committed["seeds_a"] == committed["seeds_b"]) & (committed["problems"] == 1000)]
    enough = equal[equal["detectable"] <= 0.020].groupby("comparison")["seeds_b"].min()
    assert enough.max() == 10 == len(MINI_CONF.seeds + MINI_CONF.decisive_seeds)  # PROTOCOL.md §6's rule


# -- the protocol's units and claims, at smoke scale --------------------------------------------------
def test_units_and_claims_at_smoke_scale(tmp_path):
    from gift_lite import claims, mini, units
    from gift_lite.presets import PRESETS

    settings = dataclasses.replace(PRESETS["smoke"].mini_conf, workers=1)
    world = build_world(settings.world)
    assert len(world.pretrain) == len(build_world(PRESETS["smoke"].mini_ft.world).pretrain) + 16
    mini.ensure_base(world, settings, tmp_path / "base")
    mini.run_base_unit(world, settings, tmp_path / "base", tmp_path)
    for stage in ("init", "rl"):
        mini.run_units(stage, settings, tmp_path / "base", tmp_path, progress=False)
    assert not (tmp_path / "weights" / "init" / "luffy_betainf_seed0").exists()  # LUFFY starts from the base
    results, curves = units.collect(tmp_path)
    relift = results[(results["method"] == "relift") & (results["metric"] == "rl/sft_steps")]
    assert len(relift) == 2 and relift["value"].sum() == curves.loc[curves["method"] == "relift", "sft_step"].sum()
    luffy = curves[curves["method"] == "luffy"]
    assert (luffy["reward"] >= 1 / settings.rl.num_generations).all()  # every group holds the correct expert
    counts, val_counts = units.collect_counts(tmp_path)
    data = claims.ProtocolData(results, counts, val_counts, num_samples=settings.eval.num_samples,
                               curve_samples=settings.eval.curve_samples)
    rule = claims.confirmatory_rule()
    table, peak = claims.judge_claims(data, 1.0, settings.betas, rule=rule, k_large=max(settings.eval.ks))
    assert peak == 1.0 and list(table["claim"].unique()) == [1, 2, 3, 4]
    assert table.loc[table["claim"] == 3, "comparison"].item() == "ood/pass@1 (rl)"
    assert set(table["verdict"]) <= {"reproduced", "not reproduced", "inconclusive"}
    assert (table["low"] <= table["diff"] + 1e-9).all() and (table["diff"] <= table["high"] + 1e-9).all()
    from gift_lite import sensitivity  # the same comparisons under the other intervals, read after the run

    intervals = sensitivity.intervals_table(data, 1.0, settings.betas, k_large=max(settings.eval.ks))
    judged = intervals.drop(columns=["diff", "detectable"]).merge(table, on=["claim", "part", "comparison"])  # every row ...
    assert len(judged) == len(table) and len(intervals) == len(table) + 1  # ... and OOD before RL
    assert (judged["random effects low"] == judged["low"]).all() and (judged["random effects high"] == judged["high"]).all()
    assert (judged["detectable_t"] >= judged["detectable"]).all()
    starts = [(m, b) for m, b in settings.rl_runs() if m != "sft"]
    reported = claims.reported_against(data, starts, ("sft", math.inf), rule=rule)
    assert list(reported["method"]) == [m for m, _ in starts] and (reported["seeds"] == 2).all()


def test_peak_beta_is_chosen_over_the_seeds_every_beta_shares():
    from gift_lite import claims

    rows = []  # beta 1 has a lucky extra seed that lifts its all-seed mean above beta 4's
    for beta, seeds in ((1.0, {0: 2, 1: 2, 2: 2, 3: 8}), (4.0, {0: 3, 1: 3, 2: 3})):
        for seed, correct in seeds.items():
            rows += [{"method": "gift", "beta": beta, "seed": seed, "step": 10, "problem_id": "p", "correct": correct}]
    data = claims.ProtocolData(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(rows), num_samples=8, curve_samples=8)
    assert claims.peak_beta(data, (1.0, 4.0, math.inf)) == 1.0
    assert claims.peak_beta(data, (1.0, 4.0, math.inf), (0, 1, 2)) == 4.0
    table = claims.peak_table(data, (1.0, 4.0, math.inf), (0, 1, 2))
    assert list(table["seeds"]) == [4, 3] and table["val_pass@1 (seeds 0-2)"].tolist() == [0.25, 0.375]
