"""The miniature world: determinism, disjoint splits, the solver, the tokenizer, the reward, pretraining."""

import time

import pytest
import torch

from gift_lite.models import TinyModelConfig
from gift_lite.rewards import countdown_reward, countdown_reward_func
from gift_lite.world import (PretrainConfig, Problem, WorldConfig, build_tokenizer, build_world,
                             expert_solution, generate_problems, pretrain_base, solutions, solvable_problems)

SMALL = WorldConfig(n_id_test=50, n_ood_test=30, n_sft=100, n_rl=80, corpus_size=2000)
TINY_MODEL = TinyModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                             intermediate_size=64)


@pytest.fixture(scope="module")
def world():
    return build_world(SMALL)


def test_world_is_deterministic_from_its_seed(world):
    again = build_world(SMALL)
    assert again == world
    other = build_world(WorldConfig(**{**SMALL.__dict__, "seed": 1}))
    assert other.sft != world.sft and other.corpus != world.corpus
    assert generate_problems(20, seed=3) == generate_problems(20, seed=3)
    assert generate_problems(20, seed=3) != generate_problems(20, seed=4)


def test_splits_are_disjoint_by_problem(world):
    keys = {name: {p.key for p in world.split(name)} for name in ("pretrain", "sft", "rl", "id_test", "ood_test")}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not keys[a] & keys[b], (a, b)
    assert len(keys["sft"]) == SMALL.n_sft and len(keys["id_test"]) == SMALL.n_id_test
    assert all(p.target <= SMALL.id_max_target for n in names[:4] for p in world.split(n))
    assert all(SMALL.id_max_target < p.target <= SMALL.ood_max_target for p in world.ood_test)
    # Every ID problem not held out is a pretraining problem.
    assert sum(len(keys[n]) for n in names[:4]) == len(solvable_problems(1, SMALL.id_max_target))


def test_every_problem_is_solvable_and_every_expert_solution_verifies(world):
    for name in ("pretrain", "sft", "rl", "id_test", "ood_test"):
        for p in world.split(name):
            assert solutions(p), p
    for row, p in zip(world.sft_dataset(), world.sft):
        assert row["prompt"] == p.prompt and row["completion"] == expert_solution(p)
        assert countdown_reward(row["completion"], p.numbers, p.target) == 1.0
    rl = world.rl_dataset()
    assert rl.column_names == ["prompt", "numbers", "target", "problem_id"]
    assert countdown_reward_func([expert_solution(p) for p in world.rl], rl["numbers"], rl["target"]) == \
        [1.0] * len(world.rl)


def test_solver_finds_all_solutions_of_a_hand_worked_problem():
    # 2, 3, 4 -> 10 by hand: 2*3=6 then 6+4 (2 x 2 operand orders), and 3*4=12 then 12-2
    # (2 orders of the product). Every other first step (2+3, 2+4, 3+4, 2*4, 4-2, 3-2, 4-3, 4/2)
    # leaves a pair that cannot make 10.
    expected = sorted(["2*3=6,6+4=10", "2*3=6,4+6=10", "3*2=6,6+4=10", "3*2=6,4+6=10",
                       "3*4=12,12-2=10", "4*3=12,12-2=10"])
    problem = Problem(numbers=(4, 2, 3), target=10)
    assert list(solutions(problem)) == expected
    assert expert_solution(problem) == "2*3=6,4+6=10"
    assert all(countdown_reward(s, problem.numbers, 10) == 1.0 for s in expected)
    assert solutions(Problem(numbers=(1, 1, 1), target=50)) == ()


def test_corpus_mix_and_tokenizer_round_trip(world):
    tokenizer = build_tokenizer()
    assert len(tokenizer) <= TinyModelConfig().vocab_size
    encoded = tokenizer(list(world.corpus))["input_ids"]
    decoded = tokenizer.batch_decode(encoded, skip_special_tokens=True)
    assert decoded == list(world.corpus)
    assert all(ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in ids for ids in encoded)
    assert max(len(ids) for ids in encoded) + 1 <= 40  # with EOS
    correct = [countdown_reward(t.split(":")[1], [int(x) for x in t.split(">")[0].split()],
                                int(t.split(">")[1].split(":")[0])) for t in world.corpus]
    share = sum(correct) / len(correct)
    assert abs(share - SMALL.corpus_correct) < 0.05  # slips are wrong by construction; misses too


def test_tokenizer_saves_and_reloads(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "5 7 9>26:5*7=35,35-9=26"
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (again.bos_token, again.eos_token, again.pad_token) == ("<bos>", "<eos>", "<pad>")


def test_tokenization_matches_what_trl_does(world):
    # TRL's SFTTrainer appends the eos_token *string* to a completion, then tokenizes prompt and
    # prompt + completion separately; the prompt must be a prefix and the string must become EOS.
    tokenizer = build_tokenizer()
    row = world.sft_dataset()[0]
    prompt_ids = tokenizer(row["prompt"])["input_ids"]
    full_ids = tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token)["input_ids"]
    assert full_ids[:len(prompt_ids)] == prompt_ids
    assert full_ids[0] == tokenizer.bos_token_id and full_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(full_ids[len(prompt_ids):], skip_special_tokens=True) == row["completion"]


@pytest.mark.parametrize("completion, numbers, target", [
    ("5*7=36,36-9=27", (5, 7, 9), 27),  # wrong arithmetic
    ("5*7=35,35-5=30", (5, 7, 9), 30),  # reuses 5, never uses 9
    ("5*7=35,35-9=26", (5, 7, 9), 25),  # wrong target
    ("5*7=35", (5, 7, 9), 35),  # leaves a number unused
    ("5*7=35,35-9=26,26+0=26", (5, 7, 9), 26),  # uses a number not given
    ("9-9=0,0+5=5", (9, 9, 5), 5),  # zero intermediate (results must be positive)
    ("7/2=3,3+3=6", (7, 2, 3), 6),  # inexact division
    ("5*7=035,35-9=26", (5, 7, 9), 26),  # leading zero
    ("\x00\xff\ufffd", (5, 7, 9), 26),  # junk bytes
    ("", (5, 7, 9), 26),
    (None, (5, 7, 9), 26),
    ("5*7=35,35-9=26", "junk", 26),
])
def test_reward_rejects(completion, numbers, target):
    assert countdown_reward(completion, numbers, target) == 0.0


def test_reward_accepts_valid_paths_and_rejects_huge_input_fast():
    assert countdown_reward("5*7=35,35-9=26", (5, 7, 9), 26) == 1.0
    assert countdown_reward(" 7*5=35,35-9=26\n", [9, 5, 7], 26) == 1.0
    assert countdown_reward("9-7=2,2*5=10", (5, 7, 9), 10) == 1.0
    assert countdown_reward("3+3=6,6/2=3", (3, 3, 2), 3) == 1.0
    huge = "5*7=35," * 150_000
    start = time.perf_counter()
    assert countdown_reward(huge, (5, 7, 9), 26) == 0.0
    assert countdown_reward("1" * 1_000_000, (5, 7, 9), 26) == 0.0
    assert time.perf_counter() - start < 0.1
    conversational = [[{"role": "assistant", "content": "5*7=35,35-9=26"}]]
    assert countdown_reward_func(conversational, [[5, 7, 9]], [26]) == [1.0]


def test_pretraining_is_deterministic_and_saves(world, tmp_path):
    config = PretrainConfig(max_steps=4, batch_size=8, warmup_steps=2, seed=0)
    model_a, stats = pretrain_base(world, TINY_MODEL, config, out_dir=tmp_path / "base", progress=False)
    model_b, _ = pretrain_base(world, TINY_MODEL, config, progress=False)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert stats["tokens"] > 0 and stats["final_loss"] > 0
    for name in ("model.safetensors", "config.json", "tokenizer.json", "pretrain.json"):
        assert (tmp_path / "base" / name).exists(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    from gift_lite.models import load_base

    loaded = load_base(tmp_path / "base", dtype=torch.float32)
    assert all(torch.equal(loaded.state_dict()[k], state_a[k]) for k in state_a)
    assert loaded.generation_config.eos_token_id == build_tokenizer().eos_token_id
    model_c, _ = pretrain_base(world, TINY_MODEL, PretrainConfig(**{**config.__dict__, "seed": 1}), progress=False)
    assert not torch.equal(model_c.state_dict()["lm_head.weight"], state_a["lm_head.weight"])


def test_saved_base_reloads_with_the_same_tokenizer(tmp_path):
    # With a Qwen2 config.json beside it, AutoTokenizer would return Qwen2Tokenizer, which drops
    # the spaces between the numbers; models.load_tokenizer keeps the class that was saved.
    from gift_lite.models import TinyModelConfig, load_tokenizer, tiny_qwen2

    tokenizer = build_tokenizer()
    tiny_qwen2(TinyModelConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                               intermediate_size=32)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    text = "5 7 9>26:5*7=35,35-9=26"
    assert load_tokenizer(tmp_path)(text)["input_ids"] == tokenizer(text)["input_ids"]
