"""Exact small computations behind the theory notebook (docs/paper.md §1).

Everything here is closed form or an exact (sample-free) iteration over a handful of outcomes,
so the numbers are the same on every machine. Distributions are NumPy arrays over the last axis.

The story in formulas (docs/paper.md §1):

- KL-regularised reward maximisation from ``pi_base`` has the Gibbs optimum
  ``pi* ∝ pi_base · exp(eta · R)``.
- RL regularised towards its own start ``pi_start`` with inverse temperature ``lambda`` ends at
  ``pi_start · exp(lambda · R)``; so the ideal start is ``pi_base · exp(beta · R)``,
  ``beta = eta - lambda``.
- SFT is ``beta -> inf``; the token-level GIFT target is
  ``target_t(k) ∝ p_base(k | prefix) · exp(beta · [k = y*_t])``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gift_lite.params import FLAG, SEED, Param

# What notebook 01's parameters accept (checked by ``params.check_parameters`` in its config cell).
NOTEBOOK_PARAMETERS = {
    "seed": SEED, "vocab_size": Param(int, ge=2), "p_gold": Param(float, gt=0, lt=1),
    "beta_grid_max": Param(float, gt=1), "n_beta": Param(int, ge=2), "beta": Param(float, gt=0),
    "rl_lambda": Param(float, gt=0), "pass_k": Param(int, ge=1), "pg_steps": Param(int, ge=1),
    "pg_learning_rate": Param(float, gt=0), "interactive": FLAG}
# The parameters cell's values (tests/test_params.py checks that they agree). Some of the notebook's
# checks hold at these values only (the policy-gradient simulation reaching its limit in pg_steps).
NOTEBOOK_DEFAULTS = dict(seed=0, vocab_size=12, p_gold=0.05, beta_grid_max=30.0, n_beta=60, beta=1.0, rl_lambda=2.0,
                         pass_k=8, pg_steps=400, pg_learning_rate=2.0, interactive=True)

# ---------------------------------------------------------------------------------------------
# Distributions
# ---------------------------------------------------------------------------------------------


def gibbs(base, reward, inv_temp: float) -> np.ndarray:
    """``base · exp(inv_temp · reward)``, normalised over the last axis (docs/paper.md §1, Gibbs optimum).

    ``inv_temp = inf`` is the zero-temperature limit: ``base`` restricted to the outcomes of
    highest reward among those ``base`` supports, renormalised. Outcomes with ``base = 0`` stay 0
    at every temperature (tilting zero by a finite factor leaves zero).
    """
    if math.isnan(inv_temp) or inv_temp == -math.inf:
        raise ValueError(f"inv_temp={inv_temp!r} must be a number or +inf")
    base = np.asarray(base, dtype=np.float64)
    reward = np.broadcast_to(np.asarray(reward, dtype=np.float64), base.shape)
    support = base > 0
    if math.isinf(inv_temp) and inv_temp > 0:
        best = np.where(support, reward, -np.inf).max(axis=-1, keepdims=True)
        tilted = np.where(support & (reward == best), base, 0.0)
    else:
        # Work in log space relative to the best supported outcome so exp never overflows.
        log_w = np.where(support, np.log(np.where(support, base, 1.0)) + inv_temp * reward, -np.inf)
        tilted = np.exp(log_w - log_w.max(axis=-1, keepdims=True))
    return tilted / tilted.sum(axis=-1, keepdims=True)


def kl_optimum(base, reward, eta: float) -> np.ndarray:
    """``pi* ∝ pi_base · exp(eta · R)``: maximiser of ``E[R] - KL(pi || pi_base) / eta`` (docs/paper.md §1)."""
    return gibbs(base, reward, eta)


def rl_limit(start, reward, lam: float) -> np.ndarray:
    """Where KL-regularised RL started at ``pi_start`` converges: ``pi_start · exp(lam · R)`` (docs/paper.md §1)."""
    return gibbs(start, reward, lam)


def ideal_init(base, reward, eta: float, lam: float) -> np.ndarray:
    """The start from which RL with ``lam`` lands on ``pi*`` (docs/paper.md §1).

    ``pi_base · exp(beta · R)`` with ``beta = eta - lam``.
    """
    return gibbs(base, reward, eta - lam)


def entropy(p) -> np.ndarray:
    """Shannon entropy in nats over the last axis (``0 · log 0 = 0``)."""
    p = np.asarray(p, dtype=np.float64)
    return np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)


def kl(p, q) -> np.ndarray:
    """``KL(p || q)`` in nats over the last axis; ``inf`` where ``p > 0`` and ``q = 0``."""
    p = np.asarray(p, dtype=np.float64)
    q = np.broadcast_to(np.asarray(q, dtype=np.float64), p.shape)
    both = (p > 0) & (q > 0)
    terms = np.where(both, p * np.log(np.where(both, p, 1.0) / np.where(both, q, 1.0)), 0.0)
    return np.where(((p > 0) & (q == 0)).any(axis=-1), np.inf, terms.sum(axis=-1))


def total_variation(p, q) -> np.ndarray:
    """``TV(p, q) = ½ Σ |p - q|`` over the last axis."""
    return 0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum(axis=-1)


def with_gold_mass(p, gold: int, p_gold: float) -> np.ndarray:
    """``p`` with ``p[gold] = p_gold`` and the other tokens rescaled to keep their proportions."""
    p = np.asarray(p, dtype=np.float64)
    rest = np.delete(p, gold)
    out = np.insert(rest / rest.sum() * (1.0 - p_gold), gold, p_gold)
    return out


def token_target(p_base, gold: int, beta: float) -> np.ndarray:
    """Token-level GIFT target ``∝ p_base(k) · exp(beta · [k = gold])`` (docs/paper.md §1 token form).

    An independent NumPy twin of ``gift_lite.losses.gift_target`` with ``smooth_lambda = 0``;
    ``beta = inf`` is the SFT one-hot.
    """
    p_base = np.asarray(p_base, dtype=np.float64)
    return gibbs(p_base, np.eye(p_base.shape[-1])[gold], beta)


def beta_for_gold_mass(p_gold, mass):
    """Smallest ``beta`` at which the target puts ``mass`` on a gold token of base prob ``p_gold``.

    Inverse of the closed form ``p e^beta / (1 - p + p e^beta)`` (docs/paper.md §2):
    ``beta = log(mass (1 - p) / ((1 - mass) p))``; 0 when the base already has that mass.
    """
    p_gold = np.asarray(p_gold, dtype=np.float64)
    return np.maximum(0.0, np.log(mass * (1.0 - p_gold) / ((1.0 - mass) * p_gold)))


def pass_at_k(p_success, k: int):
    """Probability that at least one of ``k`` independent samples succeeds: ``1 - (1 - p)^k``."""
    return 1.0 - (1.0 - np.asarray(p_success, dtype=np.float64)) ** k


def beta_sweep(p_base, gold: int, p_golds, betas) -> pd.DataFrame:
    """Gold mass, entropy and KL to base of the token target, for each ``(p_gold, beta)``.

    ``p_base`` fixes the shape of the off-gold tokens; for each ``p_gold`` the gold token is set
    to that probability (``with_gold_mass``). Columns: ``p_gold``, ``beta``, ``target/gold_mass``,
    ``target/entropy``, ``target/kl_to_base`` and ``base/entropy``.
    """
    rows = []
    for pg in p_golds:
        base = with_gold_mass(p_base, gold, float(pg))
        for b in betas:
            t = token_target(base, gold, float(b))
            rows.append({"p_gold": float(pg), "beta": float(b), "target/gold_mass": t[gold],
                         "target/entropy": float(entropy(t)),
                         "target/kl_to_base": float(kl(t, base)),
                         "base/entropy": float(entropy(base))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# A tiny tree of reasoning paths
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """A depth-``depth`` tree of token choices; a leaf is a full reasoning path.

    ``base`` maps each prefix (a tuple of token ids) to the base model's next-token distribution.
    ``reward`` is 1 on paths that reach the right answer on the training variant of the task,
    ``test_reward`` on a shifted test variant; both are indexed like ``paths()``.
    """

    branching: int
    depth: int
    base: dict
    expert: tuple
    reward: np.ndarray
    test_reward: np.ndarray
    tokens: str = "ab"

    def paths(self) -> list[tuple]:
        """All leaves in lexicographic order (the index used by every path array)."""
        return list(itertools.product(range(self.branching), repeat=self.depth))

    def labels(self) -> list[str]:
        return ["".join(self.tokens[i] for i in path) for path in self.paths()]

    def index(self, path: tuple) -> int:
        return self.paths().index(tuple(path))


def toy_tree() -> Tree:
    """Three binary choices, eight paths; three reach the answer, the expert shows one of them.

    The base model rarely solves the task (16.2%) and rarely takes the expert's path ``bab``
    (3.6%). On the shifted test variant the expert's method no longer works (``bab`` fails)
    while the two other correct paths ``aab`` and ``abb``, which the base knows, still do.
    Base probabilities are hand-picked so path probabilities are short decimals.
    """
    base = {
        (): np.array([0.7, 0.3]),
        (0,): np.array([0.8, 0.2]), (1,): np.array([0.6, 0.4]),
        (0, 0): np.array([0.85, 0.15]), (0, 1): np.array([0.7, 0.3]),
        (1, 0): np.array([0.8, 0.2]), (1, 1): np.array([0.5, 0.5]),
    }
    #                     aaa aab aba abb baa bab bba bbb
    reward = np.array([0, 1, 0, 1, 0, 1, 0, 0], dtype=np.float64)
    test_reward = np.array([0, 1, 0, 1, 0, 0, 0, 0], dtype=np.float64)
    return Tree(branching=2, depth=3, base=base, expert=(1, 0, 1), reward=reward,
                test_reward=test_reward)


def path_probs(tree: Tree, policy: dict) -> np.ndarray:
    """Probability of each full path under a token-level policy ``{prefix: next-token probs}``."""
    return np.array([math.prod(policy[path[:t]][path[t]] for t in range(tree.depth))
                     for path in tree.paths()])


def gift_policy(tree: Tree, beta: float) -> dict:
    """The token-level policy that fits the GIFT target on the expert's prefixes (docs/paper.md §1 token form).

    A tabular student trained on the single demonstration only changes the prefixes it sees: at
    each expert prefix it takes ``target_t ∝ p_base · exp(beta · [k = y*_t])``; every other
    prefix keeps the base distribution. ``beta = inf`` is SFT (one-hot on the expert token);
    ``beta = 0`` returns the base policy.
    """
    policy = dict(tree.base)
    for t in range(tree.depth):
        prefix = tree.expert[:t]
        policy[prefix] = token_target(tree.base[prefix], tree.expert[t], beta)
    return policy


def tree_starts(tree: Tree, beta: float, eta: float, lam: float) -> dict[str, np.ndarray]:
    """Path distributions of four RL starting points.

    ``base`` (RL only), ``sft`` (token-level ``beta = inf``), ``gift`` (token-level finite
    ``beta``) and ``ideal`` (the sequence-level Gibbs start ``pi_base · exp((eta - lam) R)``).
    """
    base = path_probs(tree, tree.base)
    return {"base": base,
            "sft": path_probs(tree, gift_policy(tree, math.inf)),
            "gift": path_probs(tree, gift_policy(tree, beta)),
            "ideal": ideal_init(base, tree.reward, eta, lam)}


def tree_summary(tree: Tree, starts: dict[str, np.ndarray], eta: float, lam: float,
                 k: int) -> pd.DataFrame:
    """Long table ``method, stage, metric, value`` for each start before (``init``) and after
    (``rl``) exact KL-regularised RL (``rl_limit``).

    Metrics: ``train/reward`` (expected reward on the training variant), ``test/pass@1`` and
    ``test/pass@{k}`` (shifted variant), ``paths/correct_alive`` (training-correct paths with
    positive probability), ``entropy``, ``kl_to_base`` and ``tv_to_optimum`` (TV distance to
    ``pi* ∝ pi_base · exp(eta R)``).
    """
    base = path_probs(tree, tree.base)
    optimum = kl_optimum(base, tree.reward, eta)
    rows = []
    for method, start in starts.items():
        for stage, p in (("init", start), ("rl", rl_limit(start, tree.reward, lam))):
            test = float(p @ tree.test_reward)
            metrics = {"train/reward": float(p @ tree.reward), "test/pass@1": test,
                       f"test/pass@{k}": float(pass_at_k(test, k)),
                       "paths/correct_alive": float(np.sum((p > 0) & (tree.reward > 0))),
                       "entropy": float(entropy(p)), "kl_to_base": float(kl(p, base)),
                       "tv_to_optimum": float(total_variation(p, optimum))}
            rows += [{"method": method, "stage": stage, "metric": m, "value": v}
                     for m, v in metrics.items()]
    return pd.DataFrame(rows)


def tree_paths(tree: Tree, starts: dict[str, np.ndarray], eta: float, lam: float) -> pd.DataFrame:
    """Long table ``method, stage, path, train_reward, test_reward, prob``: every start at
    ``init`` and after exact KL-regularised RL (``rl``), plus ``pi*`` as method ``optimum``
    (stage ``target``)."""
    optimum = kl_optimum(path_probs(tree, tree.base), tree.reward, eta)
    dists = [(m, "init", p) for m, p in starts.items()]
    dists += [(m, "rl", rl_limit(p, tree.reward, lam)) for m, p in starts.items()]
    dists.append(("optimum", "target", optimum))
    columns = (tree.labels(), tree.reward, tree.test_reward)
    return pd.DataFrame([{"method": m, "stage": stage, "path": label, "train_reward": r,
                          "test_reward": rt, "prob": float(q)}
                         for m, stage, p in dists for label, r, rt, q in zip(*columns, p)])


def tree_beta_sweep(tree: Tree, betas, eta: float, lam: float, k: int) -> pd.DataFrame:
    """``tree_summary`` of the token-level GIFT start for each ``beta`` (``beta`` column added)."""
    frames = []
    for beta in betas:
        start = {"gift": path_probs(tree, gift_policy(tree, float(beta)))}
        frames.append(tree_summary(tree, start, eta, lam, k).assign(beta=float(beta)))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Exact policy-gradient dynamics
# ---------------------------------------------------------------------------------------------


def policy_gradient(start, reward, *, learning_rate: float, steps: int,
                    kl_coef: float = 0.0) -> np.ndarray:
    """Exact gradient ascent on ``E_pi[R] - kl_coef · KL(pi || pi_start)`` for a softmax over paths.

    The policy is ``softmax(theta)`` with ``theta = log pi_start``; the gradient is
    ``pi ⊙ (g - E_pi[g])`` with ``g = R - kl_coef · log(pi / pi_start)``. No sampling, so the
    trajectory is deterministic. A path with ``pi = 0`` has zero gradient and stays at 0; with
    ``kl_coef > 0`` the fixed point is ``rl_limit(start, R, 1 / kl_coef)`` (docs/paper.md §1).
    Returns the ``(steps + 1, n_paths)`` trajectory of probabilities.
    """
    start = np.asarray(start, dtype=np.float64)
    reward = np.asarray(reward, dtype=np.float64)
    support = start > 0
    log_start = np.log(np.where(support, start, 1.0))
    theta = np.where(support, log_start, -np.inf)
    traj = [start.copy()]
    for _ in range(steps):
        pi = np.exp(theta - theta.max())
        pi /= pi.sum()
        g = reward - kl_coef * np.where(support, theta - log_start, 0.0)
        grad = np.where(support, pi * (g - pi @ g), 0.0)
        theta = theta + learning_rate * grad
        pi = np.exp(theta - theta.max())
        traj.append(pi / pi.sum())
    return np.stack(traj)


def pg_dynamics(tree: Tree, starts: dict[str, np.ndarray], *, learning_rate: float, steps: int,
                kl_coef: float) -> pd.DataFrame:
    """Long table ``method, step, metric, value`` of ``policy_gradient`` from each start.

    Metrics per step: ``train/reward`` and ``test/pass@1`` (probability mass on paths that are
    correct on the training and on the test variant).
    """
    rows = []
    for method, start in starts.items():
        traj = policy_gradient(start, tree.reward, learning_rate=learning_rate, steps=steps,
                               kl_coef=kl_coef)
        for metric, reward in (("train/reward", tree.reward), ("test/pass@1", tree.test_reward)):
            rows += [{"method": method, "step": step, "metric": metric, "value": float(v)}
                     for step, v in enumerate(traj @ reward)]
    return pd.DataFrame(rows)
