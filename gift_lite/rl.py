"""GRPO from each initialiser, on TRL's ``GRPOTrainer`` (docs/paper.md §3 "RL").

The paper's RL stage: GRPO, group size 8, rollout temperature 1.0, clip 0.2, KL coefficient 0,
advantages not divided by the group's standard deviation, binary reward. Only lengths, batch
sizes, steps and the learning rate change between the miniature and real models.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pandas as pd
from transformers import PrinterCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from gift_lite.evaluate import EvalSettings, countdown_score, evaluate_task, prompts_shared_in_generate
from gift_lite.models import cuda_bf16, fp32_adapters_kept, trainable_parameters
from gift_lite.results import write_csv
from gift_lite.units import problem_counts


@dataclass(frozen=True)
class GRPOSettings:
    """What differs from TRL's defaults, each with where the value comes from."""

    num_generations: int = 8  # group size 8 (paper)
    temperature: float = 1.0  # rollout temperature 1.0 (paper)
    epsilon: float = 0.2  # clip 0.2 (paper)
    beta: float = 0.0  # KL coefficient 0 (paper)
    scale_rewards: str = "none"  # no std-normalisation of advantages (paper)
    loss_type: str = "dapo"  # token-mean over the batch, verl's default aggregation (official code)
    learning_rate: float = 1e-6  # paper, full fine-tuning of 7-8B models; LoRA needs more (presets)
    per_device_train_batch_size: int = 64  # completions per step = prompts x group size (ours)
    max_completion_length: int = 512  # ours; the paper samples up to 8192 tokens
    max_steps: int = 100  # paper: one epoch over 10k prompts at batch 128 (~78 steps)
    gradient_checkpointing: bool = True  # TRL's default; off pays on a tiny model (benchmarks/bench_rl.py)
    lr_scheduler_type: str = "linear"  # TRL's default (decay to 0 at max_steps); verl's actor: constant
    seed: int = 0
    share_prompts: bool = False  # ours: one forward pass over a prompt for its whole group (not TRL's)

    def __post_init__(self):
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(f"per_device_train_batch_size={self.per_device_train_batch_size} must be a "
                             f"multiple of num_generations={self.num_generations}")
        for name in ("learning_rate", "max_steps", "max_completion_length", "num_generations"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name}={value!r} must be > 0")


def grpo_config(settings: GRPOSettings, output_dir: str, **overrides) -> GRPOConfig:
    """A ``GRPOConfig`` from the settings (less ``share_prompts``, an argument of ``run_grpo``);
    ``overrides`` pass any other TRL field."""
    kwargs = dict(asdict(settings), output_dir=output_dir, logging_steps=1, save_strategy="no", report_to=[],
                  bf16=cuda_bf16())
    kwargs.update(overrides)
    del kwargs["share_prompts"]
    return GRPOConfig(**kwargs)


def run_grpo(model, tokenizer, prompts, reward_func: Callable, config: GRPOConfig,
             resume_from_checkpoint: str | None = None, callbacks: list | None = None,
             share_prompts: bool = False, trainer_class: type = GRPOTrainer,
             rollout_func: Callable | None = None, drop_finished: bool = True) -> GRPOTrainer:
    """Train ``model`` (a PEFT model with trainable adapters) with GRPO on ``prompts``.

    ``resume_from_checkpoint``: a ``checkpoint-<step>`` folder of an earlier, interrupted run.
    Refuses a model with nothing trainable: TRL would otherwise run and silently change nothing.
    ``callbacks``: extra ``TrainerCallback``s (``ValidationCurve``, benchmark step timers).
    ``share_prompts``: rollouts run each prompt through the policy once for its whole group
    (``evaluate.generate_sharing_prompts``): the same samples up to float rounding, less work;
    with ``drop_finished`` it decodes with ``sampling.generate_dropping_finished`` (a finished
    rollout leaves the batch; the same draws and tokens), else with ``model.generate``.
    QLoRA adapters keep their fp32 values (``models.fp32_adapters_kept``), as in ``GIFTTrainer``.
    ``trainer_class`` and ``rollout_func``: a ``GRPOTrainer`` subclass and TRL's rollout hook
    (``unified.grpo_parts``: LUFFY and ReLIFT).
    """
    if trainable_parameters(model) == 0:
        raise ValueError("model has no trainable parameters; load adapters with is_trainable=True")
    with fp32_adapters_kept(model):  # TRL would cast QLoRA adapters to bf16
        trainer = trainer_class(model=model, reward_funcs=reward_func, args=config, train_dataset=prompts,
                                processing_class=tokenizer, callbacks=callbacks, rollout_func=rollout_func)
    if config.disable_tqdm:  # quiet: no per-step dicts printed either; the log stays in trainer.state
        trainer.remove_callback(PrinterCallback)
    with prompts_shared_in_generate(model, drop_finished) if share_prompts else nullcontext():
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


def reward_curve(trainer: GRPOTrainer) -> pd.DataFrame:
    """Per-step training curves from TRL's log: reward and the share of zero-variance groups."""
    rows = [{"step": log["step"], "reward": log["reward"],
             "frac_reward_zero_std": log.get("frac_reward_zero_std", float("nan"))}
            for log in trainer.state.log_history if "reward" in log]
    return pd.DataFrame(rows, columns=["step", "reward", "frac_reward_zero_std"])


def validation_counts(model, tokenizer, problems, settings: EvalSettings, *, seed: int,
                      reward_fn: Callable = countdown_score) -> list[dict]:
    """Correct samples per validation problem, out of ``settings.curve_samples`` each."""
    _, _, correct = evaluate_task(model, tokenizer, problems, num_samples=settings.curve_samples, ks=(1,),
                                  temperature=settings.temperature, max_new_tokens=settings.max_new_tokens,
                                  batch_size=settings.batch_size, seed=seed, progress=False, return_samples=True,
                                  share_prompts=settings.share_prompts, reward_fn=reward_fn)
    return problem_counts(problems, correct)


class ValidationCurve(TrainerCallback):
    """Validation pass@1 before training and every ``settings.curve_every`` optimizer steps (the
    miniature's and the real model's GRPO step budget is chosen on this curve).

    Sampling forks the RNG (``evaluate.sample_completions``), so the training run draws the same
    numbers with or without this callback.
    """

    def __init__(self, problems, tokenizer, settings: EvalSettings, seed: int, reward_fn: Callable = countdown_score,
                 counts_file: Path | None = None):
        self.problems, self.tokenizer, self.settings, self.seed = problems, tokenizer, settings, seed
        self.reward_fn, self.counts_file = reward_fn, counts_file
        self.counts: list[dict] = []  # step, problem_id, correct
        if counts_file is not None and Path(counts_file).exists():  # a resumed run keeps its earlier points
            self.counts = pd.read_csv(counts_file).to_dict("records")

    @property
    def rows(self) -> list[dict]:
        """``{step, val_pass@1}`` per validation point, in step order."""
        frame = pd.DataFrame(self.counts, columns=["step", "problem_id", "correct"])
        per_step = frame.groupby("step")["correct"].sum() / (frame.groupby("step").size() * self.settings.curve_samples)
        return [{"step": int(step), "val_pass@1": float(v)} for step, v in per_step.items()]

    def _record(self, model, step: int) -> None:
        if any(row["step"] == step for row in self.counts):
            return
        counts = validation_counts(model, self.tokenizer, self.problems, self.settings, seed=self.seed + step,
                                   reward_fn=self.reward_fn)
        self.counts += [{"step": step, **row} for row in counts]
        if self.counts_file is not None:
            write_csv(self.counts_file, pd.DataFrame(self.counts))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:  # not when resuming at a checkpoint
            self._record(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.settings.curve_every == 0:
            self._record(model, state.global_step)


# -- the GRPO step budget on a validation curve (the miniature's protocols and the real model's) -------
def smoothed_curve(table: pd.DataFrame, learning_rate: float) -> pd.DataFrame:
    """The seed-mean validation curve of ``learning_rate`` and its centred 3-point moving average."""
    curve = (table[table["learning_rate"] == learning_rate].groupby("step")["val_pass@1"].mean()
             .sort_index().rename("mean").to_frame())
    curve["smoothed"] = curve["mean"].rolling(3, center=True, min_periods=1).mean()
    return curve.reset_index()


def budget(curve: pd.DataFrame, n_samples: int, cap: int) -> int:
    """The first step (after step 0) after which no later smoothed value beats its own by more
    than one SE.

    ``n_samples``: validation samples behind each seed-mean point (problems x samples x seeds);
    SE(t) = sqrt(p (1 - p) / n_samples), the binomial bound for fixed problems.
    """
    values, steps = curve["smoothed"].to_numpy(), curve["step"].to_numpy()
    for i, (step, p) in enumerate(zip(steps, values)):
        if step == 0:  # at least the first evaluation after training starts
            continue
        se = math.sqrt(max(p * (1 - p), 0.0) / n_samples)
        if i == len(values) - 1 or values[i + 1:].max() - p <= se:
            return int(min(step, cap))
    return int(cap)


def trapezoid_mean(steps, values) -> float:
    """The mean of a curve over its step range (trapezoid rule): its area divided by its length."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    if len(steps) < 2:
        return float(values.mean())
    return float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(steps)) / (steps[-1] - steps[0]))
