"""GIFTTrainer trains a tiny local Qwen2 with every loss, LoRA and QLoRA, on CPU in seconds."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from gift_lite.losses import LOSSES
from gift_lite.models import LoraSettings, load_lora, load_qlora
from gift_lite.heads import fused_head
from gift_lite.trainer import GIFTConfig, GIFTTrainer, TruncationWarning, per_epoch_selection, pick_checkpoint
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


# -- held-out cross-entropy, the official accumulation, the paper's checkpoint rule -------------
def evaluate(model, tokenizer, rows, config):
    trainer = GIFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                          eval_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    return trainer.evaluate()


@pytest.mark.parametrize("loss_only", [True, False])  # True: the fused path; False: the logits path
def test_eval_ce_is_the_same_one_hot_loss_for_every_method(loss_only, tiny_model_dir, tokenizer, sft_rows,
                                                          tmp_path):
    """``eval_ce`` is SFT's eval loss whatever the method; ``eval_loss`` is the method's own loss."""
    found = {}
    for loss_type, beta in (("sft", 20.0), ("gift", 1.0), ("dft", 20.0), ("asft", 20.0)):
        model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
        config = make_config(tmp_path / loss_type, loss_type=loss_type, beta=beta, per_device_eval_batch_size=2,
                             prediction_loss_only=loss_only)
        found[loss_type] = evaluate(model, tokenizer, sft_rows, config)
    sft = found["sft"]
    assert sft["eval_ce"] == pytest.approx(sft["eval_loss"], rel=1e-5)  # equal batches: same means
    for loss_type in ("gift", "dft", "asft"):
        assert found[loss_type]["eval_ce"] == pytest.approx(sft["eval_ce"], rel=1e-5), loss_type
        assert abs(found[loss_type]["eval_loss"] - sft["eval_ce"]) > 1e-3, loss_type


def sgd_update(tiny_model_dir, tokenizer, rows, tmp_path, official):
    model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    before = adapter_state(model)
    config = make_config(tmp_path, loss_type="gift", beta=1.0, max_steps=1, per_device_train_batch_size=1,
                         gradient_accumulation_steps=2, optim="sgd", learning_rate=1e-2, max_grad_norm=0.0,
                         official_grad_accumulation=official)
    trainer, _ = train(model, tokenizer, rows, config)
    after = adapter_state(model)
    return {n: after[n] - before[n] for n in before}, trainer.state.log_history[0]["loss"]


def test_official_accumulation_sums_micro_batch_gradients_and_logs_the_mean(tiny_model_dir, tokenizer, sft_rows,
                                                                          tmp_path):
    ours, ours_loss = sgd_update(tiny_model_dir, tokenizer, sft_rows, tmp_path / "mean", official=False)
    official, official_loss = sgd_update(tiny_model_dir, tokenizer, sft_rows, tmp_path / "sum", official=True)
    assert any(d.abs().max() > 0 for d in ours.values())
    for n in ours:  # plain SGD, no clipping: the step is lr x gradient, so the sum is twice the mean
        torch.testing.assert_close(official[n], 2 * ours[n], rtol=1e-4, atol=1e-9)
    assert official_loss == pytest.approx(ours_loss, rel=1e-6)


def test_pick_checkpoint_takes_the_lowest_held_out_loss():
    history = [{"loss": 1.0, "step": 2}, {"eval_ce": 0.9, "epoch": 1.0, "step": 2},
               {"eval_ce": 0.7, "epoch": 2.0, "step": 4}, {"eval_ce": 0.7, "epoch": 3.0, "step": 6},
               {"eval_ce": 0.8, "epoch": 4.0, "step": 8}]
    best = pick_checkpoint(history, output_dir="runs/x")
    assert best == {"step": 4, "epoch": 2.0, "eval_ce": 0.7, "checkpoint": str(Path("runs/x") / "checkpoint-4")}
    assert pick_checkpoint(history, metric="loss")["step"] == 2
    with pytest.raises(ValueError, match="eval_ce"):
        pick_checkpoint([{"loss": 1.0, "step": 1}])
    with pytest.raises(ValueError, match="nan"):
        pick_checkpoint([{"eval_ce": float("nan"), "step": 1}])


def test_per_epoch_selection_saves_each_epoch_and_keeps_the_best(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    config = make_config(tmp_path, loss_type="gift", beta=1.0, max_steps=-1, num_train_epochs=3,
                         learning_rate=2e-1, **per_epoch_selection())
    trainer = GIFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(sft_rows),
                          eval_dataset=Dataset.from_list(sft_rows[:2]), processing_class=tokenizer)
    trainer.train()
    evals = [log for log in trainer.state.log_history if "eval_ce" in log]
    assert [log["epoch"] for log in evals] == [1.0, 2.0, 3.0]
    best = pick_checkpoint(trainer.state.log_history, output_dir=config.output_dir)
    assert best["eval_ce"] == min(log["eval_ce"] for log in evals)
    assert Path(best["checkpoint"]).is_dir() and trainer.state.best_model_checkpoint == best["checkpoint"]
