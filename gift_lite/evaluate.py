"""Metrics (issue 3): sampling, pass@k, token entropy, KL and top-K overlap to base, weight geometry.

Functions return plain metric names (``pass@1``, ``entropy``, ``kl_to_base``, ``topk_overlap``,
``cosine``, ``l2``); the caller namespaces them for logs (``eval/pass@1``). Every function works
on the miniature and on real models: they take a model, its tokenizer and strings.
"""

from __future__ import annotations

import copy
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from gift_lite.losses import gold_mass
from gift_lite.rewards import countdown_reward
from gift_lite.sampling import generate_dropping_finished


@dataclass(frozen=True)
class EvalSettings:
    """How a policy is evaluated: samples per problem, k, temperature, lengths (every world)."""

    num_samples: int = 16  # ours: enough for pass@16 (the paper reports pass@1..8 before RL)
    ks: tuple[int, ...] = (1, 2, 4, 8, 16)  # issue 3
    temperature: float = 1.0  # ours: the rollout temperature, so pass@k measures what RL can explore
    max_new_tokens: int = 32  # a solution has at most 15 characters
    batch_size: int = 512  # sequences per generate call
    curve_every: int = 0  # ours: validation pass@1 every this many GRPO steps (0: no validation curve)
    curve_samples: int = 8  # ours: samples per validation problem for that curve
    n_train_eval: int = 0  # ours: RL prompts also evaluated after RL, for the train-test gap (0: none)
    share_prompts: bool = False  # ours: one forward pass over a prompt for all its samples (bench_rl.py)


DEFAULT_KS = (1, 2, 4, 8, 16)


# ---------------------------------------------------------------------------------------------
# pass@k
# ---------------------------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: 1 - C(n-c, k) / C(n, k).

    Chen et al. 2021 (arXiv 2107.03374), computed in the stable product form
    1 - prod_{i=n-c+1}^{n} (1 - k / i).
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise ValueError(f"{name}={value!r} must be a non-negative integer")
    n, c, k = int(n), int(c), int(k)
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    if k > n:
        raise ValueError(f"k={k} must be at most n={n} (the number of samples)")
    if c > n:
        raise ValueError(f"c={c} must be at most n={n} (correct samples out of n)")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_per_problem(n, c, k: int) -> np.ndarray:
    """``pass_at_k`` for each problem: ``n`` and ``c`` are (P,) arrays (or scalars); returns (P,)."""
    n, c = np.broadcast_arrays(np.asarray(n), np.asarray(c))
    return np.array([pass_at_k(int(ni), int(ci), k) for ni, ci in zip(n.ravel(), c.ravel())])


# ---------------------------------------------------------------------------------------------
# Sampling and task scores
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence[str], *, num_samples: int, temperature: float = 1.0,
                       max_new_tokens: int = 32, batch_size: int = 256, seed: int = 0, top_p: float = 1.0,
                       top_k: int = 0, progress: bool = False, return_ended: bool = False,
                       share_prompts: bool = False, drop_finished: bool = True,
                       cache_implementation: str | None = None):
    """``num_samples`` completions per prompt with ``model.generate``; returns (P, num_samples) strings,
    and with ``return_ended`` also a (P, num_samples) bool array: the sample stopped at EOS (False:
    ``max_new_tokens`` cut it off).

    Prompts are left-padded; sampling is plain ancestral sampling at ``temperature`` (top_k=0
    and top_p=1 switch the truncations off; ``temperature=0`` is greedy). A completion stops at
    EOS and is decoded without special tokens, as TRL's GRPOTrainer decodes. Deterministic for a
    given ``seed`` and ``batch_size`` (sequences per ``generate`` call); the global RNG is left
    untouched. ``share_prompts``: run each prompt through the model once for all its samples
    (``generate_sharing_prompts``); the same draws, logits equal up to float rounding.
    ``drop_finished``: decode with ``sampling.generate_dropping_finished``, which removes a sample
    from the batch once it has ended (same random draws and tokens as ``generate``, less work);
    False: ``model.generate`` itself, the path the committed protocols' units were sampled with.
    ``cache_implementation``: ``generate``'s key/value cache (``"static"``: preallocated, what
    ``torch.compile`` needs; ``benchmarks/bench_real.py`` measures it), with neither option above.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be at least 1")
    if cache_implementation is not None and (share_prompts or drop_finished):
        raise ValueError(f"cache_implementation={cache_implementation!r} goes to model.generate alone: "
                         "set share_prompts=False and drop_finished=False")
    flat = [p for p in prompts for _ in range(num_samples)]
    device = next(model.parameters()).device
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k} \
        if temperature > 0 else {"do_sample": False}
    if cache_implementation is not None:
        sampling["cache_implementation"] = cache_implementation
    was_training = model.training
    model.eval()
    texts: list[str] = []
    ended: list[bool] = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        starts = range(0, len(flat), batch_size)
        for start in tqdm(starts, desc="sample", disable=not progress):
            batch = tokenizer(flat[start:start + batch_size], return_tensors="pt", padding=True,
                              padding_side="left").to(device)
            out = _generate(model, batch["input_ids"], batch["attention_mask"], share_prompts, drop_finished,
                            max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, **sampling)
            batch_texts, batch_ended = _decode_until_eos(tokenizer, out[:, batch["input_ids"].shape[1]:])
            texts += batch_texts
            ended += batch_ended
    model.train(was_training)
    samples = [texts[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]
    return (samples, np.array(ended, dtype=bool).reshape(len(prompts), num_samples)) if return_ended else samples


def _generate(model, input_ids, attention_mask, share_prompts: bool, drop_finished: bool, **kwargs):
    decode = partial(generate_dropping_finished, model) if drop_finished else None
    if share_prompts:
        return generate_sharing_prompts(model, input_ids, attention_mask, generate=decode, **kwargs)
    return (decode or model.generate)(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


@torch.no_grad()
def generate_sharing_prompts(model, input_ids, attention_mask, generate=None, **kwargs):
    """``model.generate`` with one forward pass over each prompt for all of its samples.

    A prompt's samples are consecutive identical rows of ``input_ids`` (left-padded), as
    ``sample_completions`` and TRL's ``GRPOTrainer`` lay them out. The distinct prompts, less
    their last token, fill a key/value cache once; each sample gets a copy of its prompt's rows,
    and ``generate`` decodes from there. With P prompts of S samples the prompt's matrix products
    shrink S-fold. Positions follow the padding as ``generate`` computes them, so only float
    rounding (another batch shape) separates the logits from a plain call. ``generate``: the
    plain generate to call (default: the class's ``generate``, so that a call made inside
    ``prompts_shared_in_generate``, as an evaluation during a GRPO run is, does not share twice);
    other keywords go to it.
    """
    generate = generate or type(model).generate.__get__(model)
    repeat = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
    repeat[1:] = (input_ids[1:] == input_ids[:-1]).all(1) & (attention_mask[1:] == attention_mask[:-1]).all(1)
    if not repeat.any() or input_ids.shape[1] < 2:
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    first = ~repeat
    ids, mask = input_ids[first, :-1], attention_mask[first, :-1]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    cache = DynamicCache(config=model.config)
    model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
          logits_to_keep=1)
    cache.batch_select_indices(first.cumsum(0) - 1)
    return generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, **kwargs)


@contextmanager
def prompts_shared_in_generate(model, drop_finished: bool = True):
    """Within the block, ``model.generate`` is ``generate_sharing_prompts`` (for TRL's trainers,
    which call ``model.generate`` themselves), decoding with ``sampling.generate_dropping_finished``
    (``drop_finished``) or the class's ``generate``; the class's method is back afterwards."""
    plain = partial(generate_dropping_finished, model) if drop_finished else model.generate
    model.generate = lambda input_ids, attention_mask, **kwargs: generate_sharing_prompts(
        model, input_ids, attention_mask, generate=plain, **kwargs)
    try:
        yield model
    finally:
        del model.generate


def _decode_until_eos(tokenizer, new_ids: torch.Tensor) -> tuple[list[str], list[bool]]:
    """The texts up to the first EOS, and whether each had one."""
    rows, ended = [], []
    for row in new_ids.tolist():
        ended.append(tokenizer.eos_token_id in row)
        if ended[-1]:
            row = row[:row.index(tokenizer.eos_token_id)]
        rows.append(row)
    return tokenizer.batch_decode(rows, skip_special_tokens=True), ended


def countdown_score(completion: str, problem) -> float:
    """The miniature's ``reward_fn``: ``countdown_reward`` against ``problem.numbers`` and ``target``."""
    return countdown_reward(completion, problem.numbers, problem.target)


def evaluate_task(model, tokenizer, problems: Sequence, *, num_samples: int = 16, ks: Sequence[int] = DEFAULT_KS,
                  temperature: float = 1.0, max_new_tokens: int = 32, batch_size: int = 256, seed: int = 0,
                  reward_fn: Callable[[str, object], float] = countdown_score, progress: bool = True,
                  return_samples: bool = False, report_truncated: bool = False, share_prompts: bool = False):
    """pass@1 (mean reward over all samples) and unbiased pass@k for each k in ``ks``.

    ``problems`` need a ``.prompt``; ``reward_fn(completion, problem)`` scores a sample (1.0 is
    correct). Returns ``{"pass@1": ..., "pass@k": ...}`` averaged over problems, plus
    ``truncated`` (the share of samples ``max_new_tokens`` cut off before EOS, scored as they
    are) when ``report_truncated``, plus ``(samples, correct)`` with shapes (P, num_samples) when
    ``return_samples``. ``share_prompts``: see ``sample_completions``.
    """
    bad = [k for k in ks if k > num_samples or k < 1]
    if bad:
        raise ValueError(f"ks={tuple(ks)} holds {bad}, outside 1..num_samples={num_samples}")
    samples, ended = sample_completions(model, tokenizer, [p.prompt for p in problems], num_samples=num_samples,
                                        temperature=temperature, max_new_tokens=max_new_tokens,
                                        batch_size=batch_size, seed=seed, progress=progress, return_ended=True,
                                        share_prompts=share_prompts)
    correct = np.array([[reward_fn(s, p) for s in row] for row, p in zip(samples, problems)], dtype=float)
    c = (correct > 0.5).sum(axis=1)
    metrics = {"pass@1": float(correct.mean())}
    for k in ks:
        if k != 1:
            metrics[f"pass@{k}"] = float(pass_at_k_per_problem(num_samples, c, k).mean())
    if report_truncated:
        metrics["truncated"] = float(1.0 - ended.mean())
    return (metrics, samples, correct) if return_samples else metrics


# ---------------------------------------------------------------------------------------------
# Token-level comparisons on given text
# ---------------------------------------------------------------------------------------------

def _response_batches(tokenizer, prompts: Sequence[str], completions: Sequence[str], batch_size: int,
                      add_eos: bool, device, progress: bool, desc: str):
    """Yield ``(input_ids, attention_mask, response_mask)``, each (B, T), right-padded.

    ``response_mask[b, t]`` is True where the logits at position t predict a response token
    (the completion, and EOS when ``add_eos``): the positions the GIFT loss trains.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"prompts ({len(prompts)}) and completions ({len(completions)}) differ in length")
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress):
        rows, starts = [], []
        for prompt, completion in zip(prompts[start:start + batch_size], completions[start:start + batch_size]):
            prompt_ids = tokenizer(prompt)["input_ids"]
            ids = tokenizer(prompt + completion)["input_ids"] + ([tokenizer.eos_token_id] if add_eos else [])
            n_common = next((i for i, (a, b) in enumerate(zip(prompt_ids, ids)) if a != b), len(prompt_ids))
            rows.append(ids)
            starts.append(n_common)  # the response starts where prompt and prompt+completion diverge (TRL)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        response = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, (r, s) in enumerate(zip(rows, starts)):
            input_ids[i, :len(r)] = torch.tensor(r)
            attention[i, :len(r)] = 1
            response[i, max(s - 1, 0):len(r) - 1] = True  # logits at t predict token t + 1
        yield input_ids.to(device), attention.to(device), response.to(device)


def _logits(model, input_ids, attention_mask) -> torch.Tensor:
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()


def _device(model):
    return next(model.parameters()).device


@torch.no_grad()
def response_token_metrics(model, base_model, tokenizer, prompts: Sequence[str], completions: Sequence[str], *,
                           compare: bool = True, k: int = 5, batch_size: int = 64, add_eos: bool = True,
                           progress: bool = False) -> dict[str, float]:
    """``entropy``, and with ``compare`` also ``kl_to_base`` and ``topk_overlap``, over response tokens.

    One forward pass of the policy (and one of the base) per batch serves all three; each is the
    mean over all response tokens of all texts (token-weighted, like the loss):
    - ``entropy``: of the policy's next-token distribution, in nats;
    - ``kl_to_base``: KL(pi || pi_base) in nats, full vocabulary, exact;
    - ``topk_overlap``: the fraction of the policy's top-``k`` next tokens also in the base's top-``k``.
    ``base_model=None`` disables the PEFT adapter of ``model`` to get the base.
    """
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    if compare:
        _check_base(model, base_model)
    sums, count = {"entropy": 0.0, "kl_to_base": 0.0, "topk_overlap": 0.0}, 0
    for ids, attention, response in _response_batches(tokenizer, prompts, completions, batch_size, add_eos,
                                                      _device(model), progress, "token metrics"):
        policy = _logits(model, ids, attention)
        logp = torch.log_softmax(policy, dim=-1)  # (B, T, V)
        probs = logp.exp()
        sums["entropy"] += float((-(probs * logp).sum(-1))[response].sum())
        count += int(response.sum())
        if not compare:
            continue
        base = _base_logits(model, base_model, ids, attention)
        kl = (probs * (logp - torch.log_softmax(base, -1))).sum(-1)  # (B, T)
        sums["kl_to_base"] += float(kl[response].sum())
        top_p = policy[response].topk(k, dim=-1).indices  # (N, k)
        top_b = base[response].topk(k, dim=-1).indices  # (N, k)
        sums["topk_overlap"] += float((top_p.unsqueeze(-1) == top_b.unsqueeze(-2)).any(-1).sum()) / k
    names = ("entropy", "kl_to_base", "topk_overlap") if compare else ("entropy",)
    return {name: sums[name] / max(count, 1) for name in names}


def _base_logits(model, base_model, ids, attention):
    """The base's logits on one batch; ``base_model=None`` disables the PEFT adapter of ``model``."""
    if base_model is not None:
        return _logits(base_model, ids, attention)
    with model.disable_adapter():
        return _logits(model, ids, attention)


def _check_base(model, base_model) -> None:
    if base_model is None and not hasattr(model, "disable_adapter"):
        raise ValueError("base_model=None needs a PEFT model (its adapter disabled is the base)")


def token_entropy(model, tokenizer, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 64,
                  add_eos: bool = True, progress: bool = False) -> float:
    """Mean entropy (nats) of the policy's next-token distribution over response tokens
    (``response_token_metrics``)."""
    return response_token_metrics(model, None, tokenizer, prompts, completions, compare=False,
                                  batch_size=batch_size, add_eos=add_eos, progress=progress)["entropy"]


def kl_to_base(model, base_model, tokenizer, prompts: Sequence[str], completions: Sequence[str], *,
               batch_size: int = 64, add_eos: bool = True, progress: bool = False) -> float:
    """Mean per-token KL(pi || pi_base) in nats over response tokens (``response_token_metrics``)."""
    return response_token_metrics(model, base_model, tokenizer, prompts, completions, batch_size=batch_size,
                                  add_eos=add_eos, progress=progress)["kl_to_base"]


def topk_overlap(model, base_model, tokenizer, prompts: Sequence[str], completions: Sequence[str], *, k: int = 5,
                 batch_size: int = 64, add_eos: bool = True, progress: bool = False) -> float:
    """Mean fraction of the policy's top-``k`` next tokens that are also in the base's top-``k``
    (``response_token_metrics``)."""
    return response_token_metrics(model, base_model, tokenizer, prompts, completions, k=k, batch_size=batch_size,
                                  add_eos=add_eos, progress=progress)["topk_overlap"]


# ---------------------------------------------------------------------------------------------
# Weight geometry
# ---------------------------------------------------------------------------------------------

_PEFT_PREFIX = "base_model.model."
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def merged_state_dict(model_or_state) -> dict[str, torch.Tensor]:
    """A plain state dict: a PEFT model is merged on a copy (W + scale * B A), the original untouched."""
    if isinstance(model_or_state, dict):
        state = model_or_state
    else:
        model = model_or_state
        if hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        state = model.state_dict()
    state = {(k[len(_PEFT_PREFIX):] if k.startswith(_PEFT_PREFIX) else k): v for k, v in state.items()}
    lora = [k for k in state if "lora_" in k]
    if lora:
        raise ValueError(f"state holds unmerged LoRA weights ({lora[0]}); pass the PEFT model to merge them")
    return state


def last_layer_names(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the parameters of the last decoder layer (highest ``layers.<i>.`` index), sorted."""
    layers = {int(m[1]) for name in state if (m := _LAYER.search(name))}
    if not layers:
        raise ValueError("state has no 'layers.<i>.' parameters; pass param_name")
    last = max(layers)
    return sorted(n for n in state if (m := _LAYER.search(n)) and int(m[1]) == last)


@torch.no_grad()
def weight_geometry(a, b, *, param_name: str | None = None) -> dict[str, float]:
    """Cosine similarity and L2 distance between two models' last-layer weights.

    ``a`` and ``b`` are models or state dicts. By default every parameter of the last decoder
    layer is flattened into one vector (the paper's "last layer", docs/paper.md §5); ``param_name``
    picks one tensor instead. LoRA models are compared through their merged weights. Returns
    ``cosine``, ``l2`` (||a - b||) and ``relative_l2`` (||a - b|| / ||a||), computed in float64.
    """
    state_a, state_b = merged_state_dict(a), merged_state_dict(b)
    names = [param_name] if param_name is not None else last_layer_names(state_a)
    missing = [n for n in names if n not in state_a or n not in state_b]
    if missing:
        raise ValueError(f"param_name={missing[0]!r} is not in both states")
    va = torch.cat([state_a[n].detach().double().flatten().cpu() for n in names])
    vb = torch.cat([state_b[n].detach().double().flatten().cpu() for n in names])
    if va.shape != vb.shape:
        raise ValueError(f"shapes differ: {tuple(va.shape)} vs {tuple(vb.shape)}")
    l2 = float((va - vb).norm())
    cosine = float(va @ vb / (va.norm() * vb.norm()).clamp_min(1e-300))
    return {"cosine": cosine, "l2": l2, "relative_l2": l2 / max(float(va.norm()), 1e-300)}


@torch.no_grad()
def gold_probs(model, tokenizer, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 64,
               add_eos: bool = True) -> torch.Tensor:
    """The model's probability of each gold response token (and EOS), flattened: (N_tokens,), float64.

    This is ``p_base(y*_t)`` of docs/paper.md §2 when ``model`` is the base: it decides how far the
    GIFT target is from one-hot at each β (``losses.gold_mass``). The softmax runs in float64:
    float32 ``exp`` kernels differ from one CPU to another (AVX2, AVX-512) in the last bits, so
    with a float64 model (``model.double()``) the probabilities agree across machines to ~1e-15.
    """
    out = []
    for ids, attention, response in _response_batches(tokenizer, prompts, completions, batch_size, add_eos,
                                                      _device(model), False, "gold_probs"):
        logits = model(input_ids=ids, attention_mask=attention).logits.double()
        probs = torch.softmax(logits[:, :-1], dim=-1)  # (B, T-1, V)
        gold = probs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        out.append(gold[response[:, :-1]].cpu())
    return torch.cat(out)


def gold_mass_table(p_gold, betas) -> "pd.DataFrame":
    """The GIFT target's mass on the expert token at each β, over the tokens whose base
    probabilities are ``p_gold``: its mean, its minimum, and the share of tokens below 0.99 (a
    target that far from one-hot still differs from SFT's)."""
    import pandas as pd

    p = torch.as_tensor(p_gold, dtype=torch.float64)
    masses = [gold_mass(p, b) for b in betas]
    return pd.DataFrame({"beta": [float(b) for b in betas], "target/gold_mass": [float(m.mean()) for m in masses],
                         "min_gold_mass": [float(m.min()) for m in masses],
                         "share_of_tokens_below_0.99": [float((m < 0.99).double().mean()) for m in masses]})


def suggest_beta(p_gold, *, level: float | None = None) -> float:
    """The β at which the GIFT target's mean gold mass reaches ``level`` (beyond the paper).

    ``p_gold``: the base's probabilities of the gold tokens on the SFT data (``gold_probs``).
    Default ``level``: halfway between the base (β = 0, mass = mean p) and SFT (β = ∞, mass = 1),
    chosen before any initialiser was trained. The mean mass rises monotonically in β, so a
    bisection on log β over [1e-3, 1e3] finds it.
    """
    p = torch.as_tensor(p_gold, dtype=torch.float64).clamp(1e-12, 1.0)
    if p.numel() == 0:
        raise ValueError("p_gold is empty")
    level = (float(p.mean()) + 1.0) / 2.0 if level is None else float(level)
    if not float(p.mean()) < level < 1.0:
        raise ValueError(f"level={level} must lie between the base mass {float(p.mean()):.4f} and 1")
    lo, hi = math.log(1e-3), math.log(1e3)
    for _ in range(100):
        mid = (lo + hi) / 2
        if float(gold_mass(p, math.exp(mid)).mean()) < level:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)
