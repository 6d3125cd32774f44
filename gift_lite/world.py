"""The miniature world: a Countdown task, its tokenizer, splits, corpus, and the pretrained base.

The task (issue 3): reach a target with three numbers 1-9, each used exactly once, with
+ - * / and positive-integer intermediate results. A problem and a solution are short strings::

    prompt      "5 7 9>26:"          numbers in the order given, '>' then the target, ':'
    completion  "5*7=35,35-9=26"    one equation per step, ',' between steps; no EOS in the text

Why this format: every character is one token (a 23-symbol vocabulary), a prompt plus a solution
fits in 27 tokens, and a completion is checked by replaying it (``rewards.countdown_reward``):
each step consumes two numbers still available and produces its result, and the last result
must be the target with every given number used. Solution paths differ in which pair is
combined first, the operation, and the operand order, so most problems have several.

EOS: completions carry no EOS character. The tokenizer adds BOS in front of every encoded text
(so a prompt always starts with it, in our code and in TRL's), and EOS is appended by whoever
trains on a completion: ``pretrain_base`` here, TRL's ``SFTTrainer`` (it adds ``eos_token`` to
non-conversational completions) in the initialisers. Generation stops at EOS.

Splits are disjoint by problem, where a problem is the multiset of numbers plus the target
(the order of the numbers in a prompt is presentation, not a new problem). Three numbers 1-9
give only 1854 solvable problems with targets <= 50 and 290 with targets 51-99, which is what
sets the default split sizes below.
"""

from __future__ import annotations

import itertools
import math
import random
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from gift_lite.models import TinyModelConfig, tiny_qwen2
from gift_lite.results import write_json

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0-3
CHARACTERS = "0123456789+-*/=,>: "  # ids 4-22
OPERATIONS = "+-*/"
SPLIT_NAMES = ("pretrain", "sft", "rl", "val", "id_test", "ood_test")


# ---------------------------------------------------------------------------------------------
# Problems and solutions
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One Countdown problem; ``numbers`` are in the order the prompt shows them."""

    numbers: tuple[int, ...]
    target: int
    id: str = ""

    @property
    def key(self) -> tuple[tuple[int, ...], int]:
        """What makes two problems the same: the multiset of numbers and the target."""
        return tuple(sorted(self.numbers)), self.target

    @property
    def prompt(self) -> str:
        return format_prompt(self.numbers, self.target)


def format_prompt(numbers, target: int) -> str:
    return " ".join(str(n) for n in numbers) + f">{target}:"


def apply_op(a: int, op: str, b: int) -> int | None:
    """``a op b`` if it is a positive integer (the world's rule for every step), else None."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a > b else None
    if op == "*":
        return a * b
    if op == "/":
        return a // b if b != 0 and a % b == 0 else None
    raise ValueError(f"op={op!r} is not one of {OPERATIONS!r}")


@lru_cache(maxsize=None)
def _all_paths(numbers: tuple[int, ...]) -> dict[int, tuple[str, ...]]:
    """Every legal completion for ``numbers`` (a sorted tuple), grouped by its final result.

    A path combines two available numbers per step (either operand order), so a problem of n
    numbers takes n - 1 steps. Strings are de-duplicated (repeated numbers give equal paths).
    """
    by_result: dict[int, set[str]] = {}

    def extend(pool: tuple[int, ...], steps: tuple[str, ...]) -> None:
        if len(pool) == 1:
            by_result.setdefault(pool[0], set()).add(",".join(steps))
            return
        for i, j in itertools.permutations(range(len(pool)), 2):
            rest = tuple(x for k, x in enumerate(pool) if k not in (i, j))
            for op in OPERATIONS:
                r = apply_op(pool[i], op, pool[j])
                if r is not None:
                    extend(rest + (r,), steps + (f"{pool[i]}{op}{pool[j]}={r}",))

    extend(numbers, ())
    return {r: tuple(sorted(paths)) for r, paths in by_result.items()}


def solutions(problem: Problem) -> tuple[str, ...]:
    """All valid completions of ``problem``, sorted (lexicographic string order).

    Operand order counts ("5*7=35" and "7*5=35" are two paths): the model writes strings, and
    the reward accepts both.
    """
    return _all_paths(tuple(sorted(problem.numbers))).get(problem.target, ())


def expert_solution(problem: Problem) -> str:
    """The SFT target: always the lexicographically first valid completion (one narrow style)."""
    paths = solutions(problem)
    if not paths:
        raise ValueError(f"problem={problem} has no solution")
    return paths[0]


def solvable_problems(min_target: int, max_target: int, *, count: int = 3,
                      min_number: int = 1, max_number: int = 9) -> list[tuple[tuple[int, ...], int]]:
    """All problem keys (sorted numbers, target) with a solution and a target in range, sorted."""
    keys = []
    for numbers in itertools.combinations_with_replacement(range(min_number, max_number + 1), count):
        reachable = _all_paths(numbers)
        keys += [(numbers, t) for t in range(min_target, max_target + 1) if t in reachable]
    return keys


def generate_problems(n: int, *, seed: int, min_target: int = 1, max_target: int = 50,
                      prefix: str = "p") -> list[Problem]:
    """``n`` distinct solvable problems drawn without replacement, deterministic from ``seed``."""
    keys = solvable_problems(min_target, max_target)
    if not 0 <= n <= len(keys):
        raise ValueError(f"n={n} must be between 0 and {len(keys)} (solvable problems in range)")
    rng = random.Random(seed)
    rng.shuffle(keys)
    return [_present(key, rng, f"{prefix}-{i:05d}") for i, key in enumerate(keys[:n])]


def _present(key: tuple[tuple[int, ...], int], rng: random.Random, problem_id: str) -> Problem:
    numbers = list(key[0])
    rng.shuffle(numbers)
    return Problem(numbers=tuple(numbers), target=key[1], id=problem_id)


# ---------------------------------------------------------------------------------------------
# The world: configuration, splits, corpus
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorldConfig:
    """Sizes and mix of the miniature world (all ours unless noted)."""

    seed: int = 0  # ours: every split and the corpus are drawn from this seed
    id_max_target: int = 50  # issue 3 probe: ID targets <= 50 ...
    ood_max_target: int = 99  # ... OOD targets 51-99, where the base scores above zero
    n_id_test: int = 200  # issue 3: ~200 problems x 16 samples per evaluation
    n_ood_test: int = 200  # ours: of the 290 solvable OOD problems
    n_sft: int = 500  # ours: one expert solution each; the paper uses disjoint 10k SFT / 10k RL
    n_rl: int = 400  # ours: RL prompts; with n_sft this leaves 754 problems for pretraining
    corpus_size: int = 200_000  # ours: attempts in the corpus (~4.6 M tokens with BOS/EOS)
    corpus_correct: float = 0.6  # ours: share of correct attempts (0.5 gave ID pass@1 ~ 0.10-0.12)
    corpus_slip: float = 0.15  # ours: share of attempts with an arithmetic slip; the rest miss
    max_number: int = 9  # ours: given numbers are 1..max_number (13 widens the pool for converged RL)
    n_val: int = 0  # ours: ID validation problems for choosing settings, disjoint from every other split
    ood_pretrain: int = 0  # ours: OOD problems (besides the OOD test) in the pretraining corpus: the base
    #                        knows the family, SFT and RL never show it (data/mini_conf/PROTOCOL.md)


@dataclass(frozen=True)
class World:
    """The built world: problems per split and the pretraining corpus (texts without EOS)."""

    config: WorldConfig
    pretrain: tuple[Problem, ...]
    sft: tuple[Problem, ...]
    rl: tuple[Problem, ...]
    val: tuple[Problem, ...]
    id_test: tuple[Problem, ...]
    ood_test: tuple[Problem, ...]
    corpus: tuple[str, ...] = field(repr=False)

    def split(self, name: str) -> tuple[Problem, ...]:
        if name not in SPLIT_NAMES:
            raise ValueError(f"name={name!r} is not one of {SPLIT_NAMES}")
        return getattr(self, name)

    def sft_dataset(self, split: str = "sft"):
        """TRL prompt-completion rows, one expert solution per problem of ``split`` (EOS added by TRL)."""
        from datasets import Dataset

        return Dataset.from_list([{"prompt": p.prompt, "completion": expert_solution(p)}
                                  for p in self.split(split)])

    def rl_dataset(self, split: str = "rl"):
        """Prompt rows with the columns the reward needs (``numbers``, ``target``, ``problem_id``)."""
        from datasets import Dataset

        return Dataset.from_list([{"prompt": p.prompt, "numbers": list(p.numbers), "target": p.target,
                                   "problem_id": p.id} for p in self.split(split)])


def build_world(config: WorldConfig = WorldConfig()) -> World:
    """Draw the five disjoint splits and the corpus from ``config.seed`` (deterministic)."""
    rng = random.Random(config.seed)
    if not 1 <= config.max_number <= 99:
        raise ValueError(f"max_number={config.max_number} must be between 1 and 99")
    id_keys = solvable_problems(1, config.id_max_target, max_number=config.max_number)
    ood_keys = solvable_problems(config.id_max_target + 1, config.ood_max_target, max_number=config.max_number)
    rng.shuffle(id_keys)
    rng.shuffle(ood_keys)
    sizes = {"n_id_test": config.n_id_test, "n_sft": config.n_sft, "n_rl": config.n_rl, "n_val": config.n_val}
    if any(v < 0 for v in sizes.values()) or sum(sizes.values()) >= len(id_keys):
        raise ValueError(f"n_id_test + n_sft + n_rl + n_val = {sum(sizes.values())} must be non-negative and below "
                         f"{len(id_keys)} (solvable ID problems) to leave problems for pretraining")
    if not (0 <= config.n_ood_test and 0 <= config.ood_pretrain
            and config.n_ood_test + config.ood_pretrain <= len(ood_keys)):
        raise ValueError(f"n_ood_test={config.n_ood_test} and ood_pretrain={config.ood_pretrain} must be "
                         f"non-negative and sum to at most {len(ood_keys)} (solvable OOD problems)")
    if not (0 <= config.corpus_correct and 0 <= config.corpus_slip
            and config.corpus_correct + config.corpus_slip <= 1):
        raise ValueError(f"corpus_correct={config.corpus_correct} and corpus_slip={config.corpus_slip} "
                         "must be non-negative shares summing to at most 1")

    def take(keys, n, name):
        return tuple(_present(k, rng, f"{name}-{i:05d}") for i, k in enumerate(keys[:n])), keys[n:]

    id_test, rest = take(id_keys, config.n_id_test, "id")
    sft, rest = take(rest, config.n_sft, "sft")
    rl, rest = take(rest, config.n_rl, "rl")
    val, rest = take(rest, config.n_val, "val")  # after rl: n_val = 0 leaves the older worlds' draws unchanged
    pretrain, _ = take(rest, len(rest), "pre")
    ood_test, ood_rest = take(ood_keys, config.n_ood_test, "ood")
    if config.ood_pretrain:  # drawn last: ood_pretrain = 0 leaves the older worlds' draws unchanged
        pretrain += take(ood_rest, config.ood_pretrain, "preood")[0]
    corpus = _corpus(pretrain, config, random.Random(config.seed + 1))
    return World(config=config, pretrain=pretrain, sft=sft, rl=rl, val=val, id_test=id_test, ood_test=ood_test,
                 corpus=corpus)


def _corpus(problems: tuple[Problem, ...], config: WorldConfig, rng: random.Random) -> tuple[str, ...]:
    """Diverse attempts on the pretraining problems, each with the numbers shuffled anew.

    correct: a uniform draw from all solutions (every pair order, operation and operand order);
    slip:    a uniform draw from all legal paths, its first result written off by 1-2 and the
             later steps computed from the wrong value (wrong);
    miss:    a legal path that ends on another number than the target (wrong).
    """
    texts = []
    for _ in range(config.corpus_size):
        problem = rng.choice(problems)
        numbers = list(problem.numbers)
        rng.shuffle(numbers)
        key = tuple(sorted(numbers))
        u = rng.random()
        if u < config.corpus_correct:
            completion = rng.choice(_all_paths(key)[problem.target])
        elif u < config.corpus_correct + config.corpus_slip:
            completion = _slip(rng.choice(_every_path(key)), rng)
        else:
            completion = rng.choice(_misses(key, problem.target) or _all_paths(key)[problem.target])
        texts.append(format_prompt(numbers, problem.target) + completion)
    return tuple(texts)


@lru_cache(maxsize=None)
def _every_path(numbers: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(p for _, paths in sorted(_all_paths(numbers).items()) for p in paths)


@lru_cache(maxsize=None)
def _misses(numbers: tuple[int, ...], target: int) -> tuple[str, ...]:
    return tuple(p for r, paths in sorted(_all_paths(numbers).items()) if r != target for p in paths)


def _slip(path: str, rng: random.Random) -> str:
    """Write the first step's result off by 1-2 and compute the later steps from the wrong value."""
    first, *later = path.split(",")
    lhs, result = first.split("=")
    right = int(result)
    wrong = right + rng.choice((-2, -1, 1, 2))
    if wrong < 1:
        wrong = right + 1
    steps, value = [f"{lhs}={wrong}"], wrong
    for step in later:
        a, op, b = _split_equation(step.split("=")[0])
        if a == right:  # the carried operand takes the wrong value
            a = value
        elif b == right:
            b = value
        r = apply_op(a, op, b)
        if r is None:  # the slipped value broke the operation: carry on with a sum
            op, r = "+", a + b
        steps.append(f"{a}{op}{b}={r}")
        value, right = r, r
    return ",".join(steps)


def _split_equation(lhs: str) -> tuple[int, str, int]:
    for i, ch in enumerate(lhs[1:], start=1):
        if ch in OPERATIONS:
            return int(lhs[:i]), ch, int(lhs[i + 1:])
    raise ValueError(f"lhs={lhs!r} has no operation")


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer: 4 special tokens then one id per character of the world.

    BOS is prepended to every encoded text (``add_special_tokens=True``, the default, which is
    what TRL uses); EOS is never added by the tokenizer. Decoding fuses characters back.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(CHARACTERS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, clean_up_tokenization_spaces=False, padding_side="right",
                                   model_max_length=128)


def set_special_tokens(model: torch.nn.Module, tokenizer) -> None:
    """Copy BOS/EOS/PAD ids into the model config and generation config (generation stops at EOS)."""
    for cfg in (model.config, model.generation_config):
        cfg.bos_token_id = tokenizer.bos_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id


# ---------------------------------------------------------------------------------------------
# Pretraining the base model
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining of the miniature base (ours unless noted)."""

    max_steps: int = 1400  # ours: 1400 x 128 sequences ~ 4.2 M tokens, ~7-8 min on one busy core
    batch_size: int = 128  # ours: sequences per step
    learning_rate: float = 3e-3  # ours: a ~1 M-parameter model tolerates a large step
    warmup_steps: int = 100  # ours: linear warm-up, then cosine decay ...
    min_lr_ratio: float = 0.1  # ours: ... to 10 % of learning_rate
    weight_decay: float = 0.01  # official SFT script's AdamW weight decay
    adam_beta1: float = 0.9  # official SFT script
    adam_beta2: float = 0.95  # official SFT script
    max_grad_norm: float = 1.0  # official SFT script
    seed: int = 0  # ours: model initialisation and batch order


def encode_texts(tokenizer, texts) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS + text + EOS for each text, right-padded: ``ids`` (N, L_max) int64 and ``lengths`` (N,)."""
    rows = [ids + [tokenizer.eos_token_id] for ids in tokenizer(list(texts))["input_ids"]]
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), tokenizer.pad_token_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    return ids, lengths


def lr_at(step: int, config: PretrainConfig) -> float:
    """Linear warm-up then cosine decay to ``min_lr_ratio * learning_rate``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.learning_rate * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def pretrain_base(world: World, model_config: TinyModelConfig = TinyModelConfig(),
                  config: PretrainConfig = PretrainConfig(), *, out_dir: str | Path | None = None,
                  progress: bool = True):
    """Pretrain a tiny Qwen2 from scratch on ``world.corpus`` with a plain AdamW loop.

    Next-token loss on every non-pad token (prompt, attempt and EOS), mean over tokens.
    Batches are drawn by epoch-wise permutations of the corpus from ``config.seed``; sequences
    are right-padded and need no attention mask (causal attention never looks right). The same
    seeds reproduce bit-identical weights on the same machine and torch thread count.

    If ``out_dir`` is given, ``model.safetensors``, ``config.json``, the tokenizer and
    ``pretrain.json`` (configs and stats) are written to a temporary sibling folder that is then
    renamed onto ``out_dir`` (an existing ``out_dir`` is replaced).

    Returns ``(model, stats)`` with stats ``final_loss`` (mean of the last 50 steps), ``tokens``,
    ``tokens_per_s``, ``wall_s`` and ``n_params``.
    """
    tokenizer = build_tokenizer()
    if model_config.vocab_size < len(tokenizer):
        raise ValueError(f"model_config.vocab_size={model_config.vocab_size} < {len(tokenizer)} tokens")
    model = tiny_qwen2(model_config, seed=config.seed)
    set_special_tokens(model, tokenizer)
    ids, lengths = encode_texts(tokenizer, world.corpus)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(config.adam_beta1, config.adam_beta2))
    generator = torch.Generator().manual_seed(config.seed)
    order, cursor = torch.randperm(len(ids), generator=generator), 0
    losses, tokens, start = [], 0, time.perf_counter()
    model.train()
    bar = tqdm(range(config.max_steps), desc="pretrain", disable=not progress)
    for step in bar:
        if cursor + config.batch_size > len(order):
            order, cursor = torch.randperm(len(ids), generator=generator), 0
        index = order[cursor:cursor + config.batch_size]
        cursor += config.batch_size
        batch_len = int(lengths[index].max())
        input_ids = ids[index, :batch_len]
        labels = input_ids.masked_fill(input_ids == tokenizer.pad_token_id, -100)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        tokens += int(lengths[index].sum())
        if step % 50 == 0 or step == config.max_steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    wall = time.perf_counter() - start
    stats = {"final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])), "tokens": tokens,
             "tokens_per_s": tokens / wall if wall > 0 else float("nan"), "wall_s": wall,
             "n_params": sum(p.numel() for p in model.parameters()), "torch_threads": torch.get_num_threads()}
    if out_dir is not None:
        save_base(model, tokenizer, out_dir, {"world": asdict(world.config), "model": asdict(model_config),
                                              "pretrain": asdict(config), "stats": stats})
    return model, stats


def save_base(model, tokenizer, out_dir: str | Path, info: dict) -> Path:
    """Write model, tokenizer and ``pretrain.json`` to a temporary folder, then rename it into place."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "pretrain.json", info)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir
