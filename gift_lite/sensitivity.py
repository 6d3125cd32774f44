"""How firmly the confirmatory verdicts stand: analyses read after the run, beside
``data/mini_conf/claims.csv`` and never instead of it.

The verdicts stay those of the pre-registered rule (``claims.confirmatory_rule``). Here: each
comparison under two other intervals of the same data and its smallest detectable difference
with the t multiplier the interval used; where every start ends on the OOD family against the
base (what claim 3 measures); β = 20 beside SFT (a start that is SFT before RL, so its difference
after RL is RL's own run-to-run variation); and the β curve over the seeds every β shares.

Reads data only; never imports training code.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd

from gift_lite import claims, stats
from gift_lite.tables import INF, seed_stats

# The per-problem intervals set beside the pre-registered one. A per-seed scalar (entropy, KL) has
# no per-problem table: Welch's interval is its only one, so the others leave it blank.
INTERVALS = {"random effects": None,  # the pre-registered rule, unchanged
             "two-level bootstrap": partial(stats.paired_difference, n_boot=stats.N_BOOT, seed=0),
             "seeds paired by number": stats.seed_paired_difference}


def _no_interval(a, b, *, what: str, sign: int, margin: float) -> stats.Difference:
    a, b = float(np.mean(a)), float(np.mean(b))
    return stats.Difference(what, a, b, math.nan, math.nan, math.nan, sign, margin)


def intervals_table(data: claims.ProtocolData, beta_star: float, betas: tuple[float, ...], *,
                    k_large: int) -> pd.DataFrame:
    """Every comparison of the four claims (and the reported-only ones before RL: ID pass@1 as in
    the claims table, OOD pass@1 added) under each interval of ``INTERVALS``: one row per
    comparison, ``low``/``high``/``verdict`` per interval, and for the pre-registered one its
    ``se``, ``df``, the 2.8-SE ``detectable``, ``t_multiplier`` and ``detectable_t``."""
    base_rule = claims.confirmatory_rule()
    sft, gift = ("sft", INF), ("gift", beta_star)
    frames = []
    for name, paired in INTERVALS.items():
        rule = base_rule if paired is None else replace(base_rule, paired=paired, scalar=_no_interval)
        parts, before, _ = claims.claim_parts(data, beta_star, betas, rule=rule, k_large=k_large)
        ood_before = rule.paired(data.scores(*gift, "init", "ood"), data.scores(*sft, "init", "ood"),
                                 what="ood/pass@1 (init), reported only", sign=1, margin=rule.margin("ood"))
        parts = {**parts, 2: parts[2] + [before], 3: parts[3] + [ood_before]}
        rows = [{"claim": claim, "part": i + 1, "comparison": d.what, "diff": d.estimate, f"{name} low": d.low,
                 f"{name} high": d.high, f"{name} verdict": _verdict(d),
                 **({"se": d.se, "df": d.df, "detectable": d.detectable, "t_multiplier": d.t_multiplier,
                     "detectable_t": d.detectable_t} if paired is None else {})}
                for claim, ds in parts.items() for i, d in enumerate(ds)]
        frames.append(pd.DataFrame(rows).set_index(["claim", "part", "comparison"]))
    out = frames[0].join([f.drop(columns="diff") for f in frames[1:]])
    return out.reset_index()


def _verdict(d: stats.Difference) -> str:
    """A part's verdict; blank where it is reported only or has no interval here."""
    return "" if "reported only" in d.what or math.isnan(d.low) else d.verdict


def ood_transfer(results: pd.DataFrame, starts: list[tuple[str, float]]) -> pd.DataFrame:
    """Each start's OOD pass@1 before and after RL against the base's: the mean over seeds, the
    lowest seed after RL, and whether every seed ends above the base. Starts with no ``init``
    stage (RL only, LUFFY, ReLIFT) start from the base."""
    ood = {stage: seed_stats(results, stage=stage, metric="pass@1", split="ood", spread=True)
           for stage in ("base", "init", "rl")}
    base = float(ood["base"]["mean"].iloc[0])
    rows = []
    for method, beta in starts:
        after = _row(ood["rl"], method, beta)
        before = _row(ood["init"], method, beta)
        rows.append({"method": method, "beta": beta, "seeds": int(after["n"]),
                     "ood before RL": base if before is None else float(before["mean"]),
                     "ood after RL": float(after["mean"]), "lowest seed after RL": float(after["min"]),
                     "base": base, "every seed above the base": bool(after["min"] > base)})
    return pd.DataFrame(rows)


def _row(stats_frame: pd.DataFrame, method: str, beta: float):
    found = stats_frame[(stats_frame["method"] == method) & (stats_frame["beta"] == beta)]
    return None if found.empty else found.iloc[0]


def placebo(data: claims.ProtocolData, beta: float, reference: tuple[str, float] = ("sft", INF)) -> pd.DataFrame:
    """GIFT at ``beta`` against ``reference`` on the seeds GIFT has, before and after RL: whether
    every per-problem count (ID and OOD test) is identical, and the ID pass@1 difference with the
    random-effects interval."""
    counts = data.counts
    rows = []
    for stage in ("init", "rl"):
        a = counts[(counts["method"] == "gift") & (counts["beta"] == beta) & (counts["stage"] == stage)]
        b = counts[(counts["method"] == reference[0]) & (counts["beta"] == reference[1]) & (counts["stage"] == stage)
                   & counts["seed"].isin(a["seed"].unique())]
        keys = ["split", "seed", "problem_id"]
        joined = a.merge(b, on=keys, suffixes=("", "_ref"), validate="one_to_one")
        seeds = sorted(a["seed"].unique())
        d = stats.random_effects_difference(data.scores("gift", beta, stage, "id"),
                                            data.scores(*reference, stage, "id")[seeds],
                                            what=f"gift beta={beta:g} vs {reference[0]} ({stage})", sign=1,
                                            margin=0.0)
        rows.append({"stage": stage, "seeds": len(seeds), "counts compared": len(joined),
                     "identical counts": bool((joined["correct"] == joined["correct_ref"]).all()),
                     "counts that differ": int((joined["correct"] != joined["correct_ref"]).sum()),
                     "diff": d.estimate, "low": d.low, "high": d.high})
    return pd.DataFrame(rows)


def beta_curve_on_seeds(results: pd.DataFrame, seeds: tuple[int, ...], *, stage: str = "rl") -> pd.DataFrame:
    """``claims.beta_curve`` of ID pass@1 over ``seeds`` only (RL only at β = 0, SFT at β = ∞), with
    ``below previous``: whether each point is lower than the one before it (toward the base end)."""
    curve = claims.beta_curve(results[results["seed"].isin(seeds)], stage=stage, metric="pass@1", split="id")
    return curve.assign(**{"below previous": curve["mean"].diff() < 0})


def falls_until(curve: pd.DataFrame) -> float:
    """The largest β up to which ``curve``'s mean falls at every step from β = 0."""
    falling = curve["below previous"].iloc[1:].to_numpy()
    steps = len(falling) if falling.all() else int(np.argmin(falling))
    return float(curve["beta"].iloc[steps])
