"""A decode loop that drops finished sequences from the batch: HF's sampling at the cost of the mean length.

``model.generate`` keeps every row of a batch in every forward pass until the longest has ended,
so a batch of 64 samples costs 64 x (the longest length). ``generate_dropping_finished`` runs
the same loop as HF's ``_sample`` (transformers 5.x, ``generation/utils.py``) but removes a row
from the batch and from its key/value cache (``DynamicCache.batch_select_indices``) once it has
sampled EOS, so the cost follows the mean length instead.

It draws the same random numbers as ``generate``: on the CPU, ``torch.multinomial(probs, 1)``
is ``argmax(probs / q)`` with ``q = empty_like(probs).exponential_(1)`` (ATen's
``multinomial``, the exponential-race form), and ``generate`` draws ``q`` for the whole batch
every step, finished rows included. So this loop draws the same ``q`` for the rows still running
and moves the generator past the others' (``race``): with the same seed it samples the same tokens
as ``generate``, as long
as the logits of a row do not depend on which other rows share its batch (they do not on the
CPU kernels the tests run; ``bench_real.py`` counts the identical rows on the real model).
Logits processors are HF's own (``_get_logits_processor``), restricted to those that act row by
row; anything else (beams, stop strings, a static cache, other processors) goes to ``generate``.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.generation import logits_process as lp

# Processors that read and write one row at a time, so a batch of the running rows gets the same scores
# (checked against generate: tests/test_evaluate.py). Not here, so sent to generate: the repetition
# penalty, whose samples differed from generate's in a test (its scatter over the rows' ids).
ROW_WISE = (lp.TemperatureLogitsWarper, lp.TopKLogitsWarper, lp.TopPLogitsWarper, lp.MinPLogitsWarper,
            lp.MinLengthLogitsProcessor, lp.MinNewTokensLengthLogitsProcessor, lp.SuppressTokensLogitsProcessor,
            lp.SuppressTokensAtBeginLogitsProcessor, lp.InfNanRemoveLogitsProcessor)


def _plain(model):
    """The class's ``generate`` (not an instance's patched one: see ``evaluate.prompts_shared_in_generate``)."""
    return type(model).generate.__get__(model)


def race(rows: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` of the exponential noise ``torch.multinomial`` draws for a (batch, V) ``like``: (A, V).

    On the CPU the generator hands each float32 exponential 64 bits, element after element (a
    (batch, V) draw's row i is what a V-element draw gives after i * V elements), so the rows of
    finished samples are skipped with ``random_`` on int64, a third of the exponential's cost, and
    the generator ends where ``multinomial`` leaves it. Elsewhere: the whole draw, then the rows.
    """
    vocab = like.shape[-1]
    if like.device.type != "cpu":
        return like.new_empty((batch, vocab)).exponential_(1)[rows]
    out, start = like.new_empty((len(rows), vocab)), 0
    for i, row in enumerate(rows.tolist()):
        if row > start:
            torch.empty((row - start) * vocab, dtype=torch.int64).random_()
        out[i].exponential_(1)
        start = row + 1
    if start < batch:
        torch.empty((batch - start) * vocab, dtype=torch.int64).random_()
    return out


def _random_forward(model) -> bool:
    """Whether a forward pass draws random numbers (dropout in training mode): with fewer rows it
    would draw fewer, and the samples would part from ``generate``'s."""
    return model.training and (any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
                               or bool(getattr(model.config, "attention_dropout", 0.0)))


def _unsupported(model, config, model_kwargs, processors) -> bool:
    return _random_forward(model) or bool(model_kwargs) or config.num_beams != 1 or config.num_return_sequences != 1 \
        or config.return_dict_in_generate or config.stop_strings is not None or config.max_time is not None \
        or config.cache_implementation is not None \
        or config.prompt_lookup_num_tokens is not None or not all(isinstance(p, ROW_WISE) for p in processors)


@torch.no_grad()
def generate_dropping_finished(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                               past_key_values: DynamicCache | None = None, generation_config=None, **kwargs):
    """``model.generate(input_ids=..., attention_mask=..., **kwargs)`` without the finished rows: (B, T + n).

    ``input_ids`` and ``attention_mask`` (B, T) are left-padded. ``past_key_values``: a
    ``DynamicCache`` holding the first positions of every row (``evaluate.generate_sharing_prompts``);
    it is consumed. Returns what ``generate`` returns: the prompts followed by n new tokens, n the
    longest completion (EOS included) or ``max_new_tokens``, ``pad_token_id`` after a row's EOS.
    Greedy or sampled, with the same random draws as ``generate`` (module docstring).
    """
    config, model_kwargs = model._prepare_generation_config(generation_config, **kwargs)
    model_kwargs.pop("use_cache", None)
    processors = model._get_logits_processor(config, input_ids_seq_length=input_ids.shape[1],
                                             device=input_ids.device, model_kwargs=model_kwargs)
    if _unsupported(model, config, model_kwargs, processors):
        return _plain(model)(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                             generation_config=generation_config, **kwargs)
    eos = config.eos_token_id
    eos = torch.tensor([eos] if isinstance(eos, int) else list(eos or []), device=input_ids.device)
    pad = config.pad_token_id if config.pad_token_id is not None else int(eos[0])
    batch, prompt_len = input_ids.shape
    max_new = config.max_new_tokens if config.max_new_tokens is not None else config.max_length - prompt_len
    if max_new < 1:
        return input_ids

    cache = past_key_values if past_key_values is not None else DynamicCache(config=model.config)
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # as generate's
    done = cache.get_seq_length()  # positions already in the cache
    logits = model(input_ids=input_ids[:, done:], attention_mask=attention_mask, position_ids=positions[:, done:],
                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits
    new = torch.full((batch, max_new), pad, dtype=input_ids.dtype, device=input_ids.device)
    rows = torch.arange(batch, device=input_ids.device)  # the running rows
    mask, last = attention_mask, positions[:, -1]
    for step in range(max_new):
        scores = logits[:, -1].to(dtype=torch.float32, copy=True)
        if len(processors):
            scores = processors(torch.cat([input_ids[rows], new[rows, :step]], 1), scores)
        if config.do_sample:
            probs = torch.softmax(scores, dim=-1)
            tokens = (probs / race(rows, batch, probs)).argmax(-1)  # torch.multinomial(probs, 1) of generate
        else:
            tokens = scores.argmax(-1)
        new[rows, step] = tokens
        running = ~torch.isin(tokens, eos)
        if not running.any() or step + 1 == max_new:
            break
        if not running.all():
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, mask, last, tokens = rows[keep], mask[keep], last[keep], tokens[keep]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], 1)
        last = last + 1
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=last[:, None],
                       past_key_values=cache, use_cache=True).logits
    return torch.cat([input_ids, new[:, :step + 1]], 1)
