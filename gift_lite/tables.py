"""Tables from the long-format results (``results.RESULT_COLUMNS``): mean ± std over seeds.

Reads data only; never imports training code.
"""

from __future__ import annotations

import math

import pandas as pd

INF = float("inf")


def run_label(method: str, beta: float) -> str:
    """``gift β=2`` for GIFT runs; the method name otherwise (SFT is GIFT at β = ∞)."""
    if method == "gift":
        return f"gift β={beta:g}" if math.isfinite(beta) else "gift β=∞"
    return method


def seed_stats(results: pd.DataFrame, *, stage: str, metric: str, split: str = "") -> pd.DataFrame:
    """One row per (method, β): ``mean``, ``std`` (ddof 1; 0 for one seed), ``n`` seeds, ``label``."""
    rows = results[(results["stage"] == stage) & (results["metric"] == metric)
                   & (results["split"].fillna("") == split)]
    grouped = rows.groupby(["method", "beta"], sort=False)["value"]
    stats = grouped.agg(mean="mean", std="std", n="count").reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    stats["label"] = [run_label(m, b) for m, b in zip(stats["method"], stats["beta"])]
    return stats


def summary(results: pd.DataFrame, *, stage: str, columns: list[tuple[str, str]], digits: int = 3) -> pd.DataFrame:
    """A method × column table of ``mean ± std`` strings; ``columns`` are (metric, split) pairs."""
    table = {}
    for metric, split in columns:
        stats = seed_stats(results, stage=stage, metric=metric, split=split)
        name = f"{split}/{metric}" if split else metric
        table[name] = {row.label: f"{row.mean:.{digits}f} ± {row.std:.{digits}f}" for row in stats.itertuples()}
    return pd.DataFrame(table).rename_axis("method")
