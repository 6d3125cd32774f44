"""Paired bootstrap comparisons and the decision rule of ``data/mini_ft/PROTOCOL.md`` §6.

A comparison A − B of a metric pairs the two methods on the same problems: per problem, each
method's score is the mean over its seeds; the difference of the two means over problems is the
estimate. The 95 % interval resamples the problems (jointly for both methods) and, within each
method on its own, the seeds. Scalar metrics with no per-problem form (entropy, KL) resample seeds
only. Verdicts ("reproduced" / "not reproduced" / "inconclusive") follow from the interval and a
practical margin ``m``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from gift_lite.evaluate import pass_at_k

N_BOOT = 10_000  # PROTOCOL.md §6
LEVEL = 0.95
DETECTABLE = 2.8  # 80 % power at two-sided 5 %: the smallest detectable difference is 2.8 SE (normal)
POWER = 0.80  # the power behind DETECTABLE; with a t interval the multiplier is t(0.975, df) + t(0.80, df)


@dataclass(frozen=True)
class Difference:
    """A − B with its bootstrap interval; ``sign`` +1 for a claim "A > B", -1 for "A < B"."""

    what: str
    a: float
    b: float
    low: float
    high: float
    se: float
    sign: int
    margin: float
    df: float = math.inf  # degrees of freedom of a t interval; inf for a bootstrap (normal)

    @property
    def estimate(self) -> float:
        return self.a - self.b

    @property
    def verdict(self) -> str:
        """Reproduced if the interval excludes 0 in the claimed direction; not reproduced if it
        excludes a difference of ``margin`` or more in that direction; else inconclusive."""
        low, high = (self.low, self.high) if self.sign > 0 else (-self.high, -self.low)
        if low > 0:
            return "reproduced"
        if high < self.margin:
            return "not reproduced"
        return "inconclusive"

    @property
    def detectable(self) -> float:
        """The smallest difference found 80 % of the time, as the protocols state it: 2.8 SE."""
        return DETECTABLE * self.se

    @property
    def t_multiplier(self) -> float:
        """``t(0.975, df) + t(0.80, df)``: 2.80 for a bootstrap (df inf), more for a t interval."""
        if not math.isfinite(self.df):
            return float(NormalDist().inv_cdf((1 + LEVEL) / 2) + NormalDist().inv_cdf(POWER))
        return t_quantile((1 + LEVEL) / 2, self.df) + t_quantile(POWER, self.df)

    @property
    def detectable_t(self) -> float:
        """The smallest detectable difference with the interval actually used: ``t_multiplier`` SE."""
        return self.t_multiplier * self.se

    def text(self) -> str:
        sign = ">" if self.sign > 0 else "<"
        return (f"{self.what}: {self.a:.3f} vs {self.b:.3f}, diff {self.estimate:+.3f} "
                f"[{self.low:+.3f}, {self.high:+.3f}] (claimed {sign}; {self.verdict})")


def problem_scores(counts: pd.DataFrame, n: int, k: int = 1) -> pd.DataFrame:
    """(problems x seeds) table of per-problem scores: the share of correct samples for k = 1, the
    unbiased pass@k estimate from ``n`` samples otherwise. ``counts``: problem_id, seed, correct."""
    if k == 1:
        values = counts["correct"] / n
    else:
        values = counts["correct"].map(lambda c: pass_at_k(n, int(c), k))
    frame = counts.assign(score=values.astype(float))
    return frame.pivot_table(index="problem_id", columns="seed", values="score", aggfunc="mean").sort_index()


def paired_tables(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Two (problems x seeds) score tables restricted to their shared problems, as float arrays."""
    shared = a.index.intersection(b.index)
    return a.loc[shared].to_numpy(float), b.loc[shared].to_numpy(float)


def _resample_seeds(table: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """(n_boot, problems) means over a resample of ``table``'s seed columns."""
    seeds = rng.integers(0, table.shape[1], size=(n_boot, table.shape[1]))
    return table[:, seeds].mean(axis=2).T


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, *, what: str, sign: int, margin: float,
                      n_boot: int = N_BOOT, seed: int = 0) -> Difference:
    """A − B of two (problems x seeds) score tables over their shared problems."""
    ta, tb = paired_tables(a, b)
    if len(ta) == 0:
        raise ValueError(f"{what}: the two methods share no problems")
    rng = np.random.default_rng(seed)
    ma, mb = _resample_seeds(ta, rng, n_boot), _resample_seeds(tb, rng, n_boot)
    problems = rng.integers(0, len(ta), size=(n_boot, len(ta)))
    diffs = np.take_along_axis(ma - mb, problems, axis=1).mean(axis=1)
    return _difference(what, float(ta.mean()), float(tb.mean()), diffs, sign, margin)


def scalar_difference(a, b, *, what: str, sign: int, margin: float, n_boot: int = N_BOOT,
                      seed: int = 0) -> Difference:
    """A − B of per-seed scalars (entropy, KL), resampling each method's seeds."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"{what}: a method has no seeds")
    rng = np.random.default_rng(seed)
    diffs = (a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
             - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1))
    return _difference(what, float(a.mean()), float(b.mean()), diffs, sign, margin)


def _difference(what, a, b, diffs, sign, margin) -> Difference:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return Difference(what=what, a=a, b=b, low=float(low), high=float(high), se=float(diffs.std(ddof=1)),
                      sign=sign, margin=margin)


def combine(parts: list[Difference], rule: str = "all") -> str:
    """A claim's verdict from its parts. ``all``: reproduced if every part is, not reproduced if
    any part is not, else inconclusive. ``primary``: as ``all``, but only the first part can make
    it "not reproduced" (PROTOCOL.md §6, claim 2)."""
    verdicts = [p.verdict for p in parts]
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    deciding = verdicts[:1] if rule == "primary" else verdicts
    if "not reproduced" in deciding:
        return "not reproduced"
    return "inconclusive"


# -- the confirmatory protocol's interval: random effects, no resampling (data/mini_conf/PROTOCOL.md §6)
# Model of one method's (problems x seeds) score table: y[p, s] = mu + a[p] + b[s] + e[p, s], problems
# and seeds random, problems shared by the two methods of a comparison, seeds each method's own. The
# difference of grand means D = mean(A) - mean(B) then has
#     Var(D) = Var_p(dbar[p]) / P  +  sum over methods of sigma2_seed / n_seeds,
# where dbar[p] is the difference of the two methods' seed means on problem p: the first term holds
# the problems' spread of the difference and the interaction / sampling noise once each, the second
# the seed-to-seed spread of the run itself. Every term is estimated by the method of moments.
DECIMALS = 9  # tie rule: interval ends are rounded to 9 decimals before they are compared with 0 or m


def seed_component(table: np.ndarray) -> tuple[float, float]:
    """``(sigma2_seed, sigma2_residual)`` of a (problems x seeds) table by the method of moments
    (two-way crossed ANOVA without replication); the seed component is floored at 0."""
    table = np.asarray(table, float)
    n_problems, n_seeds = table.shape
    if n_problems < 2 or n_seeds < 2:
        raise ValueError(f"table of shape {table.shape} needs at least 2 problems and 2 seeds")
    grand = table.mean()
    rows, cols = table.mean(axis=1), table.mean(axis=0)
    ms_seed = n_problems * np.sum((cols - grand) ** 2) / (n_seeds - 1)
    residual = table - rows[:, None] - cols[None, :] + grand
    ms_residual = np.sum(residual ** 2) / ((n_problems - 1) * (n_seeds - 1))
    return max(0.0, (ms_seed - ms_residual) / n_problems), float(ms_residual)


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile (0.5 < q < 1) of Student's t with ``df`` degrees of freedom: bisection on
    its CDF, integrated from the density (Simpson's rule, 20 001 points; error below 1e-8 for df ≥ 1)."""
    if not 0.5 < q < 1 or not df >= 1:
        raise ValueError(f"q={q} must be in (0.5, 1) and df={df} at least 1")
    if df > 1e6:  # the normal limit, to its own precision
        return float(NormalDist().inv_cdf(q))
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 20_001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid ** 2 / df))
        weights = np.ones_like(grid)
        weights[1:-1:2], weights[2:-1:2] = 4, 2
        return 0.5 + float(np.dot(weights, density)) * (grid[1] - grid[0]) / 3

    low, high = 0.0, 1.0
    while cdf(high) < q:
        low, high = high, 2 * high
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < q else (low, mid)
    return (low + high) / 2


def _t_interval(what, a, b, estimate, parts, sign, margin) -> Difference:
    """``estimate`` ± t(0.975, ν)·SE, SE² the sum of ``parts`` ((variance, df) pairs), ν by
    Welch–Satterthwaite."""
    variance = sum(v for v, _ in parts)
    se = float(np.sqrt(variance))
    df = variance ** 2 / sum(v ** 2 / d for v, d in parts if v > 0) if variance > 0 else float("inf")
    half = t_quantile((1 + LEVEL) / 2, df) * se if se > 0 else 0.0
    return Difference(what=what, a=a, b=b, low=round(estimate - half, DECIMALS),
                      high=round(estimate + half, DECIMALS), se=se, sign=sign, margin=margin, df=df)


def random_effects_difference(a: pd.DataFrame, b: pd.DataFrame, *, what: str, sign: int,
                              margin: float) -> Difference:
    """A − B of two (problems x seeds) score tables over their shared problems, with the
    random-effects variance above and a t interval (Welch–Satterthwaite degrees of freedom).
    Deterministic: no resampling, so no verdict depends on a random-number generator."""
    ta, tb = paired_tables(a, b)
    if len(ta) < 2:
        raise ValueError(f"{what}: the two methods share {len(ta)} problems; at least 2 are needed")
    per_problem = ta.mean(axis=1) - tb.mean(axis=1)
    parts = [(per_problem.var(ddof=1) / len(ta), len(ta) - 1)]
    for table in (ta, tb):
        parts.append((seed_component(table)[0] / table.shape[1], table.shape[1] - 1))
    return _t_interval(what, float(ta.mean()), float(tb.mean()), float(per_problem.mean()), parts, sign, margin)


def seed_paired_difference(a: pd.DataFrame, b: pd.DataFrame, *, what: str, sign: int,
                           margin: float) -> Difference:
    """A − B with seeds paired by number: per shared seed, the difference of the two methods' means
    over their shared problems; a t interval over those seed differences (df = seeds − 1). The
    problems' spread enters only through each seed's mean."""
    seeds = a.columns.intersection(b.columns)
    ta, tb = paired_tables(a[seeds], b[seeds])
    if len(seeds) < 2 or len(ta) == 0:
        raise ValueError(f"{what}: {len(seeds)} shared seeds and {len(ta)} shared problems; need 2 seeds and 1 problem")
    per_seed = ta.mean(axis=0) - tb.mean(axis=0)
    parts = [(per_seed.var(ddof=1) / len(seeds), len(seeds) - 1)]
    return _t_interval(what, float(ta.mean()), float(tb.mean()), float(per_seed.mean()), parts, sign, margin)


def welch_difference(a, b, *, what: str, sign: int, margin: float) -> Difference:
    """A − B of per-seed scalars (entropy, KL): Welch's t interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"{what}: each method needs at least 2 seeds (got {len(a)} and {len(b)})")
    parts = [(a.var(ddof=1) / len(a), len(a) - 1), (b.var(ddof=1) / len(b), len(b) - 1)]
    return _t_interval(what, float(a.mean()), float(b.mean()), float(a.mean() - b.mean()), parts, sign, margin)


def variance_components(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    """The pieces of Var(D) for two (problems x seeds) tables, per unit of problems and seeds, so
    that ``projected_se`` can scale them: ``problem`` (the difference's spread over problems, less
    the residual noise), ``residual`` (the two methods' residuals, which shrink with seeds and
    problems), ``seed`` (the two methods' seed components)."""
    ta, tb = paired_tables(a, b)
    (sa, ra), (sb, rb) = seed_component(ta), seed_component(tb)
    spread = (ta.mean(axis=1) - tb.mean(axis=1)).var(ddof=1)
    problem = max(0.0, spread - ra / ta.shape[1] - rb / tb.shape[1])
    return {"problem": float(problem), "residual": float((ra + rb) / 2), "seed": float((sa + sb) / 2),
            "n_problems": len(ta), "seeds_a": ta.shape[1], "seeds_b": tb.shape[1]}


def projected_se(components: dict[str, float], seeds_a: int, n_problems: int, seeds_b: int | None = None) -> float:
    """SE of D at ``seeds_a`` and ``seeds_b`` (default: as many) seeds and ``n_problems`` problems,
    from ``variance_components``: sqrt((problem + residual/n_a + residual/n_b) / P + seed/n_a + seed/n_b)."""
    c, seeds_b = components, seeds_b or seeds_a
    noise = c["residual"] / seeds_a + c["residual"] / seeds_b
    return float(np.sqrt((c["problem"] + noise) / n_problems + c["seed"] / seeds_a + c["seed"] / seeds_b))
