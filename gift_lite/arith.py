"""Arithmetic with headroom for a 135M model: the second real-model protocol's data and its grader.

GSM-Symbolic sits at SmolLM2-135M's floor (``data/real_smollm2-135m-instruct``: RL had nothing to
learn from), so ``data/real_arith/PROTOCOL.md`` tests the claims on short tasks from
``reasoning-gym==0.1.25`` (Apache-2.0) that the base partly solves:

- in distribution, ``chain_sum`` (2-3 one-digit terms joined by + and -), with an expert solution
  written by ``chain_solution``: one line per operation, left to right, then the boxed answer;
- a close family out of distribution, ``products`` (two one-digit factors: 100 distinct questions);
- a far family out of distribution, ``letter_counting`` (5-8 words), a skill no SFT row trains.

``python -m gift_lite.arith --out data/arith`` (needs the ``gym`` extra) wrote every split once into
``data/arith/`` (without ``--out`` it writes under ``scratch/``); nothing else imports reasoning-gym.
Splits are disjoint by question text.
Every answer is an integer, graded by ``arith_reward``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from gift_lite import data
from gift_lite.data import math_prompt
from gift_lite.math_rewards import completion_text, last_boxed
from gift_lite.repro import repo_root

GENERATOR = "reasoning-gym==0.1.25"
FOLDER = "data/arith"
# (reasoning-gym dataset, its difficulty settings) of each family
FAMILIES = {
    "chain_sum": ("chain_sum", {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}),
    "products": ("products", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    "letter_counting": ("letter_counting", {"min_words": 5, "max_words": 8}),
}
# each test file's family: the ID test's problems are chain sums, each OOD test is a family of its own
TESTS = {"test_id": "chain_sum", "test_products": "products", "test_letters": "letter_counting"}
INTEGER = re.compile(r"[-−]?\d+")
OPERATION = re.compile(r"^-?\d+(?: [+-] \d+)+$")


@dataclass(frozen=True)
class ArithConfig:
    """How many rows each split gets (ours: the preset's slices with spare rows)."""

    seed: int = 2026  # ours
    n_test_id: int = 300  # >= 200 ID test problems (issue)
    n_validation: int = 64  # RL-only validation prompts: the GRPO step budget is chosen on them
    n_rl: int = 640
    n_sft: int = 256  # training rows first, then held-out expert text
    n_test_products: int = 100  # every distinct question of the family
    n_test_letters: int = 200
    max_draws: int = 50_000  # draws per family before it counts as exhausted


def chain_solution(expression: str, answer: str) -> str:
    """The expert text for ``a op b [op c]``: each operation on its own line, then the boxed answer.

    ``chain_solution("4 - 5 - 3", "-4")`` is ``"4 - 5 = -1\\n-1 - 3 = -4\\nThe answer is \\\\boxed{-4}."``.
    Raises ``ValueError`` when ``expression`` is not such a chain or its value is not ``answer``.
    """
    if not OPERATION.match(expression):
        raise ValueError(f"expression={expression!r} is not a chain of + and - between integers")
    tokens = expression.split()
    value, lines = int(tokens[0]), []
    for op, term in zip(tokens[1::2], tokens[2::2]):
        new = value + int(term) if op == "+" else value - int(term)
        lines.append(f"{value} {op} {term} = {new}")
        value = new
    if value != int(answer):
        raise ValueError(f"expression={expression!r} evaluates to {value}, but answer={answer!r}")
    return "\n".join(lines) + f"\nThe answer is \\boxed{{{value}}}."


def final_integer(completion: str) -> int | None:
    """The answer a completion gives: its last ``\\boxed{}`` if it has one (an integer, else no
    answer), otherwise the last integer in the text (the base rarely boxes: lenient, as stated in
    the protocol)."""
    boxed = last_boxed(completion)
    text = completion if boxed is None else boxed.strip().strip("$").replace(" ", "")
    found = INTEGER.findall(text)
    if not found or (boxed is not None and not INTEGER.fullmatch(text)):
        return None
    return int(found[-1].replace("−", "-"))


def arith_reward(completion: str, answer: str) -> float:
    """1.0 if ``final_integer(completion)`` equals the integer ``answer``, else 0.0. Never raises."""
    try:
        return float(final_integer(completion) == int(answer))
    except (TypeError, ValueError):
        return 0.0


def arith_reward_func(completions, answer, **kwargs) -> list[float]:
    """TRL reward function: ``GRPOTrainer`` passes the dataset's ``answer`` column, one per completion."""
    return [arith_reward(completion_text(c), a) for c, a in zip(completions, answer, strict=True)]


def constant_guess(answers: list[str]) -> tuple[str, float]:
    """The most common answer of a split and the accuracy of always giving it."""
    value, count = Counter(answers).most_common(1)[0]
    return value, count / len(answers)


def _draws(family: str, config: ArithConfig, seen: set[str]):
    """Yield (index, example) of ``family`` in the generator's order, skipping questions in ``seen``."""
    import reasoning_gym

    name, difficulty = FAMILIES[family]
    dataset = reasoning_gym.create_dataset(name, seed=config.seed, size=config.max_draws, **difficulty)
    for i in range(config.max_draws):
        example = dataset[i]
        if example["question"] not in seen:
            seen.add(example["question"])
            yield i, example


def _problem(family: str, index: int, example: dict) -> dict:
    return {"id": f"{family}-{index:05d}", "problem": example["question"], "answer": str(example["answer"]),
            "choices": None}


def _take(draws, n: int, family: str, split: str) -> list[tuple[int, dict]]:
    taken = [d for _, d in zip(range(n), draws)]
    if len(taken) < n:
        raise ValueError(f"{family} has {len(taken)} distinct questions left for split {split!r}, "
                         f"fewer than {n}: lower the split or raise max_draws")
    return taken


def generate(config: ArithConfig = ArithConfig()) -> dict[str, list[dict]]:
    """Every split as lists of rows (``gift_lite.data``'s schema); deterministic for a config."""
    seen: set[str] = set()
    chain = _draws("chain_sum", config, seen)
    splits = {name: [_problem("chain_sum", *d) for d in _take(chain, n, "chain_sum", name)]
              for name, n in (("test_id", config.n_test_id), ("validation", config.n_validation),
                              ("rl", config.n_rl))}
    splits["sft"] = [{"id": _problem("chain_sum", i, ex)["id"], "prompt": math_prompt(ex["question"]),
                      "completion": chain_solution(ex["metadata"]["expression"], str(ex["answer"]))}
                     for i, ex in _take(chain, config.n_sft, "chain_sum", "sft")]
    for name, family in TESTS.items():
        if family != "chain_sum":
            n = getattr(config, f"n_{name}")
            splits[name] = [_problem(family, *d) for d in _take(_draws(family, config, seen), n, family, name)]
    return splits


def write(config: ArithConfig, out_dir: Path) -> dict[str, list[dict]]:
    splits = generate(config)
    guesses = {name: constant_guess([r["answer"] for r in rows]) for name, rows in splits.items() if name != "sft"}
    data.write_splits(splits, out_dir, {
        "generator": GENERATOR, "licence": "Apache-2.0", "config": asdict(config),
        "command": "python -m gift_lite.arith --out data/arith",
        "families": {k: {"dataset": v[0], **v[1]} for k, v in FAMILIES.items()},
        "constant_guess": {name: {"answer": a, "accuracy": round(acc, 4)} for name, (a, acc) in guesses.items()}})
    return splits


def constant_guesses(folder: str | Path = FOLDER) -> dict[str, float]:
    """Each split's constant-guess accuracy, as ``generate_run.json`` in ``folder`` records it."""
    record = json.loads((repo_root() / folder / "generate_run.json").read_text())
    return {name: guess["accuracy"] for name, guess in record["constant_guess"].items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gift_lite.arith",
                                     description=f"Generate the arithmetic splits (needs {GENERATOR}: the gym extra)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder (default: scratch/arith; the committed splits are data/arith)")
    args = parser.parse_args(argv)
    out_dir = args.out or repo_root() / "scratch" / "arith"
    write(ArithConfig(), out_dir)
    print(out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
