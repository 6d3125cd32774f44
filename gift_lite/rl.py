"""GRPO from each initialiser, on TRL's ``GRPOTrainer`` (docs/paper.md §3 "RL").

The paper's RL stage: GRPO, group size 8, rollout temperature 1.0, clip 0.2, KL coefficient 0,
advantages not divided by the group's standard deviation, binary reward. Only lengths, batch
sizes, steps and the learning rate change between the miniature and real models.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Callable

import pandas as pd
from transformers import PrinterCallback
from trl import GRPOConfig, GRPOTrainer

from gift_lite.evaluate import prompts_shared_in_generate
from gift_lite.models import cuda_bf16, fp32_adapters_kept, trainable_parameters


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
             rollout_func: Callable | None = None) -> GRPOTrainer:
    """Train ``model`` (a PEFT model with trainable adapters) with GRPO on ``prompts``.

    ``resume_from_checkpoint``: a ``checkpoint-<step>`` folder of an earlier, interrupted run.
    Refuses a model with nothing trainable: TRL would otherwise run and silently change nothing.
    ``callbacks``: extra ``TrainerCallback``s (``mini.ValidationCurve``, benchmark step timers).
    ``share_prompts``: rollouts run each prompt through the policy once for its whole group
    (``evaluate.generate_sharing_prompts``): the same samples up to float rounding, less work.
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
    with prompts_shared_in_generate(model) if share_prompts else nullcontext():
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


def reward_curve(trainer: GRPOTrainer) -> pd.DataFrame:
    """Per-step training curves from TRL's log: reward and the share of zero-variance groups."""
    rows = [{"step": log["step"], "reward": log["reward"],
             "frac_reward_zero_std": log.get("frac_reward_zero_std", float("nan"))}
            for log in trainer.state.log_history if "reward" in log]
    return pd.DataFrame(rows, columns=["step", "reward", "frac_reward_zero_std"])
