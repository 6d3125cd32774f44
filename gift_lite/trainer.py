"""``GIFTTrainer``: TRL's ``SFTTrainer`` with the GIFT loss family.

GIFT is a diff from SFT: the same data pipeline, the same optimiser, one different loss. The
trainer subclasses ``trl.SFTTrainer`` (for its prompt–completion tokenisation, completion-only
masks and EOS handling) and overrides one method, ``compute_loss``. SFTTrainer's own loss runs a
fused LM head that returns only gold-token log-probabilities; GIFT needs the full distribution
of both the student and the frozen base, so ``compute_loss`` runs its own fused head on the final
hidden states (the fused path, below) or the model's ordinary forward (the logits path).

The anchor each loss needs (``losses.ANCHOR``) comes from:
- ``"base"`` (gift, asft): the same model with its LoRA adapter disabled, so there is no second
  copy of the weights; for full fine-tuning without PEFT, a frozen copy made at start-up.
- ``"snapshot"`` (psft): the trainable parameters as they were ``psft_refresh_steps`` optimizer
  steps ago at most (PSFT's old policy, arXiv 2508.17784, refreshed once per rollout batch of
  several mini-batch updates), swapped in for one no-grad forward pass.

The fused path (``GIFTConfig.fused_loss``, on by default). For ``loss_type`` ``"gift"`` and
``"sft"`` (GIFT at ``beta = inf``) on a model whose LM head is a plain ``nn.Linear`` after a
backbone returning ``last_hidden_state`` (Qwen2, Llama and their LoRA/QLoRA wrappers; no logit
scaling or soft-capping), the loss is ``losses.fused_gift_loss`` on the final hidden states and
``lm_head.weight``: the ``[tokens x vocab]`` logits of the student and of the base never exist.
The hidden states come through the model's own ``forward`` (so DDP and accelerate's autocast
wrappers still apply): ``__init__`` patches it, as TRL patches it for its fused head, so that
``model(..., gift_hidden_states=True)`` returns the backbone's output without the head. The
reference uses the same head (LoRA never targets ``lm_head``; ``models.add_lora`` refuses it) or,
for full fine-tuning, the frozen copy's head. Everything else (other losses, other models,
``compute_loss(return_outputs=True)`` as in evaluation with logits) takes the logits path. On the
fused path the ``entropy`` and ``mean_token_accuracy`` metrics are averaged over at most
``metrics_max_tokens`` evenly spaced response tokens per micro-batch (one small head matmul)
instead of all of them. On every path they are token-weighted means over all ranks.

Several processes, and the head: ``gift_lite.heads``. The reference cache's half of the trainer:
``gift_lite.cached_reference`` (a mixin ``GIFTTrainer`` inherits).
"""

from __future__ import annotations

import copy
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from trl import SFTConfig, SFTTrainer

from gift_lite import refcache
from gift_lite.cached_reference import INDEX_COLUMN, ReferenceCacheMixin
from gift_lite.heads import HIDDEN_KWARG, add_hidden_forward, causal_lm, fused_head, unsharded_head
from gift_lite.losses import (ANCHOR, DEFAULT_BETA, DEFAULT_CLIP_EPSILON, DEFAULT_ENTROPY_COEF,
                              DEFAULT_KL_COEF, HPARAM_CHECKS, LOSS_HPARAMS, LOSSES, fused_gift_loss)
from gift_lite.models import cuda_bf16, fp32_adapters_kept

FUSED_LOSSES = ("sft", "gift")  # computed from hidden states when the model allows (sft: beta = inf)


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
    fused_loss: bool = field(default=True, metadata={
        "help": "gift/sft: loss from hidden states and lm_head, never the full logits (ours; False: logits)."})
    metrics_max_tokens: int = field(default=256, metadata={
        "help": "Fused path: response tokens per micro-batch behind entropy/accuracy (ours; 0: skip)."})
    reference_cache: str | None = field(default=None, metadata={
        "help": "gift: folder caching the base's reference pass across epochs (gift_lite.refcache)."})
    reference_cache_topk: int | None = field(default=None, metadata={
        "help": "With reference_cache: None stores hidden states (exact); K stores top-K log-probs (approx)."})
    official_grad_accumulation: bool = field(default=False, metadata={
        "help": "Sum the micro-batch gradients without dividing by the accumulation steps, then clip, as the "
                "official trainer does (ours: False, the mean, as TRL; docs/official_code.md)."})

    def __post_init__(self):
        if self.loss_type not in LOSSES:
            raise ValueError(f"loss_type={self.loss_type!r} is not one of {sorted(LOSSES)}")
        for name, check in HPARAM_CHECKS.items():  # every loss's, so a bad value fails here, not at step 1
            check(getattr(self, name))
        if not (isinstance(self.metrics_max_tokens, int) and self.metrics_max_tokens >= 0):
            raise ValueError(f"metrics_max_tokens={self.metrics_max_tokens!r} must be an int >= 0")
        if self.reference_cache is not None:
            if self.loss_type != "gift" or not self.fused_loss:
                raise ValueError(f"reference_cache is used by loss_type='gift' with fused_loss=True, got "
                                 f"loss_type={self.loss_type!r}, fused_loss={self.fused_loss!r}")
            if self.packing or self.padding_free:
                raise ValueError("reference_cache needs one example per row: set packing=False, padding_free=False")
        topk = self.reference_cache_topk
        if topk is not None and (self.reference_cache is None or isinstance(topk, bool)
                                 or not isinstance(topk, int) or topk < 0):
            raise ValueError(f"reference_cache_topk={topk!r} must be None or an int >= 0, with reference_cache set")
        if not isinstance(self.official_grad_accumulation, bool):
            raise ValueError(f"official_grad_accumulation={self.official_grad_accumulation!r} must be a bool")
        lr = self.learning_rate  # 0 trains nothing without a word; a negative rate fails deep inside torch
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning_rate={lr!r} must be a finite number > 0")
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


class TruncationWarning(Warning):
    """Training rows were cut to ``max_length`` or dropped (not a ``UserWarning``, which notebooks filter)."""


def length_report(raw, prepared, args) -> dict[str, int]:
    """What TRL's preparation did to long rows: ``rows`` in, ``at_max_length``, ``dropped``.

    ``at_max_length`` counts prepared rows of exactly ``max_length`` tokens: the ones TRL cut,
    plus any that were that long to begin with. ``dropped`` counts rows left with no response
    token after the cut. Warns (``TruncationWarning``) when either is non-zero. Empty when TRL
    does not truncate (no ``max_length``, packing) or a dataset is not a map-style ``Dataset``.
    """
    import pyarrow.compute as pc
    from datasets import Dataset

    limit = args.max_length
    if limit is None or args.packing or not isinstance(raw, Dataset) or not isinstance(prepared, Dataset):
        return {}
    lengths = pc.list_value_length(prepared.with_format("arrow")["input_ids"])  # from Arrow, no Python lists
    at_limit = int(pc.sum(pc.greater_equal(lengths, limit)).as_py() or 0)
    report = {"rows": len(raw), "at_max_length": at_limit, "dropped": len(raw) - len(prepared)}
    if at_limit or report["dropped"]:
        warnings.warn(f"{at_limit} of {len(raw)} training rows reached max_length={limit} tokens (longer ones "
                      f"were cut to it) and {report['dropped']} were dropped with no response token left; "
                      "raise max_length or filter the data first", TruncationWarning, stacklevel=3)
    return report


class GIFTTrainer(ReferenceCacheMixin, SFTTrainer):
    """``SFTTrainer`` that overrides ``compute_loss`` with ``LOSSES[args.loss_type]``.

    Also touched, for the fused path and the reference cache (module docstring): the model's
    ``forward`` is wrapped once in ``__init__`` (``gift_hidden_states=True``), the training set
    gains an index column, and ``_set_signature_columns_if_needed`` keeps that column.
    ``__init__`` also counts the rows TRL's preparation cut to ``max_length`` or dropped
    (``length_report``) and warns about them with a ``TruncationWarning``: TRL does it silently.
    On a quantized (QLoRA) model it keeps the adapters in fp32, where TRL casts them to bf16
    (``models.fp32_adapters_kept``). Evaluation logs ``eval_ce``, the one-hot cross-entropy, for every
    loss (``_log_eval_ce``); ``official_grad_accumulation`` sums micro-batch gradients as the
    official trainer does (``_official_scaling``).
    """

    # Our losses are means over the micro-batch's response tokens (as in the official code), so
    # Trainer divides them by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, model, args: GIFTConfig, **kwargs):
        if not isinstance(args, GIFTConfig):
            raise ValueError(f"args={type(args).__name__} must be a GIFTConfig")
        loss_type = args.loss_type
        args.loss_type = "nll"  # SFTTrainer.__init__ accepts only its own names; ours is read back below
        try:
            with fp32_adapters_kept(model):
                super().__init__(model=model, args=args, **kwargs)
        finally:
            args.loss_type = loss_type
        self.length_report = length_report(kwargs.get("train_dataset"), self.train_dataset, args)
        self.loss_fn = LOSSES[loss_type]
        self.anchor = ANCHOR[loss_type]
        lm = causal_lm(self.model)
        self.fused = args.fused_loss and loss_type in FUSED_LOSSES and fused_head(lm) is not None
        if self.fused:
            add_hidden_forward(lm)
        self._frozen_base = None
        if self.anchor == "base" and not hasattr(self.model, "disable_adapter"):
            self._frozen_base = copy.deepcopy(self.model).eval().requires_grad_(False)
            # The copy's instance-level forward (TRL's fused-head patch, ours) is bound through a
            # closure to the *student's* original forward; drop it so the copy runs its own class
            # forward. (Without this the "frozen" anchor was the live student.)
            self._frozen_base.__dict__.pop("forward", None)
            self._place_frozen_base()
        self._snapshot: dict[str, torch.Tensor] = {}
        self._snapshot_block = -1
        self.ref_cache: refcache.ReferenceCache | None = None
        self.ref_cache_build_s: float | None = None  # wall time of building it (None: read from disk)
        if args.reference_cache is not None:
            self._index_training_rows()

    def _place_frozen_base(self) -> None:
        """Put the frozen copy on this process's device when Trainer leaves placement to
        ``prepare`` (FSDP, DeepSpeed), which never sees the copy: each rank holds all of it.
        Refuses a model whose weights are not all here (meta tensors, ZeRO-3 partitions)."""
        if any(t.is_meta for t in self.model.parameters()):
            raise ValueError("the model has weights on the meta device (FSDP's cpu_ram_efficient_loading loads "
                             "them on rank 0 only), so the frozen base copy would be empty: turn it off for "
                             "full fine-tuning with an anchor")
        if any(hasattr(t, "ds_id") for t in self.model.parameters()):  # deepcopy drops the attribute
            raise ValueError("the model was loaded partitioned by DeepSpeed ZeRO-3, so the frozen base copy holds "
                             "empty shards no engine gathers: use LoRA (its anchor is the adapter-free model) "
                             "or ZeRO-2 for full fine-tuning with an anchor")
        if not self.place_model_on_device and getattr(self._frozen_base, "hf_device_map", None) is None:
            self._frozen_base.to(self.accelerator.device)

    # -- the one overridden method -------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
        if self.fused and not return_outputs and self._prepared_head_fuses(model):
            return self._official_scaling(model, self._fused_loss(model, inputs, model_inputs))
        outputs = model(**model_inputs, use_cache=False)
        logits = outputs.logits[:, :-1]  # (B, T-1, V): position t predicts token t+1
        labels = inputs["labels"][:, 1:]
        anchor_logits = self._anchor_logits(model, model_inputs)
        loss = self.loss_fn(logits, anchor_logits, labels, ignore_index=-100, **self.args.loss_kwargs())
        self._log_token_metrics(logits, labels)
        if not model.training:
            self._log_eval_ce(LOSSES["sft"](logits, None, labels), labels)
        loss = self._official_scaling(model, loss)
        return (loss, outputs) if return_outputs else loss

    def _official_scaling(self, model, loss: torch.Tensor) -> torch.Tensor:
        """With ``official_grad_accumulation``: the same value (so logs show the mean), ``ga`` times the
        gradient, so that after Trainer's division by ``ga`` the micro-batch gradients add up unscaled,
        as in the official trainer (its ``training_step`` backpropagates each micro-batch's mean)."""
        if not (self.args.official_grad_accumulation and model.training):
            return loss
        ga = self.current_gradient_accumulation_steps
        return loss.detach() + (loss - loss.detach()) * ga

    @torch.no_grad()
    def _log_eval_ce(self, ce: torch.Tensor, labels: torch.Tensor) -> None:
        """``eval_ce``: the held-out one-hot cross-entropy, token mean over the batch on every rank.

        The official validation loss (docs/paper.md §2); unlike ``eval_loss`` (the method's own loss) it is
        comparable across methods and β, and picks the SFT checkpoint (``pick_checkpoint``).
        """
        n = (labels != -100).sum()
        total = self.accelerator.gather_for_metrics(ce.detach().float() * n).sum()
        count = self.accelerator.gather_for_metrics(n).sum()
        if count > 0:
            self._metrics["eval"]["ce"].append((total / count).item())

    # -- the fused path ----------------------------------------------------------------------
    def _prepared_head_fuses(self, model) -> bool:
        """Whether the model as prepared (DDP, FSDP2, ...) still has a head the fused path can use.

        ``__init__`` decides on the bare model; accelerate wraps it later, in ``train()``. A head
        that no longer qualifies falls back to the logits path (warned once), except with the
        reference cache, which needs the fused path.
        """
        if fused_head(causal_lm(self.accelerator.unwrap_model(model))) is not None:
            return True
        if self.args.reference_cache is not None:
            raise ValueError("reference_cache needs the fused path, but the prepared model's lm_head is "
                             f"{type(causal_lm(self.accelerator.unwrap_model(model)).get_output_embeddings())}")
        warnings.warn("the prepared model's lm_head does not fit the fused loss; using the logits path",
                      stacklevel=3)
        self.fused = False
        return False

    def _fused_loss(self, model, inputs, model_inputs) -> torch.Tensor:
        """``fused_gift_loss`` on the final hidden states: no ``[tokens x vocab]`` tensor."""
        beta = math.inf if self.args.loss_type == "sft" else float(self.args.beta)
        lam = self.args.smooth_lambda if self.args.loss_type == "gift" else 0.0
        index = inputs.get(INDEX_COLUMN)
        cached = self.args.reference_cache is not None and index is not None and model.training
        if cached and not math.isinf(beta) and self.ref_cache is None:
            # Before the step's first forward: under FSDP2 every weight is still a shard, so the
            # fingerprint hashes the same full weights as on one process.
            self.ref_cache = self._open_or_build_cache(model)
        hidden = model(**model_inputs, use_cache=False, **{HIDDEN_KWARG: True}).last_hidden_state
        head = unsharded_head(self.accelerator.unwrap_model(model))
        weight, bias = head.weight, head.bias
        hidden = hidden[:, :-1].to(weight.dtype)  # (B, T-1, D); accelerate may hand back fp32
        labels = inputs["labels"][:, 1:]
        if math.isinf(beta):  # SFT: the reference is not used
            loss = fused_gift_loss(hidden, hidden, weight, labels, beta=beta, bias=bias)
        elif cached:
            loss = self._cached_loss(model, hidden, weight, bias, labels, index, beta, lam)
        else:
            ref_hidden, ref_head = self._reference_hidden(model, model_inputs)
            ref_w, ref_b = (None, None) if ref_head is None else (ref_head.weight, ref_head.bias)
            ref_hidden = ref_hidden.to(weight.dtype if ref_w is None else ref_w.dtype)
            loss = fused_gift_loss(hidden, ref_hidden, weight, labels, beta=beta, smooth_lambda=lam,
                                   bias=bias, ref_lm_head_weight=ref_w, ref_bias=ref_b)
        self._log_sampled_metrics(hidden, weight, bias, labels)
        if not model.training:
            ce = loss if math.isinf(beta) else fused_gift_loss(hidden, hidden, weight, labels, beta=math.inf, bias=bias)
            self._log_eval_ce(ce, labels)
        return loss

    @torch.no_grad()
    def _reference_hidden(self, model, model_inputs):
        """The base's final hidden states ``(B, T-1, D)`` and its head (None: the student's)."""
        if self._frozen_base is not None:
            out = self._frozen_base.base_model(**model_inputs, use_cache=False)
            return out.last_hidden_state[:, :-1], self._frozen_base.get_output_embeddings()
        unwrapped = self.accelerator.unwrap_model(model)  # no DDP hooks: no gradient, maybe one rank
        with unwrapped.disable_adapter():
            out = unwrapped(**model_inputs, use_cache=False, **{HIDDEN_KWARG: True})
        return out.last_hidden_state[:, :-1], None

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
        """``entropy`` and ``mean_token_accuracy`` of this micro-batch over every rank's tokens.

        Collective (every rank calls it once per micro-batch, with or without tokens): the sums
        are all-reduced, so the logged value is the token-weighted mean over the ranks.
        """
        mode = "train" if self.model.training else "eval"
        mask = labels != -100
        logp = torch.log_softmax(logits[mask].float(), dim=-1)
        sums = torch.stack([-(logp.exp() * logp).sum(), (logp.argmax(-1) == labels[mask]).sum(),
                            mask.sum()]).double()
        entropy, correct, n = self.accelerator.reduce(sums, reduction="sum").tolist()
        if n == 0:
            return
        self._metrics[mode]["entropy"].append(entropy / n)
        self._metrics[mode]["mean_token_accuracy"].append(correct / n)

    @torch.no_grad()
    def _log_sampled_metrics(self, hidden, weight, bias, labels) -> None:
        """``entropy`` and ``mean_token_accuracy`` over at most ``metrics_max_tokens`` evenly
        spaced response tokens: one ``[k x V]`` head matmul instead of the full logits."""
        k = self.args.metrics_max_tokens
        mask = labels != -100
        n = int(mask.sum())
        if k == 0:
            return
        rows, y = hidden[mask], labels[mask]
        if n > k:
            pick = torch.linspace(0, n - 1, k, device=rows.device).round().long()
            rows, y = rows[pick], y[pick]
        self._log_token_metrics(F.linear(rows.detach(), weight.detach(),
                                         None if bias is None else bias.detach()), y)





# -- choosing the SFT checkpoint: the paper's rule -----------------------------------------------
HELD_OUT_METRIC = "eval_ce"  # the official validation loss: one-hot cross-entropy (GIFTTrainer._log_eval_ce)


def per_epoch_selection(metric: str = HELD_OUT_METRIC) -> dict:
    """``GIFTConfig`` arguments for the paper's protocol: evaluate and save every epoch, keep the best.

    The official run saves and validates once per epoch (10 epochs; ``save_freq = test_freq`` =
    the steps of one epoch) and the paper picks the epoch by held-out loss (docs/paper.md §3). Pass these
    with an ``eval_dataset``; ``pick_checkpoint`` then names the winner, and with
    ``load_best_model_at_end`` Trainer reloads it when training ends.
    """
    return {"eval_strategy": "epoch", "save_strategy": "epoch", "metric_for_best_model": metric,
            "greater_is_better": False, "load_best_model_at_end": True}


def pick_checkpoint(log_history: list[dict], *, metric: str = HELD_OUT_METRIC, output_dir=None) -> dict:
    """The evaluation with the lowest held-out ``metric``: ``{"step", "epoch", metric, "checkpoint"}``.

    ``log_history``: ``trainer.state.log_history`` (or the list in a checkpoint's
    ``trainer_state.json``), one dict per log; those carrying ``metric`` are the candidates. Ties
    go to the earliest (fewer epochs away from the base). ``checkpoint`` is
    ``<output_dir>/checkpoint-<step>`` (None without ``output_dir``), where Trainer saved that
    step with ``per_epoch_selection``. Raises ``ValueError`` when no entry has ``metric``, or one's
    value is not a finite number.
    """
    candidates = [log for log in log_history if metric in log]
    if not candidates:
        raise ValueError(f"metric={metric!r} is in no entry of log_history; evaluate with an eval_dataset "
                         "(per_epoch_selection) before picking")
    for log in candidates:
        value = log[metric]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"log_history entry at step {log.get('step')} has {metric}={value!r}, not a finite number")
    best = min(candidates, key=lambda log: (log[metric], log.get("step", 0)))
    step = int(best.get("step", 0))
    checkpoint = None if output_dir is None else str(Path(output_dir) / f"checkpoint-{step}")
    return {"step": step, "epoch": best.get("epoch"), metric: float(best[metric]), "checkpoint": checkpoint}
