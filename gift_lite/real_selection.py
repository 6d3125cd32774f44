"""A real-model protocol's selection stage: the budgets chosen before its grid (``RealSettings.select``).

Before any initialiser of the grid is trained, in its own folder (``<run>/selection/``):

1. ``beta``: the base's probability of every expert token of the SFT rows (β\\* = ``suggest_beta``);
2. ``base``: the untouched base on every test (the protocol's base check);
3. ``sft_select``: SFT trained for ``max_epochs``, the held-out expert text's NLL after each epoch;
   the epochs with the lowest NLL are SFT's budget, and every initialiser's (``pick_epochs``);
4. ``rl_select``: GRPO from the base (RL only) for ``rl_max_steps``, validation pass@1 every
   ``curve_every`` steps; the step budget is the miniature's rule on that curve (``protocol.budget``).

Nothing here compares GIFT with SFT: the budgets come from SFT's held-out loss and RL only's curve.
The selection folder's settings guard leaves out what it chooses (``SELECTED_FIELDS``), so the
grid's preset, once it holds the chosen values, still matches it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from transformers import TrainerCallback

from gift_lite.data import load_benchmark
from gift_lite.evaluate import gold_probs, suggest_beta
from gift_lite.real import run_base_unit, run_beta_unit, train_grpo, train_initialiser, validation_curve
from gift_lite.real_data import RealData, filter_by_length, load_tokenizer, resolve_model, with_chat_template
from gift_lite.real_settings import INF, PER_UNIT_FIELDS, SELECTED_FIELDS, RealSettings, resolve_source
from gift_lite.results import write_csv
from gift_lite.rl import budget, reward_curve, smoothed_curve
from gift_lite.units import adapter_dir, check_unit_settings, unit_key, unit_path

IGNORED = PER_UNIT_FIELDS + SELECTED_FIELDS
# The base check (data/real_arith/PROTOCOL.md §3.2): the run goes on only if the base's ID pass@1
# lies in this range and each OOD test's pass@1 is at least BASE_OOD_MIN.
BASE_ID_RANGE, BASE_OOD_MIN = (0.05, 0.60), 0.05


def selection_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "selection"


def heldout_nll(model, tokenizer, rows: list[dict]) -> float:
    """Mean negative log-probability per token (EOS included) of the expert completions of ``rows``."""
    probs = torch.cat([gold_probs(model, tokenizer, [r["prompt"]], [r["completion"]], batch_size=1) for r in rows])
    return float(-torch.log(probs.clamp_min(1e-300)).mean())


class HeldOutNLL(TrainerCallback):
    """``heldout_nll`` before training (epoch 0) and at the end of every epoch."""

    def __init__(self, tokenizer, rows: list[dict]):
        self.tokenizer, self.expert, self.rows = tokenizer, rows, []

    def _record(self, model, epoch: int, step: int) -> None:
        training = model.training
        model.eval()
        with torch.no_grad():
            self.rows.append({"epoch": epoch, "step": step, "heldout_nll": heldout_nll(model, self.tokenizer,
                                                                                     self.expert)})
        model.train(training)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(model, 0, 0)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self._record(model, round(state.epoch), state.global_step)


def pick_epochs(table: pd.DataFrame) -> int:
    """The epochs (>= 1) with the lowest held-out NLL; a tie goes to fewer epochs."""
    trained = table[table["epoch"] >= 1].sort_values("epoch")
    return int(trained.loc[trained["heldout_nll"].idxmin(), "epoch"])


def pick_steps(table: pd.DataFrame, n_samples: int, cap: int) -> int:
    """The miniature's GRPO budget rule (``protocol.budget``) on RL only's validation curve."""
    return budget(smoothed_curve(table.assign(learning_rate=0.0), 0.0), n_samples, cap)


def base_check(base: pd.DataFrame, constant_guess: dict[str, float]) -> pd.DataFrame:
    """The base check, one row per test of the base unit's rows (``run_base_unit``): its pass@1,
    truncated share, constant-guess accuracy (``constant_guess``: test -> accuracy), the bound it
    must meet and whether it does."""
    rows = []
    for metric in (m for m in base["metric"] if "/" in m and m.endswith("/pass@1")):  # the tests in file order
        test = metric.split("/")[0]
        picked = base[base["metric"].str.startswith(test + "/")].set_index("metric")
        split, value = picked.loc[metric, "split"], float(picked.loc[metric, "value"])
        low, high = BASE_ID_RANGE if split == "id" else (BASE_OOD_MIN, 1.0)
        rows.append({"test": test, "split": split, "pass@1": value,
                     "truncated": float(picked.loc[f"{test}/truncated", "value"]),
                     "constant_guess": constant_guess.get(test, math.nan),
                     "bound": f"[{low:g}, {high:g}]", "passes": low <= value <= high})
    return pd.DataFrame(rows)


def beta_star(gold: pd.DataFrame) -> float:
    """``suggest_beta`` on the base's expert-token probabilities, rounded to two significant figures."""
    value = suggest_beta(torch.tensor(gold["p_gold"].to_numpy()))
    return float(f"{value:.2g}")


def _finished(settings: RealSettings, sel_dir: Path, stage: str, key: str) -> tuple[Path, pd.DataFrame | None]:
    """A selection unit's file, and its rows if it is already computed (after the folder's settings guard)."""
    check_unit_settings(sel_dir, settings, ignore=IGNORED)
    path = unit_path(sel_dir, stage, key)
    return path, (pd.read_csv(path) if path.exists() else None)


def run_sft_selection(settings: RealSettings, model_path: str, data: RealData, sel_dir: Path,
                      seed: int = 0) -> pd.DataFrame:
    """SFT for ``select.max_epochs`` epochs with the held-out NLL after each (``units/sft_select/``)."""
    key = unit_key("sft", INF, seed)
    path, done = _finished(settings, sel_dir, "sft_select", key)
    if done is not None:
        return done
    tokenizer = load_tokenizer(model_path)
    data = with_chat_template(data, tokenizer, settings.chat_template)
    rows = filter_by_length(data.sft, tokenizer, settings.init.max_length)[0]
    long = replace(settings, method="sft", init=replace(settings.init, num_train_epochs=float(settings.select.max_epochs)))
    callback = HeldOutNLL(tokenizer, data.expert)
    stats = train_initialiser(long, model_path, rows, seed, adapter_dir(sel_dir, "sft_select", key),
                              callbacks=[callback])
    frame = pd.DataFrame(callback.rows).assign(seed=seed, wall_s=stats["wall_s"])
    write_csv(path, frame)
    return frame


def run_rl_selection(settings: RealSettings, model_path: str, data: RealData, sel_dir: Path,
                     seed: int = 0) -> pd.DataFrame:
    """RL only for ``select.rl_max_steps`` steps with its validation curve (``units/rl_select/``)."""
    key = unit_key("rl_only", INF, seed)
    path, done = _finished(settings, sel_dir, "rl_select", key)
    if done is not None:
        return done
    long = replace(settings, method="rl_only", rl=replace(settings.rl, max_steps=settings.select.rl_max_steps))
    callback = validation_curve(settings, model_path, sel_dir, "rl_select", key, seed)
    trainer = train_grpo(long, model_path, data, sel_dir, seed, "rl_only", key, stage="rl_select",
                         callbacks=[callback])[0]
    write_csv(unit_path(sel_dir, "rl_select_curves", key), reward_curve(trainer).assign(seed=seed))
    write_csv(unit_path(sel_dir, "rl_select_problems", key), pd.DataFrame(callback.counts).assign(seed=seed))
    frame = pd.DataFrame(callback.rows).assign(seed=seed)
    write_csv(path, frame)
    return frame


def choices(settings: RealSettings, data_dir: Path) -> dict:
    """What the committed selection units choose: β\\*, SFT's epochs and GRPO's steps (``None`` where
    a unit is missing)."""
    sel = selection_dir(data_dir)
    out = {"beta_star": None, "epochs": None, "steps": None}
    beta = unit_path(sel, "beta", "gold_probs")
    if beta.exists():
        out["beta_star"] = beta_star(pd.read_csv(beta))
    sft = unit_path(sel, "sft_select", unit_key("sft", INF, 0))
    if sft.exists():
        out["epochs"] = pick_epochs(pd.read_csv(sft))
    rl = unit_path(sel, "rl_select", unit_key("rl_only", INF, 0))
    if rl.exists():
        n = len(load_benchmark(resolve_source(settings.select.validation_data))) * settings.select.curve_samples
        out["steps"] = pick_steps(pd.read_csv(rl), n, settings.select.rl_max_steps)
    return out


def run_selection(settings: RealSettings, data: RealData, data_dir: Path) -> dict:
    """Every selection unit not yet computed, in order; returns ``choices``."""
    if settings.select is None:
        raise ValueError(f"settings.select is None: the run in {Path(data_dir).name} has no selection stage")
    sel = selection_dir(data_dir)
    model_path = resolve_model(settings, sel)
    for step in (run_beta_unit, run_base_unit):
        step(settings, model_path, data, sel, ignore=IGNORED)
    run_sft_selection(settings, model_path, data, sel)
    run_rl_selection(settings, model_path, data, sel)
    return choices(settings, data_dir)


def check_preset(settings: RealSettings, data_dir: Path) -> list[str]:
    """How the preset differs from the committed selection (empty when it holds every choice)."""
    chosen = choices(settings, data_dir)
    held = {"beta_star": settings.beta, "epochs": settings.init.num_train_epochs, "steps": settings.rl.max_steps}
    return [f"{name}: preset {held[name]!r}, selection {value!r}" for name, value in chosen.items()
            if value is not None and not math.isclose(float(held[name]), float(value))]
