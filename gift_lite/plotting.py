"""Figures: one house style, one colour per method, deterministic PNG + PDF files.

Colours are fixed project-wide so a reader learns them once: SFT is always vermillion, GIFT
always blue, the base model grey (Okabe–Ito palette, safe for colour-blind readers). A sweep over
``beta`` runs from the base colour (``beta = 0``) through blues (finite ``beta``, GIFT) to the SFT
colour (``beta = inf``), which is GIFT's story as a diff from SFT.

Plot functions take the tables the notebooks write to ``data/`` and return a Figure; they never
import training code.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler

from gift_lite.results import atomic_write
from gift_lite.tables import METHOD_NAMES  # display names, one table for figures and tables

METHOD_COLORS: dict[str, str] = {
    "sft": "#D55E00",          # vermillion
    "gift": "#0072B2",         # blue
    "sft_entropy": "#E69F00",  # orange
    "dft": "#CC79A7",          # reddish purple
    "asft": "#009E73",         # bluish green
    "psft": "#56B4E9",         # sky blue
    "base": "#8C8C8C",         # grey
    "rl_only": "#000000",      # black
}
# The unified SFT+RL methods (data/mini_conf): kept out of the colour cycle above, so figures
# drawn before they existed keep their bytes.
UNIFIED_COLORS: dict[str, str] = {"luffy": "#7B3294", "relift": "#A6611A"}  # dark purple, brown
# Reference curves that are not methods (a theoretical optimum, a target): drawn dotted.
REFERENCE_COLOR = "#444444"

DPI = 150
STYLE: dict = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "font.family": "DejaVu Sans",  # ships with matplotlib: identical glyphs on every machine
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.prop_cycle": cycler(color=list(METHOD_COLORS.values())),
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "pdf.fonttype": 42,  # embed TrueType so text stays text in the PDF
}
# No timestamps or version strings in the files, so a rerun gives identical bytes.
_METADATA = {"png": {"Software": None},
             "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def use_style() -> None:
    """Apply the house style to every later figure of this process (call once in a notebook)."""
    matplotlib.rcParams.update(STYLE)


@contextmanager
def style():
    """The house style inside a ``with`` block only (for library code and tests)."""
    with matplotlib.rc_context(STYLE):
        yield


def method_color(method: str) -> str:
    """The project colour of ``method``; raises ``KeyError`` naming the known methods."""
    colors = {**METHOD_COLORS, **UNIFIED_COLORS}
    try:
        return colors[method]
    except KeyError:
        raise KeyError(f"method={method!r} has no colour; known: {sorted(colors)}") from None


def beta_color(beta: float, beta_max: float = 30.0):
    """Colour of a GIFT run at ``beta``: base grey at 0, blues for finite beta, SFT at inf."""
    if beta == 0:
        return METHOD_COLORS["base"]
    if math.isinf(beta):
        return METHOD_COLORS["sft"]
    shade = 0.45 + 0.5 * min(1.0, math.log1p(beta) / math.log1p(beta_max))
    return plt.get_cmap("Blues")(shade)


def method_label(method: str, beta: float | None = None) -> str:
    """Legend text for ``method``; GIFT shows its ``beta`` when given."""
    if method == "gift" and beta is not None:
        return f"GIFT (β = {beta:g})"
    return {"ideal": "Gibbs start π_base·exp(βR)", "optimum": "π* ∝ π_base·exp(ηR)"}.get(
        method, METHOD_NAMES.get(method, method))


def beta_label(beta: float) -> str:
    if math.isinf(beta):
        return "β = ∞ (SFT)"
    if beta == 0:
        return "β = 0 (base)"
    return f"β = {beta:g}"


def save_figure(fig, name: str, figures_dir) -> None:
    """Write ``name.png`` (150 dpi) and ``name.pdf`` into ``figures_dir`` atomically.

    Metadata that would change between runs (dates, software versions) is left out, so two
    calls on the same figure give byte-identical files. Returns None, so a notebook cell that
    ends with this call shows the figure and nothing else (no paths of this machine).
    """
    for fmt, metadata in _METADATA.items():
        atomic_write(Path(figures_dir) / f"{name}.{fmt}", lambda tmp, fmt=fmt, metadata=metadata:
                     fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata))


# ---------------------------------------------------------------------------------------------
# Theory figures (notebook 01); each takes the table written to data/theory/
# ---------------------------------------------------------------------------------------------


def _symlog_beta(ax, beta_max: float) -> None:
    # beta = 0 is the base model, so the axis must reach 0: linear on [0, 1], log beyond.
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.6)
    ax.set_xlim(0, beta_max)
    ax.set_xlabel("β (inverse temperature)")


def plot_target_bars(base, targets: dict, gold: int, ax=None):
    """Grouped bars: the base next-token distribution and the target at each ``beta``.

    ``targets`` maps ``beta -> probabilities``; ``beta = 0`` is drawn in the base colour.
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.0, 3.4))
    vocab = np.arange(len(base))
    width = 0.8 / len(targets)
    for i, (beta, probs) in enumerate(targets.items()):
        ax.bar(vocab + (i - (len(targets) - 1) / 2) * width, probs, width,
               color=beta_color(beta), label=beta_label(beta))
    ax.set_xticks(vocab, [("y*" if k == gold else str(k)) for k in vocab])
    ax.get_xticklabels()[gold].set_fontweight("bold")
    ax.set_xlabel("token (y* = the expert's token)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.02)
    ax.legend(ncols=min(4, len(targets)), loc="upper right")
    return fig


def plot_beta_sweep(sweep, marks: dict | None = None):
    """Three panels against ``beta``: gold mass, target entropy, KL(target ‖ base).

    ``sweep`` has the columns of ``theory.beta_sweep``; one line per ``p_gold``. ``marks`` maps a
    label to a beta drawn as a dotted vertical line (e.g. the official default 20). Dashed
    horizontal lines in the KL panel are the SFT limit ``-log p_gold``.
    """
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.4), layout="constrained")
    p_golds = sorted(sweep["p_gold"].unique())
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(p_golds)))
    beta_max = sweep["beta"].max()
    panels = [("target/gold_mass", "target mass on the expert token"),
              ("target/entropy", "target entropy (nats)"),
              ("target/kl_to_base", "KL(target ‖ base) (nats); dashed: β = ∞")]
    for ax, (column, title) in zip(axes, panels):
        for p_gold, color in zip(p_golds, colors):
            rows = sweep[sweep["p_gold"] == p_gold].sort_values("beta")
            ax.plot(rows["beta"], rows[column], color=color, label=f"p_base(y*) = {p_gold:g}")
            if column == "target/kl_to_base":
                ax.axhline(-math.log(p_gold), color=color, lw=0.9, ls="--")
        for label, beta in (marks or {}).items():
            ax.axvline(beta, color=REFERENCE_COLOR, lw=0.9, ls=":", label=f"β = {beta:g} ({label})")
        _symlog_beta(ax, beta_max)
        ax.set_title(title)
    axes[0].legend(loc="upper left")
    return fig


def plot_tree_paths(paths, beta: float | None = None):
    """Path probabilities at the RL start (top) and after KL-regularised RL (bottom).

    ``paths`` is the long table of ``theory.tree_paths``; the bars are the starts that have a
    project colour (base, sft, gift; ``beta`` labels GIFT), the optimum ``pi*`` is drawn as
    dashed outlines in the bottom panel. Correct paths are marked under their label.
    """
    fig, axes = plt.subplots(2, 1, figsize=(7.6, 5.2), sharex=True, layout="constrained")
    labels = list(dict.fromkeys(paths["path"]))
    methods = [m for m in dict.fromkeys(paths["method"]) if m in METHOD_COLORS]
    x = np.arange(len(labels))
    width = 0.8 / len(methods)
    for ax, stage, title in zip(axes, ("init", "rl"), ("RL start", "after KL-regularised RL")):
        for i, method in enumerate(methods):
            rows = paths[(paths["method"] == method) & (paths["stage"] == stage)]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, rows["prob"], width,
                   color=METHOD_COLORS[method], label=method_label(method, beta))
        ax.set_ylabel("path probability")
        ax.set_title(title, loc="left")
        ax.set_ylim(0, 1.05)
    optimum = paths[paths["method"] == "optimum"]
    axes[1].bar(x, optimum["prob"], 0.86, fill=False, edgecolor=REFERENCE_COLOR, lw=1.0,
                ls="--", label=method_label("optimum"))
    reward = paths[paths["method"] == "optimum"]["train_reward"].to_numpy()
    test = paths[paths["method"] == "optimum"]["test_reward"].to_numpy()
    axes[1].set_xticks(x, [f"{p}\n{'✓' if r else ''}{'ᵗ' if t else ''}"
                           for p, r, t in zip(labels, reward, test)])
    axes[1].set_xlabel("reasoning path (✓ correct on the training variant, ᵗ also on the test variant)")
    axes[0].legend(ncols=len(methods), loc="upper left")
    axes[1].legend(loc="upper left")
    return fig


def plot_tree_beta(sweep, k: int, marks: dict | None = None):
    """The GIFT start of the tree example as ``beta`` varies: training reward (left), test
    pass@1 and pass@k (right), before (dashed) and after (solid) KL-regularised RL.

    ``sweep`` is the long table of ``theory.tree_beta_sweep`` (``beta, stage, metric, value``);
    its ``beta = inf`` rows (SFT) are drawn as dots at the right edge.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.4), layout="constrained", sharey=True)
    finite = sweep[np.isfinite(sweep["beta"])]
    sft = sweep[np.isinf(sweep["beta"])].set_index(["stage", "metric"])["value"]
    edge = finite["beta"].max()
    panels = [("expected reward, training variant", [("train/reward", "init", "--"),
                                                      ("train/reward", "rl", "-")]),
              ("test variant (after RL)", [("test/pass@1", "rl", ":"),
                                           (f"test/pass@{k}", "rl", "-")])]
    for ax, (title, curves) in zip(axes, panels):
        for metric, stage, ls in curves:
            rows = finite[(finite["metric"] == metric) & (finite["stage"] == stage)]
            rows = rows.sort_values("beta")
            ax.plot(rows["beta"], rows["value"], color=METHOD_COLORS["gift"], ls=ls,
                    label=f"{metric} ({'start' if stage == 'init' else 'after RL'})")
            ax.plot([edge], [sft[stage, metric]], marker="o", ls="", color=METHOD_COLORS["sft"])
        ax.plot([], [], marker="o", ls="", color=METHOD_COLORS["sft"], label="SFT (β = ∞)")
        for label, beta in (marks or {}).items():
            ax.axvline(beta, color=REFERENCE_COLOR, lw=0.9, ls=":")
            ax.text(beta, 0.02, f" {label}", transform=ax.get_xaxis_transform(), fontsize=8,
                    color=REFERENCE_COLOR)
        _symlog_beta(ax, edge * 1.08)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.legend(loc="center right")
    axes[0].set_ylabel("probability")
    return fig


def plot_pg_dynamics(dynamics, beta: float | None = None):
    """Exact policy-gradient RL from each start: training reward and test pass@1 per step.

    ``dynamics`` is the table of ``theory.pg_dynamics`` (``method, step, metric, value``).
    """
    metrics = [("train/reward", "expected reward, training variant"),
               ("test/pass@1", "pass@1, test variant")]
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.4), layout="constrained", sharex=True)
    for ax, (metric, title) in zip(axes, metrics):
        for method in dict.fromkeys(dynamics["method"]):
            rows = dynamics[(dynamics["method"] == method) & (dynamics["metric"] == metric)]
            ax.plot(rows["step"], rows["value"], color=METHOD_COLORS.get(method, REFERENCE_COLOR),
                    ls="-" if method in METHOD_COLORS else ":", label=method_label(method, beta))
        ax.set_title(title)
        ax.set_xlabel("policy-gradient step")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("probability")
    axes[0].legend(loc="lower right")
    return fig


def plot_beta_explorer(p_base, target, gold: int, path_labels, start, after_rl, beta: float,
                       reward=None):
    """One ``beta`` at a glance: the token target (left) and the tree's paths (right).

    Left: base next-token distribution and the GIFT target at ``beta``. Right: path
    probabilities of the GIFT start at ``beta`` and after KL-regularised RL from it; ``reward``
    (0/1 per path) marks the correct paths under their labels.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 3.4), layout="constrained",
                                      gridspec_kw={"width_ratios": [3, 2]})
    plot_target_bars(p_base, {0.0: p_base, beta: target} if beta != 0 else {0.0: p_base},
                     gold, ax=left)
    left.set_title(f"next-token target at {beta_label(beta)}", loc="left")
    x = np.arange(len(path_labels))
    color = beta_color(beta)
    right.bar(x - 0.2, start, 0.4, color=color, alpha=0.45, label="RL start")
    right.bar(x + 0.2, after_rl, 0.4, color=color, label="after KL-regularised RL")
    marks = ["✓" if r else "" for r in (reward if reward is not None else [0] * len(x))]
    right.set_xticks(x, [f"{p}\n{m}" for p, m in zip(path_labels, marks)])
    right.set_ylim(0, 1.05)
    right.set_ylabel("path probability")
    right.set_title("tree of reasoning paths (✓ correct)", loc="left")
    right.legend(loc="upper left")
    return fig


# ---------------------------------------------------------------------------------------------
# Miniature figures (notebooks 09-11); each takes data/mini/results.csv or curves.csv
# ---------------------------------------------------------------------------------------------


def run_color(method: str, beta: float):
    """GIFT runs are coloured by β (``beta_color``); every other method by its project colour."""
    return beta_color(beta) if method == "gift" else method_color(method)


def plot_pass_at_k(results, *, stage: str, split: str = "id", ax=None, highlight=()):
    """pass@k against k for every (method, β), mean over seeds with a ±1 std band.

    ``highlight``: the ``(method, beta)`` starts a claim judges, drawn strongly with the min–max
    band over their seeds; the others are drawn faded, without a band.
    """
    fig, ax = _figure(ax)
    strong = {(method, float(beta)) for method, beta in highlight}
    rows = results[(results["stage"] == stage) & (results["split"] == split)
                   & results["metric"].str.startswith("pass@")].copy()
    rows["k"] = rows["metric"].str.removeprefix("pass@").astype(int)
    for (method, beta), group in rows.groupby(["method", "beta"], sort=False):
        per_k = group.groupby("k")["value"]
        stats = per_k.agg(["mean", "std"]).fillna(0.0)
        style = {"color": run_color(method, beta), "label": method_label(method, beta)}
        if strong and (method, float(beta)) not in strong:
            ax.plot(stats.index, stats["mean"], lw=0.8, alpha=0.3, **style)
            continue
        ax.plot(stats.index, stats["mean"], marker="o", ms=3, zorder=3 if strong else 2, **style)
        low, high = (per_k.min(), per_k.max()) if strong else (stats["mean"] - stats["std"], stats["mean"] + stats["std"])
        ax.fill_between(stats.index, low, high, color=style["color"], alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel(f"pass@k ({split})")
    if strong:
        ax.set_title(f"pass@k, stage = {stage}; judged starts strong, band: min–max over seeds", fontsize=9)
    else:
        ax.set_title(f"pass@k, stage = {stage}")
    ax.legend(ncol=2)
    return fig


def judged_betas(beta_star: float, peak: float) -> dict[str, float]:
    """``plot_beta_curves``' marks for one panel: β\* (claims 1–3) and the peak β̂ (claim 4)."""
    if beta_star == peak:
        return {f"β* = β̂ = {beta_star:g} (judged)": beta_star}
    return {f"β* = {beta_star:g} (claims 1–3)": beta_star, f"β̂ = {peak:g} (claim 4)": peak}


def plot_beta_curves(curves: dict, beta_max: float = 30.0, judged: dict | None = None):
    """One panel per curve (``claims.beta_curve`` tables): mean ± std against β, ∞ drawn at the right.

    A curve with ``min`` and ``max`` columns (``beta_curve(..., spread=True)``) is drawn with its
    min–max band over seeds instead of ±std bars. ``judged``: per panel title, ``{label: beta}`` of
    the β a claim judges (β\*, the peak β̂), each ringed and named in the legend.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), squeeze=False)
    for ax, (title, curve) in zip(axes[0], curves.items()):
        x = np.where(np.isinf(curve["beta"]), beta_max, curve["beta"])
        if {"min", "max"} <= set(curve.columns):
            ax.plot(x, curve["mean"], color=METHOD_COLORS["gift"], marker="o")
            ax.fill_between(x, curve["min"], curve["max"], color=METHOD_COLORS["gift"], alpha=0.15, lw=0)
        else:
            ax.errorbar(x, curve["mean"], yerr=curve["std"], color=METHOD_COLORS["gift"], marker="o", capsize=3)
        for xi, beta in zip(x, curve["beta"]):
            ax.plot(xi, curve.loc[curve["beta"] == beta, "mean"].iloc[0], "o", color=beta_color(beta), zorder=3)
        for (label, beta), marker in zip((judged or {}).get(title, {}).items(), ("o", "s", "D")):
            at = curve[curve["beta"] == beta]
            ax.plot(beta_max if math.isinf(beta) else beta, at["mean"].iloc[0], marker, ms=12, mfc="none",
                    mec="black", mew=1.2, ls="", zorder=4, label=label)
        if (judged or {}).get(title):
            ax.legend(loc="lower center")
        _symlog_beta(ax, beta_max * 1.05)
        ticks = [t for t in (0, 1, 2, 5, 10, 20) if t < beta_max] + [beta_max]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks[:-1]] + ["∞"])
        ax.set_title(title)
    return fig


def plot_reward_curves(curves, window: int = 5):
    """GRPO batch reward against step, mean over seeds, smoothed with a ``window``-step moving mean."""
    fig, ax = _figure(None)
    for (method, beta), group in curves.groupby(["method", "beta"], sort=False):
        mean = group.groupby("step")["reward"].mean().rolling(window, min_periods=1).mean()
        ax.plot(mean.index, mean.values, color=run_color(method, beta), label=method_label(method, beta))
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("batch reward")
    ax.legend(ncol=2)
    return fig


def plot_metric_bars(results, *, stage: str, metrics: tuple[str, ...] = ("entropy", "kl_to_base", "topk_overlap")):
    """One panel per split-free metric: a bar per (method, β), mean ± std over seeds."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.0 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = results[(results["stage"] == stage) & (results["metric"] == metric)]
        stats = rows.groupby(["method", "beta"], sort=False)["value"].agg(["mean", "std"]).fillna(0.0)
        labels = [method_label(m, b) for m, b in stats.index]
        colors = [run_color(m, b) for m, b in stats.index]
        ax.bar(range(len(stats)), stats["mean"], yerr=stats["std"], color=colors, capsize=2)
        ax.set_xticks(range(len(stats)), labels, rotation=60, ha="right", fontsize=7.5)
        ax.set_title(f"{metric} ({stage})")
    return fig


def _figure(ax):
    if ax is None:
        fig, ax = plt.subplots()
        return fig, ax
    return ax.figure, ax


# ---------------------------------------------------------------------------------------------
# Paper-layout figures (notebook 07); each takes tables read from data/
# ---------------------------------------------------------------------------------------------


def plot_pass_at_k_before_rl(results, splits: tuple[str, ...] = ("id", "ood"), highlight=()):
    """pass@k before RL, one panel per split: the base (stage ``base``) and every initialiser
    (stage ``init``), mean over seeds with a ±1 std band (the paper's exploration figure);
    ``highlight`` as in ``plot_pass_at_k``."""
    before = results[results["stage"].isin(["base", "init"])].assign(stage="init")
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 3.8), squeeze=False, sharey=True,
                             layout="constrained")
    for i, (ax, split) in enumerate(zip(axes[0], splits)):
        plot_pass_at_k(before, stage="init", split=split, ax=ax, highlight=highlight)
        ax.set_title(f"pass@k before RL, {split.upper()} test" + (" (judged starts strong)" if highlight else ""))
        if i > 0:
            ax.get_legend().remove()
    return fig


def plot_reward_lead(curves: dict, *, reference: tuple[str, float] = ("sft", math.inf), window: int = 5):
    """Each run's GRPO batch reward minus the ``reference`` run's (SFT), against the fraction of
    RL steps done: the paper's "GIFT leads throughout / overtakes after ~25 % of the steps".

    ``curves`` maps a panel title to a reward-curve table (``method, beta, seed, step, reward``);
    rewards are averaged over seeds and smoothed with a ``window``-step moving mean first.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 3.6), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, (title, table) in zip(axes[0], curves.items()):
        smooth = {key: group.groupby("step")["reward"].mean().rolling(window, min_periods=1).mean()
                  for key, group in table.groupby(["method", "beta"], sort=False)}
        ref = smooth.get(reference)
        ax.axhline(0.0, color=REFERENCE_COLOR, lw=0.9, ls=":")
        ax.set_title(title)
        ax.set_xlabel("fraction of GRPO steps")
        if ref is None:
            continue
        for (method, beta), mean in smooth.items():
            if (method, beta) != reference:
                lead = (mean - ref).dropna()
                ax.plot(lead.index / ref.index.max(), lead.values, color=run_color(method, beta),
                        label=method_label(method, beta))
        ax.legend(ncol=2)
    axes[0][0].set_ylabel(f"batch reward − {method_label(reference[0])}")
    return fig


def plot_sft_selection(table):
    """Held-out one-hot cross-entropy against SFT epoch, one line per learning rate (epoch 0: the base)."""
    fig, ax = _figure(None)
    for lr, group in table.groupby("learning_rate"):
        ax.plot(group["epoch"], group["heldout_loss"], marker="o", ms=3, label=f"lr {lr:g}")
    ax.set_xlabel("SFT epoch")
    ax.set_ylabel("held-out cross-entropy (nats/token)")
    ax.legend()
    return fig


def plot_validation_curves(curves, *, highlight=(), ax=None):
    """Validation pass@1 against GRPO step, mean over seeds: one line per learning rate (selection
    runs, a ``learning_rate`` column) or per start (``method``, ``beta``).

    ``highlight``: the ``(method, beta)`` starts a comparison judges, drawn strongly with the
    min–max band over their seeds; the other starts are drawn faded, for context.
    """
    fig, ax = _figure(ax)
    by_lr = "learning_rate" in curves.columns
    strong = {(method, float(beta)) for method, beta in highlight}
    for key, group in curves.groupby("learning_rate" if by_lr else ["method", "beta"], sort=False):
        per_step = group.groupby("step")["val_pass@1"]
        mean = per_step.mean()
        if by_lr:
            ax.plot(mean.index, mean.values, marker="o", ms=2, label=f"lr {key:g}")
            continue
        style = {"label": method_label(*key), "color": run_color(*key)}
        if strong and (key[0], float(key[1])) not in strong:
            ax.plot(mean.index, mean.values, lw=0.8, alpha=0.3, **style)
            continue
        ax.plot(mean.index, mean.values, marker="o", ms=2, lw=1.8, zorder=3, **style)
        if strong:
            ax.fill_between(mean.index, per_step.min(), per_step.max(), color=style["color"], alpha=0.15, lw=0)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("validation pass@1")
    if strong:
        ax.set_title("the judged starts strong, band: min–max over seeds", fontsize=9)
    ax.legend(ncol=2)
    return fig


# ---------------------------------------------------------------------------------------------
# The real model (notebook 06)
# ---------------------------------------------------------------------------------------------


def plot_gold_mass(p_gold, table, *, beta_star: float, beta_max: float = 30.0):
    """Left: the base's probability of each expert token (histogram). Right: the GIFT target's
    mean gold mass against β (``evaluate.gold_mass_table``), β* and the official β = 20 marked."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6), layout="constrained")
    left.hist(np.asarray(p_gold, dtype=float), bins=40, range=(0, 1), color=METHOD_COLORS["base"])
    left.set_xlabel("base probability of the expert token")
    left.set_ylabel("tokens")
    finite = table[np.isfinite(table["beta"])]
    right.plot(finite["beta"], finite["target/gold_mass"], marker="o", ms=3, color=METHOD_COLORS["gift"])
    for beta, label in ((beta_star, f"β* = {beta_star:g}"), (20.0, "β = 20 (official)")):
        right.axvline(beta, color=beta_color(beta), ls="--", lw=1)
        right.text(beta, 0.04, label, transform=right.get_xaxis_transform(), rotation=90, fontsize=8, ha="right",
                   va="bottom")
    _symlog_beta(right, beta_max)
    right.set_ylim(min(0.5, float(finite["target/gold_mass"].min()) - 0.02), 1.005)
    right.set_xlabel("β")
    right.set_ylabel("mean target mass on the expert token")
    return fig


def plot_forest(parts: dict[int, list], reported: list | None = None, *, title: str = ""):
    """Each comparison of a claims table as a point (the difference) on its 95 % interval, one row
    per comparison, claims top to bottom; a dotted line at 0 and, per row, a dashed tick at the
    margin in the claimed direction (an interval below it is *not reproduced*). ``parts``: claim ->
    ``stats.Difference`` list (``claims.claim_parts``); ``reported``: reported-only comparisons,
    drawn grey under their claim (``claim -> Difference`` list)."""
    reported = reported or {}
    rows = [(claim, d, grey) for claim in parts for d, grey in
            [(d, False) for d in parts[claim]] + [(d, True) for d in reported.get(claim, [])]]
    fig, ax = plt.subplots(figsize=(6.4, 0.42 * len(rows) + 0.9))
    for y, (claim, d, grey) in enumerate(rows):
        color = METHOD_COLORS["base"] if grey else METHOD_COLORS["gift"]
        ax.plot([d.low, d.high], [y, y], color=color, lw=2.2, solid_capstyle="butt")
        ax.plot(d.estimate, y, "o", color=color, ms=5)
        if not grey:
            ax.plot([d.sign * d.margin] * 2, [y - 0.35, y + 0.35], color=METHOD_COLORS["sft"], lw=1.2, ls="--")
    ax.axvline(0.0, color=REFERENCE_COLOR, lw=0.9, ls=":")
    ax.set_yticks(range(len(rows)), [f"{claim} · {d.what}" for claim, d, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("GIFT − comparator (95 % interval); dashed: the margin in the claimed direction")
    if title:
        ax.set_title(title)
    return fig
