"""Property checks of the loss family from its formulas (docs/tests.md).

The reference for GIFT is a naive full-vocabulary transcription of the official code
(verl/verl/trainer/fsdp_gift_trainer.py, docs/paper.md §2); the baselines are checked against the
gradients their papers' formulas imply.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from gift_lite import losses
from gift_lite.losses import (
    ANCHOR, LOSS_HPARAMS, LOSSES, asft_loss, dft_loss, fused_gift_loss, gift_diagnostics, gift_loss,
    gift_target, gold_mass, psft_loss, sft_entropy_loss, sft_loss,
)

INF = float("inf")
BETAS = [0.0, 0.5, 5.0, 20.0, INF]
LAMBDAS = [0.0, 0.01]
V = 23
HPARAMS = {"beta": 3.0, "smooth_lambda": 0.01, "entropy_coef": 0.1, "kl_coef": 0.1, "clip_epsilon": 0.2}


def make_batch(seed=0, shape=(3, 7), vocab=V, scale=3.0, n_ignored=4):
    """Student and base logits (different models), labels with a few ignored positions."""
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(*shape, vocab, generator=g)).requires_grad_()
    ref = scale * torch.randn(*shape, vocab, generator=g)
    labels = torch.randint(0, vocab, shape, generator=g)
    labels.view(-1)[torch.randperm(labels.numel(), generator=g)[:n_ignored]] = -100
    return logits, ref, labels


def official_gift(logits, ref_logits, labels, beta, smooth_lambda, ignore_index=-100):
    """The official loss, line by line on full [tokens × V] tensors (beta = inf: its one-hot limit)."""
    vocab = logits.shape[-1]
    student = logits.reshape(-1, vocab).float()
    y = labels.reshape(-1)
    mask = (y != ignore_index).float()
    y_safe = y.clamp(min=0)
    with torch.no_grad():
        p = F.softmax(ref_logits.reshape(-1, vocab).float(), dim=-1)
        mixed = (1 - smooth_lambda) * p + smooth_lambda * (1.0 / vocab)
        target_logits = torch.log(mixed + 1e-10).clone()
        if math.isinf(beta):
            target = F.one_hot(y_safe, vocab).float()
        else:
            target_logits.scatter_add_(1, y_safe.unsqueeze(1), torch.full((y.numel(), 1), beta))
            target = F.softmax(target_logits, dim=-1)
    loss_tok = -(target * F.log_softmax(student, dim=-1)).sum(-1)
    return (loss_tok * mask).sum() / (mask.sum() + 1e-8), target.reshape(logits.shape)


def grad_of(fn, x):
    x = x.detach().clone().requires_grad_()
    fn(x).backward()
    return x.grad


# -- GIFT: limits and closed form ----------------------------------------------------------
def test_beta_inf_is_cross_entropy_bit_for_bit():
    logits, ref, labels = make_batch()
    ce = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    ours = gift_loss(logits, ref, labels, beta=INF)
    assert torch.equal(ours, ce)
    assert torch.equal(ours, sft_loss(logits, None, labels))
    g_ce = torch.autograd.grad(ce, logits)[0]
    assert torch.equal(torch.autograd.grad(ours, logits)[0], g_ce)


def test_large_beta_approaches_cross_entropy():
    logits, ref, labels = make_batch()
    ce = sft_loss(logits, None, labels).item()
    gaps = [abs(gift_loss(logits, ref, labels, beta=b).item() - ce) for b in (2.0, 8.0, 16.0, 40.0)]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-6


@pytest.mark.parametrize("smooth_lambda", LAMBDAS)
@pytest.mark.parametrize("beta", BETAS)
def test_matches_official_formula(beta, smooth_lambda):
    logits, ref, labels = make_batch(seed=1)
    official, official_target = official_gift(logits, ref, labels, beta, smooth_lambda)
    ours = gift_loss(logits, ref, labels, beta=beta, smooth_lambda=smooth_lambda)
    assert_close(ours, official, rtol=1e-5, atol=1e-6)
    assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(official, logits)[0],
                 rtol=1e-4, atol=1e-7)
    keep = labels != -100
    target = gift_target(ref, labels, beta=beta, smooth_lambda=smooth_lambda)
    assert_close(target[keep], official_target[keep], rtol=1e-5, atol=1e-7)


QWEN_VOCAB = 152064  # Qwen2.5's vocabulary, the size at which one fp32 running sum drifts


def float64_gift(logits, ref_logits, labels, beta):
    """The official formula evaluated in float64 on the same (fp32) inputs: the value to agree with."""
    p = F.softmax(ref_logits.double(), dim=-1)
    target_logits = torch.log(p + 1e-10)
    target_logits.scatter_add_(1, labels.unsqueeze(1), torch.full((labels.numel(), 1), beta, dtype=torch.float64))
    target = F.softmax(target_logits, dim=-1)
    return float(-(target * F.log_softmax(logits.double(), dim=-1)).sum(-1).mean())


def test_loss_value_agrees_with_float64_at_a_152k_vocabulary(monkeypatch):
    """The reported value is within 1e-5 relative of float64 at V = 152k; one bmm per row was not.

    Logits of unit scale with no favoured gold token (a fresh head, as in bench_loss.py) spread the
    target over the vocabulary, so <target, logits> sums ~V terms of both signs: the worst case.
    """
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, QWEN_VOCAB, generator=g)
    ref = torch.randn(16, QWEN_VOCAB, generator=g)
    labels = torch.randint(0, QWEN_VOCAB, (16,), generator=g)
    reference = float64_gift(logits, ref, labels, 20.0)
    ours = float(gift_loss(logits, ref, labels, beta=20.0, chunk_size=8))
    assert abs(ours - reference) / reference <= 1e-5
    hidden = torch.eye(64)[:16]  # fused: logits = hidden @ W.T with W's first 16 columns = logits.T
    weight = torch.zeros(QWEN_VOCAB, 64)
    weight[:, :16] = logits.T
    ref_weight = torch.zeros(QWEN_VOCAB, 64)
    ref_weight[:, :16] = ref.T
    fused = float(fused_gift_loss(hidden, hidden, weight, labels, beta=20.0, ref_lm_head_weight=ref_weight))
    assert abs(fused - reference) / reference <= 1e-5
    monkeypatch.setattr(losses, "ROWDOT_BLOCK", QWEN_VOCAB)  # the former single bmm over the whole row
    single = float(gift_loss(logits, ref, labels, beta=20.0, chunk_size=8))
    assert abs(single - reference) / reference > 1e-5  # the check above can fail


def test_official_epsilon_is_carried_for_unlikely_gold_tokens():
    """At smooth_lambda = 0 the official 1e-10 sets the target when p_base(gold) << 1e-8."""
    logits, ref, labels = make_batch(seed=2, shape=(2, 4), n_ignored=0)
    ref.scatter_(-1, labels.unsqueeze(-1), -40.0)  # p_base(gold) ~ 1e-18
    official, official_target = official_gift(logits, ref, labels, 20.0, 0.0)
    target = gift_target(ref, labels, beta=20.0)
    gold = target.gather(-1, labels.unsqueeze(-1))
    assert (gold > 0.01).all()  # 1e-10 * e^20 ~ 0.05, not p * e^20 ~ 1e-9
    assert_close(target, official_target, rtol=1e-5, atol=1e-7)
    assert_close(gift_loss(logits, ref, labels, beta=20.0), official, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", BETAS)
def test_closed_form_gold_mass_equals_target_entry(beta):
    _, ref, labels = make_batch(seed=3, n_ignored=0)
    p_gold = torch.softmax(ref, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    target = gift_target(ref, labels, beta=beta)
    assert_close(target.gather(-1, labels.unsqueeze(-1)).squeeze(-1), gold_mass(p_gold, beta),
                 rtol=1e-5, atol=1e-8)
    assert_close(target.sum(-1), torch.ones(labels.shape))


def test_gold_mass_on_floats_arrays_and_limits():
    assert gold_mass(0.3, 0.0) == pytest.approx(0.3)
    assert gold_mass(0.3, INF) == 1.0
    assert gold_mass(0.5, math.log(3.0)) == pytest.approx(0.75)
    out = gold_mass(np.array([1e-6, 0.1, 0.9]), 20.0)
    assert isinstance(out, np.ndarray) and np.all(np.diff(out) > 0) and np.all(out <= 1)


def test_beta_zero_is_a_fixed_point():
    _, ref, labels = make_batch(seed=4)
    assert_close(gift_target(ref, labels, beta=0.0), torch.softmax(ref, -1), rtol=1e-5, atol=1e-8)
    student = ref.clone().requires_grad_()
    gift_loss(student, ref, labels, beta=0.0).backward()
    assert student.grad.abs().max() < 1e-7


def test_beta_inf_target_is_exactly_one_hot():
    _, ref, labels = make_batch(seed=5, n_ignored=0)
    assert torch.equal(gift_target(ref, labels, beta=INF), F.one_hot(labels, V).float())


def test_ignored_positions_of_target_are_the_smoothed_base():
    _, ref, labels = make_batch(seed=5)
    target = gift_target(ref, labels, beta=5.0, smooth_lambda=0.01)
    p_mix = 0.99 * torch.softmax(ref, -1) + 0.01 / V
    assert_close(target[labels == -100], p_mix[labels == -100])


def test_no_gradient_flows_through_the_target():
    logits, ref, labels = make_batch(seed=6)
    ref.requires_grad_()
    for beta in (0.5, 20.0, INF):
        gift_loss(logits, ref, labels, beta=beta).backward()
    assert ref.grad is None
    assert not gift_target(ref, labels, beta=5.0).requires_grad


@pytest.mark.parametrize("beta", [0.0, 5.0])
def test_gradient_is_softmax_minus_target_over_tokens(beta):
    logits, ref, labels = make_batch(seed=7)
    keep = (labels != -100).unsqueeze(-1)
    grad = grad_of(lambda x: gift_loss(x, ref, labels, beta=beta, smooth_lambda=0.01), logits)
    expected = (torch.softmax(logits.detach(), -1)
                - gift_target(ref, labels, beta=beta, smooth_lambda=0.01)) * keep / keep.sum()
    assert_close(grad, expected, rtol=1e-5, atol=1e-8)


def test_ignored_positions_do_not_affect_the_value():
    logits, ref, labels = make_batch(seed=8)
    ignored = (labels == -100).unsqueeze(-1)
    noisy = torch.where(ignored, 1e4 * torch.randn_like(ref), logits.detach())
    for name, fn in LOSSES.items():
        kwargs = {k: HPARAMS[k] for k in LOSS_HPARAMS[name]}
        a = fn(logits, ref, labels, **kwargs)
        b = fn(noisy, torch.where(ignored, -ref, ref), labels, **kwargs)
        assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    keep = labels != -100
    assert_close(gift_loss(logits[keep], ref[keep], labels[keep], beta=3.0),
                 gift_loss(logits, ref, labels, beta=3.0))


def test_chunk_size_does_not_change_value_or_gradient():
    logits, ref, labels = make_batch(seed=9)
    results = []
    for chunk in (1, 7, 10_000):
        loss = gift_loss(logits, ref, labels, beta=5.0, smooth_lambda=0.01, chunk_size=chunk)
        results.append((loss, torch.autograd.grad(loss, logits)[0]))
    for loss, grad in results[1:]:  # each token's row is computed alone: bit-identical
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def test_non_contiguous_logits_as_a_trainer_slices_them():
    logits, ref, labels = make_batch(seed=9)
    sliced = gift_loss(logits[:, :-1], ref[:, :-1], labels[:, 1:], beta=5.0)
    copied = gift_loss(logits[:, :-1].contiguous(), ref[:, :-1].contiguous(), labels[:, 1:], beta=5.0)
    assert torch.equal(sliced, copied)
    assert torch.equal(torch.autograd.grad(sliced, logits)[0], torch.autograd.grad(copied, logits)[0])


def test_module_chunk_size_is_the_default(monkeypatch):
    logits, ref, labels = make_batch(seed=9)
    before = gift_loss(logits, ref, labels, beta=5.0)
    monkeypatch.setattr(losses, "CHUNK_SIZE", 2)
    assert_close(gift_loss(logits, ref, labels, beta=5.0), before, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("beta", [0.5, 20.0, INF])
def test_low_precision_inputs_are_computed_in_fp32(dtype, beta):
    logits, ref, labels = make_batch(seed=10)
    low = logits.detach().to(dtype).requires_grad_()
    loss = gift_loss(low, ref.to(dtype), labels, beta=beta)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    upcast = gift_loss(low.detach().float(), ref.to(dtype).float(), labels, beta=beta)
    assert_close(loss, upcast, rtol=1e-6, atol=1e-6)
    loss.backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad).all()


def test_deterministic_with_a_fixed_seed():
    runs = []
    for _ in range(2):
        logits, ref, labels = make_batch(seed=11)
        loss = gift_loss(logits, ref, labels, beta=5.0, smooth_lambda=0.01)
        runs.append((loss, torch.autograd.grad(loss, logits)[0]))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


# -- diagnostics ------------------------------------------------------------------------------
def test_diagnostics_at_the_two_ends():
    _, ref, labels = make_batch(seed=12)
    keep = labels != -100
    logp = torch.log_softmax(ref, -1)[keep].gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1)
    sft = gift_diagnostics(ref, labels, beta=INF)
    assert sft["target/gold_mass"] == 1.0 and sft["target/entropy"] == 0.0
    assert sft["target/kl_to_base"] == pytest.approx(-logp.mean().item(), rel=1e-5)
    assert sft["base/gold_prob"] == pytest.approx(logp.exp().mean().item(), rel=1e-5)
    base = gift_diagnostics(ref, labels, beta=0.0, chunk_size=3)
    assert base["target/gold_mass"] == pytest.approx(base["base/gold_prob"], rel=1e-5)
    assert base["target/entropy"] == pytest.approx(base["base/entropy"], rel=1e-5)
    assert abs(base["target/kl_to_base"]) < 1e-5
    mid = gift_diagnostics(ref, labels, beta=3.0)
    assert base["target/gold_mass"] < mid["target/gold_mass"] < 1.0
    assert all(isinstance(v, float) for v in mid.values())


def test_diagnostics_with_everything_ignored_are_nan():
    _, ref, labels = make_batch(seed=12)
    out = gift_diagnostics(ref, torch.full_like(labels, -100), beta=3.0)
    assert all(math.isnan(v) for v in out.values())


# -- baselines ----------------------------------------------------------------------------------
def per_token_ce_grad(logits, labels):
    return grad_of(lambda x: sft_loss(x, None, labels), logits)


def gold_prob(logits, labels):
    safe = labels.clamp(min=0).unsqueeze(-1)
    return torch.softmax(logits.detach(), -1).gather(-1, safe)


def test_sft_entropy_is_ce_minus_entropy_bonus():
    logits, _, labels = make_batch(seed=13)
    keep = labels != -100
    logq = torch.log_softmax(logits.detach()[keep], -1)
    entropy = -(logq.exp() * logq).sum(-1).mean()
    ce = sft_loss(logits, None, labels)
    assert_close(sft_entropy_loss(logits, None, labels, entropy_coef=0.3), ce - 0.3 * entropy)
    assert torch.equal(sft_entropy_loss(logits, None, labels, entropy_coef=0.0), ce)


def test_dft_gradient_is_gold_prob_times_ce_gradient():
    logits, _, labels = make_batch(seed=14)
    grad = grad_of(lambda x: dft_loss(x, None, labels), logits)
    assert_close(grad, gold_prob(logits, labels) * per_token_ce_grad(logits, labels))


def test_asft_is_dft_plus_kl_from_base_to_student():
    logits, ref, labels = make_batch(seed=15)
    assert torch.equal(asft_loss(logits, ref, labels, kl_coef=0.0), dft_loss(logits, None, labels))
    keep = labels != -100
    logp, logq = torch.log_softmax(ref[keep], -1), torch.log_softmax(logits.detach()[keep], -1)
    kl = (logp.exp() * (logp - logq)).sum(-1).mean()  # KL(base || student), the authors' direction
    assert_close(asft_loss(logits, ref, labels, kl_coef=0.5), dft_loss(logits, None, labels) + 0.5 * kl)


def test_asft_kl_term_vanishes_at_the_base():
    logits, _, labels = make_batch(seed=16)
    ref = logits.detach().clone()
    assert_close(asft_loss(logits, ref, labels, kl_coef=0.7), dft_loss(logits, None, labels))
    assert_close(grad_of(lambda x: asft_loss(x, ref, labels, kl_coef=0.7), logits),
                 grad_of(lambda x: dft_loss(x, None, labels), logits))


def test_psft_at_a_fresh_snapshot_is_sft():
    logits, _, labels = make_batch(seed=17)
    old = logits.detach().clone()
    assert psft_loss(logits, old, labels).item() == pytest.approx(-1.0)
    assert_close(grad_of(lambda x: psft_loss(x, old, labels), logits), per_token_ce_grad(logits, labels))


def test_psft_gradient_is_ratio_times_sft_inside_the_clip_and_zero_above():
    logits, _, labels = make_batch(seed=18, shape=(1, 3), n_ignored=0)
    eps = 0.2
    old = logits.detach().clone()
    # token 0: ratio 1.1 (inside); token 1: 1.5 (above, clipped); token 2: 0.5 (below: PPO keeps it)
    for t, ratio in enumerate((1.1, 1.5, 0.5)):
        old[0, t, labels[0, t]] -= math.log(ratio)
    q_gold, old_gold = gold_prob(logits, labels), gold_prob(old, labels)
    ratios = (q_gold / old_gold).squeeze(-1)
    grad = grad_of(lambda x: psft_loss(x, old, labels, clip_epsilon=eps), logits)
    ce_grad = per_token_ce_grad(logits, labels)
    assert_close(grad[0, 0], ratios[0, 0] * ce_grad[0, 0])
    assert torch.equal(grad[0, 1], torch.zeros(V))
    assert_close(grad[0, 2], ratios[0, 2] * ce_grad[0, 2])
    assert ratios[0, 0] < 1 + eps < ratios[0, 1]


# -- the shared calling convention ---------------------------------------------------------------
def test_registries_agree():
    assert set(LOSSES) == {"sft", "gift", "sft_entropy", "dft", "asft", "psft"}
    assert set(ANCHOR) == set(LOSSES) == set(LOSS_HPARAMS)
    assert ANCHOR == {"sft": None, "gift": "base", "sft_entropy": None, "dft": None,
                      "asft": "base", "psft": "snapshot"}
    assert set().union(*LOSS_HPARAMS.values()) == set(HPARAMS)


def test_defaults_are_the_cited_values():
    assert losses.DEFAULT_BETA == 20.0  # official GIFT trainer
    assert losses.DEFAULT_KL_COEF == 0.1  # ASFT authors' kl_weight
    assert losses.DEFAULT_CLIP_EPSILON == 0.28  # PSFT authors' clip_ratio_high
    assert losses.EPS == 1e-10  # official log(p_mix + 1e-10)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_follows_the_calling_convention(name):
    logits, ref, labels = make_batch(seed=19)
    kwargs = {k: HPARAMS[k] for k in LOSS_HPARAMS[name]}
    anchor = None if ANCHOR[name] is None else ref
    loss = LOSSES[name](logits, anchor, labels, ignore_index=-100, **kwargs)
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    if ANCHOR[name] is not None:
        with pytest.raises(ValueError, match="ref_logits=None"):
            LOSSES[name](logits, None, labels, **kwargs)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_masked_gives_exact_zero_and_zero_gradients(name):
    logits, ref, labels = make_batch(seed=20)
    kwargs = {k: HPARAMS[k] for k in LOSS_HPARAMS[name]}
    loss = LOSSES[name](logits, ref, torch.full_like(labels, -100), **kwargs)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def _bad_calls():
    logits, ref, labels = make_batch(seed=21)
    hidden, w = torch.randn(3, 7, 8), torch.randn(V, 8)
    cases = [
        (lambda: gift_loss(logits, ref, labels, beta=-1.0), r"beta=-1\.0 must be >= 0 \(inf for SFT\)"),
        (lambda: gift_loss(logits, ref, labels, beta=float("nan")), r"beta=nan must be >= 0"),
        (lambda: gift_loss(logits, ref, labels, smooth_lambda=1.0),
         r"smooth_lambda=1\.0 must be in \[0, 1\)"),
        (lambda: gift_loss(logits, ref, labels, smooth_lambda=-0.1), r"smooth_lambda=-0\.1"),
        (lambda: gift_loss(logits, ref, labels, smooth_lambda=float("nan")), r"smooth_lambda=nan"),
        (lambda: gift_loss(logits, ref[..., :-1], labels), r"ref_logits\.shape=\(3, 7, 22\)"),
        (lambda: gift_loss(logits, ref, labels[:, :-1]), r"labels\.shape=\(3, 6\)"),
        (lambda: gift_loss(logits.long(), ref, labels), r"logits\.dtype=torch\.int64"),
        (lambda: gift_loss(logits, ref.long(), labels), r"ref_logits\.dtype=torch\.int64"),
        (lambda: gift_loss(logits, ref, labels.float()), r"labels\.dtype=torch\.float32"),
        (lambda: gift_loss(logits, ref, labels.clamp(min=0) + V), r"labels contain \d+, outside \[0, 23\)"),
        (lambda: gift_loss(logits, ref, torch.where(labels < 0, -5, labels)), r"labels contain -5"),
        (lambda: gift_loss(logits, ref, labels, chunk_size=0), r"chunk_size=0"),
        (lambda: gift_loss(logits[0, 0], ref[0, 0], labels[0, 0]), r"logits\.shape=\(23,\)"),
        (lambda: gift_target(ref, labels, beta=-2.0), r"beta=-2\.0"),
        (lambda: gift_diagnostics(ref, labels, beta=1.0, smooth_lambda=2.0), r"smooth_lambda=2\.0"),
        (lambda: gold_mass(0.5, -1.0), r"beta=-1\.0"),
        (lambda: sft_entropy_loss(logits, None, labels, entropy_coef=-1.0), r"entropy_coef=-1\.0"),
        (lambda: sft_entropy_loss(logits, None, labels, entropy_coef=float("nan")), r"entropy_coef=nan"),
        (lambda: asft_loss(logits, ref, labels, kl_coef=float("inf")), r"kl_coef=inf"),
        (lambda: asft_loss(logits, ref, labels, kl_coef=-0.1), r"kl_coef=-0\.1"),
        (lambda: psft_loss(logits, ref, labels, clip_epsilon=0.0),
         r"clip_epsilon=0\.0 must be a finite number > 0"),
        (lambda: psft_loss(logits, ref, labels, clip_epsilon=float("nan")), r"clip_epsilon=nan"),
        (lambda: dft_loss(logits, ref[:1], labels), r"ref_logits\.shape"),
        (lambda: sft_loss(logits, None, labels, ignore_index=1.5), r"ignore_index=1\.5"),
        (lambda: fused_gift_loss(hidden, hidden, w[:, :4], labels), r"lm_head_weight\.shape=\(23, 4\)"),
        (lambda: fused_gift_loss(hidden, hidden, w.double(), labels),
         r"lm_head_weight\.dtype=torch\.float64"),
        (lambda: fused_gift_loss(hidden, hidden[:1], w, labels), r"ref_hidden\.shape=\(1, 7, 8\)"),
        (lambda: fused_gift_loss(hidden, hidden, w, labels, beta=-3), r"beta=-3\.0"),
        (lambda: fused_gift_loss(hidden, hidden, w, labels, bias=torch.zeros(5)), r"bias of lm_head_weight"),
    ]
    return cases


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_invalid_arguments_raise_value_errors_naming_them(case):
    call, message = _bad_calls()[case]
    with pytest.raises(ValueError, match=message):
        call()


# -- fused: from hidden states --------------------------------------------------------------------
def make_hidden(seed=0, shape=(3, 7), dim=8, vocab=V, n_ignored=4, bias=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*shape, dim, generator=g).requires_grad_()
    ref_hidden = hidden.detach() + 0.5 * torch.randn(*shape, dim, generator=g)
    weight = torch.randn(vocab, dim, generator=g).requires_grad_()
    b = torch.randn(vocab, generator=g).requires_grad_() if bias else None
    labels = torch.randint(0, vocab, shape, generator=g)
    labels.view(-1)[torch.randperm(labels.numel(), generator=g)[:n_ignored]] = -100
    return hidden, ref_hidden, weight, b, labels


def grads(loss, *tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("smooth_lambda", LAMBDAS)
@pytest.mark.parametrize("beta", BETAS)
def test_fused_matches_gift_loss_on_full_logits(beta, smooth_lambda):
    hidden, ref_hidden, weight, bias, labels = make_hidden(seed=30)
    logits = F.linear(hidden, weight, bias)
    ref_logits = F.linear(ref_hidden, weight, bias).detach()
    full = gift_loss(logits, ref_logits, labels, beta=beta, smooth_lambda=smooth_lambda)
    fused = fused_gift_loss(hidden, ref_hidden, weight, labels, beta=beta, smooth_lambda=smooth_lambda,
                            bias=bias, chunk_size=5)
    assert_close(fused, full, rtol=1e-5, atol=1e-6)
    for g_fused, g_full in zip(grads(fused, hidden, weight, bias), grads(full, hidden, weight, bias)):
        assert_close(g_fused, g_full, rtol=1e-4, atol=1e-6)


def test_fused_with_its_own_reference_head_and_no_bias():
    hidden, ref_hidden, weight, _, labels = make_hidden(seed=31, bias=False)
    ref_weight = weight.detach() + 0.3 * torch.randn_like(weight)
    ref_weight.requires_grad_()
    full = gift_loss(hidden @ weight.T, (ref_hidden @ ref_weight.T).detach(), labels, beta=5.0)
    fused = fused_gift_loss(hidden, ref_hidden, weight, labels, beta=5.0, ref_lm_head_weight=ref_weight)
    assert_close(fused, full, rtol=1e-5, atol=1e-6)
    fused.backward()
    assert ref_weight.grad is None
    assert_close(weight.grad, torch.autograd.grad(full, weight)[0], rtol=1e-4, atol=1e-6)


def test_fused_chunks_and_grad_output_scaling():
    hidden, ref_hidden, weight, bias, labels = make_hidden(seed=32)
    results = []
    for chunk in (1, 7, 10_000):
        loss = fused_gift_loss(hidden, ref_hidden, weight, labels, beta=5.0, bias=bias, chunk_size=chunk)
        results.append((loss, *grads(3.0 * loss, hidden, weight, bias)))
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            assert_close(a, b, rtol=1e-5, atol=1e-6)
    ref_hidden.requires_grad_()
    fused_gift_loss(hidden, ref_hidden, weight, labels, beta=5.0).backward()
    assert ref_hidden.grad is None


def test_fused_all_masked_is_zero_with_zero_gradients():
    hidden, ref_hidden, weight, bias, labels = make_hidden(seed=33)
    loss = fused_gift_loss(hidden, ref_hidden, weight, torch.full_like(labels, -100), bias=bias)
    assert loss.item() == 0.0
    loss.backward()
    for t in (hidden, weight, bias):
        assert torch.equal(t.grad, torch.zeros_like(t))


def test_fused_bf16_is_finite_and_close_to_fp32():
    hidden, ref_hidden, weight, _, labels = make_hidden(seed=34, bias=False)
    h16, w16 = hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16().requires_grad_()
    loss = fused_gift_loss(h16, ref_hidden.bfloat16(), w16, labels, beta=5.0)
    full = gift_loss(h16.detach() @ w16.detach().T, ref_hidden.bfloat16() @ w16.detach().T, labels, beta=5.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert_close(loss, full, rtol=1e-5, atol=1e-5)
    loss.backward()
    assert h16.grad.dtype == w16.grad.dtype == torch.bfloat16
    assert torch.isfinite(h16.grad).all() and torch.isfinite(w16.grad).all()


def test_a_second_backward_through_the_same_graph_is_refused():
    logits, ref, labels = make_batch(seed=36)
    loss = gift_loss(logits, ref, labels, beta=5.0)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already back-propagated"):
        loss.backward()
    hidden, ref_hidden, weight, bias, labels = make_hidden(seed=36)
    loss = fused_gift_loss(hidden, ref_hidden, weight, labels, bias=bias)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already back-propagated"):
        loss.backward()


def test_no_gradient_work_under_no_grad(monkeypatch):
    hidden, ref_hidden, weight, bias, labels = make_hidden(seed=35)
    asked = []
    rows = losses._gift_rows
    monkeypatch.setattr(losses, "_gift_rows", lambda *a: asked.append(a[-1]) or rows(*a))
    with torch.no_grad():
        fused = fused_gift_loss(hidden, ref_hidden, weight, labels, beta=5.0, bias=bias)
        logits, ref_logits = F.linear(hidden, weight, bias), F.linear(ref_hidden, weight, bias)
        full = gift_loss(logits, ref_logits, labels, beta=5.0)
    assert not fused.requires_grad and not full.requires_grad
    assert asked and not any(asked)  # want_grad was False for every chunk
    assert_close(fused, full)
    assert_close(full, gift_loss(logits.requires_grad_(), ref_logits, labels, beta=5.0).detach())
