"""The full-fine-tuning protocol: selection rules, paired bootstrap and decision rule, the FT units."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from gift_lite import claims, mini, protocol, stats, units
from gift_lite.presets import MINI, MINI_FT, PRESETS
from gift_lite.repro import repo_root
from gift_lite.world import WorldConfig, build_world

SMOKE_FT = PRESETS["smoke"].mini_ft


# -- selection rules -----------------------------------------------------------------------------
def test_ladder_and_grid_extension():
    assert [protocol.ladder_step(1e-4, d) for d in (1, -1)] == [3e-4, 3e-5]
    assert [protocol.ladder_step(3e-4, d) for d in (1, -1)] == [1e-3, 1e-4]
    grid = (3e-5, 1e-4, 3e-4)
    assert protocol.extension(grid, 3e-4) == 1e-3 and protocol.extension(grid, 3e-5) == 1e-5
    assert protocol.extension(grid, 1e-4) is None and protocol.extension((1e-4,), 1e-4) is None
    with pytest.raises(ValueError, match="learning_rate"):
        protocol.ladder_step(2e-4, 1)


def test_pick_sft_takes_the_lowest_heldout_loss_and_breaks_ties_early():
    table = pd.DataFrame({"learning_rate": [1e-4] * 3 + [3e-4] * 3, "epoch": [0, 1, 2] * 2,
                          "heldout_loss": [2.0, 1.5, 1.2, 2.0, 1.2, 1.3]})
    assert protocol.pick_sft(table) == (3e-4, 1)  # tie at 1.2: fewer epochs wins
    table.loc[5, "heldout_loss"] = 0.9
    assert protocol.pick_sft(table) == (3e-4, 2)


def test_pick_rl_lr_uses_the_last_evaluations_averaged_over_seeds():
    rows = [{"learning_rate": lr, "seed": s, "step": t, "val_pass@1": v}
            for lr, curve in ((1e-4, [0.1, 0.3, 0.2, 0.2]), (3e-4, [0.1, 0.1, 0.25, 0.3]))
            for s in (0, 1) for t, v in zip((0, 25, 50, 75), curve)]
    table = pd.DataFrame(rows)
    assert protocol.pick_rl_lr(table, last=2) == 3e-4
    assert protocol.pick_rl_lr(table, last=3) == 1e-4  # 0.233 against 0.217
    assert protocol.pick_rl_lr(table[table["step"] <= 25], last=1) == 1e-4


def test_budget_stops_where_later_gains_stay_within_one_standard_error():
    steps = np.arange(0, 201, 25)
    values = [0.10, 0.20, 0.28, 0.30, 0.305, 0.31, 0.30, 0.31, 0.308]
    curve = protocol.smoothed_curve(pd.DataFrame({"learning_rate": 1e-4, "seed": 0, "step": steps,
                                                  "val_pass@1": values}), 1e-4)
    se = math.sqrt(0.3 * 0.7 / 3200)
    assert se < 0.01
    t = protocol.budget(curve, 3200, cap=200)
    assert t == 100  # smoothed 0.305 at step 100; nothing later beats it by more than one SE
    assert protocol.budget(curve, 3200, cap=50) == 50
    assert protocol.rl_gain(curve, t) == pytest.approx(curve.set_index("step").loc[100, "smoothed"] - 0.10)
    rising = curve.assign(smoothed=np.linspace(0.1, 0.5, len(curve)))
    assert protocol.budget(rising, 3200, cap=400) == 200  # still rising: the last step


def test_base_check_and_helpers():
    rows = pd.DataFrame({"split": ["id", "id", "ood", "ood"], "metric": ["pass@1", "pass@16", "pass@1", "pass@16"],
                         "value": [0.12, 0.75, 0.02, 0.2]})
    sel = protocol.SelectionSettings()
    assert protocol.base_check(rows, sel)["passes"]  # data/mini_ft: no OOD floor
    assert not protocol.base_check(rows.assign(value=[0.5, 0.9, 0.1, 0.5]), sel)["passes"]
    conf = dataclasses.replace(sel, base_ood_pass1=0.05, base_ood_pass16=0.40)  # data/mini_conf
    assert not protocol.base_check(rows, conf)["passes"]  # the OOD family at a floor fails it
    check = protocol.base_check(rows.assign(value=[0.12, 0.75, 0.06, 0.5]), conf)
    assert check["passes"] and check["ood/pass@1"] == 0.06
    assert protocol.prompt_passes(300, 16, 2400) == 2.0
    assert protocol.trapezoid_mean([0, 1, 3], [0.0, 1.0, 1.0]) == pytest.approx(2.5 / 3)
    with pytest.raises(AssertionError, match="stage"):
        protocol.require(False, "stage check", sel)
    assert protocol.require(False, "x", dataclasses.replace(sel, enforce=False)).startswith("FAILED")


# -- statistics ------------------------------------------------------------------------------------
def _scores(means, seeds=3, problems=200, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.6, problems)
    cols = {s: np.clip(p + means + rng.normal(0, 0.05, problems), 0, 1) for s in range(seeds)}
    return pd.DataFrame(cols, index=[f"p{i:03d}" for i in range(problems)])


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    a, b = _scores(0.05, seed=1), _scores(0.0, seed=1)
    d = stats.paired_difference(a, b, what="x", sign=1, margin=0.01, n_boot=2000)
    assert d.low > 0 and d.verdict == "reproduced" and d.low < d.estimate < d.high
    assert d.estimate == pytest.approx(0.05, abs=0.01)
    null = stats.paired_difference(_scores(0.0, seed=2), _scores(0.0, seed=2), what="x", sign=1, margin=0.01,
                                   n_boot=2000)
    assert null.low < 0 < null.high or abs(null.estimate) < 0.005
    flipped = stats.paired_difference(b, a, what="x", sign=1, margin=0.01, n_boot=2000)
    assert flipped.verdict == "not reproduced"
    assert stats.paired_difference(b, a, what="x", sign=-1, margin=0.01, n_boot=2000).verdict == "reproduced"
    with pytest.raises(ValueError, match="share no problems"):
        stats.paired_difference(a, b.rename(index=lambda i: "q" + i), what="x", sign=1, margin=0.01)


def test_pairing_on_problems_narrows_the_interval():
    a, b = _scores(0.02, seed=3), _scores(0.0, seed=3)  # same problem difficulties: strongly paired
    paired = stats.paired_difference(a, b, what="x", sign=1, margin=0.01, n_boot=2000)
    unpaired = stats.paired_difference(a, b.sample(frac=1, random_state=0).set_axis(b.index), what="x", sign=1,
                                       margin=0.01, n_boot=2000)
    assert paired.high - paired.low < (unpaired.high - unpaired.low) / 2


def test_scalar_difference_and_combination_rules():
    d = stats.scalar_difference([0.30, 0.31, 0.29], [0.15, 0.16, 0.14], what="entropy", sign=1, margin=0.01,
                                n_boot=2000)
    assert d.verdict == "reproduced" and d.detectable > 0
    kl = stats.scalar_difference([0.02, 0.03], [0.20, 0.21], what="kl", sign=-1, margin=0.005, n_boot=2000)
    assert kl.verdict == "reproduced"
    unclear = dataclasses.replace(d, low=-0.01, high=0.05)
    nope = dataclasses.replace(d, low=-0.05, high=0.005)
    assert unclear.verdict == "inconclusive" and nope.verdict == "not reproduced"
    assert stats.combine([d, kl]) == "reproduced"
    assert stats.combine([d, unclear]) == "inconclusive" and stats.combine([unclear, nope]) == "not reproduced"
    assert stats.combine([unclear, nope], "primary") == "inconclusive"
    assert stats.combine([nope, d], "primary") == "not reproduced"


def test_problem_scores_give_pass_at_k_per_problem():
    counts = pd.DataFrame({"problem_id": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "correct": [0, 16, 1, 4]})
    one = stats.problem_scores(counts, 16)
    assert one.loc["a"].tolist() == [0.0, 1.0] and one.loc["b", 1] == 0.25
    sixteen = stats.problem_scores(counts, 16, k=16)
    assert sixteen.loc["a"].tolist() == [0.0, 1.0] and sixteen.loc["b"].tolist() == [1.0, 1.0]


# -- settings and world --------------------------------------------------------------------------
def test_added_fields_keep_the_committed_runs_readable():
    assert units.recorded_settings_match(repo_root() / "data/mini", MINI, ("workers",))
    assert mini.base_is_current(repo_root() / "data/mini/base", MINI)
    assert mini.base_is_current(repo_root() / "data/mini_ft/base", MINI_FT)


def test_default_world_is_unchanged_and_the_wide_world_has_a_validation_split():
    old = build_world(WorldConfig(corpus_size=10))
    assert old.val == () and old.id_test[0].id == "id-00000" and len(old.pretrain) == 754
    wide = build_world(dataclasses.replace(MINI_FT.world, corpus_size=10))
    sizes = {n: len(wide.split(n)) for n in ("pretrain", "sft", "rl", "val", "id_test", "ood_test")}
    assert sizes == {"pretrain": 1262, "sft": 500, "rl": 2400, "val": 200, "id_test": 200, "ood_test": 200}
    keys = [set(p.key for p in wide.split(n)) for n in ("pretrain", "sft", "rl", "val", "id_test")]
    assert sum(map(len, keys)) == len(set().union(*keys))  # disjoint
    assert max(max(p.numbers) for p in wide.rl) == 13
    with pytest.raises(ValueError, match="max_number"):
        build_world(WorldConfig(max_number=0))


def test_units_cover_the_decisive_seeds():
    units = MINI_FT.units("rl")
    decisive = [(m, b) for m, b, s in units if s in MINI_FT.decisive_seeds]
    assert sorted(set(decisive)) == sorted({("sft", math.inf), ("gift", MINI_FT.decisive_beta), ("rl_only", math.inf)})
    assert len(units) == 11 * 3 + 3 * 2 and len(MINI_FT.units("init")) == 10 * 3 + 2 * 2


# -- the full-fine-tuning units at smoke scale ---------------------------------------------------------
@pytest.fixture(scope="module")
def ft_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_ft")
    world = build_world(SMOKE_FT.world)
    mini.ensure_base(world, SMOKE_FT, root / "base")
    return world, root / "base"


def test_full_finetuning_units_end_to_end(ft_base, tmp_path):
    world, base_dir = ft_base
    settings = dataclasses.replace(SMOKE_FT, workers=1, seeds=(0,), decisive_seeds=())
    mini.run_base_unit(world, settings, base_dir, tmp_path)
    mini.run_units("init", settings, base_dir, tmp_path, progress=False)
    weights = tmp_path / "weights" / "init" / "gift_beta1_seed0"
    assert (weights / "model.safetensors").exists() and not (weights / "adapter_config.json").exists()
    init_state = mini.load_policy(base_dir, weights)[0].state_dict()
    import shutil
    shutil.rmtree(weights)  # an RL unit retrains a missing initialiser to the same weights
    mini.run_units("rl", settings, base_dir, tmp_path, progress=False)
    retrained = mini.load_policy(base_dir, weights)[0].state_dict()
    assert all(torch.equal(init_state[k], retrained[k]) for k in init_state)
    results, _ = units.collect(tmp_path)
    _, val = units.collect(tmp_path, "rl_val")
    counts, val_counts = units.collect_counts(tmp_path)
    assert {"kl_to_base", "geometry/base_to_init/l2", "geometry/init_to_rl/l2"} <= set(results["metric"])
    assert set(results["split"]) == {"id", "ood", "train", ""}
    assert sorted(val["step"].unique()) == list(range(settings.rl.max_steps + 1))
    assert set(counts["stage"]) == {"base", "init", "rl"} and counts["correct"].between(0, settings.eval.num_samples).all()
    assert len(val_counts) == len(val) * len(world.val)
    data = claims.ProtocolData(results, counts, val_counts, num_samples=settings.eval.num_samples,
                               curve_samples=settings.eval.curve_samples)
    table, peak = claims.bootstrap_claims(data, 1.0, settings.betas, k_large=max(settings.eval.ks), n_boot=200)
    assert peak == 1.0 and list(table["claim"].unique()) == [1, 2, 3, 4]
    assert set(table["verdict"]) <= {"reproduced", "not reproduced", "inconclusive"}
    summary = claims.verdict_summary(table)
    assert list(summary.index) == [1, 2, 3, 4] and (summary["verdict"] == table.groupby("claim")["verdict"].first()).all()
    assert "reported only" not in summary.loc[2, "evidence"] and summary["evidence"].str.contains(r"\[").all()
    stability = claims.verdict_stability(data, 1.0, settings.betas, k_large=max(settings.eval.ks), seeds=range(3),
                                         n_boot=200)
    judged = table[table["part_verdict"] != ""]
    assert list(stability["comparison"]) == list(judged["comparison"])
    assert (stability["low_min"] <= stability["low_max"]).all()
    assert stability["part_verdicts"].str.contains("/3").all()
    # bootstrap seed 0 is the protocol's table
    assert (stability["low_min"] <= judged["low"].to_numpy()).all() and (judged["low"].to_numpy() <= stability["low_max"]).all()


def test_full_finetuning_grpo_is_deterministic(ft_base):
    world, base_dir = ft_base
    runs = []
    for _ in range(2):
        policy, tokenizer = mini.rl_start(world, SMOKE_FT, base_dir, None, "rl_only", math.inf, 0)
        curve, val, _ = units.one_thread(mini.train_rl, world, SMOKE_FT, policy, tokenizer, 0)
        runs.append((curve, val, {k: v.clone() for k, v in policy.state_dict().items()}))
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0])
    pd.testing.assert_frame_equal(runs[0][1], runs[1][1])
    assert all(torch.equal(runs[0][2][k], runs[1][2][k]) for k in runs[0][2])
    assert not policy.is_gradient_checkpointing


def test_validation_curves_draw_the_judged_starts_with_seed_bands_and_fade_the_rest():
    from matplotlib.collections import PolyCollection

    from gift_lite import plotting
    rows = [{"method": m, "beta": b, "seed": s, "step": step, "val_pass@1": 0.1 * step + 0.01 * s}
            for m, b in (("gift", 1.0), ("sft", math.inf), ("dft", math.inf)) for s in (0, 1, 2) for step in (0, 1, 2)]
    curves = pd.DataFrame(rows)
    fig = plotting.plot_validation_curves(curves, highlight=[("gift", 1), ("sft", math.inf)])
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # one min-max band per judged start, none for the faded one
    low, high = bands[0].get_paths()[0].vertices[:, 1].min(), bands[0].get_paths()[0].vertices[:, 1].max()
    assert (low, high) == pytest.approx((0.0, 0.22))  # seeds 0..2 at steps 0..2: 0.00 to 0.22
    alphas = {line.get_label(): line.get_alpha() for line in ax.get_lines()}
    assert alphas["DFT"] == 0.3 and alphas["SFT (β = ∞)"] is None
    plain = plotting.plot_validation_curves(curves)  # no highlight: every start alike, no bands
    assert not [c for c in plain.axes[0].collections if isinstance(c, PolyCollection)]


def test_pass_at_k_and_beta_curves_single_out_the_judged_starts():
    from matplotlib.collections import PolyCollection

    from gift_lite import plotting
    rows = [{"method": m, "beta": b, "seed": s, "stage": "init", "split": "id", "metric": f"pass@{k}",
             "value": 0.1 * k ** 0.5 + 0.02 * s + (0.1 if m == "gift" else 0.0)}
            for m, b in (("gift", 1.0), ("gift", 4.0), ("sft", math.inf), ("rl_only", math.inf)) for s in (0, 1, 2)
            for k in (1, 4, 16)]
    results = pd.DataFrame(rows)
    fig = plotting.plot_pass_at_k(results, stage="init", highlight=[("gift", 1.0), ("sft", math.inf)])
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # judged starts only
    y = bands[1].get_paths()[0].vertices[:, 1]  # SFT: seeds 0..2 give +0.00..+0.04 around 0.1 sqrt(k)
    assert (y.min(), y.max()) == pytest.approx((0.1, 0.44))
    alphas = {line.get_label(): line.get_alpha() for line in ax.get_lines()}
    assert alphas["GIFT (β = 4)"] == 0.3 and alphas["GIFT (β = 1)"] is None
    unmarked = plotting.plot_pass_at_k(results, stage="init")  # default: a ±1 std band for every start
    assert len([c for c in unmarked.axes[0].collections if isinstance(c, PolyCollection)]) == 4

    curve = claims.beta_curve(results.assign(stage="rl", metric=results["metric"]), metric="pass@16", spread=True)
    assert list(curve.columns) == ["beta", "method", "mean", "std", "n", "min", "max"]
    assert curve.loc[curve["beta"] == 1.0, ["min", "max"]].iloc[0].tolist() == pytest.approx([0.5, 0.54])
    marks = plotting.judged_betas(1.0, 4.0)
    assert list(marks.values()) == [1.0, 4.0] and plotting.judged_betas(1.0, 1.0) == {"β* = β̂ = 1 (judged)": 1.0}
    fig = plotting.plot_beta_curves({"after RL": curve}, judged={"after RL": marks})
    ax = fig.axes[0]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1  # the min-max band
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(marks)
