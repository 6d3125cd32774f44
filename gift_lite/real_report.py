"""What notebook 06 shows of a real-model run: seed-mean tables, the run's sources, takeaways.

Everything here reads the run's long results table (``units.collect`` of its units), the
claim-1 table (``claims.claim1_table``) and, for the arith protocol, the per-problem counts
(``claims.ProtocolData``); nothing trains or loads a model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from gift_lite import smollm2
from gift_lite.claims import (ProtocolData, Rule, claim1_parts, claim_parts, real_arith_rule, verdict_rows,
                              verdict_summary)
from gift_lite.repro import repo_root
from gift_lite.units import collect, collect_counts, unit_key, unit_path

INF = math.inf


def _label(method: str, beta: float) -> str:
    return f"gift β={beta:g}" if method == "gift" else method


def summary_table(frame: pd.DataFrame, split_metrics: list[str], plain_metrics: list[str]) -> pd.DataFrame:
    """One row per (stage, method, β): each metric's seed mean, with ``± std`` over seeds when
    there are several. ``split_metrics`` get one column per split (``id pass@1``), the others one."""
    rows = []
    for (stage, method, beta), group in frame.groupby(["stage", "method", "beta"], sort=False):
        row = {"stage": stage, "start": _label(method, beta), "seeds": group["seed"].nunique()}
        for metric in split_metrics + plain_metrics:
            picked = group[group["metric"] == metric]
            for split, values in picked.groupby("split"):
                name = f"{split} {metric}" if split else metric
                per_seed = values.groupby("seed")["value"].mean()
                text = f"{per_seed.mean():.3f}"
                row[name] = text + (f" ± {per_seed.std():.3f}" if len(per_seed) > 1 else "")
        rows.append(row)
    return pd.DataFrame(rows).set_index(["stage", "start"]).fillna("")


def model_source(settings) -> dict:
    """What the run's model and data are, for its run JSON: model, licence, package and version,
    precision, and the data generator and its version when the rows were generated into the
    repository with a ``generate_run.json`` beside them (GSM-Symbolic's, the arithmetic tasks')."""
    source = {"model": settings.model, "precision": "nf4" if settings.four_bit else "compute dtype"}
    if settings.model == smollm2.FOLDER:
        source = {**smollm2.SOURCE, "lora_base_precision": "nf4" if settings.four_bit else "fp32"}
    folder = Path(str(settings.sft_data)).parent  # "." for a hub dataset's name
    record = repo_root() / folder / "generate_run.json"
    if folder != Path(".") and record.is_file():
        generated = json.loads(record.read_text())
        source["data"] = {"generator": generated["generator"], "licence": generated["licence"],
                          "seed": generated["config"]["seed"], "command": generated["command"]}
    return source


def _mean(results: pd.DataFrame, stage: str, method: str, beta: float, metric: str, split: str = "") -> float:
    rows = results[(results.stage == stage) & (results.method == method) & (results.beta == beta)
                   & (results.metric == metric) & (results.split == split)]
    return float(rows["value"].mean()) if len(rows) else math.nan


def _at(beta_table: pd.DataFrame, beta: float) -> float:
    """The mean gold mass at ``beta``, from the table's row or, between rows, by the closed form."""
    rows = beta_table[beta_table["beta"] == beta]
    return float(rows["target/gold_mass"].iloc[0]) if len(rows) else math.nan


def takeaways(results: pd.DataFrame, curves: pd.DataFrame, claim1: pd.DataFrame | None, settings,
              beta_table: pd.DataFrame | None) -> list[str]:
    """Two to five sentences written from the run's numbers (none from the paper)."""
    lines, star, k = [], settings.beta, max(settings.eval.ks)
    if beta_table is not None:
        at = beta_table.set_index("beta")
        m20, low20 = at.loc[20.0, "target/gold_mass"], at.loc[20.0, "min_gold_mass"]
        verdict = ("so there GIFT is SFT in all but name" if low20 >= 0.99 else
                   "so the official default still differs from SFT on some tokens")
        lines.append(f"On this model's expert text the base gives the expert token {at.loc[0.0, 'target/gold_mass']:.2f} "
                     f"on average; GIFT's target puts {m20:.4f} on it at the official β = 20 (lowest token "
                     f"{low20:.3f}), {verdict}; at β* = {star:g} it puts {_at(beta_table, star):.3f}.")
    starts = [("base", "base", 0.0), ("init", "sft", INF), ("init", "gift", star)]
    for split in ("id", "ood"):
        values = [_mean(results, s, m, b, "pass@1", split) for s, m, b in starts]
        wide = [_mean(results, s, m, b, f"pass@{k}", split) for s, m, b in starts]
        if not any(math.isnan(v) for v in values + wide):
            lines.append(f"{split.upper()} test before RL, base / SFT / GIFT β={star:g}: pass@1 "
                         f"{values[0]:.3f} / {values[1]:.3f} / {values[2]:.3f}, pass@{k} "
                         f"{wide[0]:.3f} / {wide[1]:.3f} / {wide[2]:.3f}.")
    if claim1 is not None:
        decisive = claim1[claim1.beta == star]
        parts = "; ".join(f"{r.comparison} {r.diff:+.3f} [{r.low:+.3f}, {r.high:+.3f}]" for r in decisive.itertuples())
        lines.append(f"Claim 1 (GIFT β={star:g} vs SFT, before RL): {decisive['verdict'].iloc[0]} ({parts}).")
    for (method, beta), group in curves.groupby(["method", "beta"], sort=False):
        reward = group.groupby("step")["reward"].mean()
        n = max(1, len(reward) // 4)
        lines.append(f"GRPO from {_label(method, beta)}: batch reward {reward.iloc[:n].mean():.3f} over the first "
                     f"{n} steps, {reward.iloc[-n:].mean():.3f} over the last {n}; ID pass@1 after RL "
                     f"{_mean(results, 'rl', method, beta, 'pass@1', 'id'):.3f}.")
    return lines


# -- the arith protocol (data/real_arith/PROTOCOL.md): its section of notebook 06 ----------------------
def grid_progress(settings, data_dir: Path) -> pd.DataFrame:
    """Every unit of the grid in run order (initialisers, then GRPO), and whether its file exists."""
    units = [("init", *u) for u in settings.init_units()] + [("rl", *u) for u in settings.rl_units()]
    return pd.DataFrame([{"stage": stage, "unit": unit_key(m, b, s),
                          "done": unit_path(data_dir, stage, unit_key(m, b, s)).exists()} for stage, m, b, s in units])


def missing_units(progress: pd.DataFrame) -> list[str]:
    """``grid_progress``'s units still to compute, as ``stage/unit`` in run order."""
    waiting = progress.loc[~progress["done"]]
    return (waiting["stage"] + "/" + waiting["unit"]).tolist()


def before_rl(method: str, beta: float) -> tuple[str, float, str]:
    """What GRPO from ``(method, beta)`` starts from, as ``(method, beta, stage)``: RL only starts
    from the base, every other start from its initialiser."""
    return ("base", 0.0, "base") if method == "rl_only" else (method, beta, "init")


def rl_gains(data: ProtocolData, starts: list[tuple[str, float]], rule: Rule, split: str = "id") -> pd.DataFrame:
    """Does RL learn? For each start, ``split`` pass@1 after RL minus before (``before_rl``) with
    ``rule``'s interval: RL has learned from a start when the lower end is above 0, that is when the
    gain exceeds the interval's half-width (PROTOCOL.md §5)."""
    rows = []
    for method, beta in starts:
        after = data.scores(method, beta, "rl", split)
        d = rule.paired(after, data.scores(*before_rl(method, beta), split), what=f"{_label(method, beta)}: rl - start",
                        sign=1, margin=0.0)
        rows.append({"start": _label(method, beta), "seeds": after.shape[1], "before": d.b, "after": d.a,
                     "gain": d.estimate, "low": d.low, "high": d.high, "half_width": (d.high - d.low) / 2,
                     "learned": d.low > 0})
    return pd.DataFrame(rows)


def task_families(counts: pd.DataFrame) -> dict[str, str]:
    """Each task family of the base's per-problem counts (a problem id is ``<family>-<n>``) and its
    split, in the order the tests were evaluated."""
    base = counts[counts["stage"] == "base"]
    families = base["problem_id"].str.rsplit("-", n=1).str[0]
    return dict(zip(families, base["split"]))


def family_changes(data: ProtocolData, starts: list[tuple[str, float]], families: dict[str, str],
                   rule: Rule) -> pd.DataFrame:
    """Each start's pass@1 on each task family (``families``: family -> split), before RL (the
    initialisers) and after, minus the base's, with ``rule``'s interval: forgetting below 0,
    transfer above; reported without a verdict (PROTOCOL.md §5, claim 3)."""
    rows = []
    for family, split in families.items():
        base = data.scores("base", 0.0, "base", split, family=family)
        units = [(m, b, "init") for m, b in starts if m != "rl_only"] + [(m, b, "rl") for m, b in starts]
        for method, beta, stage in units:
            d = rule.paired(data.scores(method, beta, stage, split, family=family), base,
                            what=f"{family}: {_label(method, beta)} ({stage}) - base", sign=1, margin=0.0)
            rows.append({"family": family, "split": split, "stage": stage, "start": _label(method, beta),
                         "pass@1": d.a, "base": d.b, "diff": d.estimate, "low": d.low, "high": d.high})
    return pd.DataFrame(rows)


def wall_times(results: pd.DataFrame, sft_select: pd.DataFrame | None) -> pd.DataFrame:
    """Each unit's recorded wall time (``perf/unit_wall_s``; SFT's selection unit: its training with
    the held-out NLL, ``wall_s``) and the checkpoint it resumed from: what a fresh recompute of the
    grid costs on this machine. Units that recorded none (computed before units did) are left out."""
    wall = results[results["metric"] == "perf/unit_wall_s"]
    resumed = results[results["metric"] == "perf/unit_resumed_at_step"].set_index(["stage", "method", "beta", "seed"])
    rows = [{"stage": "sft_select", "unit": unit_key("sft", INF, 0), "wall_s": float(sft_select["wall_s"].iloc[0]),
             "resumed_at_step": 0}] if sft_select is not None else []
    for r in wall.itertuples():
        rows.append({"stage": r.stage, "unit": unit_key(r.method, r.beta, r.seed), "wall_s": float(r.value),
                     "resumed_at_step": int(resumed.loc[(r.stage, r.method, r.beta, r.seed), "value"])})
    return pd.DataFrame(rows, columns=["stage", "unit", "wall_s", "resumed_at_step"])


def protocol_report(settings, data_dir: Path, constant_guess: dict[str, float], *, k_large: int,
                    n_boot: int | None = None) -> dict:
    """Everything notebook 06 shows of a run with a selection stage, read from its committed units
    (nothing is trained): the selection (``choices``, ``base_check``, the expert tokens' base
    probabilities ``p_gold`` and their ``beta_table``, ``sft_select``, ``rl_select``), the grid's
    ``progress``, its ``results`` (the selection's base unit included), reward ``curves``, validation
    curves ``val`` and the units' ``wall`` times; once every initialiser is in, ``claim1``; once every
    unit is in, the four claims (``claims``, ``parts``, ``before``, ``peak``), RL's ``gains`` and each
    task family's ``changes``. A part whose units are missing is None. ``constant_guess``: each
    test's constant-guess accuracy."""
    import torch

    from gift_lite.evaluate import gold_mass_table
    from gift_lite.real_selection import base_check, choices, selection_dir

    sel = selection_dir(data_dir)

    def unit(stage, key, **read):
        path = unit_path(sel, stage, key)
        return pd.read_csv(path, **read) if path.exists() else None

    out = {"choices": choices(settings, data_dir), "progress": grid_progress(settings, data_dir)}
    base = unit("base", "base", keep_default_na=False)
    out["base_check"] = None if base is None else base_check(base, constant_guess)
    gold = unit("beta", "gold_probs")
    out["p_gold"] = None if gold is None else torch.tensor(gold["p_gold"].to_numpy())
    out["beta_table"] = None if gold is None else gold_mass_table(
        out["p_gold"], sorted({0.0, 1.0, 2.0, 4.0, 8.0, 20.0, INF, settings.beta}))
    out["sft_select"] = unit("sft_select", unit_key("sft", INF, 0))
    out["rl_select"] = unit("rl_select", unit_key("rl_only", INF, 0))
    results, out["curves"] = collect(data_dir)
    out["val"] = collect(data_dir, "rl_val")[1]
    counts, val_counts = collect_counts(data_dir)
    out["results"] = pd.concat([base, results], ignore_index=True) if base is not None else results
    out["wall"] = wall_times(out["results"], out["sft_select"])
    if base is not None:
        counts = pd.concat([unit("base_problems", "base", keep_default_na=False).assign(stage="base"), counts],
                           ignore_index=True)
    data = ProtocolData(out["results"], counts, val_counts, num_samples=settings.eval.num_samples,
                        curve_samples=settings.select.curve_samples)
    rule = real_arith_rule(n_boot)
    progress = out["progress"]
    out.update(claim1=None, claims=None, parts=None, before=None, peak=None, gains=None, changes=None)
    if base is not None and progress.loc[progress["stage"] == "init", "done"].all():
        out["claim1"] = verdict_rows({1: claim1_parts(data, settings.beta, k_large=k_large, rule=rule)}, None)
    if base is not None and progress["done"].all():
        betas = tuple(b for m, b in settings.rl_runs if m == "gift")
        out["parts"], out["before"], out["peak"] = claim_parts(data, settings.beta, betas, rule=rule, k_large=k_large)
        out["claims"] = verdict_rows(out["parts"], out["before"])
        starts = list(dict.fromkeys((m, b) for m, b, _ in settings.rl_units()))
        out["gains"] = rl_gains(data, starts, rule)
        out["changes"] = family_changes(data, starts, task_families(counts), rule)
    return out


def protocol_takeaways(run: dict, settings) -> list[str]:
    """Sentences written from ``protocol_report``'s numbers (none from the paper), as far as the
    committed units go."""
    lines, chosen, progress = [], run["choices"], run["progress"]
    check = run["base_check"]
    if check is not None:
        tests = ", ".join(f"{r['test']} {r['pass@1']:.3f} (constant guess {r['constant_guess']:.3f})"
                          for _, r in check.iterrows())
        lines.append(f"The base's pass@1 (T = 0.6): {tests}; the base check "
                     f"{'passes' if check['passes'].all() else 'fails'}.")
    if run["beta_table"] is not None:
        at = run["beta_table"].set_index("beta")["target/gold_mass"]
        lines.append(f"The base gives the expert tokens {at.loc[0.0]:.3f} on average; β* = {chosen['beta_star']:g} "
                     f"puts {at.loc[settings.beta]:.3f} on them, β = 8 {at.loc[8.0]:.3f}, β = 20 {at.loc[20.0]:.4f}.")
    if run["sft_select"] is not None:
        nll = run["sft_select"].set_index("epoch")["heldout_nll"]
        lines.append(f"SFT's budget: {chosen['epochs']} epochs (held-out NLL {nll.iloc[0]:.3f} before, "
                     f"{nll.loc[chosen['epochs']]:.3f} after).")
    if run["rl_select"] is not None:
        curve = run["rl_select"].set_index("step")["val_pass@1"]
        lines.append(f"GRPO's budget: {chosen['steps']} steps (RL only's validation pass@1 {curve.iloc[0]:.3f} at "
                     f"step 0, {curve.loc[chosen['steps']]:.3f} at step {chosen['steps']}, "
                     f"{curve.iloc[-1]:.3f} at step {curve.index[-1]}).")
    if not progress["done"].all():
        lines.append(f"The grid has {int(progress['done'].sum())} of {len(progress)} units; "
                     f"still to compute: {', '.join(missing_units(progress))}.")
    if run["gains"] is not None:
        learned = run["gains"][run["gains"]["learned"]]["start"].tolist()
        lines.append(f"RL learned (ID pass@1 after minus before, interval above 0) from {len(learned)} of "
                     f"{len(run['gains'])} starts" + (f": {', '.join(learned)}." if learned else "."))
    judged = run["claims"] if run["claims"] is not None else run["claim1"]
    if judged is not None:
        for claim, row in verdict_summary(judged).iterrows():
            lines.append(f"Claim {claim}: {row['verdict']} ({row['evidence']}).")
    return lines
