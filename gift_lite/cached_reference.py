"""The reference cache's half of ``GIFTTrainer``: a mixin the trainer inherits.

The reference cache (``GIFTConfig.reference_cache``, ``gift_lite.refcache``): the base's
per-token outputs for the whole training set, computed at the first training step and read back
at every later one (exact hidden states by default; top-K log-probs with
``reference_cache_topk``: the refcache docstring weighs the two). Rows are found by the example's
index in the prepared training set: the trainer adds a ``gift_example_index`` column to it, keeps
it through ``remove_unused_columns`` (``_set_signature_columns_if_needed``) and through TRL's
collator (which keeps only the keys it knows; a thin wrapper re-attaches it as a tensor), so the
sampler may shuffle freely. Packing and padding-free batches mix examples in one row and are
refused with the cache. Evaluation batches carry no index and use the live reference. With
several processes the cache is built by all of them at the first step, before any forward pass
(so under FSDP2 the fingerprint hashes the gathered full weights, the key one process computes):
each rank computes its share of the batches, rank 0 writes.

The cache itself (files, keys, the top-K loss) is ``gift_lite.refcache``.
"""

from __future__ import annotations

import time

import torch
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from gift_lite import refcache
from gift_lite.heads import causal_lm, full_tensor, fused_head, gather_to_main
from gift_lite.losses import fused_gift_loss

INDEX_COLUMN = "gift_example_index"  # the prepared training row's index, for the reference cache


class ReferenceCacheMixin:
    """Builds, opens and reads the reference cache for a ``GIFTTrainer`` (which provides
    ``_frozen_base``, ``_reference_hidden``, ``fused`` and the Trainer attributes)."""

    def _reference_head(self, model):
        """The reference head's full ``(V, D)`` weight and bias (an FSDP2 shard is all-gathered)."""
        head = (self._frozen_base.get_output_embeddings() if self._frozen_base is not None
                else fused_head(causal_lm(self.accelerator.unwrap_model(model))))
        return full_tensor(head.weight), None if head.bias is None else full_tensor(head.bias)

    def _cached_loss(self, model, hidden, weight, bias, labels, index, beta, lam) -> torch.Tensor:
        """The loss with the reference read from the cache (built at the first step, ``_fused_loss``)."""
        mask = labels != -100
        rows = self.ref_cache.rows(index.tolist(), device=hidden.device)
        h, y = hidden[mask], labels[mask]  # (n, D), (n,): row-major, the order the cache stores
        first = next(iter(rows.values()))
        if first.shape[0] != y.shape[0]:
            raise RuntimeError(f"the reference cache holds {first.shape[0]} response tokens for examples "
                               f"{index.tolist()}, the batch has {y.shape[0]}; delete {self.ref_cache.path}")
        if self.args.reference_cache_topk is not None:
            return refcache.topk_gift_loss(h, weight, y, rows["topk_ids"], rows["topk_logprobs"],
                                           rows["gold_logprobs"], beta=beta, smooth_lambda=lam, bias=bias)
        ref_w, ref_b = self._reference_head(model)
        shared = self._frozen_base is None
        ref_hidden = rows["hidden"].to(weight.dtype)  # stored in the full head's dtype (FSDP2: its shard's)
        return fused_gift_loss(h, ref_hidden, weight, y, beta=beta, smooth_lambda=lam, bias=bias,
                               ref_lm_head_weight=None if shared else ref_w, ref_bias=None if shared else ref_b)

    # -- building and opening -------------------------------------------------------------------
    def _index_training_rows(self) -> None:
        """Add the row index column and carry it through the collator (module docstring)."""
        from datasets import Dataset

        if not isinstance(self.train_dataset, Dataset):
            raise ValueError("reference_cache needs a map-style datasets.Dataset as train_dataset")
        if not self.fused:
            raise ValueError(f"reference_cache needs the fused path; {type(causal_lm(self.model)).__name__} "
                             "has no plain nn.Linear lm_head after a backbone (see fused_head)")
        if INDEX_COLUMN in self.train_dataset.column_names:
            self.train_dataset = self.train_dataset.remove_columns(INDEX_COLUMN)
        self.train_dataset = self.train_dataset.add_column(INDEX_COLUMN, list(range(len(self.train_dataset))))
        self.data_collator = KeepIndex(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.args.reference_cache is not None and INDEX_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, INDEX_COLUMN]

    def _cache_parts(self, model) -> dict:
        rows = self.train_dataset
        base = self._frozen_base if self._frozen_base is not None else self.accelerator.unwrap_model(model)
        weight, _ = self._reference_head(model)
        return {"rows": refcache.rows_fingerprint(rows["input_ids"], rows["labels"]),
                "model": refcache.model_fingerprint(base),
                "tokenizer": refcache.tokenizer_fingerprint(self.processing_class),
                "topk": self.args.reference_cache_topk, "dtype": str(weight.dtype),
                "hidden_size": weight.shape[1], "vocab": weight.shape[0]}

    def _open_or_build_cache(self, model) -> refcache.ReferenceCache:
        """Open the cache for this model and data, or build it; every process calls this.

        Collective: the key hashes full weights (all-gathered under FSDP2), rank 0 decides
        whether a valid cache exists, and a build shares the reference pass among all ranks
        (``_build_cache``). The others then open what rank 0 wrote, so ``reference_cache`` must
        be a folder every process sees (one machine, or a shared file system).
        """
        parts = self._cache_parts(model)
        key = refcache.cache_key(parts)
        # response tokens per example: labels[1:] as compute_loss shifts them
        counts = [sum(1 for y in labels[1:] if y != -100) for labels in self.train_dataset["labels"]]
        main = self.accelerator.is_main_process
        cache = refcache.open_cache(self.args.reference_cache, key, counts) if main else None
        found = cache is not None
        if self.accelerator.num_processes > 1:  # rank 0's answer, so every rank takes the same branch
            found = broadcast_object_list([found])[0]
        if not found:
            start = time.perf_counter()
            cache = self._build_cache(model, key, parts, counts)
            self.ref_cache_build_s = time.perf_counter() - start
        self.accelerator.wait_for_everyone()
        if cache is None:
            cache = refcache.open_cache(self.args.reference_cache, key, counts)
        if cache is None:
            raise RuntimeError(f"process {self.accelerator.process_index} cannot read the reference cache that "
                               f"rank 0 wrote under {self.args.reference_cache}: put it on a file system every "
                               "process sees")
        return cache

    def _build_cache(self, model, key: str, parts: dict, counts: list[int]) -> refcache.ReferenceCache | None:
        """One reference pass over the training rows, the live path's code, shared among ranks.

        Batch ``b`` (rows ``b*size`` onward, in index order) is computed by rank ``b % world``;
        rank 0 gathers the rows and writes the cache (returned there; None elsewhere). Every rank
        runs the same number of forward passes (FSDP2's all-gathers are collective), repeating
        its last batch when it has none left.
        """
        rows = self.train_dataset.select_columns(["input_ids", "labels"])
        weight, bias = self._reference_head(model)
        topk = self.args.reference_cache_topk
        if topk is not None and topk > weight.shape[0]:
            raise ValueError(f"reference_cache_topk={topk} exceeds the vocabulary ({weight.shape[0]})")
        specs = refcache.specs_for(topk, weight.shape[1], weight.dtype)
        collate = getattr(self.data_collator, "collator", self.data_collator)
        size = self.args.per_device_train_batch_size
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        starts = list(range(0, len(rows), size))

        def compute(start: int):
            ids = list(range(start, min(start + size, len(rows))))
            batch = self._prepare_inputs(collate([rows[i] for i in ids]))
            model_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
            labels = batch["labels"][:, 1:]
            ref_hidden, _ = self._reference_hidden(model, model_inputs)
            mask = labels != -100
            return ids, refcache.reference_rows(ref_hidden[mask], labels[mask], weight, bias, topk)

        def batches():
            for first in tqdm(range(0, len(starts), world), desc="reference cache",
                              disable=self.args.disable_tqdm or not self.accelerator.is_main_process):
                mine = first + rank < len(starts)
                ids, out = compute(starts[min(first + rank, len(starts) - 1)])
                part = (ids, {k: v.cpu() for k, v in out.items()}) if mine else None
                yield from (p for p in gather_to_main(part, world) if p is not None)

        if self.accelerator.is_main_process:
            return refcache.build_cache(self.args.reference_cache, key, counts, specs, batches(), parts)
        for _ in batches():  # the other ranks compute and send their share
            pass
        return None


class KeepIndex:
    """Wraps TRL's collator (which keeps only the keys it knows) to re-attach the row index."""

    def __init__(self, collator):
        self.collator = collator

    def __getattr__(self, name):  # only for names not found on the wrapper itself
        if name == "collator" or name.startswith("__"):  # e.g. while unpickling in a worker
            raise AttributeError(name)
        return getattr(self.collator, name)

    def __call__(self, examples):
        index = [ex[INDEX_COLUMN] for ex in examples] if examples and INDEX_COLUMN in examples[0] else None
        batch = self.collator([{k: v for k, v in ex.items() if k != INDEX_COLUMN} for ex in examples])
        if index is not None:
            batch[INDEX_COLUMN] = torch.tensor(index, dtype=torch.long)
        return batch
