"""Data for real models: SFT rows, RL prompts and benchmarks, by hub name or local file.

One schema each, whatever the source:

- SFT rows: ``{"prompt": str, "completion": str}`` (TRL's prompt–completion format; the trainer
  appends EOS).
- Benchmark rows: ``{"id": str, "problem": str, "answer": str, "choices": list[str] | None}``;
  ``choices`` is set for multiple choice (GPQA, MMLU-Pro, ARC-Challenge), where ``answer`` is the
  gold letter ("A", "B", ...), and ``None`` for math, where ``answer`` is the reference answer
  in LaTeX. RL prompts are benchmark rows too (``load_rl_prompts`` turns them into
  ``{"prompt", "answer"}`` for TRL's ``GRPOTrainer``, which hands ``answer`` to the reward).

A source is a name in ``BENCHMARKS`` (the hub dataset is loaded with ``datasets.load_dataset`` and
its fields mapped to the schema), or a local ``.jsonl`` / ``.json`` / ``.parquet`` file already in
the schema. Local files are checked before any long work starts: a missing file, a missing or
non-string field, a duplicated id or a malformed choice fails at once, naming the row and field.
Offline use needs only local files; nothing here touches the hub unless a hub name is given.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# The chain-of-thought instruction Qwen2.5-Math is prompted with (QwenLM/Qwen2.5-Math README,
# "Quick start" CoT system prompt; also quoted at deepwiki.com/QwenLM/Qwen2.5-Math/7-prompt-engineering).
# It follows the question; ``chat_prompt`` then wraps the whole text as the user turn of the
# tokenizer's chat template when the model has one (as the official code does), else it stays plain.
CHOICE_INSTRUCTION = ("Please reason step by step, and put the letter of your final answer within "
                      "\\boxed{}.")  # ours: the same instruction, asking for a letter
LETTERS = "ABCDEFGHIJ"
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


# -- prompts ---------------------------------------------------------------------------------------
def math_prompt(problem: str) -> str:
    """A math problem as a base-model prompt: the question, then the boxed-answer instruction."""
    return f"{problem.strip()}\n{MATH_INSTRUCTION}\n"


def choice_prompt(problem: str, choices: list[str]) -> str:
    """A multiple-choice question with lettered options (A., B., ...) and the boxed-letter instruction."""
    options = "\n".join(f"{LETTERS[i]}. {str(c).strip()}" for i, c in enumerate(choices))
    return f"{problem.strip()}\n\n{options}\n\n{CHOICE_INSTRUCTION}\n"


def chat_prompt(tokenizer, text: str) -> str:
    """``text`` as the user turn of ``tokenizer``'s chat template, up to the assistant's header.

    As the official code renders prompts (verl's SFT and RL datasets: ``apply_chat_template`` of
    ``[{"role": "user", "content": prompt}]`` with ``add_generation_prompt=True``, untokenised),
    for SFT rows, GRPO prompts and evaluation alike. ``text`` unchanged when the tokenizer has no
    template (the miniature's and the CPU stand-in's). A BOS written by the template is dropped when
    the tokenizer adds one itself on encoding (Llama 3), so the prompt starts with one BOS, not two.
    """
    if not getattr(tokenizer, "chat_template", None):
        return text
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text.rstrip()}], tokenize=False,
                                             add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and rendered.startswith(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        rendered = rendered[len(bos):]
    return rendered


@dataclass(frozen=True)
class Problem:
    """One benchmark row in the schema; ``prompt`` is what the model sees (``evaluate_task`` reads it)."""

    id: str
    problem: str
    answer: str
    choices: tuple[str, ...] | None = None
    rendered: str | None = field(default=None, compare=False)  # the prompt after a chat template, if any

    @property
    def prompt(self) -> str:
        if self.rendered is not None:
            return self.rendered
        return choice_prompt(self.problem, list(self.choices)) if self.choices else math_prompt(self.problem)

    def to_dict(self) -> dict:
        return {"id": self.id, "problem": self.problem, "answer": self.answer,
                "choices": list(self.choices) if self.choices else None}


# -- hub datasets: ids, splits and field mappings ----------------------------------------------------
@dataclass(frozen=True)
class HubDataset:
    """Where a dataset lives on the hub and how its rows map to our schema.

    ``fields`` documents the mapping (schema field -> hub field); ``convert(row, index)`` applies it.
    """

    hub_id: str
    config: str | None
    split: str
    role: str  # "id" | "ood" (benchmarks, docs/paper.md §5) | "train" (SFT / RL data, docs/paper.md §3)
    fields: dict[str, str]
    convert: Callable[[dict, int], dict] = field(repr=False)
    gated: bool = False  # needs `huggingface-cli login` and accepting the dataset's terms


def _gsm8k(row: dict, i: int) -> dict:
    # The answer field is a worked solution ending "#### 72"; the reference is the part after ####.
    answer = row["answer"].split("####")[-1].strip().replace(",", "")
    return {"id": f"gsm8k-{i}", "problem": row["question"], "answer": answer, "choices": None}


def _math500(row: dict, i: int) -> dict:
    return {"id": str(row["unique_id"]), "problem": row["problem"], "answer": row["answer"], "choices": None}


def _olympiad(row: dict, i: int) -> dict:
    # final_answer is a list of strings; problems with several answers keep them comma-joined
    # (ours; we were not able to check how the paper scores is_multiple_answer rows).
    answers = row["final_answer"] or [""]
    answer = answers[0] if len(answers) == 1 else ", ".join(answers)
    return {"id": str(row.get("id", i)), "problem": row["question"], "answer": answer.strip("$ "),
            "choices": None}


def _aime(prefix: str) -> Callable[[dict, int], dict]:
    def convert(row: dict, i: int) -> dict:
        return {"id": f"{prefix}-{row.get('id', i)}", "problem": row["problem"], "answer": str(row["answer"]),
                "choices": None}
    return convert


def _gpqa(row: dict, i: int) -> dict:
    # Four answer columns, the correct one first; we shuffle them with a per-row seed so that
    # "A" is not always right (simple-evals does the same with its own permutation).
    options = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"],
               row["Incorrect Answer 3"]]
    order = list(range(4))
    random.Random(i).shuffle(order)
    choices = [str(options[j]).strip() for j in order]
    return {"id": str(row.get("Record ID") or f"gpqa-{i}"), "problem": row["Question"],
            "answer": LETTERS[order.index(0)], "choices": choices}


def _mmlu_pro(row: dict, i: int) -> dict:
    return {"id": f"mmlu_pro-{row['question_id']}", "problem": row["question"], "answer": row["answer"],
            "choices": [str(c) for c in row["options"]]}


def _arc(row: dict, i: int) -> dict:
    # Labels are usually "A".."E" but some rows use "1".."5": the gold letter is taken by position.
    labels, texts = list(row["choices"]["label"]), list(row["choices"]["text"])
    return {"id": row["id"], "problem": row["question"], "answer": LETTERS[labels.index(row["answerKey"])],
            "choices": [str(t) for t in texts]}


def _deepmath(row: dict, i: int) -> dict:
    # Three DeepSeek-R1 solutions per problem; we keep the shortest non-empty one (ours: the paper
    # does not say which it used, and short ones survive the max_length filter of one GPU).
    solutions = [row.get(f"r1_solution_{k}") or "" for k in (1, 2, 3)]
    solution = min((s for s in solutions if s.strip()), key=len, default="")
    return {"id": f"deepmath-{i}", "problem": row["question"], "answer": row["final_answer"], "choices": None,
            "solution": solution}


BENCHMARKS: dict[str, HubDataset] = {
    # In distribution (docs/paper.md §5).
    # openai/gsm8k, config "main", split "test" (1319 rows): question, answer. Source: the dataset
    # card; the parquet path "openai/gsm8k/main/test-00000-of-00001.parquet" is listed in
    # huggingface.co/nickmalhotra/ProjectIndus/blob/main/SFT/dataset.ini.
    "gsm8k": HubDataset("openai/gsm8k", "main", "test", "id",
                        {"problem": "question", "answer": "answer (after ####)", "id": "row index"}, _gsm8k),
    # HuggingFaceH4/MATH-500, split "test" (500 rows): problem, answer, unique_id. Source: the
    # dataset's own eval.yaml (field_spec input: problem, target: answer; split: test) and mirrors'
    # cards listing unique_id.
    "math500": HubDataset("HuggingFaceH4/MATH-500", None, "test", "id",
                          {"problem": "problem", "answer": "answer", "id": "unique_id"}, _math500),
    # Hothan/OlympiadBench, config "OE_TO_maths_en_COMP" (open-ended, text-only, English math),
    # split "train" (the only split; 675 rows): question, final_answer (a list), id. Source: the
    # hub tree of Hothan/OlympiadBench and public evaluation code reading final_answer[0].
    # Unsure: whether the paper used this config or another OlympiadBench packaging.
    "olympiadbench": HubDataset("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", "id",
                                {"problem": "question", "answer": "final_answer[0]", "id": "id"}, _olympiad),
    # HuggingFaceH4/aime_2024, split "train" (30 rows): id, problem, solution, answer, url. Source:
    # hub listings (30 rows); the field names are those of mirrors of it (e.g. xiaoyuanliu/AIME_2024),
    # not checked on the original card.
    "aime24": HubDataset("HuggingFaceH4/aime_2024", None, "train", "id",
                         {"problem": "problem", "answer": "answer", "id": "id"}, _aime("aime24")),
    # math-ai/aime25, split "test" (test.jsonl, 30 rows): problem, answer. Source: the hub tree of
    # math-ai/aime25 and public evaluation code reading problem/answer from it. Unsure: whether it
    # has an "id" column (the row index is used when it has none).
    "aime25": HubDataset("math-ai/aime25", None, "test", "id",
                         {"problem": "problem", "answer": "answer", "id": "id or row index"}, _aime("aime25")),
    # Out of distribution (docs/paper.md §5; MMLU-Redux is not wired).
    # Idavidrein/gpqa, config "gpqa_diamond", split "train" (198 rows; gated): Question, Correct
    # Answer, Incorrect Answer 1-3. Source: lighteval's task config (hf_repo Idavidrein/gpqa,
    # hf_subset gpqa_diamond, split train) and the schema of mirrors (MaxLSB/gpqa-fr).
    "gpqa": HubDataset("Idavidrein/gpqa", "gpqa_diamond", "train", "ood",
                       {"problem": "Question", "choices": "Correct Answer + Incorrect Answer 1-3 (shuffled)",
                        "answer": "letter of Correct Answer", "id": "Record ID or row index"}, _gpqa, gated=True),
    # TIGER-Lab/MMLU-Pro, split "test" (12032 rows): question_id, question, options (up to 10),
    # answer (a letter), answer_index. Source: the schema of its mirror sbintuitions/MMLU-Pro.
    "mmlu_pro": HubDataset("TIGER-Lab/MMLU-Pro", None, "test", "ood",
                           {"problem": "question", "choices": "options", "answer": "answer",
                            "id": "question_id"}, _mmlu_pro),
    # allenai/ai2_arc, config "ARC-Challenge", split "test" (1172 rows): id, question,
    # choices {text, label}, answerKey. Source: the schema of its mirrors (CIIRC-NLP/arc-cs).
    "arc_challenge": HubDataset("allenai/ai2_arc", "ARC-Challenge", "test", "ood",
                                {"problem": "question", "choices": "choices.text",
                                 "answer": "answerKey (by position)", "id": "id"}, _arc),
    # Training data (docs/paper.md §3): zwhe99/DeepMath-103K, split "train" (103k rows; ~2 GB, streamed):
    # question, final_answer, difficulty, topic, r1_solution_1..3 (DeepSeek-R1 solutions). Source:
    # the dataset's README (huggingface.co/datasets/zwhe99/DeepMath-103K).
    "deepmath": HubDataset("zwhe99/DeepMath-103K", None, "train", "train",
                           {"problem": "question", "answer": "final_answer", "completion": "shortest r1_solution_k",
                            "id": "row index"}, _deepmath),
}


# -- reading and checking rows -----------------------------------------------------------------------
def is_local(source: str | Path) -> bool:
    """A source is a local file when it ends in a data suffix, starts like a path, or exists."""
    text = str(source)
    return (text.endswith(LOCAL_SUFFIXES) or text.startswith((".", "/", "~")) or Path(text).exists())


def check_source(source: str | Path, name: str = "source") -> None:
    """Fail in seconds, naming ``name``, unless ``source`` is a registered dataset or an existing
    local data file (``FileNotFoundError`` for a missing one, else ``ValueError``): run on every
    source before the first download starts."""
    key = str(source)
    if key in BENCHMARKS:
        return
    if not is_local(key):
        raise ValueError(f"{name}={key!r} is neither a known dataset {sorted(BENCHMARKS)} nor a local file "
                         f"ending in {LOCAL_SUFFIXES}")
    if not key.endswith(LOCAL_SUFFIXES):
        raise ValueError(f"{name}={key!r}: a data file must end in one of {LOCAL_SUFFIXES}")
    if not Path(key).expanduser().is_file():
        raise FileNotFoundError(f"{name}={key!r}: no such data file")


def read_rows(path: str | Path) -> list[dict]:
    """All rows of a local ``.jsonl``, ``.json`` (a list of objects) or ``.parquet`` file.

    A missing file fails at once naming it; a bad JSON line names its line number.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {n} is not valid JSON ({err.msg})") from None
        return rows
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of objects, got {type(rows).__name__}")
        return rows
    if path.suffix == ".parquet":
        import pandas as pd  # pandas reads parquet through pyarrow, a datasets dependency

        frame = pd.read_parquet(path)
        return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    raise ValueError(f"data file {str(path)!r} must end in one of {LOCAL_SUFFIXES}")


def _plain(value):
    """numpy arrays and scalars from parquet as plain Python lists and scalars."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _check_string(row, i: int, name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(row, dict):
        raise ValueError(f"row {i}: expected an object with field {name!r}, got {type(row).__name__}")
    if name not in row or row[name] is None:
        raise ValueError(f"row {i}: field {name!r} is missing")
    value = row[name]
    if not isinstance(value, str):
        raise ValueError(f"row {i}: field {name!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"row {i}: field {name!r} is empty")
    return value


def check_sft_rows(rows: list[dict]) -> tuple[list[dict], int]:
    """Validate SFT rows; returns the rows with a non-empty completion and how many were skipped."""
    kept, skipped = [], 0
    for i, row in enumerate(rows):
        prompt = _check_string(row, i, "prompt")
        completion = _check_string(row, i, "completion", allow_empty=True)
        if completion.strip():
            kept.append({"prompt": prompt, "completion": completion})
        else:
            skipped += 1
    if not kept:
        raise ValueError(f"no SFT row has a non-empty completion ({len(rows)} rows, {skipped} with an empty one)")
    return kept, skipped


def check_benchmark_rows(rows: list[dict]) -> list[Problem]:
    """Validate benchmark rows against the schema and return them as ``Problem``s.

    Raises ``ValueError`` naming the row index and field: a missing or non-string ``id``,
    ``problem`` or ``answer``; ``choices`` not a list of >= 2 strings; a multiple-choice answer
    that is not one of the choices' letters; a duplicated id (naming both rows).
    """
    problems, seen = [], {}
    for i, row in enumerate(rows):
        pid = _check_string(row, i, "id")
        problem = _check_string(row, i, "problem")
        answer = _check_string(row, i, "answer")
        choices = row.get("choices")
        if choices is not None:
            if not isinstance(choices, (list, tuple)) or len(choices) < 2:
                raise ValueError(f"row {i}: field 'choices' must be null or a list of at least 2 strings")
            if len(choices) > len(LETTERS):
                raise ValueError(f"row {i}: field 'choices' has {len(choices)} options; at most {len(LETTERS)}")
            for j, choice in enumerate(choices):
                if not isinstance(choice, str):
                    raise ValueError(f"row {i}: field 'choices'[{j}] must be a string, got {type(choice).__name__}")
            if answer.strip() not in LETTERS[:len(choices)]:
                raise ValueError(f"row {i}: field 'answer'={answer!r} must be a letter in "
                                 f"{LETTERS[:len(choices)]!r} for {len(choices)} choices")
            choices = tuple(choices)
        if pid in seen:
            raise ValueError(f"row {i}: field 'id'={pid!r} duplicates row {seen[pid]}")
        seen[pid] = i
        problems.append(Problem(pid, problem, answer.strip(), choices))
    return problems


# -- loaders -----------------------------------------------------------------------------------------
def check_splits(splits: dict[str, list[dict]]) -> None:
    """Each split in the schema (SFT rows have a ``completion``, the others are benchmark rows), and
    no question in two splits, compared as the prompts the model sees. ``ValueError`` names the pair."""
    prompts = {}
    for name, rows in splits.items():
        if rows and "completion" in rows[0]:
            check_sft_rows(rows)
            prompts[name] = {r["prompt"] for r in rows}
        else:
            prompts[name] = {p.prompt for p in check_benchmark_rows(rows)}
    names = list(prompts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if prompts[a] & prompts[b]:
                raise ValueError(f"splits {a!r} and {b!r} share a question")


def write_splits(splits: dict[str, list[dict]], out_dir: str | Path, record: dict) -> None:
    """``<split>.jsonl`` per split (one sorted-key JSON object a line) and ``generate_run.json``
    (``record`` plus the row counts), after ``check_splits``."""
    from gift_lite.results import write_json, write_text  # results imports pandas; loaders need not

    check_splits(splits)
    for name, rows in splits.items():
        write_text(Path(out_dir) / f"{name}.jsonl",
                   "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows))
    write_json(Path(out_dir) / "generate_run.json", {**record, "rows": {n: len(r) for n, r in splits.items()}})


def _hub_rows(spec: HubDataset, limit: int | None, offset: int) -> list[dict]:
    """Rows from the hub, converted to the schema. With ``limit`` the split is streamed and cut."""
    from datasets import load_dataset  # imported here: only hub users pay for it

    if limit is None:
        data = load_dataset(spec.hub_id, spec.config, split=spec.split)
        return [spec.convert(row, i) for i, row in enumerate(data) if i >= offset]
    data = load_dataset(spec.hub_id, spec.config, split=spec.split, streaming=True)
    return [spec.convert(row, i) for i, row in enumerate(islice(data, offset + limit)) if i >= offset]


def _source_rows(source: str | Path, limit: int | None, offset: int) -> tuple[list[dict], bool]:
    """(rows, from_hub). Local rows are cut to ``[offset, offset + limit)`` after reading."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be >= 1 or None")
    if offset < 0:
        raise ValueError(f"offset={offset} must be >= 0")
    key = str(source)
    check_source(key)
    if key in BENCHMARKS:
        return _hub_rows(BENCHMARKS[key], limit, offset), True
    rows = read_rows(key)
    return rows[offset:None if limit is None else offset + limit], False


def load_benchmark(source: str | Path, *, limit: int | None = None, offset: int = 0) -> list[Problem]:
    """A benchmark as ``Problem``s: a name in ``BENCHMARKS`` (hub) or a local file in the schema."""
    rows, _ = _source_rows(source, limit, offset)
    return check_benchmark_rows(rows)


def load_sft(source: str | Path, *, limit: int | None = None, offset: int = 0) -> tuple[list[dict], int]:
    """SFT rows ``{"prompt", "completion"}`` and the number of empty completions skipped.

    ``"deepmath"`` builds them from DeepMath-103K: the prompt is ``math_prompt(question)`` and the
    completion the shortest of its three DeepSeek-R1 solutions (docs/paper.md §3). A local file must
    hold the schema.
    """
    rows, from_hub = _source_rows(source, limit, offset)
    if from_hub:
        rows = [{"prompt": math_prompt(r["problem"]), "completion": r.get("solution") or ""} for r in rows]
    return check_sft_rows(rows)


def load_rl_prompts(source: str | Path, *, limit: int | None = None, offset: int = 0) -> list[dict]:
    """GRPO rows ``{"prompt", "answer", "id"}`` from a benchmark-schema source (math rows only).

    For DeepMath-103K give an ``offset`` past the SFT slice so the two are disjoint (docs/paper.md §3).
    """
    problems = load_benchmark(source, limit=limit, offset=offset)
    choice = [p.id for p in problems if p.choices]
    if choice:
        raise ValueError(f"RL prompts must be math problems; id={choice[0]!r} has choices")
    return [{"prompt": p.prompt, "answer": p.answer, "id": p.id} for p in problems]


def split_of(source: str | Path, default: str = "id") -> str:
    """``"id"`` or ``"ood"`` for a registered benchmark; ``default`` for a local file."""
    spec = BENCHMARKS.get(str(source))
    return spec.role if spec is not None and spec.role in ("id", "ood") else default
