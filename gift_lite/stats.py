"""Paired bootstrap comparisons and the decision rule of ``data/mini_ft/PROTOCOL.md`` §6.

A comparison A − B of a metric pairs the two methods on the same problems: per problem, each
method's score is the mean over its seeds; the difference of the two means over problems is the
estimate. The 95 % interval resamples the problems (jointly for both methods) and, within each
method on its own, the seeds. Scalar metrics with no per-problem form (entropy, KL) resample seeds
only. Verdicts ("reproduced" / "not reproduced" / "inconclusive") follow from the interval and a
practical margin ``m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gift_lite.evaluate import pass_at_k

N_BOOT = 10_000  # PROTOCOL.md §6
LEVEL = 0.95
DETECTABLE = 2.8  # 80 % power at two-sided 5 %: the smallest detectable difference is 2.8 SE


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
        return DETECTABLE * self.se

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


def _resample_seeds(table: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """(n_boot, problems) means over a resample of ``table``'s seed columns."""
    seeds = rng.integers(0, table.shape[1], size=(n_boot, table.shape[1]))
    return table[:, seeds].mean(axis=2).T


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, *, what: str, sign: int, margin: float,
                      n_boot: int = N_BOOT, seed: int = 0) -> Difference:
    """A − B of two (problems x seeds) score tables over their shared problems."""
    shared = a.index.intersection(b.index)
    if len(shared) == 0:
        raise ValueError(f"{what}: the two methods share no problems")
    ta, tb = a.loc[shared].to_numpy(float), b.loc[shared].to_numpy(float)
    rng = np.random.default_rng(seed)
    ma, mb = _resample_seeds(ta, rng, n_boot), _resample_seeds(tb, rng, n_boot)
    problems = rng.integers(0, len(shared), size=(n_boot, len(shared)))
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
