"""GSM-Symbolic as an offline data source for the real model (issue: a real model through the companion).

``reasoning-gym==0.1.25`` (Apache-2.0) generates GSM-Symbolic problems from 100 templates derived
from GSM8K (``reasoning_gym/arithmetic/gsm_symbolic/generators_00_49.py`` and ``_50_99.py``); each
draw has a ``question``, an ``answer`` and ``metadata.answer_cot``, a GSM8K-style chain of thought
ending ``#### N``. Its package imports every task it has (~320 MB of dependencies), so the rows
are generated once by ``python -m gift_lite.gsm_symbolic --out data/gsm_symbolic`` (which needs it) and committed under
``data/gsm_symbolic/``; nothing else imports it.

Splits, all disjoint by question text:
- templates 0-49 (in distribution): ``test_id`` first, then ``rl``, then ``sft``, each filled by
  taking draw j of every template in turn (so every template is spread over every split);
- templates 50-99 (out of distribution, templates the SFT and RL data never show): ``test_ood``.
Only the templates reasoning-gym lists as working (``tasks_ok``) are used.

Files use ``gift_lite.data``'s schema: ``sft.jsonl`` holds ``{prompt, completion}`` (the prompt is
``math_prompt(question)``; the completion the chain of thought with its ``#### N`` line restated
as ``\\boxed{N}``, so the grader reads it); the others hold ``{id, problem, answer, choices}``.
"""

from __future__ import annotations

import argparse
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from gift_lite import data
from gift_lite.data import math_prompt
from gift_lite.repro import repo_root

GENERATOR = "reasoning-gym==0.1.25"
FOLDER = "data/gsm_symbolic"
ID_TEMPLATES = range(0, 50)
OOD_TEMPLATES = range(50, 100)
FINAL = re.compile(r"\n?####\s*(-?[\d,]+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class GSMSymbolicConfig:
    """How many rows each split gets (ours: enough for the ``cpu`` preset's slices, and spare)."""

    seed: int = 2026  # ours
    n_test_id: int = 300
    n_rl: int = 600
    n_sft: int = 1200
    n_test_ood: int = 300
    max_draws: int = 200  # draws tried per template before it counts as exhausted


def completion_from_cot(cot: str, answer: str) -> str:
    """The chain of thought with its final ``#### N`` line replaced by a boxed answer.

    Raises ``ValueError`` when the CoT does not end with ``#### N`` or N is not ``answer``.
    """
    match = FINAL.search(cot)
    if not match:
        raise ValueError(f"cot={cot[-60:]!r} does not end with '#### N'")
    if float(match.group(1).replace(",", "")) != float(answer):
        raise ValueError(f"cot ends with #### {match.group(1)} but answer={answer!r}")
    return f"{cot[:match.start()].rstrip()}\nThe final answer is \\boxed{{{answer}}}."


def _draws(templates, config: GSMSymbolicConfig, seen: set[str]):
    """Yield (template, draw, example) round-robin over ``templates``, skipping questions in ``seen``."""
    from reasoning_gym.arithmetic.gsm_symbolic import gsm_symbolic as rg

    ok = [t for t in templates if t in rg.tasks_ok]
    generators = rg.GSMSymbolicDataset(rg.GSMSymbolicDatasetConfig(seed=config.seed, size=1)).generators
    for draw in range(config.max_draws):
        for template in ok:
            rng = random.Random(config.seed * 1_000_000 + template * 1_000 + draw)
            example = generators[template](rng, 1.0)
            if example["question"] not in seen:
                seen.add(example["question"])
                yield template, draw, example


def _problem(template: int, draw: int, example: dict) -> dict:
    return {"id": f"gsmsym-t{template:02d}-d{draw:03d}", "problem": example["question"],
            "answer": str(example["answer"]), "choices": None}


def generate(config: GSMSymbolicConfig = GSMSymbolicConfig()) -> dict[str, list[dict]]:
    """The four splits as lists of rows (see the module docstring); deterministic for a config."""
    seen: set[str] = set()
    sizes = {"test_id": config.n_test_id, "rl": config.n_rl, "sft": config.n_sft}
    splits: dict[str, list[dict]] = {name: [] for name in sizes}
    names = iter(sizes)
    name = next(names)
    for template, draw, example in _draws(ID_TEMPLATES, config, seen):
        if name == "sft":
            splits[name].append({"prompt": math_prompt(example["question"]),
                                 "completion": completion_from_cot(example["metadata"]["answer_cot"],
                                                                   str(example["answer"])),
                                 "id": _problem(template, draw, example)["id"]})
        else:
            splits[name].append(_problem(template, draw, example))
        if len(splits[name]) == sizes[name]:
            name = next(names, None)
            if name is None:
                break
    ood = _draws(OOD_TEMPLATES, config, seen)
    splits["test_ood"] = [_problem(*next(ood)) for _ in range(config.n_test_ood)]
    short = [n for n, want in {**sizes, "test_ood": config.n_test_ood}.items() if len(splits[n]) < want]
    if short:
        raise ValueError(f"the templates ran out of distinct questions for {short}: raise max_draws")
    return splits


def write_splits(splits: dict[str, list[dict]], config: GSMSymbolicConfig, out_dir: Path) -> None:
    data.write_splits(splits, out_dir, {
        "generator": GENERATOR, "licence": "Apache-2.0", "config": asdict(config),
        "command": "python -m gift_lite.gsm_symbolic",
        "id_templates": "0-49 (reasoning-gym tasks_ok)", "ood_templates": "50-99 (reasoning-gym tasks_ok)"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gift_lite.gsm_symbolic",
                                     description=f"Generate data/gsm_symbolic/ (needs {GENERATOR})")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder (default: scratch/gsm_symbolic; the committed rows are {FOLDER})")
    args = parser.parse_args(argv)
    config = GSMSymbolicConfig()
    out_dir = args.out or repo_root() / "scratch" / "gsm_symbolic"
    write_splits(generate(config), config, out_dir)
    print(out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
