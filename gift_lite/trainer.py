"""``GIFTTrainer``: TRL's ``SFTTrainer`` with the GIFT loss family.

GIFT is a diff from SFT: the same data pipeline, the same optimiser, one different loss. The
trainer subclasses ``trl.SFTTrainer`` (for its prompt–completion tokenisation, completion-only
masks and EOS handling) and overrides one method, ``compute_loss``. SFTTrainer's own loss runs a
fused LM head that returns only gold-token log-probabilities; GIFT needs the full distribution
of both the student and the frozen base, so ``compute_loss`` calls the model's ordinary forward.

The anchor each loss needs (``losses.ANCHOR``) comes from:
- ``"base"`` (gift, asft): the same model with its LoRA adapter disabled, so there is no second
  copy of the weights; for full fine-tuning without PEFT, a frozen copy made at start-up.
- ``"snapshot"`` (psft): the trainable parameters as they were ``psft_refresh_steps`` optimizer
  steps ago at most (PSFT's old policy, arXiv 2508.17784, refreshed once per rollout batch of
  several mini-batch updates), swapped in for one no-grad forward pass.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from trl import SFTConfig, SFTTrainer

from gift_lite.losses import (ANCHOR, DEFAULT_BETA, DEFAULT_CLIP_EPSILON, DEFAULT_ENTROPY_COEF,
                              DEFAULT_KL_COEF, LOSS_HPARAMS, LOSSES)
from gift_lite.models import cuda_bf16


@dataclass
class GIFTConfig(SFTConfig):
    """``SFTConfig`` plus the loss choice. ``loss_type="sft"`` is ``"gift"`` with ``beta=inf``."""

    loss_type: str = field(default="gift", metadata={"help": f"One of {sorted(LOSSES)}."})
    # Defaults and their sources live in gift_lite.losses.
    beta: float = field(default=DEFAULT_BETA, metadata={"help": "GIFT inverse temperature; inf is SFT."})
    smooth_lambda: float = field(default=0.0, metadata={"help": "GIFT: uniform mix into the base target."})
    entropy_coef: float = field(default=DEFAULT_ENTROPY_COEF, metadata={"help": "sft_entropy: bonus weight."})
    kl_coef: float = field(default=DEFAULT_KL_COEF, metadata={"help": "asft: weight of the KL anchor."})
    clip_epsilon: float = field(default=DEFAULT_CLIP_EPSILON, metadata={"help": "psft: ratio clip range."})
    psft_refresh_steps: int = field(default=8, metadata={
        "help": "psft: optimizer steps per old-policy snapshot (PSFT's run_psft.sh: batch 256 / mini-batch 32)."})

    def __post_init__(self):
        if self.loss_type not in LOSSES:
            raise ValueError(f"loss_type={self.loss_type!r} is not one of {sorted(LOSSES)}")
        if not (isinstance(self.psft_refresh_steps, int) and self.psft_refresh_steps >= 1):
            raise ValueError(f"psft_refresh_steps={self.psft_refresh_steps!r} must be an int >= 1")
        if self.bf16 is None:  # TRL defaults to bf16 everywhere; on CPU that only slows training down
            self.bf16 = cuda_bf16()
        super_loss_type, self.loss_type = self.loss_type, "nll"  # SFTConfig validates its own names
        try:
            super().__post_init__()
        finally:
            self.loss_type = super_loss_type

    def loss_kwargs(self) -> dict[str, float]:
        """The hyper-parameters the chosen loss takes, and only those."""
        return {name: getattr(self, name) for name in LOSS_HPARAMS[self.loss_type]}


class GIFTTrainer(SFTTrainer):
    """``SFTTrainer`` that overrides ``compute_loss`` with ``LOSSES[args.loss_type]``."""

    # Our losses are means over the micro-batch's response tokens (as in the official code), so
    # Trainer divides them by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, model, args: GIFTConfig, **kwargs):
        if not isinstance(args, GIFTConfig):
            raise ValueError(f"args={type(args).__name__} must be a GIFTConfig")
        loss_type = args.loss_type
        args.loss_type = "nll"  # SFTTrainer.__init__ accepts only its own names; ours is read back below
        try:
            super().__init__(model=model, args=args, **kwargs)
        finally:
            args.loss_type = loss_type
        self.loss_fn = LOSSES[loss_type]
        self.anchor = ANCHOR[loss_type]
        self._frozen_base = None
        if self.anchor == "base" and not hasattr(self.model, "disable_adapter"):
            self._frozen_base = copy.deepcopy(self.model).eval().requires_grad_(False)
        self._snapshot: dict[str, torch.Tensor] = {}
        self._snapshot_block = -1

    # -- the one overridden method -------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
        outputs = model(**model_inputs, use_cache=False)
        logits = outputs.logits[:, :-1]  # (B, T-1, V): position t predicts token t+1
        labels = inputs["labels"][:, 1:]
        anchor_logits = self._anchor_logits(model, model_inputs)
        loss = self.loss_fn(logits, anchor_logits, labels, ignore_index=-100, **self.args.loss_kwargs())
        self._log_token_metrics(logits, labels)
        return (loss, outputs) if return_outputs else loss

    # -- anchors ---------------------------------------------------------------------------
    @torch.no_grad()
    def _anchor_logits(self, model, model_inputs) -> torch.Tensor | None:
        if self.anchor is None:
            return None
        if self.anchor == "snapshot":
            with self._snapshot_weights(model):
                return model(**model_inputs, use_cache=False).logits[:, :-1]
        if self._frozen_base is not None:
            return self._frozen_base(**model_inputs, use_cache=False).logits[:, :-1]
        unwrapped = self.accelerator.unwrap_model(model)
        with unwrapped.disable_adapter():
            return model(**model_inputs, use_cache=False).logits[:, :-1]

    @contextmanager
    def _snapshot_weights(self, model):
        """Swap in the trainable weights of the last snapshot (PSFT's old policy)."""
        block = self.state.global_step // self.args.psft_refresh_steps
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if block != self._snapshot_block:
            self._snapshot = {n: p.detach().clone() for n, p in params.items()}
            self._snapshot_block = block
        current = {n: p.detach().clone() for n, p in params.items()}
        try:
            for n, p in params.items():
                p.data.copy_(self._snapshot[n])
            yield
        finally:
            for n, p in params.items():
                p.data.copy_(current[n])

    # -- diagnostics -----------------------------------------------------------------------
    @torch.no_grad()
    def _log_token_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        mask = labels != -100
        n = int(mask.sum())
        if n == 0:
            return
        logp = torch.log_softmax(logits[mask].float(), dim=-1)
        entropy = -(logp.exp() * logp).sum(-1).mean().item()
        accuracy = (logp.argmax(-1) == labels[mask]).float().mean().item()
        self._metrics[mode]["entropy"].append(entropy)
        self._metrics[mode]["mean_token_accuracy"].append(accuracy)
