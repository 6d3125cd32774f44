"""GRPO wiring: the paper's settings reach TRL, and a LoRA policy trains for a few steps."""


import pytest
import torch
from datasets import Dataset

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


def test_frozen_adapter_is_refused(tiny_model_dir, tokenizer, tmp_path):
    model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    model.save_pretrained(tmp_path / "adapter")
    frozen = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter",
                          is_trainable=False)
    with pytest.raises(ValueError, match="trainable"):
        run_grpo(frozen, tokenizer, Dataset.from_list([{"prompt": "1"}]), digit_reward,
                 grpo_config(GRPOSettings(), str(tmp_path / "g"), use_cpu=True))
