"""Metrics: pass@k against brute force, sampling determinism, entropy / KL / overlap, weight geometry."""

import itertools
import math

import numpy as np
import pytest
import torch

from gift_lite.evaluate import (_decode_until_eos, evaluate_task, generate_sharing_prompts, gold_probs, kl_to_base,
                                merged_state_dict, pass_at_k, pass_at_k_per_problem, prompts_shared_in_generate,
                                response_token_metrics, sample_completions, token_entropy, topk_overlap,
                                weight_geometry)
from gift_lite.models import LoraSettings, TinyModelConfig, add_lora, tiny_qwen2
from gift_lite.sampling import generate_dropping_finished, race
from gift_lite.world import Problem, build_tokenizer, set_special_tokens

TINY = TinyModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64)
PROMPTS = ["5 7 9>26:", "2 3 4>10:", "1 1 8>9:"]
COMPLETIONS = ["5*7=35,35-9=26", "2*3=6,4+6=10", "1*1=1,1+8=9"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def tiny_model(tokenizer, seed=0):
    model = tiny_qwen2(TINY, seed=seed)
    set_special_tokens(model, tokenizer)
    return model.eval()


@pytest.mark.parametrize("n", range(1, 7))
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        outcomes = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_vectorised_and_large_n():
    assert pass_at_k_per_problem(16, np.array([0, 1, 16]), 1) == pytest.approx([0, 1 / 16, 1])
    assert 0.0 <= pass_at_k(1000, 3, 500) <= 1.0  # no overflow in the product form
    assert pass_at_k(1000, 3, 500) == pytest.approx(1 - math.comb(997, 500) / math.comb(1000, 500))


@pytest.mark.parametrize("n, c, k, name", [(4, 1, 5, "k"), (4, 5, 1, "c"), (-1, 0, 1, "n"), (4, -1, 1, "c"),
                                           (4, 1, 0, "k"), (4, 1.5, 1, "c")])
def test_pass_at_k_validation_names_the_argument(n, c, k, name):
    with pytest.raises(ValueError, match=f"^{name}="):
        pass_at_k(n, c, k)


def test_sampling_is_deterministic_with_a_seed(tokenizer):
    model = tiny_model(tokenizer)
    torch.manual_seed(123)
    before = torch.rand(1)
    a = sample_completions(model, tokenizer, PROMPTS, num_samples=4, max_new_tokens=8, batch_size=5, seed=7)
    b = sample_completions(model, tokenizer, PROMPTS, num_samples=4, max_new_tokens=8, batch_size=5, seed=7)
    c = sample_completions(model, tokenizer, PROMPTS, num_samples=4, max_new_tokens=8, batch_size=5, seed=8)
    assert a == b and a != c
    assert len(a) == len(PROMPTS) and all(len(row) == 4 for row in a)
    assert all(len(s) <= 8 for row in a for s in row)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # the global RNG is not consumed
    greedy = sample_completions(model, tokenizer, PROMPTS, num_samples=2, max_new_tokens=8, temperature=0)
    assert all(row[0] == row[1] for row in greedy)


@pytest.mark.parametrize("peft", [False, True])
def test_sharing_the_prompts_gives_the_same_samples(tokenizer, peft):
    """One forward pass per prompt for all its samples: the same tokens as plain generate, greedy and
    sampled with one seed, for prompts of different lengths (left padding) and repeats that are not
    all consecutive."""
    model = tiny_model(tokenizer)
    if peft:
        model = add_lora(model, LoraSettings(r=4, lora_alpha=8))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    rows = [PROMPTS[0]] * 3 + [PROMPTS[2]] * 4 + [PROMPTS[1], PROMPTS[0]]
    batch = tokenizer(rows, return_tensors="pt", padding=True, padding_side="left")
    assert (batch["attention_mask"] == 0).any()  # the prompts differ in length
    kwargs = dict(max_new_tokens=8, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    for sampling in ({"do_sample": False}, {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}):
        torch.manual_seed(3)
        plain = model.generate(**batch, **kwargs, **sampling)
        torch.manual_seed(3)
        shared = generate_sharing_prompts(model, batch["input_ids"], batch["attention_mask"], **kwargs, **sampling)
        assert torch.equal(plain, shared), sampling
    with prompts_shared_in_generate(model):
        torch.manual_seed(3)
        patched = model.generate(**batch, **kwargs, **sampling)
    assert torch.equal(plain, patched) and "generate" not in vars(model)  # the class's method is back
    a = sample_completions(model, tokenizer, PROMPTS, num_samples=4, max_new_tokens=8, batch_size=5, seed=7)
    b = sample_completions(model, tokenizer, PROMPTS, num_samples=4, max_new_tokens=8, batch_size=5, seed=7,
                           share_prompts=True)
    assert a == b


def lora_model(tokenizer):
    model = add_lora(tiny_model(tokenizer), LoraSettings(r=4, lora_alpha=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    return model


def batch_sizes_seen(model, run):
    """``run()``'s result and the batch size of each forward pass it made."""
    sizes = []
    hook = model.register_forward_pre_hook(lambda m, a, k: sizes.append(len(k["input_ids"])), with_kwargs=True)
    try:
        return run(), sizes
    finally:
        hook.remove()


SAMPLING = [{"do_sample": False}, {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0},
            {"do_sample": True, "temperature": 0.6, "top_k": 0, "top_p": 1.0},
            {"do_sample": True, "temperature": 0.8, "top_k": 5, "top_p": 0.9}]


@pytest.mark.parametrize("peft", [False, True])
@pytest.mark.parametrize("sampling", SAMPLING, ids=["greedy", "t1", "t0.6", "topk_topp"])
def test_dropping_finished_rows_gives_generate_tokens(tokenizer, peft, sampling):
    """The decode loop that drops ended rows returns generate's tensor (tokens, pad after EOS,
    width of the longest), greedy and sampled with one seed, alone and after a shared prompt."""
    model = lora_model(tokenizer) if peft else tiny_model(tokenizer)
    rows = [PROMPTS[0]] * 3 + [PROMPTS[2]] * 4 + [PROMPTS[1], PROMPTS[0]]
    batch = tokenizer(rows, return_tensors="pt", padding=True, padding_side="left")
    kwargs = dict(max_new_tokens=24, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                  **sampling)
    torch.manual_seed(3)
    plain = model.generate(**batch, **kwargs)
    torch.manual_seed(3)
    fast, sizes = batch_sizes_seen(model, lambda: generate_dropping_finished(model, **batch, **kwargs))
    assert torch.equal(plain, fast)
    torch.manual_seed(3)
    shared = generate_sharing_prompts(model, batch["input_ids"], batch["attention_mask"],
                                      generate=lambda **kw: generate_dropping_finished(model, **kw), **kwargs)
    assert torch.equal(plain, shared)
    if sampling["do_sample"]:  # sampled rows end at different steps, and ended rows left the batch
        ended = (plain[:, batch["input_ids"].shape[1]:] == tokenizer.eos_token_id).any(1)
        assert 0 < ended.sum() < len(rows) and min(sizes) < len(rows) == sizes[0]


def test_dropping_finished_rows_with_trl_settings_and_fallback(tokenizer):
    """TRL's rollout call (a ``GenerationConfig`` with a list of EOS ids) takes the fast loop; what the
    loop does not cover (beam search, a repetition penalty, dropout in training mode) goes to
    ``generate`` unchanged."""
    from transformers import GenerationConfig

    model = tiny_model(tokenizer)
    batch = tokenizer([PROMPTS[0]] * 4 + [PROMPTS[1]] * 4, return_tensors="pt", padding=True, padding_side="left")
    trl = GenerationConfig(max_new_tokens=16, do_sample=True, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=[tokenizer.eos_token_id], temperature=1.0, top_p=1.0, top_k=0,
                           repetition_penalty=1.0, disable_compile=True)
    beams = {"max_new_tokens": 6, "num_beams": 2, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    penalty = {"max_new_tokens": 16, "do_sample": True, "top_k": 0, "repetition_penalty": 1.3,
               "pad_token_id": tokenizer.pad_token_id}
    for kwargs, fast_loop in (({"generation_config": trl}, True), (beams, False), (penalty, False)):
        torch.manual_seed(0)
        plain = model.generate(**batch, **kwargs)
        torch.manual_seed(0)
        fast, sizes = batch_sizes_seen(model, lambda: generate_dropping_finished(model, **batch, **kwargs))
        assert torch.equal(plain, fast) and (min(sizes) < len(plain)) == fast_loop, kwargs
    dropout = add_lora(tiny_model(tokenizer), LoraSettings(r=4, lora_alpha=8, lora_dropout=0.5)).train()
    for training in (True, False):  # dropout draws random numbers in training mode only
        dropout.train(training)
        torch.manual_seed(0)
        plain = dropout.generate(**batch, generation_config=trl)
        torch.manual_seed(0)
        fast, sizes = batch_sizes_seen(dropout.get_base_model(),  # PEFT's generate calls the base model's
                                       lambda: generate_dropping_finished(dropout, **batch, generation_config=trl))
        assert torch.equal(plain, fast) and (min(sizes) < len(plain)) != training


@pytest.mark.parametrize("share", [False, True])
def test_sample_completions_drop_finished_is_the_old_path(tokenizer, share):
    """``drop_finished`` (the default) samples the texts and truncation flags of the path the committed
    units were sampled with (``drop_finished=False``: ``model.generate``) under one seed."""
    model = lora_model(tokenizer)
    kwargs = dict(num_samples=6, max_new_tokens=12, batch_size=9, seed=4, return_ended=True, share_prompts=share)
    for temperature in (0.0, 0.6, 1.0):
        old, old_ended = sample_completions(model, tokenizer, PROMPTS, temperature=temperature, drop_finished=False,
                                            **kwargs)
        new, new_ended = sample_completions(model, tokenizer, PROMPTS, temperature=temperature, **kwargs)
        assert new == old and np.array_equal(new_ended, old_ended), temperature
    assert 0 < new_ended.sum() < new_ended.size  # some samples ended before the limit, some did not


def test_a_static_cache_samples_what_generate_samples(tokenizer):
    """``cache_implementation="static"`` (what bench_real.py times, plain and compiled) changes the
    cache, not the samples; it goes to ``model.generate`` alone."""
    model = lora_model(tokenizer)
    kwargs = dict(num_samples=3, max_new_tokens=10, batch_size=6, seed=2, temperature=1.0, return_ended=True,
                  share_prompts=False, drop_finished=False)
    plain, plain_ended = sample_completions(model, tokenizer, PROMPTS, **kwargs)
    static, static_ended = sample_completions(model, tokenizer, PROMPTS, cache_implementation="static", **kwargs)
    assert static == plain and np.array_equal(static_ended, plain_ended)
    with pytest.raises(ValueError, match="cache_implementation='static' goes to model.generate alone"):
        sample_completions(model, tokenizer, PROMPTS, num_samples=2, cache_implementation="static")


def test_evaluate_task_scores_with_the_reward(tokenizer):
    model = tiny_model(tokenizer)
    problems = [Problem((3, 5, 9), 26), Problem((2, 3, 4), 10)]
    metrics, samples, correct = evaluate_task(model, tokenizer, problems, num_samples=4, ks=(1, 2, 4),
                                              max_new_tokens=8, progress=False, return_samples=True)
    assert set(metrics) == {"pass@1", "pass@2", "pass@4"}
    assert correct.shape == (2, 4) and metrics["pass@1"] == correct.mean()
    # A reward that accepts everything gives pass@k = 1 for every k.
    always = evaluate_task(model, tokenizer, problems, num_samples=4, ks=(1, 4), max_new_tokens=4,
                           reward_fn=lambda s, p: 1.0, progress=False)
    assert always == {"pass@1": 1.0, "pass@4": 1.0}
    with pytest.raises(ValueError, match="ks="):
        evaluate_task(model, tokenizer, problems, num_samples=4, ks=(8,))


def test_samples_cut_off_before_eos_are_counted(tokenizer):
    eos = tokenizer.eos_token_id
    ids = torch.tensor([[5, 6, eos, 7], [5, 6, 7, 8]])  # the second ran out of tokens
    texts, ended = _decode_until_eos(tokenizer, ids)
    assert ended == [True, False] and texts == tokenizer.batch_decode([[5, 6], [5, 6, 7, 8]], skip_special_tokens=True)
    model = tiny_model(tokenizer)
    problems = [Problem((3, 5, 9), 26), Problem((2, 3, 4), 10)]
    _, flags = sample_completions(model, tokenizer, [p.prompt for p in problems], num_samples=8, max_new_tokens=3,
                                  seed=0, return_ended=True)
    metrics = evaluate_task(model, tokenizer, problems, num_samples=8, ks=(1,), max_new_tokens=3, seed=0,
                            progress=False, report_truncated=True)
    assert flags.shape == (2, 8) and metrics["truncated"] == 1.0 - flags.mean()
    assert 0.0 < metrics["truncated"] <= 1.0  # 3 tokens are too few for most samples of a random model


def test_entropy_of_uniform_logits_is_log_v(tokenizer):
    model = tiny_model(tokenizer)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    assert token_entropy(model, tokenizer, PROMPTS, COMPLETIONS) == pytest.approx(math.log(TINY.vocab_size), rel=1e-6)
    assert 0 < token_entropy(tiny_model(tokenizer), tokenizer, PROMPTS, COMPLETIONS) <= math.log(TINY.vocab_size)


def test_gold_probs_are_float64_and_match_a_direct_softmax(tokenizer):
    model = tiny_model(tokenizer).double()  # float64 throughout: the same numbers on every CPU
    p = gold_probs(model, tokenizer, PROMPTS[:1], COMPLETIONS[:1])
    ids = tokenizer(PROMPTS[0] + COMPLETIONS[0])["input_ids"] + [tokenizer.eos_token_id]
    n_prompt = len(tokenizer(PROMPTS[0])["input_ids"])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1], dim=-1)
    expected = probs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])][n_prompt - 1:]
    assert p.dtype == torch.float64 and p.shape == (len(COMPLETIONS[0]) + 1,)  # one token per character, and EOS
    torch.testing.assert_close(p, expected, rtol=1e-12, atol=0)


def test_kl_and_overlap_of_a_model_to_itself(tokenizer):
    model, other = tiny_model(tokenizer), tiny_model(tokenizer, seed=1)
    assert kl_to_base(model, model, tokenizer, PROMPTS, COMPLETIONS) == pytest.approx(0.0, abs=1e-6)
    assert topk_overlap(model, model, tokenizer, PROMPTS, COMPLETIONS, k=5) == 1.0
    assert kl_to_base(model, other, tokenizer, PROMPTS, COMPLETIONS) > 0
    assert topk_overlap(model, other, tokenizer, PROMPTS, COMPLETIONS, k=5) < 1.0
    with pytest.raises(ValueError, match="base_model=None"):
        kl_to_base(model, None, tokenizer, PROMPTS, COMPLETIONS)


def test_token_metrics_in_one_pass_match_the_single_metrics(tokenizer):
    model, other = tiny_model(tokenizer), tiny_model(tokenizer, seed=1)
    together = response_token_metrics(model, other, tokenizer, PROMPTS, COMPLETIONS, k=3, batch_size=2)
    assert together == {"entropy": token_entropy(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=2),
                        "kl_to_base": kl_to_base(model, other, tokenizer, PROMPTS, COMPLETIONS, batch_size=2),
                        "topk_overlap": topk_overlap(model, other, tokenizer, PROMPTS, COMPLETIONS, k=3, batch_size=2)}
    alone = response_token_metrics(model, None, tokenizer, PROMPTS, COMPLETIONS, compare=False, batch_size=2)
    assert alone == {"entropy": together["entropy"]}
    with pytest.raises(ValueError, match="^k=0"):
        response_token_metrics(model, other, tokenizer, PROMPTS, COMPLETIONS, k=0)


def test_peft_model_with_adapter_disabled_is_the_base(tokenizer):
    base = tiny_model(tokenizer)
    peft = add_lora(tiny_model(tokenizer), LoraSettings(r=4, lora_alpha=8))
    assert kl_to_base(peft, None, tokenizer, PROMPTS, COMPLETIONS) == pytest.approx(0.0, abs=1e-6)  # B = 0
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    kl_self = kl_to_base(peft, None, tokenizer, PROMPTS, COMPLETIONS)
    kl_separate = kl_to_base(peft, base, tokenizer, PROMPTS, COMPLETIONS)
    assert kl_self > 1e-4 and kl_self == pytest.approx(kl_separate, rel=1e-5)
    overlap = topk_overlap(peft, None, tokenizer, PROMPTS, COMPLETIONS, k=3)
    assert overlap == topk_overlap(peft, base, tokenizer, PROMPTS, COMPLETIONS, k=3)

    # Weight geometry compares merged weights, and merging does not touch the PEFT model.
    lora_before = {k: v.clone() for k, v in peft.state_dict().items()}
    merged = merged_state_dict(peft)
    assert all(torch.equal(v, lora_before[k]) for k, v in peft.state_dict().items())
    assert "lm_head.weight" in merged and not any("lora_" in k for k in merged)
    geometry = weight_geometry(base, peft)
    assert geometry["l2"] > 0 and geometry["cosine"] < 1


def test_weight_geometry(tokenizer):
    a, b = tiny_model(tokenizer), tiny_model(tokenizer)
    same = weight_geometry(a, b)
    assert same["cosine"] == pytest.approx(1.0) and same["l2"] == 0.0 and same["relative_l2"] == 0.0
    with torch.no_grad():
        b.model.layers[-1].mlp.down_proj.weight.mul_(-1)
        b.model.layers[0].mlp.up_proj.weight.add_(1.0)  # not the last layer: ignored
    moved = weight_geometry(a, b.state_dict())
    down = a.model.layers[-1].mlp.down_proj.weight
    assert moved["l2"] == pytest.approx(2 * float(down.detach().double().norm()), rel=1e-6)
    flipped = weight_geometry(a, b, param_name="model.layers.1.mlp.down_proj.weight")
    assert flipped["cosine"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="param_name="):
        weight_geometry(a, b, param_name="nope")


def test_race_is_multinomials_noise_for_the_running_rows():
    """``sampling.race`` gives the rows of the (batch, V) exponential noise behind ``torch.multinomial``
    and leaves the generator where a whole draw leaves it."""
    probs = torch.softmax(torch.randn(6, 50, generator=torch.Generator().manual_seed(0)), -1)
    rows = torch.tensor([1, 2, 4])
    torch.manual_seed(5)
    expected, after = torch.multinomial(probs, 1).squeeze(1), torch.rand(3)
    torch.manual_seed(5)
    noise = race(rows, 6, probs)
    assert torch.equal((probs[rows] / noise).argmax(-1), expected[rows]) and torch.equal(torch.rand(3), after)
