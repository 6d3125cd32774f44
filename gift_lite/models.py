"""Models: a tiny Qwen2 from a config, and LoRA / QLoRA wrapping on top of any causal LM.

The miniature and the real models go through the same functions (DESIGN.md): a tiny
Qwen2-architecture model is saved with ``save_pretrained`` and reloaded exactly like a hub model,
so the QLoRA path (bitsandbytes NF4, which also runs on CPU) is the one real models take.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM)

from gift_lite.repro import without_root

GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")  # saved by a tokenizers-built tokenizer
# LoRA on every attention and MLP projection, never on lm_head (issue 2; QLoRA paper practice).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the miniature's base model (ours: ~1 M parameters trains at ~14 k tok/s on 2 cores)."""

    vocab_size: int = 32
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 128


@dataclass(frozen=True)
class LoraSettings:
    """LoRA defaults (ours; the paper fine-tunes all weights with FSDP on 8 GPUs)."""

    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = LORA_TARGETS


def tiny_qwen2(config: TinyModelConfig = TinyModelConfig(), *, seed: int = 0) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2-architecture causal LM (deterministic for a given seed)."""
    hf_config = Qwen2Config(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(hf_config)
    return model


def nf4_config(compute_dtype: torch.dtype | None = None) -> BitsAndBytesConfig:
    """bitsandbytes NF4 with double quantisation (QLoRA, arXiv 2305.14314)."""
    if compute_dtype is None:
        compute_dtype = default_dtype()
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype)


def is_local_model(name_or_path: str | Path) -> bool:
    """A path (starts like one, or exists) rather than a hub id; ``load_base`` never mixes them up."""
    text = str(name_or_path)
    return text.startswith((".", "/", "~")) or Path(text).exists()


def check_model(name_or_path: str | Path, *, trust_remote_code: bool = False) -> None:
    """Fail in seconds on a typo: a local folder needs a ``config.json``; a hub id must have a
    config the hub (or its local cache) can give, which fetches one small file, not the weights."""
    text = str(name_or_path)
    if is_local_model(text):
        if not (Path(text).expanduser() / "config.json").exists():
            raise ValueError(f"model={text!r} is not a folder with a config.json")
        return
    try:
        AutoConfig.from_pretrained(text, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:  # not found, gated, offline without a cache, malformed id
        raise ValueError(f"model={text!r} is neither a local folder nor a hub model whose config loads: "
                         f"{str(err).splitlines()[0]}") from err


def load_base(name_or_path: str | Path, *, four_bit: bool = False, dtype: torch.dtype | None = None,
              trust_remote_code: bool = False) -> torch.nn.Module:
    """Load a causal LM by hub name or local folder; ``four_bit`` loads it in NF4.

    A local path that does not exist fails at once rather than being mistaken for a hub name.
    """
    name_or_path = str(name_or_path)
    looks_local = is_local_model(name_or_path)
    if looks_local:
        check_model(name_or_path)
    if dtype is None:
        dtype = default_dtype()
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if four_bit:
        kwargs["quantization_config"] = nf4_config(dtype)
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": 0}
    return AutoModelForCausalLM.from_pretrained(str(Path(name_or_path).expanduser()) if looks_local
                                                else name_or_path, **kwargs)


def load_tokenizer(name_or_path: str | Path):
    """The tokenizer saved with a model, loaded as the class it was saved as.

    ``AutoTokenizer`` picks the class from the model's ``config.json`` when there is one, so a
    tokenizer built with the ``tokenizers`` library and saved beside a Qwen2 model would come back
    as ``Qwen2Tokenizer``, whose own pre-tokenizer silently drops spaces. A generic one stays generic.
    """
    config = Path(name_or_path) / "tokenizer_config.json"
    if config.exists() and json.loads(config.read_text()).get("tokenizer_class") in GENERIC_TOKENIZERS:
        return PreTrainedTokenizerFast.from_pretrained(name_or_path)
    return AutoTokenizer.from_pretrained(name_or_path)


def add_lora(model: torch.nn.Module, settings: LoraSettings = LoraSettings()) -> PeftModel:
    """Wrap ``model`` with fresh LoRA adapters on ``settings.target_modules`` (never lm_head)."""
    if "lm_head" in settings.target_modules:
        raise ValueError("target_modules must not include 'lm_head' (the GIFT target needs the base head)")
    config = LoraConfig(r=settings.r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=list(settings.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def load_lora(name_or_path: str | Path, settings: LoraSettings = LoraSettings(), **load_kwargs) -> PeftModel:
    """Plain LoRA: the base in full precision plus trainable adapters."""
    return add_lora(load_base(name_or_path, **load_kwargs), settings)


def load_qlora(name_or_path: str | Path, settings: LoraSettings = LoraSettings(), **load_kwargs) -> PeftModel:
    """QLoRA: the base quantised to NF4 (frozen) plus trainable LoRA adapters; CPU or CUDA."""
    return add_lora(load_base(name_or_path, four_bit=True, **load_kwargs), settings)


def load_adapter(base: torch.nn.Module, adapter_dir: str | Path, *, is_trainable: bool = True) -> PeftModel:
    """Load a saved adapter onto ``base`` for further training (RL) and check it is trainable.

    PEFT loads adapters frozen by default, after which TRL would silently train nothing.
    """
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=is_trainable)
    if is_trainable and trainable_parameters(model) == 0:
        raise ValueError(f"adapter_dir={str(adapter_dir)!r} loaded with no trainable parameters")
    return model


def cuda_bf16() -> bool:
    """Whether to train in bf16: on a GPU with native bf16 (compute capability 8.0 and up: Ampere,
    Hopper, ...); CPU training stays in fp32.

    ``torch.cuda.is_bf16_supported()`` alone says True on a T4 (capability 7.5) because it counts
    emulation by default (torch 2.13), and emulated bf16 there is slow; so emulation is excluded.
    """
    if not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability()[0] >= 8 and torch.cuda.is_bf16_supported(including_emulation=False)


def default_dtype() -> torch.dtype:
    """The compute dtype of training and of an NF4 base: bf16 where ``cuda_bf16``, else fp32.

    fp32, not fp16, on T4-class cards: GIFT's per-token gradients ``(softmax - target) / n``
    fall below fp16's range on long responses.
    """
    return torch.bfloat16 if cuda_bf16() else torch.float32


@contextmanager
def fp32_adapters_kept(model):
    """Around the construction of a TRL trainer: TRL casts a quantized (QLoRA) model's adapters to
    bf16 (SFTTrainer and GRPOTrainer, on every device, CPUs and T4s included); afterwards they get
    back the exact fp32 values they had. A bf16 weight rounds away any Adam step below ~2^-8 of
    its size (lr 1e-4 on LoRA A), the rounding itself perturbs a trained adapter, and a run resumed
    from a checkpoint would train on in fp32 anyway (PEFT reloads adapters in fp32), switching
    precision midway. The adapters are ~1% of the parameters, so fp32 costs little.
    """
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    saved = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad} if quantized else {}
    yield
    for name, param in model.named_parameters():
        if name in saved:
            param.data = saved[name]


def drop_root_paths(adapter_dir: str | Path) -> None:
    """Rewrite a saved adapter's config and model card with the base as a path relative to the
    repository, not this machine's absolute path (our loaders always pass the base explicitly)."""
    for name in ("adapter_config.json", "README.md"):
        path = Path(adapter_dir) / name
        if path.exists():
            path.write_text(without_root(path.read_text(encoding="utf-8")), encoding="utf-8")


def save_adapter(model, out_dir: str | Path) -> None:
    """Save a PEFT adapter through a temporary folder renamed into place (never half-written)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    drop_root_paths(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
