"""Training memory of QLoRA SFT/GIFT and GRPO on one GPU: an ESTIMATE from a model's shape.

No GPU was available where this was written, so nothing here is measured: ``estimate_memory_gb``
adds up weights, LoRA optimiser state, activations and the KV cache from the formulas in its
docstring, and ``memory_table`` says which Qwen2.5 size fits which card at a run's lengths. The
notebook prints measured peak memory (``torch.cuda.max_memory_allocated``) next to it on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from gift_lite.models import LORA_TARGETS


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs from a decoder's ``config.json``."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection of one decoder layer (Qwen2 / Llama layout)."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.num_key_value_heads * self.head_dim
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def linear_params(self) -> int:
        return self.num_hidden_layers * sum(a * b for a, b in self.linear_shapes().values())

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)


# config.json of each model on the hub (Qwen/Qwen2.5-*B); norms and biases are left out (< 0.1%).
QWEN25_SHAPES: dict[str, ModelShape] = {
    "Qwen2.5-0.5B": ModelShape(896, 24, 4864, 14, 2, 151936, True),
    "Qwen2.5-1.5B": ModelShape(1536, 28, 8960, 12, 2, 151936, True),
    "Qwen2.5-3B": ModelShape(2048, 36, 11008, 16, 2, 151936, True),
    "Qwen2.5-7B": ModelShape(3584, 28, 18944, 28, 4, 152064, False),
}

NF4_BYTES = (4 + 0.127) / 8  # QLoRA (arXiv 2305.14314): 4-bit weights + double-quantised constants
ADAM_LORA_BYTES = 16  # fp32 LoRA weight + gradient + two Adam moments
VOCAB_BYTES = 7  # ours, per token, vocab entry and compute byte (x2 in bf16): student logits, their
# gradient and the frozen base's logits (1 each), plus GIFTTrainer's fp32 entropy/accuracy pass (4)
GRPO_VOCAB_BYTES = 3  # ours: logits and their gradient (1 each) plus TRL's row-wise fp32 log-softmax (1)
LAYER_ACTIVATION_FACTOR = (10, 4)  # ours: one layer's live activations ~ 10 x hidden + 4 x intermediate
CUDA_OVERHEAD_GB = 0.8  # ours: CUDA context, cuBLAS workspace, allocator slack


def estimate_memory_gb(shape: ModelShape, *, seq_len: int, micro_batch: int = 1, lora_r: int = 16,
                       four_bit: bool = True, compute_bytes: int = 2, gradient_checkpointing: bool = True,
                       kv_cache_tokens: int = 0, lora_targets: tuple[str, ...] = LORA_TARGETS,
                       vocab_bytes: float = VOCAB_BYTES) -> dict[str, float]:
    """An ESTIMATE (not a measurement) of training memory in GiB, by component.

    weights      = linear params x NF4_BYTES (or compute_bytes) + embeddings x compute_bytes
                   (bitsandbytes leaves embeddings and the LM head unquantised)
    lora         = LoRA params x 16 B (fp32 weight, gradient, Adam m and v)
    activations  = tokens x [checkpointed layer inputs (layers x hidden x compute_bytes)
                   + one layer recomputed (10 hidden + 4 intermediate) x compute_bytes
                   + vocab x vocab_bytes x compute_bytes]   (tokens = micro_batch x seq_len;
                   vocab_bytes: VOCAB_BYTES for GIFTTrainer, GRPO_VOCAB_BYTES for GRPO)
    kv_cache     = kv_cache_tokens x layers x 2 x kv_heads x head_dim x compute_bytes (generation)
    total        = the sum + CUDA_OVERHEAD_GB
    Without gradient checkpointing every layer keeps its activations (layers x the per-layer term).
    """
    gib = 1024 ** 3
    shapes = shape.linear_shapes()
    lora_params = shape.num_hidden_layers * sum(lora_r * sum(shapes[t]) for t in lora_targets)
    weight_bytes = NF4_BYTES if four_bit else compute_bytes
    tokens = micro_batch * seq_len
    per_layer = (LAYER_ACTIVATION_FACTOR[0] * shape.hidden_size
                 + LAYER_ACTIVATION_FACTOR[1] * shape.intermediate_size) * compute_bytes
    if gradient_checkpointing:
        layers = shape.num_hidden_layers * shape.hidden_size * compute_bytes + per_layer
    else:
        layers = shape.num_hidden_layers * per_layer
    parts = {
        "weights": (shape.linear_params() * weight_bytes + shape.embedding_params() * compute_bytes) / gib,
        "lora": lora_params * ADAM_LORA_BYTES / gib,
        "activations": tokens * (layers + shape.vocab_size * vocab_bytes * compute_bytes) / gib,
        "kv_cache": kv_cache_tokens * shape.num_hidden_layers * 2 * shape.num_key_value_heads * shape.head_dim
        * compute_bytes / gib,
        "overhead": CUDA_OVERHEAD_GB,
    }
    parts["total"] = sum(parts.values())
    return parts


# Usable GiB and compute bytes: T4 (Turing) has no bf16, so it computes in fp32 (``compute_dtype``).
GPUS = {"T4 16GB": (15.0, 4), "L4 24GB": (22.0, 2), "A100 40GB": (39.0, 2), "A100/H100 80GB": (79.0, 2)}


def memory_table(settings, shapes: dict[str, ModelShape] = QWEN25_SHAPES) -> pd.DataFrame:
    """ESTIMATED GiB for SFT/GIFT and GRPO of each model at ``settings``' lengths, per GPU.

    ``settings`` is a ``real.RealSettings`` (its ``init``, ``rl`` and ``four_bit`` are read).

    SFT/GIFT: a micro-batch of ``per_device_train_batch_size`` sequences of ``max_length`` tokens.
    GRPO: the training micro-batch of completions (prompt ~256 tokens + ``max_completion_length``),
    plus the KV cache of one generation batch (per-device batch x accumulation steps). A cell holds
    the estimate in GiB, with "x" where it exceeds that GPU's usable memory.
    """
    init, rl = settings.init, settings.rl
    prompt_len = 256  # ours: a typical math prompt in Qwen tokens
    rl_len = prompt_len + rl.max_completion_length
    gen_batch = rl.per_device_train_batch_size * settings.rl_gradient_accumulation_steps
    stages = {"SFT/GIFT": dict(seq_len=init.max_length, micro_batch=init.per_device_train_batch_size),
              "GRPO": dict(seq_len=rl_len, micro_batch=rl.per_device_train_batch_size,
                           kv_cache_tokens=gen_batch * rl_len, vocab_bytes=GRPO_VOCAB_BYTES)}
    rows = []
    for name, shape in shapes.items():
        for stage, kwargs in stages.items():
            row = {"model": name, "stage": stage}
            for gpu, (usable, compute_bytes) in GPUS.items():
                total = estimate_memory_gb(shape, lora_r=init.lora.r, four_bit=settings.four_bit,
                                           compute_bytes=compute_bytes, lora_targets=init.lora.target_modules,
                                           gradient_checkpointing=init.gradient_checkpointing, **kwargs)["total"]
                row[gpu] = f"{total:.1f}" + ("" if total <= usable else " x")
            rows.append(row)
    return pd.DataFrame(rows)
