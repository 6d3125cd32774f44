"""Data loaders on local files (no hub), their validation errors, and the memory estimate."""

import json
import math
from dataclasses import replace

import pandas as pd
import pytest

from gift_lite import data, models
from gift_lite.data import (BENCHMARKS, MATH_INSTRUCTION, Problem, chat_prompt, choice_prompt, load_benchmark,
                            load_rl_prompts, load_sft, math_prompt, read_rows, split_of)
from gift_lite.models import LoraSettings, TinyModelConfig, add_lora, tiny_qwen2, trainable_parameters
from gift_lite.memory import QWEN25_SHAPES, ModelShape, estimate_memory_gb, memory_table
from gift_lite.real_data import check_sources, filter_by_length, load_data, score
from gift_lite.real_settings import GPU_REAL, SMOKE_REAL, run_name
from gift_lite.real import main as real_main
from gift_lite.repro import repo_root

MATH_ROWS = [{"id": "a", "problem": "What is 1 + 1?", "answer": "2", "choices": None},
             {"id": "b", "problem": "What is 2 + 2?", "answer": "4", "choices": None}]
CHOICE_ROWS = [{"id": "c", "problem": "Pick the prime.", "answer": "B", "choices": ["4", "5", "6"]}]
SFT_ROWS = [{"prompt": "What is 1 + 1?\n", "completion": "\\boxed{2}"},
            {"prompt": "What is 2 + 2?\n", "completion": "  "},
            {"prompt": "What is 3 + 3?\n", "completion": "\\boxed{6}"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_benchmark_from_each_file_format(tmp_path, suffix):
    path = tmp_path / f"bench{suffix}"
    rows = MATH_ROWS + CHOICE_ROWS
    if suffix == ".jsonl":
        write_jsonl(path, rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    problems = load_benchmark(path)
    assert [p.id for p in problems] == ["a", "b", "c"]
    assert problems[0].choices is None and problems[2].choices == ("4", "5", "6")
    assert problems[0].prompt == math_prompt("What is 1 + 1?") and MATH_INSTRUCTION in problems[0].prompt
    assert "B. 5" in problems[2].prompt and "\\boxed{}" in problems[2].prompt


def test_sft_rows_skip_empty_completions_with_a_count(tmp_path):
    rows, skipped = load_sft(write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS))
    assert skipped == 1 and [r["completion"] for r in rows] == ["\\boxed{2}", "\\boxed{6}"]
    pd.DataFrame(SFT_ROWS).to_parquet(tmp_path / "sft.parquet")
    assert load_sft(tmp_path / "sft.parquet") == (rows, 1)


def test_limit_and_offset_cut_local_rows(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", MATH_ROWS + CHOICE_ROWS)
    assert [p.id for p in load_benchmark(path, limit=1, offset=1)] == ["b"]
    with pytest.raises(ValueError, match="limit"):
        load_benchmark(path, limit=0)


def test_missing_file_fails_at_once_naming_it(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_benchmark(missing)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_sft(str(missing))


@pytest.mark.parametrize("row,message", [
    ({"id": "x", "problem": "p"}, r"row 2: field 'answer' is missing"),
    ({"id": "x", "problem": 3, "answer": "1"}, r"row 2: field 'problem' must be a string, got int"),
    ({"id": 7, "problem": "p", "answer": "1"}, r"row 2: field 'id' must be a string"),
    ({"id": "x", "problem": "p", "answer": "1", "choices": "AB"}, r"row 2: field 'choices' must be null or a list"),
    ({"id": "x", "problem": "p", "answer": "1", "choices": ["a", 2]}, r"row 2: field 'choices'\[1\] must be a string"),
    ({"id": "x", "problem": "p", "answer": "C", "choices": ["a", "b"]}, r"row 2: field 'answer'='C' must be a letter"),
    ({"id": "a", "problem": "p", "answer": "1"}, r"row 2: field 'id'='a' duplicates row 0"),
    (["not", "an", "object"], r"row 2: expected an object"),
])
def test_bad_benchmark_rows_name_the_row_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", MATH_ROWS + [row])
    with pytest.raises(ValueError, match=message):
        load_benchmark(path)


@pytest.mark.parametrize("row,message", [
    ({"prompt": "p"}, r"row 1: field 'completion' is missing"),
    ({"prompt": "p", "completion": ["x"]}, r"row 1: field 'completion' must be a string, got list"),
    ({"prompt": "", "completion": "x"}, r"row 1: field 'prompt' is empty"),
])
def test_bad_sft_rows_name_the_row_and_field(tmp_path, row, message):
    with pytest.raises(ValueError, match=message):
        load_sft(write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS[:1] + [row]))


def test_all_empty_completions_and_bad_files_fail(tmp_path):
    with pytest.raises(ValueError, match="no SFT row"):
        load_sft(write_jsonl(tmp_path / "e.jsonl", [{"prompt": "p", "completion": ""}]))
    (tmp_path / "broken.jsonl").write_text('{"id": "a"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_rows(tmp_path / "broken.jsonl")
    (tmp_path / "obj.json").write_text('{"id": "a"}')
    with pytest.raises(ValueError, match="JSON list"):
        read_rows(tmp_path / "obj.json")
    with pytest.raises(ValueError, match="neither a known dataset"):
        load_benchmark("no_such_benchmark")


def test_rl_prompts_are_math_rows_with_answers(tmp_path):
    rows = load_rl_prompts(write_jsonl(tmp_path / "rl.jsonl", MATH_ROWS))
    assert rows[0] == {"prompt": math_prompt("What is 1 + 1?"), "answer": "2", "id": "a"}
    with pytest.raises(ValueError, match="must be math problems"):
        load_rl_prompts(write_jsonl(tmp_path / "mc.jsonl", CHOICE_ROWS))


def test_shipped_samples_load():
    samples = repo_root() / "data" / "samples"
    sft, skipped = load_sft(samples / "math_sft.jsonl")
    assert len(sft) >= 8 and skipped == 0 and all("\\boxed{" in r["completion"] for r in sft)
    assert len(load_benchmark(samples / "math_eval.jsonl")) >= 6
    assert all(p.choices for p in load_benchmark(samples / "choice_eval.jsonl"))
    assert load_rl_prompts(samples / "math_rl.jsonl")


def test_registry_covers_the_paper_benchmarks():
    assert {"gsm8k", "math500", "olympiadbench", "aime24", "aime25"} <= {n for n, b in BENCHMARKS.items()
                                                                        if b.role == "id"}
    assert {"gpqa", "mmlu_pro", "arc_challenge"} == {n for n, b in BENCHMARKS.items() if b.role == "ood"}
    assert BENCHMARKS["deepmath"].hub_id == "zwhe99/DeepMath-103K"
    assert split_of("gpqa") == "ood" and split_of("some/file.jsonl", "id") == "id"


def test_field_mappings_on_hub_like_rows():
    """Each converter on a row shaped like its hub dataset (no download) gives a valid schema row."""
    fake = {
        "gsm8k": {"question": "q", "answer": "Work: 3 * 4 = 12\n#### 1,200"},
        "math500": {"problem": "q", "answer": "\\frac{1}{2}", "unique_id": "test/algebra/1.json"},
        "olympiadbench": {"id": 1606, "question": "q", "final_answer": ["$3$"]},
        "aime24": {"id": 60, "problem": "q", "answer": "204"},
        "aime25": {"problem": "q", "answer": 70},
        "gpqa": {"Question": "q", "Correct Answer": "right", "Incorrect Answer 1": "w1",
                 "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3"},
        "mmlu_pro": {"question_id": 70, "question": "q", "options": ["a", "b", "c"], "answer": "C"},
        "arc_challenge": {"id": "Mercury_1", "question": "q", "answerKey": "2",
                          "choices": {"text": ["x", "y", "z"], "label": ["1", "2", "3"]}},
        "deepmath": {"question": "q", "final_answer": "5", "r1_solution_1": "long ... \\boxed{5}",
                     "r1_solution_2": "\\boxed{5}", "r1_solution_3": ""},
    }
    rows = {name: BENCHMARKS[name].convert(row, 3) for name, row in fake.items()}
    assert rows["gsm8k"]["answer"] == "1200" and rows["olympiadbench"]["answer"] == "3"
    assert rows["aime25"]["id"] == "aime25-3" and rows["aime25"]["answer"] == "70"
    gpqa = rows["gpqa"]
    assert gpqa["choices"][data.LETTERS.index(gpqa["answer"])] == "right"
    assert BENCHMARKS["gpqa"].convert(fake["gpqa"], 3) == gpqa  # the shuffle is seeded by the row
    assert rows["arc_challenge"]["answer"] == "B"
    assert rows["deepmath"]["solution"] == "\\boxed{5}"  # the shortest R1 solution
    problems = data.check_benchmark_rows([dict(r, id=f"{n}-{r['id']}") for n, r in rows.items()])
    assert len(problems) == len(fake)


def test_prompts():
    assert math_prompt("  What is 2?  ") == f"What is 2?\n{MATH_INSTRUCTION}\n"
    assert choice_prompt("Q", ["x", "y"]).startswith("Q\n\nA. x\nB. y\n")
    assert Problem("i", "Q", "B", ("x", "y")).to_dict()["choices"] == ["x", "y"]


TEMPLATE = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}[end]{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")  # a Llama-like template: BOS first


def templated_tokenizer(adds_bos: bool):
    from tokenizers.processors import TemplateProcessing

    from conftest import char_tokenizer

    tok = char_tokenizer()
    tok.chat_template = TEMPLATE
    if adds_bos:  # as Llama 3's tokenizer: encoding puts a BOS in front by itself
        tok._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return tok


def test_chat_prompt_renders_the_user_turn_with_one_bos(tokenizer):
    assert chat_prompt(tokenizer, "1+1=\n") == "1+1=\n"  # no template: plain text, as the miniature
    plain = templated_tokenizer(adds_bos=False)
    assert chat_prompt(plain, "1+1=\n") == "<bos>[user]1+1=[end][assistant]"
    adding = templated_tokenizer(adds_bos=True)
    rendered = chat_prompt(adding, "1+1=\n")
    assert rendered == "[user]1+1=[end][assistant]"
    assert adding(rendered)["input_ids"].count(adding.bos_token_id) == 1


def test_with_chat_template_renders_every_prompt_once_and_can_be_switched_off():
    from gift_lite.real_data import RealData, with_chat_template
    from gift_lite.real_settings import configure

    data = RealData([{"prompt": "p1", "completion": "c"}], 0, [{"prompt": "p2", "answer": "1", "id": "a"}],
                    [("b", "id", [Problem("x", "2+2", "4"), Problem("y", "Q", "A", ("u", "v"))])])
    tok = templated_tokenizer(adds_bos=False)
    assert with_chat_template(data, tok, enabled=False) is data
    done = with_chat_template(data, tok)
    assert done.templated and with_chat_template(done, tok) is done  # each unit calls it: rendered once
    assert done.sft[0] == {"prompt": "<bos>[user]p1[end][assistant]", "completion": "c"}
    assert done.rl[0]["prompt"] == "<bos>[user]p2[end][assistant]" and done.rl[0]["answer"] == "1"
    math_problem, choice_problem = done.benchmarks[0][2]
    assert math_problem.prompt == chat_prompt(tok, math_prompt("2+2"))
    assert choice_problem.prompt == chat_prompt(tok, choice_prompt("Q", ["u", "v"]))
    assert math_problem == Problem("x", "2+2", "4")  # the rendered prompt is not part of the row
    assert SMOKE_REAL.chat_template and GPU_REAL.chat_template  # on by default, as the official code
    assert configure("smoke", chat_template=False).chat_template is False
    with pytest.raises(ValueError, match="chat_template"):
        configure("smoke", chat_template="no")


def test_score_picks_the_reward_by_row_kind():
    assert score("\\boxed{2}", Problem("a", "q", "2")) == 1.0
    assert score("\\boxed{B}", Problem("c", "q", "B", ("x", "y"))) == 1.0
    assert score("\\boxed{2}", Problem("c", "q", "B", ("x", "y"))) == 0.0


def test_filter_by_length_drops_long_rows(tokenizer):
    rows = [{"prompt": "1+1=", "completion": "2"}, {"prompt": "1+1=", "completion": "2" * 50}]
    kept, dropped = filter_by_length(rows, tokenizer, max_length=16)
    assert kept == rows[:1] and dropped == 1
    with pytest.raises(ValueError, match="every one of the 2 SFT rows is longer than max_length=4"):
        filter_by_length(rows, tokenizer, max_length=4)


def test_init_command_reports_the_rows_it_dropped(tmp_path):
    """``python -m gift_lite.real init`` on the CPU stand-in: an adapter, and stats naming every row
    that did not train (empty completion, longer than max_length, cut by TRL)."""
    assert real_main(["init", "--preset", "smoke", "--max-steps", "1", "--out", str(tmp_path)]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert stats["world_size"] == 1 and stats["distributed_type"] == "NO" and not stats["sharded"]
    assert stats["train/rows"] >= 1 and math.isfinite(stats["train/loss"])
    assert {stats[k] for k in ("train/rows_empty", "train/rows_too_long", "train/rows_at_max_length")} == {0}


# -- the memory estimate -------------------------------------------------------------------------
def test_lora_count_in_the_estimate_matches_peft():
    cfg = TinyModelConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64)
    shape = ModelShape(32, 2, 64, 4, 2, 40, False)
    model = add_lora(tiny_qwen2(cfg), LoraSettings(r=4, lora_alpha=8))
    est = estimate_memory_gb(shape, seq_len=1, lora_r=4)
    assert est["lora"] * 1024 ** 3 == trainable_parameters(model) * 16


def test_memory_estimate_is_sane():
    small, large = QWEN25_SHAPES["Qwen2.5-0.5B"], QWEN25_SHAPES["Qwen2.5-7B"]
    base = estimate_memory_gb(small, seq_len=2048)
    assert base["total"] == pytest.approx(sum(v for k, v in base.items() if k != "total"))
    assert estimate_memory_gb(small, seq_len=4096)["activations"] == pytest.approx(2 * base["activations"])
    assert estimate_memory_gb(large, seq_len=2048)["total"] > base["total"]
    nf4 = estimate_memory_gb(large, seq_len=1)["weights"]
    assert 3.5 < nf4 < 6.0  # 7.6 B parameters: ~3.4 GiB of NF4 linears + ~2 GiB bf16 embeddings
    assert estimate_memory_gb(large, seq_len=1, four_bit=False)["weights"] > 2.5 * nf4
    assert (estimate_memory_gb(small, seq_len=2048, gradient_checkpointing=False)["activations"]
            > base["activations"])
    assert estimate_memory_gb(small, seq_len=1, kv_cache_tokens=1000)["kv_cache"] > 0


def test_memory_table_lists_every_model_and_stage():
    table = memory_table(GPU_REAL)
    assert list(table.columns[:2]) == ["model", "stage"] and len(table) == 2 * len(QWEN25_SHAPES)
    assert not table.iloc[0]["T4 16GB"].endswith("x")  # the default model fits a free Colab GPU


def test_run_names():
    assert run_name(GPU_REAL) == "real_qwen2.5-0.5b" and run_name(SMOKE_REAL) == "real_tiny-local"


def test_every_source_and_the_model_are_checked_before_any_download(tmp_path, monkeypatch):
    """A typo in the last benchmark, or in the model, fails before the first (hub) source loads."""
    def no_download(*args, **kwargs):
        raise AssertionError("a source was loaded before all were checked")

    monkeypatch.setattr(data, "_hub_rows", no_download)
    hub_first = replace(SMOKE_REAL, sft_data="deepmath", ood_benchmarks=("gpqa", "arc_challnge"))
    with pytest.raises(ValueError, match=r"ood_benchmarks='arc_challnge' is neither a known dataset"):
        load_data(hub_first)
    with pytest.raises(FileNotFoundError, match=r"id_benchmarks='.*data/samples/math_evl.jsonl': no such data file"):
        load_data(replace(hub_first, id_benchmarks=("data/samples/math_evl.jsonl",)))
    with pytest.raises(ValueError, match=r"rl_data='./notes.txt': a data file must end in"):
        check_sources(replace(SMOKE_REAL, rl_data="./notes.txt"))
    with pytest.raises(ValueError, match=r"model='./no_model' is not a folder with a config.json"):
        check_sources(replace(SMOKE_REAL, model="./no_model"))
    check_sources(SMOKE_REAL)  # the shipped samples and the stand-in pass


def test_a_hub_model_that_cannot_be_found_fails_naming_it(monkeypatch):
    def not_found(name, **kwargs):
        raise OSError(f"{name} is not a local folder and is not a valid model identifier\nmore")

    monkeypatch.setattr(models.AutoConfig, "from_pretrained", not_found)
    with pytest.raises(ValueError, match=r"model='Qwen/Qwen2.5-0.5' is neither a local folder nor a hub model"):
        models.check_model("Qwen/Qwen2.5-0.5")
