"""GIFTTrainer trains a tiny local Qwen2 with every loss, LoRA and QLoRA, on CPU in seconds."""

import math
import warnings

import numpy as np
import pytest
import torch
from datasets import Dataset

from gift_lite.losses import LOSSES
from gift_lite.models import LoraSettings, load_lora, load_qlora
from gift_lite.trainer import GIFTConfig, GIFTTrainer, TruncationWarning, fused_head
from transformers import AutoModelForCausalLM


def make_config(tmp_path, **overrides) -> GIFTConfig:
    settings = dict(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=2,
                    learning_rate=5e-2, logging_steps=1, save_strategy="no", report_to=[],
                    use_cpu=True, seed=0, disable_tqdm=True, max_length=64)
    settings.update(overrides)
    return GIFTConfig(**settings)


def adapter_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def base_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def train(model, tokenizer, rows, config):
    trainer = GIFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer)
    result = trainer.train()
    return trainer, result


@pytest.mark.parametrize("loss_type", sorted(LOSSES))
def test_every_loss_trains_lora_and_keeps_base(loss_type, tiny_model_dir, tokenizer, sft_rows, tmp_path):
    model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    before_adapter, before_base = adapter_state(model), base_state(model)
    config = make_config(tmp_path, loss_type=loss_type, beta=1.0)
    trainer, result = train(model, tokenizer, sft_rows, config)
    assert math.isfinite(result.training_loss)
    after_adapter = adapter_state(model)
    assert any(not torch.equal(before_adapter[n], after_adapter[n]) for n in before_adapter)
    for n, w in base_state(model).items():
        assert torch.equal(before_base[n], w), n


@pytest.mark.parametrize("loss_type", sorted(LOSSES))
def test_every_loss_trains_qlora_adapters_only(loss_type, tiny_model_dir, tokenizer, sft_rows, tmp_path):
    model = load_qlora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    before_adapter, before_base = adapter_state(model), base_state(model)
    trainer, result = train(model, tokenizer, sft_rows, make_config(tmp_path, loss_type=loss_type, beta=2.0))
    assert math.isfinite(result.training_loss)
    after = adapter_state(model)
    assert any(not torch.equal(before_adapter[n], after[n]) for n in before_adapter)
    for n, w in base_state(model).items():
        assert torch.equal(before_base[n], w), n


def test_gift_at_infinite_beta_is_sft(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    states = []
    for loss_type, beta in (("sft", 20.0), ("gift", float("inf"))):
        model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
        train(model, tokenizer, sft_rows, make_config(tmp_path / loss_type, loss_type=loss_type, beta=beta))
        states.append(adapter_state(model))
    for n in states[0]:
        torch.testing.assert_close(states[0][n], states[1][n], rtol=0, atol=0)


def test_anchor_is_the_adapter_free_base(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    trainer, _ = train(model, tokenizer, sft_rows, make_config(tmp_path, loss_type="gift", beta=1.0))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer(["3 5 7>26:5*7"], return_tensors="pt")
    anchor = trainer._anchor_logits(trainer.model, dict(ids))
    torch.testing.assert_close(anchor, base(**ids).logits[:, :-1])
    assert not torch.allclose(anchor, model(**ids).logits[:, :-1])  # the adapter did move the student


def test_full_finetune_uses_a_frozen_copy(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer, result = train(model, tokenizer, sft_rows, make_config(tmp_path, loss_type="gift", beta=1.0))
    assert math.isfinite(result.training_loss)
    frozen = dict(trainer._frozen_base.named_parameters())
    for n, w in reference.items():
        assert torch.equal(frozen[n], w), n
    assert any(not torch.equal(p, reference[n]) for n, p in model.named_parameters())


def test_training_is_deterministic(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    states = []
    for run in range(2):
        model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
        train(model, tokenizer, sft_rows, make_config(tmp_path / str(run), loss_type="gift", beta=1.0))
        states.append(adapter_state(model))
    for n in states[0]:
        assert torch.equal(states[0][n], states[1][n]), n


@pytest.mark.parametrize("field,value", [("loss_type", "ppo"), ("loss_type", "nll"), ("beta", -1.0),
                                         ("beta", math.nan), ("beta", "20"), ("smooth_lambda", 1.0),
                                         ("smooth_lambda", -0.5), ("entropy_coef", math.inf), ("kl_coef", -1.0),
                                         ("clip_epsilon", 0.0)])
def test_config_rejects_bad_loss_settings_before_any_work(field, value, tmp_path):
    with pytest.raises(ValueError, match=f"{field}="):
        make_config(tmp_path, **{field: value})


# -- the fused path (issue 6) -------------------------------------------------------------------
def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def build_model(kind, model_dir):
    torch.manual_seed(0)  # the LoRA initialisation draws from the global RNG
    if kind == "lora":
        return load_lora(model_dir, LoraSettings(r=4, lora_alpha=8))
    if kind == "qlora":
        return load_qlora(model_dir, LoraSettings(r=4, lora_alpha=8))
    return AutoModelForCausalLM.from_pretrained(model_dir)


@pytest.mark.parametrize("kind,loss_type", [("lora", "gift"), ("qlora", "gift"), ("full", "gift"), ("lora", "sft")])
def test_fused_loss_gives_the_logits_paths_updates(kind, loss_type, tiny_model_dir, tokenizer, sft_rows, tmp_path):
    """Same loss, same weights after three steps, same logged metrics. SGD, so each update is the
    gradient: Adam's first steps divide the gradient by its own size and turn the rounding of
    near-zero entries into +-lr."""
    runs = {}
    for fused in (True, False):
        model = build_model(kind, tiny_model_dir)
        config = make_config(tmp_path / str(fused), loss_type=loss_type, beta=1.0, fused_loss=fused, optim="sgd")
        trainer, result = train(model, tokenizer, sft_rows, config)
        assert trainer.fused == fused
        runs[fused] = (result.training_loss, trainable_state(model), trainer.state.log_history)
    assert math.isclose(runs[True][0], runs[False][0], rel_tol=1e-6)
    for n, w in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][n], w, rtol=1e-5, atol=1e-7)
    logged = {fused: [(e["entropy"], e["mean_token_accuracy"]) for e in runs[fused][2] if "entropy" in e]
              for fused in runs}
    assert len(logged[True]) == 3  # batches below metrics_max_tokens: every token, as the logits path
    np.testing.assert_allclose(logged[True], logged[False], rtol=1e-5)


def test_fused_head_needs_a_plain_linear_head_and_unscaled_logits(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert fused_head(model) is model.lm_head
    qlora = load_qlora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    assert fused_head(qlora.get_base_model()) is qlora.get_base_model().lm_head  # bitsandbytes skips lm_head
    model.config.final_logit_softcapping = 30.0
    assert fused_head(model) is None
    trainer = GIFTTrainer(model=model, args=make_config(tmp_path, loss_type="gift"),
                          train_dataset=Dataset.from_list(sft_rows), processing_class=tokenizer)
    assert not trainer.fused  # falls back to gift_loss on the logits


def test_full_finetune_anchor_is_the_frozen_base_not_the_student(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer, _ = train(model, tokenizer, sft_rows, make_config(tmp_path, loss_type="gift", beta=1.0))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = dict(tokenizer(["3 5 7>26:5*7"], return_tensors="pt"))
    want = base(**ids).logits[:, :-1]
    torch.testing.assert_close(trainer._anchor_logits(trainer.model, ids), want)
    ref_hidden, head = trainer._reference_hidden(trainer.model, ids)  # the fused path's reference
    torch.testing.assert_close(head(ref_hidden), want)
    assert not torch.allclose(model(**ids).logits[:, :-1], want)  # the student did move


def test_rows_cut_or_dropped_by_max_length_are_counted_and_warned(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    """TRL truncates silently; GIFTTrainer reports it. Each row here is 24 tokens with EOS; the
    last one's prompt alone exceeds 12 tokens, so the cut leaves it no response token."""
    rows = sft_rows + [{"prompt": "9 9 9>81:" * 3, "completion": "9*9=81"}]
    model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    with pytest.warns(TruncationWarning, match="4 of 5 training rows reached max_length=12 .* 1 were dropped"):
        trainer = GIFTTrainer(model=model, args=make_config(tmp_path, max_length=12),
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    assert trainer.length_report == {"rows": 5, "at_max_length": 4, "dropped": 1}
    assert len(trainer.train_dataset) == 4


def test_rows_within_max_length_give_a_clean_report(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        trainer = GIFTTrainer(model=model, args=make_config(tmp_path, max_length=64),
                              train_dataset=Dataset.from_list(sft_rows), processing_class=tokenizer)
    assert trainer.length_report == {"rows": 4, "at_max_length": 0, "dropped": 0}


def test_qlora_adapters_stay_fp32(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    """TRL casts QLoRA adapters to bf16; GIFTTrainer keeps PEFT's fp32, the dtype a resumed run reloads."""
    model = load_qlora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    trainer = GIFTTrainer(model=model, args=make_config(tmp_path), train_dataset=Dataset.from_list(sft_rows),
                          processing_class=tokenizer)
    dtypes = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
    assert dtypes == {torch.float32}
