"""The selection rules of the full-fine-tuning protocol (``data/mini_ft/PROTOCOL.md`` §1, §3, §4).

Every choice here is made from runs that involve no GIFT-vs-SFT comparison: the SFT stage's
learning rate and epochs from plain SFT's held-out loss, the GRPO learning rate and step budget
from RL only (GRPO from the base), β* from the base alone. Selection runs are units like the
others (``units/select_sft/``, ``units/select_rl/``): cached, resumable, one thread each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from gift_lite.evaluate import gold_probs, suggest_beta
from gift_lite.mini import (INF, MiniSettings, load_policy, rl_start, run_base_unit, train_initialiser, train_rl,
                            worker_world)
from gift_lite.rl import budget, smoothed_curve, trapezoid_mean  # noqa: F401 (notebooks 02 and 04 call them here)
from gift_lite.units import check_unit_settings, one_thread, run_pool, unit_path
from gift_lite.results import write_csv
from gift_lite.world import World, expert_solution


@dataclass(frozen=True)
class SelectionSettings:
    """The grids and budgets of PROTOCOL.md §3-4 (smoke shrinks them)."""

    sft_learning_rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    sft_max_epochs: int = 20
    rl_learning_rates: tuple[float, ...] = (3e-5, 1e-4, 3e-4)
    rl_seeds: tuple[int, ...] = (0, 1)
    rl_max_steps: int = 400  # S_max
    rl_last_evals: int = 3  # evaluations averaged to rank learning rates
    min_rl_gain: float = 0.05  # stage check: RL only gains at least 5 points of validation pass@1
    base_pass1: tuple[float, float] = (0.05, 0.40)  # base check: ID test pass@1 range ...
    base_pass16: float = 0.40  # ... and the least ID pass@16
    base_ood_pass1: float = 0.0  # the least OOD pass@1 and pass@16 of the base (data/mini_conf: the OOD
    base_ood_pass16: float = 0.0  # family must be one the base can solve); 0: no OOD check (data/mini_ft)
    enforce: bool = True  # stage checks and "preset = selection" stop the notebook (smoke: only reported)


def require(ok: bool, message: str, selection: SelectionSettings) -> str:
    """Raise ``AssertionError(message)`` unless ``ok`` or ``selection.enforce`` is off; returns a
    one-line status for the notebook either way."""
    if not ok and selection.enforce:
        raise AssertionError(message)
    return f"{'ok' if ok else 'FAILED (not enforced at this preset)'}: {message}"


# The settings that selection chooses: selection units are guarded on everything else.
SELECTED = ("workers", "decisive_beta", "init.learning_rate", "init.num_train_epochs", "rl.learning_rate",
            "rl.max_steps")


def selection_dir(data_dir: Path) -> Path:
    """Where selection units live (``<data_dir>/selection``): apart from the main units, whose
    settings include the selected values."""
    return Path(data_dir) / "selection"


def evaluate_base(world: World, settings: MiniSettings, base_dir: Path, data_dir: Path) -> pd.DataFrame:
    """The base unit of the selection folder (for the base check, before any choice is made)."""
    return one_thread(run_base_unit, world, settings, base_dir, selection_dir(data_dir), SELECTED)


# -- β* -----------------------------------------------------------------------------------------
def beta_star(base_dir: Path, world: World, grid: tuple[float, ...]) -> tuple[float, float]:
    """``suggest_beta`` from the base's gold-token probabilities on the SFT data, and the finite
    grid point nearest to it in log β: ``(suggested, chosen)``. ``suggested`` is rounded to 4
    significant digits: the float32 forward pass differs in its last bits from one CPU to another
    (a replay changed the 9th digit), and the result files must not."""
    model, tokenizer = load_policy(base_dir)
    p = gold_probs(model, tokenizer, [q.prompt for q in world.sft], [expert_solution(q) for q in world.sft])
    suggested = float(f"{suggest_beta(p):.4g}")
    finite = [b for b in grid if b != INF]
    return suggested, min(finite, key=lambda b: abs(math.log(b) - math.log(suggested)))


# -- units --------------------------------------------------------------------------------------
def _lr_key(prefix: str, learning_rate: float, seed: int | None = None) -> str:
    return f"{prefix}_lr{learning_rate:g}" + ("" if seed is None else f"_seed{seed}")


def sft_selection_unit(settings: MiniSettings, selection: SelectionSettings, base_dir: Path, data_dir: Path,
                       learning_rate: float) -> pd.DataFrame:
    """Plain SFT at ``learning_rate`` for ``sft_max_epochs``: held-out loss per epoch (0: the base)."""
    path = unit_path(selection_dir(data_dir), "select_sft", _lr_key("sft", learning_rate))
    if path.exists():
        return pd.read_csv(path)
    check_unit_settings(selection_dir(data_dir), settings, ignore=SELECTED)
    init = replace(settings.init, learning_rate=learning_rate, num_train_epochs=selection.sft_max_epochs)
    world = worker_world(settings.world)
    stats = one_thread(train_initialiser, world, settings, base_dir, "sft", INF, 0, None,
                       init=init, eval_split="val")
    frame = pd.DataFrame(stats["log"]).rename(columns={"eval/loss": "heldout_loss"})
    frame.insert(0, "learning_rate", learning_rate)
    write_csv(path, frame)
    return frame


def rl_selection_unit(settings: MiniSettings, selection: SelectionSettings, base_dir: Path, data_dir: Path,
                      learning_rate: float, seed: int) -> pd.DataFrame:
    """GRPO from the base at ``learning_rate`` for ``rl_max_steps``: its validation curve."""
    path = unit_path(selection_dir(data_dir), "select_rl", _lr_key("rl_only", learning_rate, seed))
    if path.exists():
        return pd.read_csv(path)
    check_unit_settings(selection_dir(data_dir), settings, ignore=SELECTED)
    world = worker_world(settings.world)

    def run():
        policy, tokenizer = rl_start(world, settings, base_dir, data_dir, "rl_only", INF, seed)
        rl = replace(settings.rl, learning_rate=learning_rate, max_steps=selection.rl_max_steps)
        return train_rl(world, settings, policy, tokenizer, seed, rl)

    curve, validation, _ = one_thread(run)
    validation.insert(0, "seed", seed)
    validation.insert(0, "learning_rate", learning_rate)
    validation["reward"] = validation["step"].map(curve.set_index("step")["reward"]).astype(float)
    write_csv(path, validation)
    return validation


def run_sft_selection(settings, selection, base_dir, data_dir, learning_rates, *, progress=True) -> pd.DataFrame:
    jobs = [(settings, selection, base_dir, data_dir, lr) for lr in learning_rates]
    run_pool(sft_selection_unit, jobs, settings.workers, desc="SFT selection", progress=progress)
    return pd.concat([sft_selection_unit(*job) for job in jobs], ignore_index=True)


def run_rl_selection(settings, selection, base_dir, data_dir, learning_rates, *, progress=True) -> pd.DataFrame:
    jobs = [(settings, selection, base_dir, data_dir, lr, s) for lr in learning_rates for s in selection.rl_seeds]
    run_pool(rl_selection_unit, jobs, settings.workers, desc="RL selection", progress=progress)
    return pd.concat([rl_selection_unit(*job) for job in jobs], ignore_index=True)


def select_sft(settings, selection, base_dir, data_dir, *, progress=True) -> tuple[pd.DataFrame, float, int, tuple]:
    """PROTOCOL.md §3: plain SFT over the grid, extended once past an end if chosen there.
    Returns the held-out loss table, the chosen learning rate and epochs, and the grid run."""
    grid = tuple(selection.sft_learning_rates)
    table = run_sft_selection(settings, selection, base_dir, data_dir, grid, progress=progress)
    lr, epochs = pick_sft(table)
    beyond = extension(grid, lr)
    if beyond is not None:
        grid = tuple(sorted(grid + (beyond,)))
        table = run_sft_selection(settings, selection, base_dir, data_dir, grid, progress=progress)
        lr, epochs = pick_sft(table)
    return table, lr, epochs, grid


def select_rl(settings, selection, base_dir, data_dir, *, progress=True) -> tuple[pd.DataFrame, float, tuple]:
    """PROTOCOL.md §4: RL only over the learning-rate grid, extended once past an end if chosen
    there. Returns the validation table, the chosen learning rate and the grid run."""
    grid = tuple(selection.rl_learning_rates)
    table = run_rl_selection(settings, selection, base_dir, data_dir, grid, progress=progress)
    lr = pick_rl_lr(table, selection.rl_last_evals)
    beyond = extension(grid, lr)
    if beyond is not None:
        grid = tuple(sorted(grid + (beyond,)))
        table = run_rl_selection(settings, selection, base_dir, data_dir, grid, progress=progress)
        lr = pick_rl_lr(table, selection.rl_last_evals)
    return table, lr, grid


# -- rules --------------------------------------------------------------------------------------
def ladder_step(learning_rate: float, direction: int) -> float:
    """The next value of the 1-3-10 ladder above (``direction`` +1) or below (-1) ``learning_rate``,
    about x sqrt(10) away: 1e-4 -> 3e-4 -> 1e-3, and down 1e-4 -> 3e-5 -> 1e-5."""
    exponent = math.floor(math.log10(learning_rate) + 1e-9)
    mantissa = round(learning_rate / 10 ** exponent)
    if mantissa not in (1, 3):
        raise ValueError(f"learning_rate={learning_rate:g} is not on the 1-3-10 ladder")
    if direction > 0:
        return float(f"{3 * 10 ** exponent if mantissa == 1 else 10 ** (exponent + 1):g}")
    return float(f"{10 ** exponent if mantissa == 3 else 3 * 10 ** (exponent - 1):g}")


def extension(grid: tuple[float, ...], chosen: float) -> float | None:
    """The learning rate one ladder step beyond ``chosen`` if it is an end of ``grid``, else None
    (a grid of one value, as smoke uses, is never extended)."""
    grid = sorted(grid)
    if len(grid) < 2:
        return None
    if chosen == grid[0]:
        return ladder_step(grid[0], -1)
    if chosen == grid[-1]:
        return ladder_step(grid[-1], +1)
    return None


def pick_sft(table: pd.DataFrame) -> tuple[float, int]:
    """(learning rate, epochs) with the lowest held-out loss; ties: fewer epochs, then smaller lr."""
    trained = table[table["epoch"] > 0].sort_values(["heldout_loss", "epoch", "learning_rate"])
    best = trained.iloc[0]
    return float(best["learning_rate"]), int(best["epoch"])


def pick_rl_lr(table: pd.DataFrame, last: int) -> float:
    """The learning rate with the highest seed-mean validation pass@1 over its last ``last`` evaluations."""
    steps = sorted(table["step"].unique())[-last:]
    scores = table[table["step"].isin(steps)].groupby("learning_rate")["val_pass@1"].mean()
    return float(scores.idxmax())


def rl_gain(curve: pd.DataFrame, step: int) -> float:
    """Smoothed validation pass@1 at ``step`` minus the (unsmoothed) value at step 0."""
    at = curve.set_index("step")
    return float(at.loc[step, "smoothed"] - at.loc[0, "mean"])


def base_check(base_rows: pd.DataFrame, selection: SelectionSettings, k: int = 16) -> dict:
    """The base check of PROTOCOL.md §1 on the base unit's rows (``k``: the large k, 16): ID pass@1
    in range and ID pass@k above its floor; with OOD floors set, OOD pass@1 and pass@k above them."""
    value = base_rows[base_rows["split"] == "id"].set_index("metric")["value"]
    ood = base_rows[base_rows["split"] == "ood"].set_index("metric")["value"]
    low, high = selection.base_pass1
    passes = (low <= value["pass@1"] <= high and value[f"pass@{k}"] >= selection.base_pass16
              and ood["pass@1"] >= selection.base_ood_pass1 and ood[f"pass@{k}"] >= selection.base_ood_pass16)
    return {"id/pass@1": float(value["pass@1"]), "id/pass@k": float(value[f"pass@{k}"]),
            "ood/pass@1": float(ood["pass@1"]), "ood/pass@k": float(ood[f"pass@{k}"]), "passes": bool(passes)}


def prompt_passes(steps: int, prompts_per_step: int, n_prompts: int) -> float:
    """How many times each RL prompt is seen on average."""
    return steps * prompts_per_step / n_prompts


# -- power (data/mini_conf/PROTOCOL.md §6) ----------------------------------------------------------
POWER_PAIRS = (  # (name, start A, start B): the pilot's decisive comparisons after RL, ID test pass@1
    ("gift_vs_sft", ("gift", 1.0), ("sft", INF)),
    ("gift_vs_rl_only", ("gift", 1.0), ("rl_only", INF)),
)


def power_analysis(pilot_dir: Path, seeds: tuple[int, ...], problems: tuple[int, ...], *,
                   grid_seeds: int = 3, num_samples: int = 16) -> pd.DataFrame:
    """Projected standard error and smallest detectable difference (2.8 SE) of the random-effects
    interval (``stats.random_effects_difference``) for the pilot's decisive comparisons, at each
    number of seeds per start and of test problems.

    The variance components are estimated from the pilot's per-problem counts after RL
    (``units/rl_problems/``, ID test) by ``stats.variance_components``. Rows with ``seeds_a =
    grid_seeds`` project a start of the β grid (3 seeds) against a decisive start (claim 4 when
    β̂ is not β*).
    """
    from gift_lite.stats import DETECTABLE, problem_scores, projected_se, variance_components
    from gift_lite.units import collect_counts

    counts, _ = collect_counts(pilot_dir)
    after = counts[(counts["stage"] == "rl") & (counts["split"] == "id")]

    def table(method, beta):
        return problem_scores(after[(after["method"] == method) & (after["beta"] == beta)], num_samples)

    rows = []
    for name, a, b in POWER_PAIRS:
        c = variance_components(table(*a), table(*b))
        for n in seeds:
            for n_a in (n, grid_seeds):
                for p in problems:
                    se = projected_se(c, n_a, p, n)
                    rows.append({"comparison": name, "seeds_a": n_a, "seeds_b": n, "problems": p,
                                 "se": se, "detectable": DETECTABLE * se,
                                 **{f"pilot_{k}": v for k, v in c.items()}})
    return pd.DataFrame(rows).drop_duplicates(["comparison", "seeds_a", "seeds_b", "problems"]).reset_index(drop=True)
