"""The GIFT loss and the SFT-family baselines, as pure functions on tensors.

GIFT is a diff from SFT. Per response token ``t`` with expert token ``y*``, SFT fits the one-hot
target; GIFT fits the finite-temperature Gibbs target around the frozen base model (docs/paper.md §1-2)

    target_t(k) ∝ p_mix(k) · exp(beta · [k = y*]),   p_mix = (1 - smooth_lambda) p_base + smooth_lambda/V

so ``beta = inf`` is SFT (``gift_loss`` then *is* ``F.cross_entropy``) and ``beta = 0`` keeps the
base. Every loss in ``LOSSES`` is called ``fn(logits, ref_logits, labels, *, ignore_index=-100,
**hparams)`` with logits ``(..., V)`` and labels ``(...)`` already aligned (no shift inside, as in
``F.cross_entropy``), and returns the mean over positions whose label is not ``ignore_index``.
``ANCHOR`` says which logits the trainer passes as ``ref_logits``; ``LOSS_HPARAMS`` names the
keyword hyper-parameters each loss takes.

``gift_loss`` never builds the official code's chain of ``[tokens × V]`` tensors: it uses the
closed form of the target (``gift_loss`` docstring), walks the tokens in chunks, and computes the
gradient ``(softmax(student) - target) / n`` in the forward pass. ``fused_gift_loss`` goes one
step further and starts from hidden states, so not even the full logits exist.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
EPS = 1e-10  # matches the official code's log(p_mix + 1e-10); carried exactly by the closed form
CHUNK_SIZE = 1024  # tokens per chunk: peak memory is two [CHUNK_SIZE × V] fp32 buffers (ours)
ROWDOT_BLOCK = 4096  # vocabulary entries per partial sum of <target, logits> (ours; see _rowdot)

DEFAULT_BETA = 20.0  # official default (verl/verl/trainer/fsdp_gift_trainer.py)
DEFAULT_ENTROPY_COEF = 0.01  # ours: the GIFT paper's value was not available to us
DEFAULT_KL_COEF = 0.1  # ASFT authors' train.py / train.sh `kl_weight` (LLaMA-Factory's asft_alpha too)
DEFAULT_CLIP_EPSILON = 0.28  # PSFT authors' run_psft.sh clip_ratio_high (the bound active at A = +1)


# -- argument checks -------------------------------------------------------------------------
def _number(name: str, value) -> float:
    if isinstance(value, (bool, str, bytes)):  # float("20") would pass a typo in a config file through
        raise ValueError(f"{name}={value!r} must be a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number") from None


def _check_beta(beta) -> float:
    b = _number("beta", beta)
    if math.isnan(b) or b < 0:
        raise ValueError(f"beta={b!r} must be >= 0 (inf for SFT)")
    return b


def _check_lambda(smooth_lambda) -> float:
    lam = _number("smooth_lambda", smooth_lambda)
    if not 0.0 <= lam < 1.0:  # also rejects NaN
        raise ValueError(f"smooth_lambda={lam!r} must be in [0, 1)")
    return lam


def _check_coef(name: str, value, *, positive: bool = False) -> float:
    v = _number(name, value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name}={v!r} must be a finite number {'> 0' if positive else '>= 0'}")
    return v


def _check_chunk(chunk_size) -> int:
    chunk = CHUNK_SIZE if chunk_size is None else chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk_size={chunk!r} must be a positive int")
    return chunk


def _check_float_tensor(name: str, x, last: str = "V") -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}.dtype={x.dtype} must be a floating dtype")
    if x.ndim < 2:
        raise ValueError(f"{name}.shape={tuple(x.shape)} must be (..., {last}) with at least 2 dims")


def _check_labels(labels, lead_shape, vocab: int, ignore_index) -> None:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index={ignore_index!r} must be an int")
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels.dtype={labels.dtype} must be an integer dtype")
    if tuple(labels.shape) != tuple(lead_shape):
        raise ValueError(f"labels.shape={tuple(labels.shape)} must equal the leading shape "
                         f"{tuple(lead_shape)} of the logits")
    kept = labels[labels != ignore_index]
    bad = kept[(kept < 0) | (kept >= vocab)]
    if bad.numel():
        raise ValueError(f"labels contain {int(bad[0])}, outside [0, {vocab}) and not "
                         f"ignore_index={ignore_index}")


def _check_inputs(logits, ref_logits, labels, ignore_index, *, anchor: str | None) -> None:
    """Shapes ``(..., V)`` / ``(...)``, dtypes and label range; ``anchor`` set = ref is required."""
    _check_float_tensor("logits", logits)
    if ref_logits is None:
        if anchor is not None:
            raise ValueError(f"ref_logits=None, but this loss needs the {anchor} model's logits")
    else:
        _check_float_tensor("ref_logits", ref_logits)
        if ref_logits.shape != logits.shape:
            raise ValueError(f"ref_logits.shape={tuple(ref_logits.shape)} must equal "
                             f"logits.shape={tuple(logits.shape)}")
    _check_labels(labels, logits.shape[:-1], logits.shape[-1], ignore_index)


# -- shared pieces -----------------------------------------------------------------------------
def _zero(x: torch.Tensor) -> torch.Tensor:
    """An exact fp32 zero connected to ``x`` (zero, never NaN, gradient): all positions ignored."""
    return x.narrow(-1, 0, 0).float().sum()


def _valid_positions(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``(n, labels.ndim)`` indices of the kept positions; indexing with them copies only rows."""
    return (labels != ignore_index).nonzero()


def _rows(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    return x[tuple(where.unbind(1))]


def _gold(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x.gather(-1, y.unsqueeze(-1)).squeeze(-1)


def _gold_weights(p_gold: torch.Tensor, beta: float, lam: float, vocab: int):
    """Closed form of the target around the gold token (docs/paper.md §2, with the official 1e-10).

    With ``a_k = p_mix(k) + EPS`` the official target is ``a_k / Z`` off gold and
    ``a_gold e^beta / Z`` on gold, ``Z = sum_{k != gold} a_k + a_gold e^beta``. Returns
    ``(1/Z, target_gold)``, computed in log space so any ``beta`` (inf too) is safe.
    """
    c0 = lam / vocab + EPS
    a_gold = (1.0 - lam) * p_gold + c0
    if math.isinf(beta):
        return torch.zeros_like(a_gold), torch.ones_like(a_gold)
    off_gold = (1.0 - lam) * (1.0 - p_gold).clamp_min(0.0) + (vocab - 1) * c0
    log_a = a_gold.log()
    log_z = torch.logaddexp(off_gold.log(), log_a + beta)
    return torch.exp(-log_z), torch.exp(log_a + beta - log_z)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` for fp32 ``(c, V)`` rows, blockwise, without a ``[c × V]`` temporary.

    One ``bmm`` over the whole row accumulates ~V products in one fp32 running sum: at V = 152k
    the loss value was off by up to ~1e-4 relative to a float64 reference (tests/test_losses.py).
    Here each ``ROWDOT_BLOCK`` entries of the vocabulary get their own ``bmm`` and the partial sums
    ``(c, V / block)`` are added by ``torch.sum``, which keeps the error near 1e-7. The gradient
    does not use this dot, so only the reported value changes.
    """
    block = ROWDOT_BLOCK
    if a.shape[-1] <= block:
        return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)
    parts = [torch.bmm(a[:, i:i + block].unsqueeze(1), b[:, i:i + block].unsqueeze(2)).view(-1)
             for i in range(0, a.shape[-1], block)]
    return torch.stack(parts, dim=1).sum(1)


def _target_(r: torch.Tensor, y: torch.Tensor, beta: float, lam: float) -> torch.Tensor:
    """Overwrite reference logits ``r`` ``(c, V)`` with the GIFT target; returns ``r``.

    ``exp(r - max)`` normalised and mapped to ``a_k / Z`` in one affine step, then the gold
    entry set: no ``[c × V]`` allocation (fresh buffers of that size cost page faults on CPU).
    """
    vocab = r.shape[-1]
    total = r.sub_(r.amax(-1, keepdim=True)).exp_().sum(-1)  # r: unnormalised base probs
    inv_z, t_gold = _gold_weights(_gold(r, y) / total, beta, lam, vocab)
    c0 = lam / vocab + EPS
    r.mul_(((1.0 - lam) * inv_z / total).unsqueeze(1)).add_((c0 * inv_z).unsqueeze(1))
    return r.scatter_(1, y.unsqueeze(1), t_gold.unsqueeze(1))


def _gift_rows(s: torch.Tensor, r: torch.Tensor | None, y: torch.Tensor, beta: float, lam: float,
               want_grad: bool):
    """Per-token GIFT loss ``(c,)`` and, if asked, its gradient ``softmax(s) - target`` ``(c, V)``.

    ``s`` (student) and ``r`` (reference) are fresh fp32 ``(c, V)`` logits, overwritten in place:
    these two are the only ``[c × V]`` buffers. ``loss = logsumexp(s) - <target, s>`` since the
    target sums to one. ``r`` is unused (may be None) when ``beta = inf`` (the one-hot target).
    """
    s.sub_(s.amax(-1, keepdim=True))  # shift: log q = s - log(sum exp s)
    target = None if math.isinf(beta) else _target_(r, y, beta, lam)
    target_dot_s = _gold(s, y) if target is None else _rowdot(target, s)
    total = s.exp_().sum(-1)  # s: unnormalised student probs
    loss = total.log() - target_dot_s
    if not want_grad:
        return loss, None
    q = s.div_(total.unsqueeze(1))
    if target is None:
        return loss, q.scatter_add_(1, y.unsqueeze(1), torch.full_like(loss, -1.0).unsqueeze(1))
    return loss, q.sub_(target)


def _scaled(grad: torch.Tensor | None, grad_output: torch.Tensor):
    if grad is None:
        return None
    return grad if bool(grad_output == 1) else grad * grad_output.to(grad.dtype)


def _take_grads(ctx) -> tuple:
    """The gradients stored by a forward pass, handed over once: kept on ``ctx`` (not
    ``save_for_backward``) so that dropping them here lets autograd adopt the buffers as
    ``.grad`` without a copy."""
    grads, ctx.grads = ctx.grads, None
    if grads is None:
        raise RuntimeError("this GIFT loss was already back-propagated; compute it again "
                           "instead of backward(retain_graph=True) twice")
    return grads


class _GiftFromLogits(torch.autograd.Function):
    """Chunked GIFT loss on full logits; the gradient is computed in the forward pass."""

    @staticmethod
    def forward(ctx, logits, ref_logits, labels, beta, lam, ignore_index, chunk_size, grad_mode):
        where_all = _valid_positions(labels, ignore_index)
        n = where_all.shape[0]
        want_grad = grad_mode and ctx.needs_input_grad[0]  # (needs_input_grad ignores no_grad)
        grad = torch.zeros_like(logits) if want_grad else None
        per_token = torch.zeros(n, dtype=torch.float32, device=logits.device)
        for start in range(0, n, chunk_size):
            where = where_all[start:start + chunk_size]
            loss, g = _gift_rows(_rows(logits, where).float(),
                                 None if math.isinf(beta) else _rows(ref_logits, where).float(),
                                 _rows(labels, where).long(), beta, lam, want_grad)
            per_token[start:start + where.shape[0]] = loss
            if want_grad:
                grad[tuple(where.unbind(1))] = g.div_(n).to(grad.dtype)
            del g  # free this chunk's [c × V] buffer before the next chunk's rows exist
        ctx.grads = (grad,)
        return per_token.sum() / max(n, 1)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = _take_grads(ctx)
        return (_scaled(grad, grad_output),) + (None,) * 7


# -- GIFT ----------------------------------------------------------------------------------------
@torch.no_grad()
def gift_target(ref_logits, labels, *, beta, smooth_lambda=0.0, ignore_index=IGNORE_INDEX):
    """The GIFT target distribution ``(..., V)`` in fp32, without gradient (docs/paper.md §2).

    ``softmax(log(p_mix + 1e-10) + beta · onehot(y*))`` with ``p = softmax(ref_logits)`` and
    ``p_mix = (1 - smooth_lambda) p + smooth_lambda / V``, as the official code computes it
    (verl/verl/trainer/fsdp_gift_trainer.py), via the closed form. ``beta = inf`` gives exactly
    the one-hot; ``beta = 0`` gives ``p_mix`` (up to the 1e-10). Positions whose label is
    ``ignore_index`` get ``p_mix`` itself (no gold boost).
    """
    _check_float_tensor("ref_logits", ref_logits)
    _check_labels(labels, ref_logits.shape[:-1], ref_logits.shape[-1], ignore_index)
    beta, lam = _check_beta(beta), _check_lambda(smooth_lambda)
    vocab = ref_logits.shape[-1]
    p = torch.softmax(ref_logits.float(), dim=-1)
    p_mix = (1.0 - lam) * p + lam / vocab
    keep = labels != ignore_index
    y = torch.where(keep, labels, 0).long()
    if math.isinf(beta):
        target = F.one_hot(y, vocab).float()
    else:
        inv_z, t_gold = _gold_weights(_gold(p, y), beta, lam, vocab)
        target = (p_mix + EPS) * inv_z.unsqueeze(-1)
        target.scatter_(-1, y.unsqueeze(-1), t_gold.unsqueeze(-1))
    return torch.where(keep.unsqueeze(-1), target, p_mix)


def gift_loss(logits, ref_logits, labels, *, beta=DEFAULT_BETA, smooth_lambda=0.0,
              ignore_index=IGNORE_INDEX, chunk_size=None):
    """GIFT: cross-entropy to the finite-temperature Gibbs target (docs/paper.md §1-2), a scalar.

    ``logits``, ``ref_logits``: ``(..., V)`` student and frozen-base logits; ``labels``: ``(...)``,
    already aligned. Returns the mean over kept positions of ``-sum_k target_k log q_k`` with
    ``q = softmax(logits)``; it matches the official code at
    verl/verl/trainer/fsdp_gift_trainer.py (whose denominator adds 1e-8 to the token count).
    ``beta = inf`` *is* SFT: the loss is ``F.cross_entropy(logits, labels)`` bit for bit.

    Closed form. Write ``a_k = p_mix(k) + 1e-10``, which is what the official
    ``log(p_mix + 1e-10)`` normalises (``sum_k a_k = 1 + V·1e-10``):

        target_k  = a_k / Z  (k != y*),    target_y* = a_y* e^beta / Z,
        Z         = sum_{k != y*} a_k + a_y* e^beta = (1 - lam)(1 - p_y*) + (V - 1) c + a_y* e^beta
        loss_t    = -sum_k target_k log q_k = logsumexp(logits) - <target, logits>

    with ``c = lam / V + 1e-10`` and ``lam = smooth_lambda``. ``Z`` and ``target_y*`` come from
    ``logaddexp`` in log space (safe for any ``beta``); the target row is then one affine map of
    ``softmax(ref_logits)`` plus a scatter, written over the reference row in place: no log/exp
    chain over the vocabulary. The 1e-10 is carried exactly, not dropped, so the value equals the
    official one in exact arithmetic even where it matters (tokens with ``p_base < ~1e-8``, e.g. a
    gold token the base finds unlikely at ``smooth_lambda = 0``, whose target mass is
    ``~1e-10 e^beta / Z``, not ``~p e^beta / Z``). In fp32 the value agrees with a float64
    evaluation of the same inputs to ~3e-6 relative at V = 152k (``<target, logits>`` is summed in
    blocks, ``_rowdot``); the official code's is off by ~2e-5 (benchmarks/results/loss_precision.csv).

    Computed in fp32 (rows cast per chunk of ``chunk_size`` tokens, default ``CHUNK_SIZE``), in
    place, so peak extra memory is the gradient (logits' dtype) plus two ``[chunk × V]`` fp32 rows.
    The gradient w.r.t. ``logits`` is ``(softmax(logits) - target) / n_tokens``, computed in the
    forward pass (so a graph can be back-propagated once); none flows to ``ref_logits``. All
    positions ignored: exactly 0 with zero gradients.
    """
    _check_inputs(logits, ref_logits, labels, ignore_index, anchor="base")
    beta, lam, chunk = _check_beta(beta), _check_lambda(smooth_lambda), _check_chunk(chunk_size)
    if math.isinf(beta):
        return sft_loss(logits, ref_logits, labels, ignore_index=ignore_index)
    return _GiftFromLogits.apply(logits, ref_logits.detach(), labels, beta, lam, ignore_index, chunk,
                                 torch.is_grad_enabled())


def gold_mass(p_gold, beta):
    """Target mass on the gold token for base probability ``p_gold`` in (0, 1] (docs/paper.md §2).

    ``p e^beta / (1 - p + p e^beta) = sigmoid(logit(p) + beta)``: 1 at ``beta = inf`` (SFT),
    ``p`` at ``beta = 0``. Works on floats, NumPy arrays and tensors; with smoothing pass
    ``p_mix(y*)``. Ignores the official 1e-10 (a ~1e-10 relative difference).
    """
    decay = math.exp(-_check_beta(beta))  # 0.0 at beta = inf
    return p_gold / (p_gold + (1 - p_gold) * decay)


@torch.no_grad()
def gift_diagnostics(ref_logits, labels, *, beta, smooth_lambda=0.0, ignore_index=IGNORE_INDEX,
                     chunk_size=None) -> dict[str, float]:
    """What the GIFT target does to the base, averaged over kept positions (python floats).

    ``target/gold_mass`` (mean target probability of the expert token), ``base/gold_prob``
    (mean ``p_base(y*)``), ``target/entropy`` and ``base/entropy`` (nats), and
    ``target/kl_to_base`` = mean KL(target ‖ p_base), with the unsmoothed ``p_base =
    softmax(ref_logits)``. NaN for every key when all positions are ignored. Used to choose the
    ``beta`` grid.
    """
    _check_float_tensor("ref_logits", ref_logits)
    _check_labels(labels, ref_logits.shape[:-1], ref_logits.shape[-1], ignore_index)
    beta, lam, chunk = _check_beta(beta), _check_lambda(smooth_lambda), _check_chunk(chunk_size)
    where_all = _valid_positions(labels, ignore_index)
    n = where_all.shape[0]
    keys = ("target/gold_mass", "base/gold_prob", "target/entropy", "base/entropy", "target/kl_to_base")
    sums = dict.fromkeys(keys, 0.0)
    for start in range(0, n, chunk):
        where = where_all[start:start + chunk]
        ref, y = _rows(ref_logits, where).float(), _rows(labels, where).long()
        logp = torch.log_softmax(ref, dim=-1)
        target = gift_target(ref, y, beta=beta, smooth_lambda=lam)
        t_log_t = torch.xlogy(target, target).sum(-1)
        sums["target/gold_mass"] += _gold(target, y).sum().item()
        sums["base/gold_prob"] += _gold(logp, y).exp().sum().item()
        sums["target/entropy"] -= t_log_t.sum().item()
        sums["base/entropy"] -= (logp.exp() * logp).sum().item()
        sums["target/kl_to_base"] += (t_log_t - (target * logp).sum(-1)).sum().item()
    return {k: (v / n if n else math.nan) for k, v in sums.items()}


# -- baselines -----------------------------------------------------------------------------------
def _kept_rows(logits, labels, ignore_index, ref_logits=None):
    """Kept positions as fp32 rows ``(n, V)``, their labels ``(n,)`` and (detached) ref rows."""
    keep = labels != ignore_index
    ref = None if ref_logits is None else ref_logits.detach()[keep].float()
    return logits[keep].float(), labels[keep].long(), ref


def sft_loss(logits, ref_logits, labels, *, ignore_index=IGNORE_INDEX):
    """Standard SFT: token cross-entropy, the ``beta = inf`` end of GIFT (docs/paper.md §1).

    ``F.cross_entropy(logits, labels, ignore_index=..., reduction="mean")`` on ``(..., V)``
    logits cast to fp32 (bit-identical for fp32 inputs). ``ref_logits`` is not used (may be None).
    """
    _check_inputs(logits, ref_logits, labels, ignore_index, anchor=None)
    if not bool((labels != ignore_index).any()):
        return _zero(logits)
    flat = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(flat, labels.reshape(-1).long(), ignore_index=ignore_index)


def sft_entropy_loss(logits, ref_logits, labels, *, entropy_coef=DEFAULT_ENTROPY_COEF,
                     ignore_index=IGNORE_INDEX):
    """SFT with an entropy bonus: ``CE - entropy_coef · H(pi)``, per token, mean (docs/paper.md §4).

    ``H(pi) = -sum_k pi_k log pi_k`` of the student at each kept position; the GIFT paper's
    "SFT + entropy" baseline. ``ref_logits`` is not used (may be None).
    """
    _check_inputs(logits, ref_logits, labels, ignore_index, anchor=None)
    alpha = _check_coef("entropy_coef", entropy_coef)
    rows, y, _ = _kept_rows(logits, labels, ignore_index)
    if rows.shape[0] == 0:
        return _zero(logits)
    logq = torch.log_softmax(rows, dim=-1)
    entropy = -(logq.exp() * logq).sum(-1)
    return (-_gold(logq, y) - alpha * entropy).mean()


def dft_loss(logits, ref_logits, labels, *, ignore_index=IGNORE_INDEX):
    """DFT, Dynamic Fine-Tuning (Wu et al., arXiv 2508.05629): ``-sg(pi(y*)) · log pi(y*)``.

    The SFT token loss reweighted by the detached probability of the expert token, mean over kept
    positions (as the ASFT authors' ``dft`` mode: ``CE · exp(-CE).detach()``). Its gradient is
    ``pi(y*)`` times the SFT gradient. ``ref_logits`` is not used (may be None).
    """
    _check_inputs(logits, ref_logits, labels, ignore_index, anchor=None)
    rows, y, _ = _kept_rows(logits, labels, ignore_index)
    if rows.shape[0] == 0:
        return _zero(logits)
    logq_gold = _gold(torch.log_softmax(rows, dim=-1), y)
    return -(logq_gold.detach().exp() * logq_gold).mean()


def asft_loss(logits, ref_logits, labels, *, kl_coef=DEFAULT_KL_COEF, ignore_index=IGNORE_INDEX):
    """ASFT, Anchored SFT (Zhu et al., arXiv 2509.23753): DFT + ``kl_coef`` · token KL to the base.

    Per kept position ``-sg(pi(y*)) log pi(y*) + kl_coef · KL(pi_base ‖ pi_theta)`` summed over
    the vocabulary, then the mean. The KL direction and weight follow the authors' code
    (github.com/zhuchichi56/ASFT, train.py ``mode="asft"``: ``F.kl_div(log_softmax(student),
    softmax(ref))``, i.e. KL(ref ‖ student), ``kl_weight = 0.1``). ``ref_logits``: the frozen base.
    """
    _check_inputs(logits, ref_logits, labels, ignore_index, anchor="base")
    coef = _check_coef("kl_coef", kl_coef)
    rows, y, ref = _kept_rows(logits, labels, ignore_index, ref_logits)
    if rows.shape[0] == 0:
        return _zero(logits)
    logq = torch.log_softmax(rows, dim=-1)
    logq_gold = _gold(logq, y)
    kl = F.kl_div(logq, torch.log_softmax(ref, dim=-1), log_target=True, reduction="none").sum(-1)
    return (-(logq_gold.detach().exp() * logq_gold) + coef * kl).mean()


def psft_loss(logits, ref_logits, labels, *, clip_epsilon=DEFAULT_CLIP_EPSILON,
              ignore_index=IGNORE_INDEX):
    """PSFT, Proximal SFT (Zhu et al., arXiv 2508.17784): PPO's clipped surrogate, advantage 1.

    Per kept position ``-min(r, clip(r, 1 - eps, 1 + eps))`` with ``r = pi_theta(y*) /
    pi_old(y*)``, mean. ``ref_logits`` are the old policy's: a parameter snapshot the trainer
    refreshes (the authors recompute old log-probs once per training batch). With advantage +1
    only the upper bound binds: the gradient is ``r`` times the SFT gradient while
    ``r <= 1 + eps`` (exactly SFT's at ``r = 1``) and zero above. Default ``eps = 0.28``: the
    authors' run_psft.sh ``clip_ratio_high`` (its ``clip_ratio_low = 0.2`` is inert here).
    """
    _check_inputs(logits, ref_logits, labels, ignore_index, anchor="snapshot")
    eps = _check_coef("clip_epsilon", clip_epsilon, positive=True)
    rows, y, old = _kept_rows(logits, labels, ignore_index, ref_logits)
    if rows.shape[0] == 0:
        return _zero(logits)
    log_ratio = _gold(torch.log_softmax(rows, dim=-1), y) - _gold(torch.log_softmax(old, dim=-1), y)
    ratio = log_ratio.exp()
    return -torch.minimum(ratio, ratio.clamp(1.0 - eps, 1.0 + eps)).mean()


# -- fused: from hidden states, never the full logits ----------------------------------------------
class _FusedGift(torch.autograd.Function):
    """Chunked LM head + GIFT: the gradients for hidden, W and b are accumulated in the forward."""

    @staticmethod
    def forward(ctx, hidden, ref_hidden, weight, bias, ref_weight, ref_bias, labels, beta, lam,
                ignore_index, chunk_size, grad_mode):
        where_all = _valid_positions(labels, ignore_index)
        n = where_all.shape[0]
        need_h, _, need_w, need_b = (grad_mode and need for need in ctx.needs_input_grad[:4])
        grad_h = torch.zeros_like(hidden) if need_h else None
        fp32 = {"dtype": torch.float32, "device": weight.device}  # gradient sums over chunks
        grad_w = torch.zeros(weight.shape, **fp32) if need_w else None
        grad_b = torch.zeros(weight.shape[0], **fp32) if need_b else None
        per_token = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk_size):
            where = where_all[start:start + chunk_size]
            h = _rows(hidden, where)
            ref_h = None if math.isinf(beta) else _rows(ref_hidden, where)
            loss, g = _gift_rows(F.linear(h, weight, bias).float(),
                                 None if ref_h is None else F.linear(ref_h, ref_weight, ref_bias).float(),
                                 _rows(labels, where).long(), beta, lam, need_h or need_w or need_b)
            per_token[start:start + where.shape[0]] = loss
            _accumulate(g, h, weight, n, where, grad_h, grad_w, grad_b)
            del g  # free this chunk's [c × V] buffer before the next chunk's logits exist
        ctx.grads = (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                     None if grad_b is None else grad_b.to(bias.dtype))
        return per_token.sum() / max(n, 1)

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w, grad_b = _take_grads(ctx)
        return (_scaled(grad_h, grad_output), None, _scaled(grad_w, grad_output),
                _scaled(grad_b, grad_output)) + (None,) * 8


def _accumulate(g, h, weight, n, where, grad_h, grad_w, grad_b) -> None:
    """Add one chunk's ``g = softmax - target`` ``(c, V)`` into the three gradient buffers."""
    if g is None:
        return
    g_lp = g.to(weight.dtype)  # matmuls in the model's dtype, accumulation in fp32
    if grad_h is not None:
        grad_h[tuple(where.unbind(1))] = (g_lp @ weight).div_(n).to(grad_h.dtype)
    if grad_w is not None:
        if g_lp.dtype == torch.float32:
            grad_w.addmm_(g_lp.t(), h, alpha=1.0 / n)
        else:
            grad_w.add_((g_lp.t() @ h).float(), alpha=1.0 / n)
    if grad_b is not None:
        grad_b.add_(g.sum(0), alpha=1.0 / n)


def _check_head(name: str, weight, bias, hidden) -> None:
    _check_float_tensor(name, weight, "D")
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"{name}.shape={tuple(weight.shape)} must be (V, D) with "
                         f"D = hidden.shape[-1] = {hidden.shape[-1]}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"{name}.dtype={weight.dtype} must equal the hidden states' dtype "
                         f"{hidden.dtype}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype != weight.dtype
                             or tuple(bias.shape) != (weight.shape[0],)):
        raise ValueError(f"the bias of {name} must be a {weight.dtype} tensor of shape "
                         f"({weight.shape[0]},)")


def fused_gift_loss(hidden, ref_hidden, lm_head_weight, labels, *, beta=DEFAULT_BETA,
                    smooth_lambda=0.0, ignore_index=IGNORE_INDEX, chunk_size=CHUNK_SIZE, bias=None,
                    ref_lm_head_weight=None, ref_bias=None):
    """``gift_loss(hidden @ W.T + b, ref_hidden @ W_ref.T + b_ref, labels)`` without full logits.

    ``hidden``, ``ref_hidden``: ``(..., D)`` final hidden states of the student and the frozen
    base; ``lm_head_weight``: ``(V, D)``; ``labels``: ``(...)``, aligned. The reference head
    defaults to the student's (``ref_lm_head_weight=None``: a shared, e.g. frozen or LoRA-free,
    head); pass the base model's head when the student's head is trained. Differentiable w.r.t.
    ``hidden``, ``lm_head_weight`` and ``bias``; no gradient reaches the reference inputs.

    A "fused linear cross-entropy": per chunk of ``chunk_size`` tokens, the student and reference
    logits (matmuls in the inputs' dtype, loss in fp32), the closed-form target of ``gift_loss``,
    and ``g = (softmax - target) / n``, from which ``grad_hidden = g W`` and ``grad_W += gᵀ h``
    are formed in the forward pass (so a graph can be back-propagated once); backward only
    scales them. Peak extra memory: two ``[chunk × V]`` fp32 buffers plus ``grad_W`` (fp32) and
    ``grad_hidden``. ``beta = inf`` is SFT's cross-entropy (the reference is then not computed).
    Same values as the official code at verl/verl/trainer/fsdp_gift_trainer.py up to fp32
    rounding (the value to ~3e-6 relative of float64 at V = 152k; ``gift_loss``).
    """
    _check_float_tensor("hidden", hidden, "D")
    _check_float_tensor("ref_hidden", ref_hidden, "D")
    ref_w = lm_head_weight if ref_lm_head_weight is None else ref_lm_head_weight
    ref_b = bias if ref_lm_head_weight is None else ref_bias
    _check_head("lm_head_weight", lm_head_weight, bias, hidden)
    _check_head("ref_lm_head_weight", ref_w, ref_b, ref_hidden)
    if ref_hidden.shape[:-1] != hidden.shape[:-1] or ref_w.shape[0] != lm_head_weight.shape[0]:
        raise ValueError(f"ref_hidden.shape={tuple(ref_hidden.shape)} and its head must match "
                         f"hidden.shape={tuple(hidden.shape)} in positions and vocabulary")
    _check_labels(labels, hidden.shape[:-1], lm_head_weight.shape[0], ignore_index)
    beta, lam, chunk = _check_beta(beta), _check_lambda(smooth_lambda), _check_chunk(chunk_size)
    return _FusedGift.apply(hidden, ref_hidden.detach(), lm_head_weight, bias, ref_w.detach(),
                            None if ref_b is None else ref_b.detach(), labels, beta, lam,
                            ignore_index, chunk, torch.is_grad_enabled())


# -- registries ------------------------------------------------------------------------------------
LOSSES: dict[str, Callable] = {
    "sft": sft_loss,
    "gift": gift_loss,
    "sft_entropy": sft_entropy_loss,
    "dft": dft_loss,
    "asft": asft_loss,
    "psft": psft_loss,
}

# What the trainer passes as ref_logits: the frozen base, the old-policy snapshot, or nothing.
ANCHOR: dict[str, str | None] = {
    "sft": None, "gift": "base", "sft_entropy": None, "dft": None, "asft": "base", "psft": "snapshot",
}

# The keyword hyper-parameters each loss takes (the trainer passes only these).
LOSS_HPARAMS: dict[str, tuple[str, ...]] = {
    "sft": (),
    "gift": ("beta", "smooth_lambda"),
    "sft_entropy": ("entropy_coef",),
    "dft": (),
    "asft": ("kl_coef",),
    "psft": ("clip_epsilon",),
}

# The check of each hyper-parameter; ``GIFTConfig`` runs them all when it is built, before any work.
HPARAM_CHECKS: dict[str, Callable] = {
    "beta": _check_beta,
    "smooth_lambda": _check_lambda,
    "entropy_coef": functools.partial(_check_coef, "entropy_coef"),
    "kl_coef": functools.partial(_check_coef, "kl_coef"),
    "clip_epsilon": functools.partial(_check_coef, "clip_epsilon", positive=True),
}
