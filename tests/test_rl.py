"""GRPO wiring: the paper's settings reach TRL, and a LoRA policy trains for a few steps."""


import pytest
import torch
from datasets import Dataset

from gift_lite import evaluate
from gift_lite.models import LoraSettings, load_adapter, load_lora
from gift_lite.rl import GRPOSettings, grpo_config, reward_curve, run_grpo
from transformers import AutoModelForCausalLM


def digit_reward(completions, **kwargs):
    """1 for completions whose first character is a digit (a reward the policy can learn)."""
    return [1.0 if c[:1].isdigit() else 0.0 for c in completions]


def test_paper_settings_reach_trl(tmp_path):
    config = grpo_config(GRPOSettings(), str(tmp_path))
    assert (config.num_generations, config.temperature, config.epsilon, config.beta) == (8, 1.0, 0.2, 0.0)
    assert config.scale_rewards in ("none", False)


@pytest.mark.parametrize("field,value", [("per_device_train_batch_size", 12), ("learning_rate", 0.0),
                                         ("max_steps", 0)])
def test_bad_settings_fail_early(field, value):
    with pytest.raises(ValueError, match=field):
        GRPOSettings(**{field: value})


def test_grpo_trains_a_loaded_adapter(tiny_model_dir, tokenizer, tmp_path):
    model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    model.save_pretrained(tmp_path / "adapter")
    policy = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    prompts = Dataset.from_list([{"prompt": p} for p in ("3 5 7>26:", "2 4 6>12:")])
    settings = GRPOSettings(num_generations=4, per_device_train_batch_size=8, max_completion_length=6,
                            max_steps=2, learning_rate=5e-2)
    trainer = run_grpo(policy, tokenizer, prompts, digit_reward,
                       grpo_config(settings, str(tmp_path / "grpo"), use_cpu=True, disable_tqdm=True))
    curve = reward_curve(trainer)
    assert list(curve["step"]) == [1, 2]
    assert curve["reward"].between(0, 1).all() and curve["frac_reward_zero_std"].between(0, 1).all()
    changed = [n for n, p in policy.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed


def test_qlora_adapters_keep_their_fp32_values_through_grpo(tiny_model_dir, tokenizer, tmp_path):
    """TRL casts a quantized model's adapters to bf16 when it builds the trainer. With a reward that
    is always 0 no group has any signal, so the adapters must come out exactly as they went in,
    in fp32 (they once moved by bf16 rounding, up to 2.4e-4)."""
    from gift_lite.models import load_qlora

    policy = load_qlora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    with torch.no_grad():  # a trained-looking adapter: B nonzero, values bf16 cannot hold
        for name, param in policy.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 1e-3)
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    prompts = Dataset.from_list([{"prompt": p} for p in ("3 5 7>26:", "2 4 6>12:")])
    settings = GRPOSettings(num_generations=4, per_device_train_batch_size=8, max_completion_length=4,
                            max_steps=1, learning_rate=1e-3)
    run_grpo(policy, tokenizer, prompts, lambda completions, **kw: [0.0] * len(completions),
             grpo_config(settings, str(tmp_path / "grpo"), use_cpu=True, disable_tqdm=True))
    after = {n: p.detach() for n, p in policy.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for p in after.values())
    assert all(torch.equal(after[n], before[n]) for n in before)


def test_frozen_adapter_is_refused(tiny_model_dir, tokenizer, tmp_path):
    model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    model.save_pretrained(tmp_path / "adapter")
    frozen = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter",
                          is_trainable=False)
    with pytest.raises(ValueError, match="trainable"):
        run_grpo(frozen, tokenizer, Dataset.from_list([{"prompt": "1"}]), digit_reward,
                 grpo_config(GRPOSettings(), str(tmp_path / "g"), use_cpu=True))


def test_shared_prompts_change_no_number_of_a_grpo_run(tiny_model_dir, tokenizer, tmp_path, monkeypatch):
    """The fast rollout (one forward pass over a prompt for its group, finished rollouts leaving the
    batch) under full fine-tuning: the same seed gives the same curve and weights, and so does the
    plain rollout (``model.generate``)."""
    calls, decodes = [], []
    shared_generate, decode = evaluate.generate_sharing_prompts, evaluate.generate_dropping_finished
    monkeypatch.setattr(evaluate, "generate_sharing_prompts", lambda *a, **k: calls.append(1) or shared_generate(*a, **k))
    monkeypatch.setattr(evaluate, "generate_dropping_finished", lambda *a, **k: decodes.append(1) or decode(*a, **k))
    prompts = Dataset.from_list([{"prompt": p} for p in ("3 5 7>26:", "2 4 6>12:", "1 1 8>9:", "9 9>18:")])
    settings = GRPOSettings(num_generations=4, per_device_train_batch_size=8, max_completion_length=6,
                            max_steps=3, learning_rate=1e-2, gradient_checkpointing=False)
    runs = []
    for share in (True, True, False):
        policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        trainer = run_grpo(policy, tokenizer, prompts, digit_reward, share_prompts=share,
                           config=grpo_config(settings, str(tmp_path / f"g{len(runs)}"), use_cpu=True,
                                              disable_tqdm=True, seed=5))
        runs.append((reward_curve(trainer), {n: p.detach().clone() for n, p in policy.named_parameters()}))
        assert "generate" not in vars(policy)
    (first, weights), (again, weights_again), (plain, weights_plain) = runs
    assert len(calls) == len(decodes) == 2 * settings.max_steps  # TRL's rollouts went through it, once a step
    assert first.equals(again) and all(torch.equal(weights[n], weights_again[n]) for n in weights)
    assert first["reward"].tolist() == plain["reward"].tolist()
    for name in weights:
        torch.testing.assert_close(weights[name], weights_plain[name], rtol=1e-4, atol=1e-6)
