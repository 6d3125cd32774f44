"""Property checks of gift_lite.theory (docs/paper.md §1) and of plotting.save_figure."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.testing import assert_close  # noqa: E402

from gift_lite import plotting, theory  # noqa: E402
from gift_lite.losses import gift_target, gold_mass  # noqa: E402

BASE = np.array([0.4, 0.3, 0.2, 0.1])
REWARD = np.array([0.0, 1.0, 0.0, 1.0])


# -- Gibbs distributions ------------------------------------------------------------------------
@pytest.mark.parametrize("inv_temp", [0.0, 0.5, 3.0, 50.0, 800.0, math.inf])
def test_gibbs_normalises(inv_temp):
    p = theory.gibbs(BASE, REWARD, inv_temp)
    assert np.all(p >= 0) and math.isclose(p.sum(), 1.0)


def test_gibbs_at_zero_is_base_and_at_infinity_is_base_on_the_best_outcomes():
    assert_close(theory.gibbs(BASE, REWARD, 0.0), BASE)
    assert_close(theory.gibbs(BASE, REWARD, math.inf), np.array([0.0, 0.75, 0.0, 0.25]))
    assert_close(theory.gibbs(BASE, REWARD, 1e4), theory.gibbs(BASE, REWARD, math.inf))


def test_gibbs_never_revives_a_zero():
    base = np.array([0.0, 0.5, 0.5])
    for inv_temp in (1.0, 100.0, math.inf):
        assert theory.gibbs(base, np.array([1.0, 0.0, 0.0]), inv_temp)[0] == 0.0


def test_kl_optimum_maximises_the_regularised_objective():
    eta = 2.5
    objective = lambda p: p @ REWARD - theory.kl(p, BASE) / eta  # noqa: E731
    best = objective(theory.kl_optimum(BASE, REWARD, eta))
    rng = np.random.default_rng(0)
    for q in rng.dirichlet(np.ones(len(BASE)), size=200):
        assert objective(q) <= best + 1e-12


def test_rl_from_the_ideal_init_lands_on_the_optimum():
    eta, lam = 5.0, 2.0
    reached = theory.rl_limit(theory.ideal_init(BASE, REWARD, eta, lam), REWARD, lam)
    assert_close(reached, theory.kl_optimum(BASE, REWARD, eta))


def test_entropy_kl_tv_basics():
    assert math.isclose(theory.entropy(np.full(4, 0.25)), math.log(4))
    assert theory.entropy(np.array([0.0, 1.0, 0.0])) == 0.0
    assert theory.kl(BASE, BASE) == 0.0
    assert theory.kl(BASE, np.array([0.5, 0.5, 0.0, 0.0])) == math.inf
    assert math.isclose(theory.total_variation(BASE, BASE[::-1]), 0.4)


# -- token-level target -------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 1.0, 7.0, 20.0, math.inf])
def test_token_target_matches_closed_form_and_losses(beta):
    gold = 3
    target = theory.token_target(BASE, gold, beta)
    assert math.isclose(target[gold], gold_mass(BASE[gold], beta), rel_tol=1e-12)
    from_losses = gift_target(torch.tensor(np.log(BASE))[None], torch.tensor([gold]), beta=beta)[0]
    assert_close(torch.tensor(target, dtype=torch.float32), from_losses, rtol=1e-5, atol=1e-6)


def test_token_target_limits():
    assert_close(theory.token_target(BASE, 2, 0.0), BASE)
    assert_close(theory.token_target(BASE, 2, math.inf), np.eye(4)[2])


@pytest.mark.parametrize("p_gold", [1e-8, 1e-3, 0.3])
def test_beta_for_gold_mass_inverts_gold_mass(p_gold):
    for mass in (0.5, 0.9, 0.99):
        assert math.isclose(gold_mass(p_gold, float(theory.beta_for_gold_mass(p_gold, mass))), mass,
                            rel_tol=1e-9)
    assert theory.beta_for_gold_mass(0.8, 0.5) == 0.0  # already above: no beta needed


def test_with_gold_mass_keeps_proportions():
    p = theory.with_gold_mass(BASE, 1, 0.05)
    assert math.isclose(p[1], 0.05) and math.isclose(p.sum(), 1.0)
    assert_close(np.delete(p, 1) / np.delete(p, 1).sum(), np.delete(BASE, 1) / 0.7)


def test_pass_at_k():
    assert theory.pass_at_k(0.0, 8) == 0.0
    assert math.isclose(theory.pass_at_k(0.5, 2), 0.75)


# -- the tree ------------------------------------------------------------------------------------
def test_tree_path_probs_normalise():
    tree = theory.toy_tree()
    for policy in (tree.base, theory.gift_policy(tree, 2.0), theory.gift_policy(tree, math.inf)):
        assert math.isclose(theory.path_probs(tree, policy).sum(), 1.0)
    assert tree.labels()[tree.index(tree.expert)] == "bab"


def test_gift_policy_limits():
    tree = theory.toy_tree()
    base = theory.path_probs(tree, tree.base)
    assert_close(theory.path_probs(tree, theory.gift_policy(tree, 0.0)), base)
    sft = theory.path_probs(tree, theory.gift_policy(tree, math.inf))
    assert_close(sft, np.eye(len(base))[tree.index(tree.expert)])


def test_rl_from_the_sft_limit_keeps_zero_mass_off_the_expert_path():
    tree = theory.toy_tree()
    sft = theory.path_probs(tree, theory.gift_policy(tree, math.inf))
    for lam in (0.5, 5.0, 50.0):
        after = theory.rl_limit(sft, tree.reward, lam)
        assert np.all(np.delete(after, tree.index(tree.expert)) == 0.0)


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
def test_finite_beta_keeps_every_base_supported_path_alive(beta):
    tree = theory.toy_tree()
    base = theory.path_probs(tree, tree.base)
    start = theory.path_probs(tree, theory.gift_policy(tree, beta))
    after = theory.rl_limit(start, tree.reward, 2.0)
    assert np.all(after[base > 0] > 0)


def test_tree_summary_sft_vs_gift():
    tree = theory.toy_tree()
    starts = theory.tree_starts(tree, beta=1.0, eta=3.0, lam=2.0)
    value = theory.tree_summary(tree, starts, 3.0, 2.0, k=8).set_index(
        ["method", "stage", "metric"])["value"]
    assert value["sft", "rl", "test/pass@8"] == 0.0 and value["sft", "rl", "paths/correct_alive"] == 1
    assert value["gift", "rl", "test/pass@8"] > 0 and value["gift", "rl", "paths/correct_alive"] == 3
    assert value["ideal", "rl", "tv_to_optimum"] < 1e-12


# -- exact policy gradient -----------------------------------------------------------------------
def test_policy_gradient_is_deterministic_and_normalised():
    kwargs = dict(learning_rate=1.0, steps=50, kl_coef=0.5)
    a = theory.policy_gradient(BASE, REWARD, **kwargs)
    b = theory.policy_gradient(BASE, REWARD, **kwargs)
    assert a.shape == (51, 4) and np.array_equal(a, b)
    assert_close(a.sum(axis=1), np.ones(51))


def test_policy_gradient_converges_to_the_closed_form():
    traj = theory.policy_gradient(BASE, REWARD, learning_rate=2.0, steps=1000, kl_coef=0.5)
    assert_close(traj[-1], theory.rl_limit(BASE, REWARD, 2.0), atol=1e-6, rtol=0)


def test_policy_gradient_never_revives_a_zero():
    start = np.array([0.0, 0.0, 1.0, 0.0])
    traj = theory.policy_gradient(start, REWARD, learning_rate=5.0, steps=100)
    assert np.all(traj[:, [0, 1, 3]] == 0.0)


# -- plotting ------------------------------------------------------------------------------------
def test_method_colors_are_fixed_and_distinct():
    names = {"sft", "gift", "sft_entropy", "dft", "asft", "psft", "base", "rl_only"}
    assert set(plotting.METHOD_COLORS) == names
    assert len(set(plotting.METHOD_COLORS.values())) == len(names)
    with pytest.raises(KeyError, match="known"):
        plotting.method_color("nope")


def test_save_figure_writes_png_and_pdf_with_identical_bytes(tmp_path):
    folder = tmp_path / "figs"
    paths = [folder / "demo.png", folder / "demo.pdf"]
    with plotting.style():
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [0.0, 1.0, 0.5], label="line")
        ax.legend()
        assert plotting.save_figure(fig, "demo", folder) is None  # nothing for a notebook cell to show
        snapshot = [p.read_bytes() for p in paths]
        plotting.save_figure(fig, "demo", folder)
        plt.close(fig)
    assert snapshot[0].startswith(b"\x89PNG") and snapshot[1].startswith(b"%PDF")
    assert [p.read_bytes() for p in paths] == snapshot
    assert b"CreationDate" not in snapshot[1] and b"Software" not in snapshot[0]
    assert sorted(p.name for p in folder.iterdir()) == ["demo.pdf", "demo.png"]


def test_theory_figures_draw_from_the_tables():
    tree = theory.toy_tree()
    starts = theory.tree_starts(tree, 1.0, 3.0, 2.0)
    figs = [plotting.plot_tree_paths(theory.tree_paths(tree, starts, 3.0, 2.0), beta=1.0),
            plotting.plot_tree_beta(
                theory.tree_beta_sweep(tree, [0.0, 1.0, math.inf], 3.0, 2.0, 4), 4),
            plotting.plot_pg_dynamics(theory.pg_dynamics(tree, starts, learning_rate=1.0, steps=5,
                                                         kl_coef=0.5), beta=1.0),
            plotting.plot_beta_sweep(theory.beta_sweep(BASE, 3, [0.01, 0.5], [0.0, 1.0, 10.0]))]
    for fig in figs:
        assert fig.axes
        plt.close(fig)
