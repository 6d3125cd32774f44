"""Real small models on one GPU (issue 4): QLoRA initialiser with ``GIFTTrainer`` → GRPO with the
math reward, evaluated before and after RL on math and multiple-choice benchmarks.

The same protocol as the miniature (``mini.py``), at real scale, through the same unit machinery
(``units.py``): every unit of work (the base, one initialiser, one RL run, for a method, β and seed)
writes its rows to ``<data_dir>/units/<stage>/<key>.csv`` and is skipped when that file exists, and
``units.collect`` gathers them into the long-format ``results.csv``. Rows use
``results.RESULT_COLUMNS``; metrics are ``<benchmark>/pass@k`` per benchmark plus ``pass@k``
averaged over the benchmarks of a split (``id`` / ``ood``), ``train/*``, ``rl/*`` and ``perf/*``
(wall time, tokens/s, peak GPU memory).

``SMOKE_REAL`` stands in on CPU: a tiny Qwen2 built locally (random weights, character
tokenizer), loaded in 4-bit exactly like a hub model, with the sample problems in
``data/samples/``. ``GPU_REAL`` is a Qwen2.5 base model with hub data, for one GPU.

``python -m gift_lite.real init ...`` runs the SFT/GIFT stage alone, so it can be started under
``accelerate launch`` (FSDP / DeepSpeed configs in ``configs/``).

The settings and presets are ``real_settings``; what a run loads (the CPU stand-in, the model,
the data, the scorer) is ``real_data``; resuming at a Trainer checkpoint is ``units``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from accelerate import PartialState
from datasets import Dataset
from transformers import PrinterCallback

from gift_lite import models
from gift_lite.data import chat_prompt, load_benchmark, load_sft
from gift_lite.evaluate import EvalSettings, evaluate_task, gold_probs, response_token_metrics
from gift_lite.heads import fsdp_sharded
from gift_lite.models import LoraSettings, add_lora, save_adapter
from gift_lite.real_data import (REWARDS, RealData, filter_by_length, load_data, load_policy, load_tokenizer,
                                 resolve_model, score, with_chat_template)
from gift_lite.real_settings import (INF, MIN_FREE_MB, PER_UNIT_FIELDS, REAL_PRESETS, TINY_MODEL, RealSettings,
                                     configure, resolve_source, run_name)
from gift_lite.repro import repo_root, seed_everything, tracked_files, without_root
from gift_lite.results import check_writable, long_rows, write_csv, write_json
from gift_lite.rl import ValidationCurve, grpo_config, reward_curve, run_grpo, trapezoid_mean
from gift_lite.trainer import GIFTConfig, GIFTTrainer
from gift_lite.units import (adapter_dir, check_unit_settings, checkpoint_dir, checkpoint_step, last_checkpoint,
                             labelled, one_thread, output_folder, problem_counts, run_pool, unit_key, unit_lock,
                             unit_path)

COUNT_COLUMNS = ("method", "beta", "seed", "split", "problem_id", "correct")  # as the miniature's *_problems/
# What an accelerate config's distributed_type asks for: the variable `accelerate launch` sets.
LAUNCH_REQUESTS = {"FSDP": "ACCELERATE_USE_FSDP", "DEEPSPEED": "ACCELERATE_USE_DEEPSPEED"}


# ---------------------------------------------------------------------------------------------
# Measuring time and memory
# ---------------------------------------------------------------------------------------------

@contextmanager
def measure():
    """Yields a dict filled on exit with ``wall_s`` and, on CUDA, ``peak_gpu_gb`` (max allocated)."""
    stats: dict[str, float] = {}
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        yield stats
    finally:
        if cuda:
            torch.cuda.synchronize()
            stats["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
        stats["wall_s"] = time.perf_counter() - start


def unit_wall_rows(started: float, resume: str | None) -> list[dict]:
    """``perf/unit_wall_s``: the whole unit's wall time in this process (training, validation and
    evaluation; ``started`` from ``time.perf_counter``), and ``perf/unit_resumed_at_step``, the
    checkpoint it resumed from (0: none; then the wall time leaves out the part run before)."""
    step = float(checkpoint_step(resume)) if resume else 0.0
    return [{"split": "", "metric": "perf/unit_wall_s", "value": time.perf_counter() - started},
            {"split": "", "metric": "perf/unit_resumed_at_step", "value": step}]


def _perf_rows(prefix: str, stats: dict, tokens: float) -> list[dict]:
    rows = [{"split": "", "metric": f"perf/{prefix}_wall_s", "value": stats["wall_s"]},
            {"split": "", "metric": f"perf/{prefix}_tokens_per_s", "value": tokens / max(stats["wall_s"], 1e-9)}]
    if "peak_gpu_gb" in stats:
        rows.append({"split": "", "metric": f"perf/{prefix}_peak_gpu_gb", "value": stats["peak_gpu_gb"]})
    return rows


# ---------------------------------------------------------------------------------------------
# Checkpoints: a killed unit resumes at its last Trainer checkpoint
# ---------------------------------------------------------------------------------------------

def saving(settings: RealSettings, checkpoints: Path | None) -> dict:
    """Trainer arguments: a full checkpoint (adapter, optimizer, scheduler, RNG) every ``save_steps``."""
    if checkpoints is None:
        return {}  # the configs' own save_strategy="no"
    return {"save_strategy": "steps", "save_steps": settings.save_steps, "save_total_limit": 1}


def mean_logged_loss(trainer) -> float:
    """The mean training loss over every optimizer step, resumed or not (``logging_steps=1``).

    ``train()``'s own ``training_loss`` averages only the steps run since the last restart.
    """
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return sum(losses) / max(len(losses), 1)  # summed in step order, as Trainer sums them


def tokens_since(trainer, key: str, resume: str | None) -> float:
    """Tokens this process trained on: the log's running count ``key`` less its value at ``resume``."""
    counts = [(log["step"], log[key]) for log in trainer.state.log_history if key in log]
    start = checkpoint_step(resume) if resume else 0
    before = max([c for step, c in counts if step <= start] + [0.0])
    return max([c for _, c in counts] + [0.0]) - before


# ---------------------------------------------------------------------------------------------
# The stages
# ---------------------------------------------------------------------------------------------

def evaluate_benchmarks(model, tokenizer, benchmarks, settings: EvalSettings, *, seed: int,
                        progress: bool = False, counts: list[dict] | None = None, reward_fn=score) -> list[dict]:
    """pass@k per benchmark (``<name>/pass@k``) and averaged over each split's benchmarks (``pass@k``).

    ``truncated`` (same layout): the share of samples cut off at ``max_new_tokens`` before EOS, so a
    low pass@k from too short a budget shows as such. ``counts``: a list that receives one
    ``{split, problem_id, correct}`` row per problem, for paired intervals (``stats``).
    """
    rows, per_split = [], {}
    for name, split, problems in benchmarks:
        metrics, _, correct = evaluate_task(
            model, tokenizer, problems, num_samples=settings.num_samples, ks=settings.ks,
            temperature=settings.temperature, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
            seed=seed, reward_fn=reward_fn, progress=progress, report_truncated=True, return_samples=True,
            share_prompts=settings.share_prompts)
        if counts is not None:
            counts += problem_counts(problems, correct, split=split)
        rows += [{"split": split, "metric": f"{name}/{m}", "value": v} for m, v in metrics.items()]
        per_split.setdefault(split, []).append(metrics)
    for split, runs in per_split.items():
        rows += [{"split": split, "metric": m, "value": float(np.mean([r[m] for r in runs]))} for m in runs[0]]
    return rows


def init_config(settings: RealSettings, output_dir: str, seed: int, **overrides) -> GIFTConfig:
    """The ``GIFTConfig`` of the initialiser: the paper's optimiser, our LoRA-scale lengths and steps."""
    init = settings.init
    kwargs = dict(
        output_dir=output_dir, loss_type=settings.method, seed=seed,
        beta=settings.beta if settings.method == "gift" else INF, smooth_lambda=settings.smooth_lambda,
        num_train_epochs=init.num_train_epochs, max_steps=init.max_steps, learning_rate=init.learning_rate,
        per_device_train_batch_size=init.per_device_train_batch_size,
        gradient_accumulation_steps=init.gradient_accumulation_steps, lr_scheduler_type=init.lr_scheduler_type,
        warmup_steps=0, weight_decay=init.weight_decay, adam_beta2=init.adam_beta2,
        max_grad_norm=init.max_grad_norm, max_length=init.max_length,
        gradient_checkpointing=init.gradient_checkpointing, logging_steps=1, save_strategy="no", report_to=[],
        disable_tqdm=True, include_num_input_tokens_seen="non_padding", use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False)
    kwargs.update(overrides)
    return GIFTConfig(**kwargs)


def train_initialiser(settings: RealSettings, model_path: str, sft_rows: list[dict], seed: int, out_dir: Path,
                      *, checkpoints: Path | None = None, callbacks: list | None = None, **config_overrides) -> dict:
    """Train one LoRA/QLoRA initialiser with ``GIFTTrainer`` and save the adapter to ``out_dir``.

    Returns ``train/loss``, ``train/rows``, ``train/rows_at_max_length`` (rows TRL cut to
    ``max_length`` or found exactly that long: 0 after ``filter_by_length`` unless TRL tokenises
    prompt and completion differently) and the ``perf`` stats (wall time, tokens seen, peak GPU
    memory; a resumed run's cover the part after the restart). With ``checkpoints``, a Trainer
    checkpoint goes there every ``settings.save_steps`` steps and a rerun resumes from the last
    one. This is the entry ``python -m gift_lite.real init`` runs, on one device or under
    ``accelerate launch``.
    """
    model, tokenizer = load_policy(model_path, four_bit=settings.four_bit)
    seed_everything(seed)  # the LoRA initialisation draws from the global RNG
    model = add_lora(model, settings.init.lora)
    if settings.init.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed LoRA on a frozen (NF4) base needs input grads
    with output_folder(checkpoints) as output_dir:
        resume = last_checkpoint(checkpoints)
        config = init_config(settings, output_dir, seed, **saving(settings, checkpoints), **config_overrides)
        trainer = GIFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(sft_rows),
                              processing_class=tokenizer, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)
        parallel = check_parallelism(trainer.accelerator)
        with measure() as stats:
            trainer.train(resume_from_checkpoint=resume)
        parallel["sharded"] = fsdp_sharded(trainer.model)
        tokens = tokens_since(trainer, "num_input_tokens_seen", resume)
        _save_trained_adapter(trainer, Path(out_dir))
    at_limit = trainer.length_report.get("at_max_length", 0) + trainer.length_report.get("dropped", 0)
    return {"train/loss": mean_logged_loss(trainer), "train/rows": len(sft_rows),
            "train/rows_at_max_length": at_limit, "tokens": tokens, **stats, **parallel}


def check_parallelism(accelerator) -> dict:
    """``distributed_type`` (accelerate's name: ``NO``, ``MULTI_GPU``, ``MULTI_CPU``, ``FSDP``,
    ``DEEPSPEED``) and ``world_size`` of this run, after refusing a launch whose accelerate config
    asked for FSDP or DeepSpeed and did not get it.

    accelerate 1.15 turns an FSDP config into FSDP only on GPU-like devices; on CPU processes it
    silently falls back to plain data parallelism (every rank holding the whole model), so a run
    that was meant to shard must not go on as if it did. Also refused: a world of another size
    than the launcher's ``WORLD_SIZE`` (seen with DeepSpeed on CPU processes when Trainer's
    ``use_cpu`` is off: DeepSpeed joins the ranks, accelerate counts one).
    """
    got = accelerator.distributed_type.value
    launched = int(os.environ.get("WORLD_SIZE", "1"))  # what torchrun / accelerate launch started
    if launched != accelerator.num_processes:
        raise RuntimeError(f"{launched} processes were launched but accelerate set up {got} with "
                           f"{accelerator.num_processes}: each would train on its own, on all the data")
    for asked, variable in LAUNCH_REQUESTS.items():
        if os.environ.get(variable, "false").lower() == "true" and got != asked:
            raise RuntimeError(f"the accelerate config asks for {asked} ({variable}=true), but accelerate set up "
                               f"{got} on {accelerator.num_processes} process(es) of device "
                               f"{accelerator.device.type!r}: nothing would be sharded. accelerate enables "
                               f"{asked} only on GPUs (or similar accelerators); on CPU launch without that "
                               "config (e.g. --multi_gpu, plain data parallelism)")
    return {"distributed_type": got, "world_size": accelerator.num_processes}


def _save_trained_adapter(trainer, out_dir: Path) -> None:
    """``trainer.save_model`` into a temporary folder renamed into place by rank 0.

    Every process calls it: under FSDP or DeepSpeed, ``save_model`` gathers the shards first.
    """
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    main = trainer.accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if main:
        models.drop_root_paths(tmp)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    trainer.accelerator.wait_for_everyone()


def evaluate_unit(model, tokenizer, data: RealData, settings: EvalSettings, *, seed: int, data_dir: Path,
                  stage: str, method: str, beta: float, compare: bool = True, reward_fn=score) -> list[dict]:
    """``evaluate_benchmarks`` plus, with held-out expert rows, ``entropy`` (and with ``compare``
    ``kl_to_base`` and ``topk_overlap``, the adapter switched off as the base) on that text, as the
    miniature measures them (``mini.evaluate_policy``). Per-problem counts go to
    ``units/<stage>_problems/<key>.csv``."""
    counts: list[dict] = []
    rows = evaluate_benchmarks(model, tokenizer, data.benchmarks, settings, seed=seed, counts=counts,
                               reward_fn=reward_fn)
    if data.expert:
        metrics = response_token_metrics(model, None, tokenizer, [r["prompt"] for r in data.expert],
                                         [r["completion"] for r in data.expert], compare=compare, batch_size=8)
        rows += [{"split": "", "metric": m, "value": v} for m, v in metrics.items()]
    key = "base" if stage == "base" else unit_key(method, beta, seed)
    write_csv(unit_path(data_dir, f"{stage}_problems", key),
              pd.DataFrame(counts).assign(method=method, beta=beta, seed=seed)[list(COUNT_COLUMNS)])
    return rows


def model_rows(model, lora: LoraSettings) -> list[dict]:
    """``model/parameters``, ``model/nf4_layers`` and ``model/lora_parameters`` of the base as loaded
    (``model`` is wrapped with fresh adapters to count them: call it after its last other use)."""
    n_params = sum(p.numel() for p in model.parameters())
    n_4bit = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
    n_lora = models.trainable_parameters(add_lora(model, lora))
    return [{"split": "", "metric": name, "value": float(v)} for name, v in
            (("model/parameters", n_params), ("model/nf4_layers", n_4bit), ("model/lora_parameters", n_lora))]


def run_base_unit(settings: RealSettings, model_path: str, data: RealData, data_dir: Path,
                  ignore: tuple[str, ...] = PER_UNIT_FIELDS) -> pd.DataFrame:
    """Evaluate the untouched base once (stage ``base``); cached like every unit. ``ignore``: the
    settings the folder's guard leaves out (a selection folder also leaves out what it chooses)."""
    check_unit_settings(data_dir, settings, ignore=ignore)
    path = unit_path(data_dir, "base", "base")
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    model, tokenizer = load_policy(model_path, four_bit=settings.four_bit)
    data = with_chat_template(data, tokenizer, settings.chat_template)
    rows = evaluate_unit(model, tokenizer, data, settings.eval, seed=0, data_dir=data_dir, stage="base",
                         method="base", beta=0.0, compare=False, reward_fn=REWARDS[settings.reward][0])
    rows += model_rows(model, settings.init.lora)
    frame = long_rows(rows, method="base", beta=0.0, seed=0, stage="base")
    write_csv(path, frame)
    return frame


def run_beta_unit(settings: RealSettings, model_path: str, data: RealData, data_dir: Path,
                  ignore: tuple[str, ...] = PER_UNIT_FIELDS) -> pd.DataFrame:
    """The base's probability of every expert token of the SFT rows (``units/beta/gold_probs.csv``):
    what decides how far GIFT's target is from one-hot at each β (``evaluate.gold_probs``);
    ``ignore`` as in ``run_base_unit``."""
    check_unit_settings(data_dir, settings, ignore=ignore)
    path = unit_path(data_dir, "beta", "gold_probs")
    if path.exists():
        return pd.read_csv(path)
    model, tokenizer = load_policy(model_path, four_bit=settings.four_bit)
    data = with_chat_template(data, tokenizer, settings.chat_template)
    frames = []
    for i, row in enumerate(data.sft):  # one row at a time: no padding, and the row index kept
        p = gold_probs(model, tokenizer, [row["prompt"]], [row["completion"]], batch_size=1)
        frames.append(pd.DataFrame({"row": i, "position": range(len(p)), "p_gold": p.numpy()}))
    frame = pd.concat(frames, ignore_index=True)
    write_csv(path, frame)
    return frame


def init_rows(settings: RealSettings, model_path: str, data: RealData) -> list[dict]:
    """The SFT rows an initialiser trains on: in the chat template, those within ``init.max_length``."""
    tokenizer = load_tokenizer(model_path)
    data = with_chat_template(data, tokenizer, settings.chat_template)
    return filter_by_length(data.sft, tokenizer, settings.init.max_length)[0]


def _key(settings: RealSettings, seed: int, method: str | None = None) -> tuple[str, float, str]:
    method = method or settings.method
    beta = settings.beta if method == "gift" else INF
    return method, beta, unit_key(method, beta, seed)


def run_init_unit(settings: RealSettings, model_path: str, data: RealData, data_dir: Path,
                  seed: int) -> pd.DataFrame:
    """Train (or reuse) the initialiser for ``settings.method`` and evaluate it (stage ``init``)."""
    check_unit_settings(data_dir, settings, ignore=PER_UNIT_FIELDS)
    method, beta, key = _key(settings, seed)
    path = unit_path(data_dir, "init", key)
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    started, resume = time.perf_counter(), last_checkpoint(checkpoint_dir(data_dir, "init", key))
    adapter = adapter_dir(data_dir, "init", key)
    tokenizer = load_tokenizer(model_path)
    data = with_chat_template(data, tokenizer, settings.chat_template)
    rows_in, dropped = filter_by_length(data.sft, tokenizer, settings.init.max_length)
    stats = train_initialiser(settings, model_path, rows_in, seed, adapter,
                              checkpoints=checkpoint_dir(data_dir, "init", key))
    model, tokenizer = load_policy(model_path, four_bit=settings.four_bit, adapter=adapter)
    rows = evaluate_unit(model, tokenizer, data, settings.eval, seed=seed, data_dir=data_dir, stage="init",
                         method=method, beta=beta, reward_fn=REWARDS[settings.reward][0])
    rows += [{"split": "", "metric": "train/loss", "value": stats["train/loss"]},
             {"split": "", "metric": "train/rows", "value": stats["train/rows"]},
             {"split": "", "metric": "train/rows_too_long", "value": dropped},
             {"split": "", "metric": "train/rows_at_max_length", "value": stats["train/rows_at_max_length"]}]
    rows += _perf_rows("init", stats, stats["tokens"]) + unit_wall_rows(started, resume)
    frame = long_rows(rows, method=method, beta=beta, seed=seed, stage="init")
    write_csv(path, frame)
    shutil.rmtree(checkpoint_dir(data_dir, "init", key), ignore_errors=True)
    return frame


def validation_curve(settings: RealSettings, model_path: str, data_dir: Path, stage: str, key: str,
                     seed: int) -> ValidationCurve:
    """The GRPO validation curve of ``settings.select``: pass@1 at the rollout temperature on its
    validation prompts, at step 0 and every ``curve_every`` steps; its points survive a restart
    (kept beside the unit's checkpoints)."""
    select, tokenizer = settings.select, load_tokenizer(model_path)
    problems = load_benchmark(resolve_source(select.validation_data))
    if settings.chat_template and getattr(tokenizer, "chat_template", None):
        problems = [replace(p, rendered=chat_prompt(tokenizer, p.prompt)) for p in problems]
    curve = EvalSettings(num_samples=select.curve_samples, ks=(1,), temperature=settings.rl.temperature,
                         max_new_tokens=settings.rl.max_completion_length, batch_size=settings.eval.batch_size,
                         curve_every=select.curve_every, curve_samples=select.curve_samples,
                         share_prompts=settings.eval.share_prompts)
    return ValidationCurve(problems, tokenizer, curve, seed, reward_fn=REWARDS[settings.reward][0],
                           counts_file=checkpoint_dir(data_dir, stage, key) / "validation_counts.csv")


def validation_rows(curve: ValidationCurve) -> list[dict]:
    """``val/auc`` (trapezoid mean of the curve), ``val/start_reward`` (its step-0 point: the start's
    reward at the rollout temperature) and ``val/start_mixed_share`` (the share of validation
    prompts whose samples at step 0 are neither all right nor all wrong: groups GRPO can learn from)."""
    rows = pd.DataFrame(curve.rows)
    start = [c["correct"] for c in curve.counts if c["step"] == 0]
    mixed = float(np.mean([0 < c < curve.settings.curve_samples for c in start]))
    return [{"split": "", "metric": "val/auc", "value": trapezoid_mean(rows["step"], rows["val_pass@1"])},
            {"split": "", "metric": "val/start_reward", "value": float(rows["val_pass@1"].iloc[0])},
            {"split": "", "metric": "val/start_mixed_share", "value": mixed}]


def train_grpo(settings: RealSettings, model_path: str, data: RealData, data_dir: Path, seed: int, method: str,
               key: str, *, stage: str = "rl", callbacks: list | None = None):
    """GRPO from the initialiser ``key`` (``method="rl_only"``: fresh adapters on the base), resuming at
    the last checkpoint under ``<stage>``. Returns the trainer, the policy, its tokenizer, ``data``
    in the chat template, the wall-time stats and the checkpoint it resumed from."""
    if method == "rl_only":
        policy, tokenizer = load_policy(model_path, four_bit=settings.four_bit)
        seed_everything(seed)
        policy = add_lora(policy, settings.init.lora)
    else:
        adapter = adapter_dir(data_dir, "init", key)
        if not (adapter / "adapter_config.json").exists():  # git keeps no real-model weights: retrain it
            train_initialiser(settings, model_path, init_rows(settings, model_path, data), seed, adapter)
        policy, tokenizer = load_policy(model_path, four_bit=settings.four_bit, adapter=adapter, trainable=True)
    data = with_chat_template(data, tokenizer, settings.chat_template)
    checkpoints = checkpoint_dir(data_dir, stage, key)
    with output_folder(checkpoints) as output_dir:
        resume = last_checkpoint(checkpoints)
        config = grpo_config(settings.rl, output_dir, seed=seed, disable_tqdm=True,
                             gradient_accumulation_steps=settings.rl_gradient_accumulation_steps,
                             use_cpu=not torch.cuda.is_available(), **saving(settings, checkpoints))
        with measure() as stats:
            trainer = run_grpo(policy.train(), tokenizer, Dataset.from_list(data.rl), REWARDS[settings.reward][1],
                               config, resume_from_checkpoint=resume, share_prompts=settings.rl.share_prompts,
                               callbacks=callbacks)
    return trainer, policy, tokenizer, data, stats, resume


def run_rl_unit(settings: RealSettings, model_path: str, data: RealData, data_dir: Path, seed: int,
                method: str | None = None) -> pd.DataFrame:
    """GRPO from the initialiser (``method="rl_only"``: fresh adapters on the base), then evaluate.

    Also writes the reward curve to ``units/rl_curves/<key>.csv``.
    """
    check_unit_settings(data_dir, settings, ignore=PER_UNIT_FIELDS)
    method, beta, key = _key(settings, seed, method)
    path = unit_path(data_dir, "rl", key)
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    started = time.perf_counter()
    curve_callback = validation_curve(settings, model_path, data_dir, "rl", key, seed) if settings.select else None
    trainer, policy, tokenizer, data, stats, resume = train_grpo(
        settings, model_path, data, data_dir, seed, method, key, callbacks=[curve_callback] if curve_callback else None)
    curve = reward_curve(trainer)
    tokens = tokens_since(trainer, "num_tokens", resume)
    save_adapter(policy, adapter_dir(data_dir, "rl", key))
    policy.eval()
    rows = evaluate_unit(policy, tokenizer, data, settings.eval, seed=seed, data_dir=data_dir, stage="rl",
                         method=method, beta=beta, reward_fn=REWARDS[settings.reward][0])
    rows.append({"split": "", "metric": "rl/reward", "value": float(curve["reward"].mean())})
    rows.append({"split": "", "metric": "rl/frac_reward_zero_std",
                 "value": float(curve["frac_reward_zero_std"].mean())})
    rows += _perf_rows("rl", stats, tokens)
    if curve_callback:
        rows += validation_rows(curve_callback)
        for stage, table in (("rl_val", curve_callback.rows), ("rl_val_problems", curve_callback.counts)):
            write_csv(unit_path(data_dir, stage, key), labelled(pd.DataFrame(table), method, beta, seed))
    write_csv(unit_path(data_dir, "rl_curves", key), labelled(curve, method, beta, seed))
    frame = long_rows(rows + unit_wall_rows(started, resume), method=method, beta=beta, seed=seed, stage="rl")
    write_csv(path, frame)
    shutil.rmtree(checkpoint_dir(data_dir, "rl", key), ignore_errors=True)
    return frame


def unit_settings(settings: RealSettings, method: str, beta: float) -> RealSettings:
    """``settings`` for one (method, beta) of the grid (method, beta and seeds are per unit)."""
    return replace(settings, method=method, beta=beta if method == "gift" else settings.beta)


def run_all(settings: RealSettings, data: RealData, data_dir: Path, *, progress: bool = True,
            workers: int = 1) -> list[str]:
    """Every unit of the run in order (β diagnostics, base, initialisers, GRPO); finished ones are
    skipped, so a killed run resumes at its first unfinished unit. Returns the keys it went through.
    ``workers`` > 1: each stage's units run in that many spawned processes of one torch thread each
    (``units.run_pool``; every initialiser is finished before any GRPO unit starts), which changes
    when a unit finishes, not its numbers."""
    if settings.select is not None:  # its budgets come from the selection stage: refuse a grid without them
        from gift_lite.real_selection import check_preset, choices  # it imports this module

        missing = [name for name, value in choices(settings, data_dir).items() if value is None]
        differ = check_preset(settings, data_dir)
        if missing or differ:
            raise ValueError(f"data_dir={without_root(str(data_dir))!r}: the selection stage has not chosen "
                             f"{missing} yet, or the settings differ from its choices {differ}: run "
                             "`python -m gift_lite.real select` first and put what it chose in the preset")
    model_path = resolve_model(settings, data_dir)
    # A run with a selection stage has its β and base units there (real_selection), not twice.
    jobs = [("beta", None, None, None)] if settings.n_expert_eval and settings.select is None else []
    jobs += [("base", None, None, None)] if settings.select is None else []
    # Every initialiser (seed by seed) before any GRPO: the before-RL comparison is complete first.
    jobs += [("init", m, b, s) for m, b, s in settings.init_units()]
    jobs += [("rl", m, b, s) for m, b, s in settings.rl_units()]
    if workers <= 1:
        return [run_job(settings, model_path, data, data_dir, *job)
                for job in tqdm(jobs, desc="units", disable=not progress)]
    done = []
    for stage in dict.fromkeys(job[0] for job in jobs):  # stage by stage: GRPO needs its initialiser's adapter
        todo = [(settings, model_path, data, data_dir, *job) for job in jobs if job[0] == stage]
        done += run_pool(_one_thread_job, todo, workers, desc=f"{stage} units", progress=progress)
    return done


def run_job(settings: RealSettings, model_path: str, data: RealData, data_dir: Path, stage: str,
            method: str | None, beta: float | None, seed: int | None) -> str:
    """One unit of ``run_all`` (skipped when its file exists), under its lock (``units.unit_lock``);
    returns its key."""
    key = stage if method is None else unit_key(method, beta, seed)
    with unit_lock(data_dir, stage, key):
        if stage == "beta":
            run_beta_unit(settings, model_path, data, data_dir)
        elif stage == "base":
            run_base_unit(settings, model_path, data, data_dir)
        elif stage == "init":
            run_init_unit(unit_settings(settings, method, beta), model_path, data, data_dir, seed)
        else:
            run_rl_unit(unit_settings(settings, method, beta), model_path, data, data_dir, seed)
    return stage if method is None else f"{stage}/{key}"


def _one_thread_job(*job) -> str:
    """``run_job`` in a pool's process, on one torch thread (``units.one_thread``)."""
    return one_thread(run_job, *job)


# ---------------------------------------------------------------------------------------------
# Command line: the SFT/GIFT stage alone, for `accelerate launch`
# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m gift_lite.real init``: train one initialiser and save its adapter.

    Under ``accelerate launch`` every process runs this; Trainer shards the data (DDP), or the
    model (FSDP / DeepSpeed) as the accelerate config says; rank 0 saves the adapter and prints
    one JSON line of stats, among them ``distributed_type``, ``world_size`` and ``sharded``
    (whether the trained weights were FSDP2 shards). A config asking for FSDP or DeepSpeed that
    accelerate did not honour is refused before training (``check_parallelism``).
    """
    from gift_lite.reproduce import HelpFormatter as defaults  # shows each option's default

    parser = argparse.ArgumentParser(prog="python -m gift_lite.real", formatter_class=defaults,
                                     description="Real models (notebook 06 without the notebook): one SFT/GIFT "
                                                 "initialiser, or every unit of a preset's run.")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", formatter_class=defaults, help="train one SFT/GIFT initialiser (LoRA or QLoRA)",
                          description="Train one SFT/GIFT initialiser and save its adapter and stats.json to --out; "
                                      "runs under `accelerate launch` too (FSDP, DeepSpeed: docs/real_model.md).")
    init.add_argument("--preset", default="smoke", choices=sorted(REAL_PRESETS),
                      help="the settings every option below starts from")
    init.add_argument("--model", help="hub id or local folder (default: the preset's)")
    init.add_argument("--sft-data", help="registered name or local .jsonl/.json/.parquet (default: the preset's)")
    init.add_argument("--n-sft", type=int, help="SFT rows (default: the preset's)")
    init.add_argument("--method", help="loss_type: gift, sft, dft, ... (default: the preset's)")
    init.add_argument("--beta", type=float, help="GIFT's inverse temperature, >= 0 or inf (default: the preset's)")
    init.add_argument("--max-steps", type=int, help="optimizer steps (default: the preset's epochs)")
    init.add_argument("--learning-rate", type=float, help="SFT/GIFT learning rate (default: the preset's)")
    init.add_argument("--four-bit", action=argparse.BooleanOptionalAction, default=None,
                      help="NF4 base (QLoRA); use --no-four-bit under FSDP (default: the preset's)")
    init.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                      help="prompts through the tokenizer's chat template when it has one (default: the preset's)")
    init.add_argument("--seed", type=int, default=0, help="LoRA initialisation and data order")
    init.add_argument("--out", type=Path, required=True, help="folder for the adapter and stats.json")
    run = sub.add_parser("run", formatter_class=defaults, help="every unit of a preset's run (finished units "
                         "are skipped)", description="Every unit of a preset's run, one after the other; finished "
                         "units are skipped. smoke writes under scratch/; mini computes the committed "
                         "data/real_smollm2-135m-instruct/ units that are missing, arith those of "
                         "data/real_arith/ (hours on 2 cores); gpu needs CUDA.")
    run.add_argument("--preset", default="smoke", choices=sorted(REAL_PRESETS))
    run.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster while the other core is busy)")
    run.add_argument("--workers", type=int, default=1, help="units at once, each in a process of one torch thread "
                     "(CPU only; every initialiser finishes before any GRPO unit starts)")
    select = sub.add_parser("select", formatter_class=defaults, help="a preset's selection stage (beta*, SFT "
                            "epochs, GRPO steps; resumes)", description="The selection stage of a preset that has "
                            "one (arith: data/real_arith/PROTOCOL.md section 3), unit by unit; prints what it chose.")
    select.add_argument("--preset", default="arith", choices=sorted(REAL_PRESETS))
    select.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster while the other core is busy)")
    args = parser.parse_args(argv)
    if args.command in ("run", "select"):
        try:
            check_device(args.preset)
        except ValueError as err:
            parser.error(str(err))
        if args.threads < 1:
            parser.error(f"--threads {args.threads}: must be at least 1")
        workers = getattr(args, "workers", 1)
        if workers < 1 or (workers > 1 and args.preset == "gpu"):
            parser.error(f"--workers {workers}: must be at least 1, and 1 on the gpu preset (one CUDA device)")
        return run_preset(args.preset, select=args.command == "select", threads=args.threads, workers=workers)

    # One validation for every option: the notebook's (real_settings.PARAMETERS)
    try:
        settings = configure(args.preset, model=args.model, sft_data=args.sft_data, n_sft=args.n_sft,
                             method=args.method, beta=args.beta, init_max_steps=args.max_steps,
                             init_learning_rate=args.learning_rate, four_bit=args.four_bit,
                             chat_template=args.chat_template, seed=args.seed)
    except ValueError as err:
        parser.error(str(err))
    check_writable(args.out, min_free_mb=MIN_FREE_MB)
    state = PartialState(cpu=not torch.cuda.is_available())  # one process, or one of `accelerate launch`'s
    with state.main_process_first():  # rank 0 builds the tiny stand-in (or fills the hub cache) first
        model_path = resolve_model(settings, args.out)
        rows, skipped = load_sft(resolve_source(settings.sft_data), limit=settings.n_sft)
    tokenizer = load_tokenizer(model_path)
    rows = with_chat_template(RealData(rows, skipped, [], []), tokenizer, settings.chat_template).sft
    rows, too_long = filter_by_length(rows, tokenizer, settings.init.max_length)
    stats = train_initialiser(settings, model_path, rows, args.seed, args.out / "adapter")
    stats.update({"train/rows_empty": skipped, "train/rows_too_long": too_long})
    if state.is_main_process:
        stats = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in stats.items()}
        write_json(args.out / "stats.json", stats)
        print(json.dumps(stats))
    return 0


def run_dir(preset: str, settings: RealSettings) -> Path:
    """The folder of a run's units: ``data/<run_name>`` for a preset's own settings.

    Under ``scratch/<preset>/data/`` instead: the random stand-in (its numbers mean nothing), and
    settings other than the preset's (a notebook parameter set, a CLI option): each such set of
    settings gets a folder of its own, ``<run_name>-<digest of the settings>``, so an exploratory
    run never adds units to a committed folder and two runs never mix. ``gpu`` without CUDA is
    refused here, before any folder is made.
    """
    check_device(preset)
    own = settings == REAL_PRESETS[preset]
    if own and preset != "smoke" and settings.model != TINY_MODEL:
        return repo_root() / "data" / run_name(settings)
    name = run_name(settings) + ("" if own else "-" + settings_digest(settings))
    return repo_root() / "scratch" / preset / "data" / name


def figures_dir(data_dir: Path) -> Path:
    """Where a run's figures go: ``figures/`` beside the ``data/`` that holds ``data_dir``."""
    return Path(data_dir).parent.parent / "figures"


def settings_digest(settings: RealSettings) -> str:
    """Eight hex digits of the settings' sha256: a run folder's name for one set of settings."""
    text = json.dumps(settings.config_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def check_device(preset: str) -> None:
    """Refuse ``preset="gpu"`` without CUDA, in one line, before anything is made or downloaded."""
    if preset == "gpu" and not torch.cuda.is_available():
        raise ValueError("preset='gpu' needs a CUDA GPU and torch.cuda.is_available() is False here: use "
                         "preset='mini' (SmolLM2-135M on the CPU) or 'smoke'")


def clear_run(data_dir: Path) -> None:
    """Delete a run folder's units, adapters and checkpoints (notebook 06's ``fresh=True``).

    Refused for a folder that holds git-tracked files: those are committed results, and no
    parameter deletes them (a run with other settings trains in a folder of its own: ``run_dir``).
    """
    tracked = tracked_files(data_dir)
    if tracked:
        raise ValueError(f"fresh=True would delete {len(tracked)} committed files under "
                         f"{without_root(str(data_dir))}/ (e.g. {tracked[0]}): leave fresh=False to replay "
                         "them, or change a parameter (seed, beta, ...) to train in a scratch folder of its own")
    for folder in ("units", "checkpoints", "adapters"):
        shutil.rmtree(Path(data_dir) / folder, ignore_errors=True)


def run_preset(preset: str, *, select: bool = False, threads: int = 2, workers: int = 1) -> int:
    """``python -m gift_lite.real run``: every unit of ``REAL_PRESETS[preset]``, one after the other
    (``workers`` > 1: that many at once, ``run_all``); ``select``: its selection stage instead
    (``real_selection``), which prints what it chose. ``threads``: torch's threads (the GSM-Symbolic
    run used 2; on a loaded 2-core machine 1 is faster)."""
    settings = REAL_PRESETS[preset]
    data_dir = run_dir(preset, settings)
    torch.set_num_threads(min(threads, os.cpu_count() or 1))
    check_writable(data_dir, min_free_mb=MIN_FREE_MB)
    if select:
        from gift_lite.real_selection import run_selection  # it imports this module

        print(json.dumps(run_selection(settings, load_data(settings), data_dir)), flush=True)
        return 0
    for key in run_all(settings, load_data(settings), data_dir, workers=workers):
        print(key, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
