"""A reference cache: the frozen base's per-token outputs, computed once and reused every epoch.

GIFT's target needs the frozen base model's distribution at every response token. The base never
changes and neither do the SFT rows, so ``GIFTTrainer`` (``GIFTConfig.reference_cache``) runs the
reference pass once over the training set and reads it back in every later step and epoch (the
paper trains 10). Two things can be stored per response token:

- ``topk=None`` (default, exact): the base's final hidden state ``(D,)``, in the LM head's dtype.
  The loss recomputes the reference logits from it (``fused_gift_loss``), so a step saves the
  base model's forward pass but still pays the reference head matmul. Training is the same as
  with the live reference up to floating-point rounding (the cached hidden states come from other
  batches, so other padding). Size: ``tokens x D x 2-4`` bytes (Qwen2.5-1.5B in bf16: 3 KiB per
  response token).
- ``topk=K`` (approximate): the base's log-probabilities of its top K tokens and of the gold token
  (``topk_gift_loss``). The step then needs no reference computation at all, and costs what SFT
  costs. The target (docs/paper.md §2) is rebuilt from ``p_tilde``: exact on the K tokens and the gold
  token, with the remaining base mass ``m_tail`` spread evenly over the other tokens. Its
  normaliser ``Z = (1-lam)(1-p_gold) + (V-1)c + a_gold e^beta`` depends on ``p_gold`` alone, so
  the gold target and ``Z`` are exact and the only error is how the off-gold tail is shared:
  ``TV(target, target_tilde) <= (1-lam) m_tail / Z``, which vanishes at large ``beta``
  (``Z ~ p_gold e^beta``: at ``beta = 20`` it is below ``m_tail / (p_gold * 4.8e8)``) and is the
  base's own tail error at ``beta = 0``. ``topk_target_error`` measures it on real logits. On the
  miniature's trained base (data/mini/base, V = 32, 2696 response tokens of 200 fresh problems'
  expert solutions), mean / max TV: K = 4 at ``beta = 20``: 1e-8 / 1.3e-5; K = 8 at
  ``beta = 2``: 2.4e-4 / 5.2e-2; K = 16 at ``beta = 0.5``: 1.1e-5 / 2.2e-3. Use it when the LM
  head dominates the step (large vocabulary, small model) and ``beta`` is large (the paper's
  default 20), or with K large enough that the base's tail mass is negligible (check with
  ``topk_target_error`` on your base); otherwise keep the exact default. Size
  ``tokens x (8K + 4)`` bytes (K = 64: 516 B per response token; 10k examples of 500 response
  tokens: 2.6 GB, against 15 GB of Qwen2.5-1.5B hidden states).

The default is the exact one because a cache should not change what is trained: with it the
cached run reproduces the live run (tests/test_refcache.py), whatever ``beta`` and base.

Storage: one folder per key under the cache directory, ``<dir>/<key>/`` with ``meta.json``,
``offsets.npy`` (``int64 (n_examples + 1,)``: example ``i``'s response tokens are rows
``offsets[i]:offsets[i+1]``) and one ``.npy`` per stored array, read as ``np.memmap`` (NumPy's
format: no pickles, ``allow_pickle=False``). The key is a hash of the prepared training rows (token
ids and labels, in dataset order), of every base weight (parameters and buffers, adapters left
out), of the tokenizer, and of what is stored; a folder is built under a temporary name and
renamed into place when complete, and one whose metadata, key or file sizes do not match is
rebuilt, never reused. Rows are indexed by the example's position in the prepared training set,
which the trainer carries through TRL's collator (``GIFTTrainer`` docstring), so the per-epoch
shuffling does not matter.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gift_lite import losses

try:  # torch built without distributed has no DTensor
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover
    DTensor = None

FORMAT_VERSION = 1
# torch dtype -> (NumPy dtype on disk, name in meta.json). NumPy has no bfloat16: its bits are
# stored as uint16 and viewed back.
_DTYPES = {torch.float32: ("float32", "float32"), torch.float16: ("float16", "float16"),
           torch.bfloat16: ("uint16", "bfloat16"), torch.int32: ("int32", "int32")}
_BY_NAME = {name: dtype for dtype, (_, name) in _DTYPES.items()}


# -- the key ------------------------------------------------------------------------------------
def _hash_tensor(h, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach()
    if DTensor is not None and isinstance(t, DTensor):  # an FSDP2 shard: hash the whole tensor
        t = t.full_tensor()
    h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
    flat = t.reshape(-1)
    if flat.numel():
        h.update(flat.contiguous().view(torch.uint8).cpu().numpy().tobytes())


def model_fingerprint(model: torch.nn.Module) -> str:
    """blake2b of every parameter and buffer of ``model`` except LoRA adapters (``lora_`` names):
    names, shapes, dtypes and bytes, so another checkpoint, dtype or quantisation changes it. Costs
    about one second per GB of weights. Under FSDP2 each sharded weight is all-gathered first, one
    at a time, so the fingerprint is the unsharded model's; every rank must call it then."""
    h = hashlib.blake2b(digest_size=16)
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers())
    for name, tensor in sorted(named, key=lambda item: item[0]):
        if "lora_" not in name:
            _hash_tensor(h, name, tensor)
    return h.hexdigest()


def rows_fingerprint(input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> str:
    """blake2b of the prepared rows (token ids and labels, in dataset order)."""
    if len(input_ids) != len(labels):
        raise ValueError(f"{len(input_ids)} input_ids rows but {len(labels)} labels rows")
    h = hashlib.blake2b(digest_size=16)
    for ids, lab in zip(input_ids, labels):
        for row in (ids, lab):
            arr = np.asarray(row, dtype=np.int64)
            h.update(len(arr).to_bytes(8, "little"))
            h.update(arr.tobytes())
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """blake2b of the vocabulary and special tokens (``None``: no tokenizer)."""
    if tokenizer is None:
        return "none"
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
    state = {"class": type(tok).__name__, "vocab": sorted(tok.get_vocab().items()),
             "special": {k: str(v) for k, v in sorted(tok.special_tokens_map.items())}}
    return hashlib.blake2b(json.dumps(state).encode(), digest_size=16).hexdigest()


def cache_key(parts: dict) -> str:
    """The folder name: a hash of ``parts`` (fingerprints and what is stored), with the format."""
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# -- the cache ----------------------------------------------------------------------------------
@dataclass
class ReferenceCache:
    """An opened cache: ``rows(example_ids)`` gives the stored rows of those examples, in order."""

    path: Path
    meta: dict
    offsets: np.ndarray
    arrays: dict[str, np.ndarray]  # read-only memmaps, (n_tokens, *tail)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self, example_ids: Sequence[int], device=None) -> dict[str, torch.Tensor]:
        """Each stored array's rows for ``example_ids``, concatenated in that order, as tensors."""
        ids = [int(i) for i in example_ids]
        if any(not 0 <= i < len(self.offsets) - 1 for i in ids):
            raise IndexError(f"example ids {ids} outside [0, {len(self.offsets) - 1})")
        out = {}
        for name, arr in self.arrays.items():
            parts = [arr[self.offsets[i]:self.offsets[i + 1]] for i in ids]
            block = np.concatenate(parts) if parts else arr[:0].copy()  # a fresh, writable array
            tensor = torch.from_numpy(block).view(_BY_NAME[self.meta["arrays"][name]["dtype"]])
            out[name] = tensor.to(device) if device is not None else tensor
        return out


def _expected_files(meta: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    n = int(meta["n_tokens"])
    return {name: ((n, *spec["tail"]), _DTYPES[_BY_NAME[spec["dtype"]]][0])
            for name, spec in meta["arrays"].items()}


def open_cache(directory: str | Path, key: str, counts: Sequence[int] | None = None) -> ReferenceCache | None:
    """The valid cache for ``key`` under ``directory``, or None (absent, incomplete or mismatched).

    ``counts``: the rows each example should have; a cache whose offsets disagree is invalid.
    """
    path = Path(directory) / key
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
            return None
        offsets = np.load(path / "offsets.npy", allow_pickle=False)
        if (offsets.shape != (int(meta["n_examples"]) + 1,) or offsets[0] != 0
                or offsets[-1] != int(meta["n_tokens"]) or (np.diff(offsets) < 0).any()):
            return None
        if counts is not None and not np.array_equal(np.diff(offsets), np.asarray(counts, dtype=np.int64)):
            return None
        arrays = {}
        for name, (shape, dtype) in _expected_files(meta).items():
            arr = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            if arr.shape != shape or arr.dtype != np.dtype(dtype):
                return None
            arrays[name] = arr
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None
    return ReferenceCache(path=path, meta=meta, offsets=offsets, arrays=arrays)


def build_cache(directory: str | Path, key: str, counts: Sequence[int],
                specs: dict[str, tuple[tuple[int, ...], torch.dtype]],
                batches: Iterable[tuple[Sequence[int], dict[str, torch.Tensor]]],
                parts: dict | None = None) -> ReferenceCache:
    """Write a cache for ``key`` and return it opened.

    ``counts[i]``: stored rows of example ``i``; ``specs``: ``name -> (tail shape, torch dtype)``;
    ``batches`` yields ``(example_ids, {name: rows})`` with the rows of those examples
    concatenated in order. Every example must be written exactly once. The folder is filled
    under a temporary name and renamed into place (an invalid folder of the same key is
    replaced; a valid one written meanwhile by another process wins).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)
    n_examples, n_tokens = len(counts), int(offsets[-1])
    meta = {"format": FORMAT_VERSION, "key": key, "n_examples": n_examples, "n_tokens": n_tokens,
            "arrays": {name: {"tail": list(tail), "dtype": _DTYPES[dtype][1]}
                       for name, (tail, dtype) in specs.items()},
            "parts": parts or {}}
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".{key}.", suffix=".tmp"))
    try:
        np.save(tmp / "offsets.npy", offsets, allow_pickle=False)
        files = {name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
                 for name, (shape, dtype) in _expected_files(meta).items()}
        written = np.zeros(n_examples, dtype=bool)
        for example_ids, rows in batches:
            ids = [int(i) for i in example_ids]
            if written[ids].any() or len(set(ids)) != len(ids):
                raise ValueError(f"examples {ids} written twice")
            need = sum(int(offsets[i + 1] - offsets[i]) for i in ids)
            for name, file in files.items():
                block = rows[name].detach()
                if tuple(block.shape) != (need, *specs[name][0]):
                    raise ValueError(f"{name}: rows of shape {tuple(block.shape)} for examples {ids}, "
                                     f"expected {(need, *specs[name][0])}")
                data = block.to(specs[name][1]).cpu()
                data = (data.view(torch.uint16) if data.dtype == torch.bfloat16 else data).numpy()
                start = 0
                for i in ids:
                    stop = start + int(offsets[i + 1] - offsets[i])
                    file[offsets[i]:offsets[i + 1]] = data[start:stop]
                    start = stop
            written[ids] = True
        if not written.all():
            raise ValueError(f"{int((~written).sum())} of {n_examples} examples were never written")
        for file in files.values():
            file.flush()
        del files
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        final = directory / key
        if final.exists() and open_cache(directory, key, counts) is None:
            shutil.rmtree(final)  # incomplete or mismatched: never reused
        try:
            os.rename(tmp, final)
        except OSError:  # another process renamed a complete cache into place first
            if open_cache(directory, key, counts) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cache = open_cache(directory, key, counts)
    if cache is None:
        raise RuntimeError(f"the reference cache at {directory / key} did not validate after writing")
    return cache


# -- what is stored per response token ------------------------------------------------------------
def specs_for(topk: int | None, hidden_size: int, dtype: torch.dtype) -> dict:
    """The arrays stored per response token: hidden states, or top-K and gold log-probs."""
    if topk is None:
        return {"hidden": ((hidden_size,), dtype)}
    return {"topk_ids": ((topk,), torch.int32), "topk_logprobs": ((topk,), torch.float32),
            "gold_logprobs": ((), torch.float32)}


@torch.no_grad()
def reference_rows(ref_hidden: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None, topk: int | None,
                   chunk_size: int = losses.CHUNK_SIZE) -> dict[str, torch.Tensor]:
    """What to store for ``(n, D)`` reference hidden rows with gold ``labels`` ``(n,)``."""
    if topk is None:
        return {"hidden": ref_hidden.to(weight.dtype)}
    out = {"topk_ids": [], "topk_logprobs": [], "gold_logprobs": []}
    for start in range(0, ref_hidden.shape[0], chunk_size):
        logp = torch.log_softmax(F.linear(ref_hidden[start:start + chunk_size].to(weight.dtype), weight,
                                          bias).float(), dim=-1)
        values, ids = logp.topk(topk, dim=-1)
        out["topk_ids"].append(ids.int())
        out["topk_logprobs"].append(values)
        out["gold_logprobs"].append(logp.gather(-1, labels[start:start + chunk_size, None].long()).squeeze(-1))
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in out.items()}


def approx_ref_logits(topk_ids, topk_logprobs, gold_logprobs, labels, vocab: int) -> torch.Tensor:
    """``(c, V)`` fp32 log-probabilities ``log p_tilde``: the stored ones on the top K and gold
    tokens, the remaining mass ``m_tail`` spread evenly over the others (module docstring). Dense:
    for measuring (``topk_target_error``); the loss uses the same target without building it."""
    c, k = topk_ids.shape
    y = labels.long().unsqueeze(1)
    ids = topk_ids.long()
    gold_in_top = (ids == y).any(1)
    gold_p = gold_logprobs.float().exp()
    known = topk_logprobs.float().exp().sum(1) + torch.where(gold_in_top, 0.0, gold_p)
    n_tail = vocab - k - (~gold_in_top).long()
    tail = ((1.0 - known).clamp_min(0.0) / n_tail.clamp_min(1)).log()  # -inf when nothing is left
    r = tail.unsqueeze(1).expand(c, vocab).clone()
    r.scatter_(1, ids, topk_logprobs.float())
    return r.scatter_(1, y, gold_logprobs.float().unsqueeze(1))


def _topk_rows(s, y, topk_ids, topk_logprobs, gold_logprobs, beta: float, lam: float, want_grad: bool):
    """Per-token loss ``(c,)`` and gradient ``softmax(s) - target`` ``(c, V)`` for the top-K target.

    The target is a per-row constant ``u`` (its value on the tail tokens) plus corrections on the
    K + 1 stored tokens, so no ``[c x V]`` target is built: ``<target, s> = u sum(s) + sum_stored
    (t_k - u) s_k`` and the gradient is ``q - u`` with the corrections scattered in. ``s``
    (fp32 student logits) is overwritten, as in ``losses._gift_rows``.
    """
    vocab = s.shape[1]
    y1 = y.unsqueeze(1)
    ids = topk_ids.long()
    p_top, p_gold = topk_logprobs.float().exp(), gold_logprobs.float().exp()
    gold_is_top = ids == y1  # (c, K)
    gold_in_top = gold_is_top.any(1)
    known = p_top.sum(1) + torch.where(gold_in_top, 0.0, p_gold)
    n_tail = vocab - ids.shape[1] - (~gold_in_top).long()
    p_tail = (1.0 - known).clamp_min(0.0) / n_tail.clamp_min(1)  # m_tail spread evenly
    inv_z, t_gold = losses._gold_weights(p_gold, beta, lam, vocab)  # exact: Z depends on p_gold only
    c0 = lam / vocab + losses.EPS
    u = ((1.0 - lam) * p_tail + c0) * inv_z  # (c,) the target on every tail token
    t_top = ((1.0 - lam) * p_top + c0) * inv_z.unsqueeze(1)
    corr = torch.cat([(t_top - u.unsqueeze(1)).masked_fill(gold_is_top, 0.0), (t_gold - u).unsqueeze(1)], 1)
    where = torch.cat([ids, y1], 1)  # (c, K + 1); the gold entry of the top K carries 0
    s.sub_(s.amax(-1, keepdim=True))
    target_dot_s = u * s.sum(-1) + (corr * s.gather(1, where)).sum(1)
    total = s.exp_().sum(-1)
    loss = total.log() - target_dot_s
    if not want_grad:
        return loss, None
    q = s.div_(total.unsqueeze(1)).sub_(u.unsqueeze(1))
    return loss, q.scatter_add_(1, where, -corr)


class _TopkGift(torch.autograd.Function):
    """``fused_gift_loss`` with the target rebuilt from the cached top K (no reference matmul)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, topk_ids, topk_logprobs, gold_logprobs, beta, lam,
                chunk_size, grad_mode):
        n = hidden.shape[0]
        where_all = torch.arange(n, device=hidden.device).unsqueeze(1)
        need_h, need_w, need_b = (grad_mode and need for need in ctx.needs_input_grad[:3])
        grad_h = torch.zeros_like(hidden) if need_h else None
        fp32 = {"dtype": torch.float32, "device": weight.device}
        grad_w = torch.zeros(weight.shape, **fp32) if need_w else None
        grad_b = torch.zeros(weight.shape[0], **fp32) if need_b else None
        per_token = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        want = need_h or need_w or need_b
        for start in range(0, n, chunk_size):
            sl = slice(start, start + chunk_size)
            h, y = hidden[sl], labels[sl].long()
            s = F.linear(h, weight, bias).float()
            if math.isinf(beta):  # SFT: the one-hot target
                loss, g = losses._gift_rows(s, None, y, beta, lam, want)
            else:
                loss, g = _topk_rows(s, y, topk_ids[sl], topk_logprobs[sl], gold_logprobs[sl], beta, lam, want)
            per_token[sl] = loss
            losses._accumulate(g, h, weight, n, where_all[sl], grad_h, grad_w, grad_b)
            del g, s
        ctx.grads = (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                     None if grad_b is None else grad_b.to(bias.dtype))
        return per_token.sum() / max(n, 1)

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w, grad_b = losses._take_grads(ctx)
        return (losses._scaled(grad_h, grad_output), losses._scaled(grad_w, grad_output),
                losses._scaled(grad_b, grad_output)) + (None,) * 8


def topk_gift_loss(hidden, lm_head_weight, labels, topk_ids, topk_logprobs, gold_logprobs, *,
                   beta=losses.DEFAULT_BETA, smooth_lambda=0.0, bias=None,
                   chunk_size=losses.CHUNK_SIZE):
    """The GIFT loss of ``hidden @ W.T + b`` against a target rebuilt from cached top-K log-probs.

    ``hidden``: ``(n, D)`` student hidden states of the kept positions (no ignored labels);
    ``labels``: ``(n,)``; ``topk_ids`` ``(n, K)`` int, ``topk_logprobs`` ``(n, K)`` and
    ``gold_logprobs`` ``(n,)``: the base's log-probabilities (``reference_rows``). Equal to
    ``fused_gift_loss`` with the live reference when the top K hold all of the base's mass (K = V
    exactly), otherwise within the bound of the module docstring. Chunked like ``fused_gift_loss``:
    no ``[n x V]`` tensor; differentiable w.r.t. ``hidden``, ``lm_head_weight`` and ``bias``.
    """
    losses._check_float_tensor("hidden", hidden, "D")
    if hidden.ndim != 2:
        raise ValueError(f"hidden.shape={tuple(hidden.shape)} must be (n, D): the kept positions only")
    losses._check_head("lm_head_weight", lm_head_weight, bias, hidden)
    losses._check_labels(labels, hidden.shape[:1], lm_head_weight.shape[0], losses.IGNORE_INDEX)
    if bool((labels == losses.IGNORE_INDEX).any()):
        raise ValueError("labels must hold only kept positions (no ignore_index)")
    n = hidden.shape[0]
    if (topk_ids.ndim != 2 or topk_ids.shape[0] != n or topk_logprobs.shape != topk_ids.shape
            or tuple(gold_logprobs.shape) != (n,)):
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)}, topk_logprobs {tuple(topk_logprobs.shape)}, "
                         f"gold_logprobs {tuple(gold_logprobs.shape)} must be (n, K), (n, K), (n,) with n={n}")
    beta, lam = losses._check_beta(beta), losses._check_lambda(smooth_lambda)
    chunk = losses._check_chunk(chunk_size)
    return _TopkGift.apply(hidden, lm_head_weight, bias, labels, topk_ids, topk_logprobs, gold_logprobs,
                           beta, lam, chunk, torch.is_grad_enabled())


@torch.no_grad()
def topk_target_error(ref_logits: torch.Tensor, labels: torch.Tensor, topk: int, *, beta: float,
                      smooth_lambda: float = 0.0) -> dict[str, float]:
    """How far the top-K target is from the exact one, over ``(n, V)`` reference logits.

    ``target/tv_mean`` and ``target/tv_max``: total-variation distance between the exact GIFT target
    (``losses.gift_target``) and the one rebuilt from the top K; ``base/tail_mass_mean``: the base
    mass outside the top K and the gold token; ``target/tv_bound_max``: the largest
    ``(1-lam) m_tail / Z`` (module docstring).
    """
    logp = torch.log_softmax(ref_logits.float(), dim=-1)
    y = labels.long().unsqueeze(1)
    values, ids = logp.topk(topk, dim=-1)
    gold = logp.gather(-1, y).squeeze(1)
    approx = approx_ref_logits(ids.int(), values, gold, labels, ref_logits.shape[1])
    exact = losses.gift_target(ref_logits.float(), labels, beta=beta, smooth_lambda=smooth_lambda)
    tilde = losses.gift_target(approx, labels, beta=beta, smooth_lambda=smooth_lambda)
    tv = 0.5 * (exact - tilde).abs().sum(-1)
    known = values.exp().sum(1) + torch.where((ids == y).any(1), 0.0, gold.exp())
    tail = (1.0 - known).clamp_min(0.0)
    vocab, lam = ref_logits.shape[1], float(smooth_lambda)
    inv_z, _ = losses._gold_weights(gold.exp(), losses._check_beta(beta), lam, vocab)
    return {"target/tv_mean": tv.mean().item(), "target/tv_max": tv.max().item(),
            "base/tail_mass_mean": tail.mean().item(),
            "target/tv_bound_max": ((1 - lam) * tail * inv_z).max().item()}
