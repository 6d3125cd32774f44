"""LUFFY and ReLIFT (gift_lite/unified.py): each formula, the expert mixing, and short runs on TRL."""

import tempfile

import pytest
import torch
from datasets import Dataset

from gift_lite import unified
from gift_lite.models import TinyModelConfig, tiny_qwen2
from gift_lite.rl import GRPOSettings, grpo_config, reward_curve, run_grpo
from gift_lite.rewards import countdown_reward_func
from gift_lite.world import build_tokenizer, set_special_tokens

EXPERT = {"3 5 7>26:": "3*7=21,21+5=26", "2 4 6>12:": "2+4=6,6+6=12"}


@pytest.fixture()
def policy():
    tokenizer = build_tokenizer()
    model = tiny_qwen2(TinyModelConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                                       max_position_embeddings=64), seed=0)
    set_special_tokens(model, tokenizer)
    return model, tokenizer


def _settings(**kw):
    return GRPOSettings(**{"num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 16,
                           "max_steps": 2, "learning_rate": 1e-3, "gradient_checkpointing": False, **kw})


def _prompts():
    return Dataset.from_list([{"prompt": p, "numbers": [int(x) for x in p.split(">")[0].split()],
                               "target": int(p.split(">")[1][:-1])} for p in EXPERT])


# -- LUFFY ------------------------------------------------------------------------------------------
def test_luffy_shaping_and_its_gradient():
    p = torch.tensor([0.1, 0.5, 1.0])
    assert torch.allclose(unified.luffy_shaping(p), torch.tensor([0.5, 0.5 / 0.6, 1 / 1.1]))
    logp = p.log().requires_grad_()
    advantage = torch.tensor([0.75])
    loss = unified.luffy_off_policy_loss(logp.unsqueeze(0), advantage, torch.ones(1, 3), 3.0)
    loss.backward()
    # d/dlogp of -A p/(p+0.1) / N is -A * 0.1 p / (p + 0.1)^2 / N: no ratio, no clip, largest for rare tokens
    assert torch.allclose(logp.grad, -0.75 * 0.1 * p / (p + 0.1) ** 2 / 3.0)
    assert loss.item() == pytest.approx(-0.75 * unified.luffy_shaping(p).sum().item() / 3.0)


class _FakeTrainer:
    num_generations = 4

    def __init__(self, tokenizer):
        self.processing_class = tokenizer

    def _tokenize_prompts(self, prompts):
        return [[1] for _ in prompts], None, {}

    def _generate_single_turn(self, prompt_ids, images, fields, n):
        return [[7, 2] for _ in prompt_ids], None


def test_expert_rollout_replaces_the_last_sample_of_every_group(policy):
    _, tokenizer = policy
    trainer = _FakeTrainer(tokenizer)
    prompts = ["3 5 7>26:"] * 4 + ["2 4 6>12:"] * 4
    out = unified.expert_rollout(EXPERT)(prompts, trainer)
    assert trainer._expert_rows.tolist() == [False, False, False, True] * 2
    expert = out["completion_ids"][3]
    assert tokenizer.decode(expert[:-1]) == EXPERT["3 5 7>26:"] and expert[-1] == tokenizer.eos_token_id
    assert out["completion_ids"][0] == [7, 2] and out["logprobs"] is None
    with pytest.raises(ValueError, match="no expert solution"):
        unified.expert_rollout(EXPERT)(["1 1 1>3:"] * 4, trainer)


def test_luffy_loss_is_grpo_on_samples_plus_shaped_expert_term(policy):
    """At the first update (ratio 1) TRL's dapo loss is -A per sampled token; LUFFY's is that on the
    sampled rows plus -A f(p) per expert token, over the batch's token count."""
    model, tokenizer = policy
    with tempfile.TemporaryDirectory() as scratch:
        config = grpo_config(_settings(), scratch, seed=0, use_cpu=True, report_to=[])
        trainer = unified.LUFFYTrainer(model=model, reward_funcs=countdown_reward_func, args=config,
                                       train_dataset=_prompts(), processing_class=tokenizer,
                                       rollout_func=unified.expert_rollout(EXPERT))
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which this test does not run
        model.train()
        inputs = trainer._prepare_inputs(batch)
        loss = trainer._compute_loss(model, inputs)
    off, adv, mask = inputs["off_policy"], inputs["advantages"], inputs["completion_mask"].float()
    assert off.sum() == 2
    # LUFFY's advantage (official grpo_use_std=False): reward minus the mean reward of the mixed group,
    # the expert's reward inside the mean, no division by the group's std. Rewards recomputed here
    # from the decoded completions; TRL shuffles the rows, so groups are found by their prompt.
    prompts = tokenizer.batch_decode(inputs["prompt_ids"], skip_special_tokens=True)
    texts = tokenizer.batch_decode(inputs["completion_ids"] * inputs["completion_mask"], skip_special_tokens=True)
    rewards = torch.tensor([countdown_reward_func([t], [[int(x) for x in p.split(">")[0].split()]],
                                                  [int(p.split(">")[1][:-1])])[0] for p, t in zip(prompts, texts)])
    assert set(prompts) == set(EXPERT) and rewards[off].tolist() == [1.0, 1.0]  # the expert solves its prompt
    group_mean = torch.stack([rewards[[q == p for q in prompts]].mean() for p in prompts])
    assert torch.allclose(adv, rewards - group_mean, atol=1e-6)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits[:, -inputs["completion_ids"].size(1) - 1:-1]
        p = torch.softmax(logits, -1).gather(-1, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1)
    per_token = torch.where(off.unsqueeze(1), -adv.unsqueeze(1) * p / (p + 0.1), -adv.unsqueeze(1).expand_as(p))
    assert loss.item() == pytest.approx(((per_token * mask).sum() / mask.sum()).item(), rel=1e-4, abs=1e-6)


def test_luffy_trains_through_run_grpo(policy):
    model, tokenizer = policy
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    parts = unified.grpo_parts("luffy", EXPERT, tokenizer, countdown_reward_func, buffer_size=2)
    extra = parts.pop("callbacks")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = run_grpo(model.train(), tokenizer, _prompts(), config=grpo_config(_settings(), scratch, seed=0,
                           use_cpu=True, disable_tqdm=True), callbacks=extra, **parts)
    curve = reward_curve(trainer)
    assert len(curve) == 2 and (curve["reward"] >= 0.25).all()  # one expert in every group of 4 scores 1
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


# -- ReLIFT -----------------------------------------------------------------------------------------
def test_failure_recorder_lists_prompts_whose_samples_all_failed():
    recorder = unified.FailureRecorder(lambda prompts, completions, **kw: [float(c == "ok") for c in completions])
    assert recorder.__name__ == "<lambda>"
    rewards = recorder(prompts=["a", "a", "b", "b"], completions=["x", "ok", "x", "x"])
    assert rewards == [0.0, 1.0, 0.0, 0.0] and recorder.failed() == ["b"] and recorder.failed() == []


def test_relift_sft_loss_is_token_mean_nll_minus_a_thousandth_of_entropy(policy):
    model, tokenizer = policy
    prompts = list(EXPERT)
    loss = unified.relift_sft_loss(model, tokenizer, prompts, [EXPERT[p] for p in prompts])
    nll_sum, entropy_sum, count = 0.0, 0.0, 0
    for prompt in prompts:  # one row at a time, no padding: an independent computation
        p_ids = tokenizer(prompt)["input_ids"]
        c_ids = tokenizer(EXPERT[prompt], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        logits = model(input_ids=torch.tensor([p_ids + c_ids])).logits[0, len(p_ids) - 1:-1]
        logp = torch.log_softmax(logits, -1)
        nll_sum += -logp[torch.arange(len(c_ids)), torch.tensor(c_ids)].sum().item()
        entropy_sum += -(logp.exp() * logp).sum().item()
        count += len(c_ids)
    assert loss.item() == pytest.approx(nll_sum / count - 0.001 * entropy_sum / count, rel=1e-5)


def test_relift_callback_trains_the_newest_entries_when_the_buffer_is_full(policy):
    model, tokenizer = policy
    recorder = unified.FailureRecorder(lambda prompts, completions, **kw: [0.0] * len(prompts))
    callback = unified.ReLIFTCallback(recorder, EXPERT, tokenizer, buffer_size=2)
    args = grpo_config(_settings(), "unused", use_cpu=True)
    state = type("State", (), {"global_step": 1})()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    recorder(prompts=["3 5 7>26:"] * 2, completions=["x", "y"])
    callback.on_step_end(args, state, None, model=model)
    assert callback.buffer == ["3 5 7>26:"] and callback.sft_at == []
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    state.global_step = 2
    trained = []
    callback.sft_step = lambda model, prompts, args: trained.append(prompts)  # record what it trains on
    recorder(prompts=["3 5 7>26:", "2 4 6>12:"], completions=["x", "y"])  # a prompt that fails again re-enters
    callback.on_step_end(args, state, None, model=model)
    assert trained == [["3 5 7>26:", "2 4 6>12:"]] and callback.buffer == ["3 5 7>26:"] and callback.sft_at == [2]
    with pytest.raises(ValueError, match="buffer_size=0"):
        unified.ReLIFTCallback(recorder, EXPERT, tokenizer, buffer_size=0)


def test_relift_sft_step_moves_the_weights_and_leaves_no_gradient(policy):
    model, tokenizer = policy
    callback = unified.ReLIFTCallback(unified.FailureRecorder(lambda **kw: []), EXPERT, tokenizer, buffer_size=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    callback.sft_step(model, list(EXPERT), grpo_config(_settings(), "unused", use_cpu=True))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())  # the next RL step starts clean


def test_relift_trains_through_run_grpo(policy):
    model, tokenizer = policy
    parts = unified.grpo_parts("relift", EXPERT, tokenizer, countdown_reward_func, buffer_size=1)
    extra = parts.pop("callbacks")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = run_grpo(model.train(), tokenizer, _prompts(), config=grpo_config(_settings(), scratch, seed=0,
                           use_cpu=True, disable_tqdm=True), callbacks=extra, **parts)
    assert len(reward_curve(trainer)) == 2
    assert extra[0].sft_at  # a random tiny model fails every prompt: SFT steps ran
    with pytest.raises(ValueError, match="method='dft'"):
        unified.grpo_parts("dft", EXPERT, tokenizer, countdown_reward_func, buffer_size=1)


def _learning_rates(trainer):
    return [log["learning_rate"] for log in trainer.state.log_history if "learning_rate" in log]


def test_unified_methods_keep_the_official_constant_learning_rate(policy):
    """GRPOSettings' default schedule is TRL's linear decay; LUFFY and ReLIFT run at the official
    constant rate unless the settings chose another schedule."""
    model, tokenizer = policy
    settings = _settings(max_steps=3)
    assert unified.config_overrides(settings) == {"lr_scheduler_type": "constant"}
    assert unified.config_overrides(_settings(lr_scheduler_type="cosine")) == {"lr_scheduler_type": "cosine"}
    parts = unified.grpo_parts("relift", EXPERT, tokenizer, countdown_reward_func, buffer_size=1)
    extra = parts.pop("callbacks")
    with tempfile.TemporaryDirectory() as scratch:
        config = grpo_config(settings, scratch, seed=0, use_cpu=True, disable_tqdm=True,
                             **unified.config_overrides(settings))
        trainer = run_grpo(model.train(), tokenizer, _prompts(), config=config, callbacks=extra, **parts)
    assert _learning_rates(trainer) == [settings.learning_rate] * 3
