"""Task rewards: 1.0 for a verified answer, 0.0 otherwise (the paper's binary reward, docs/paper.md §3).

``countdown_reward`` checks a completion of the miniature world (``gift_lite.world``) by replaying
it; ``countdown_reward_func`` is the same check in the form TRL's ``GRPOTrainer`` calls. The real
benchmarks' graders (math, multiple choice) are ``gift_lite.math_rewards``.
"""

from __future__ import annotations

import re
from collections import Counter

from gift_lite.world import apply_op

# One step "a<op>b=c"; numbers are 1-4 digits without leading zeros (the world's format).
_NUMBER = r"(0|[1-9][0-9]{0,3})"
_STEP = re.compile(_NUMBER + r"([-+*/])" + _NUMBER + "=" + _NUMBER)
MAX_COMPLETION_CHARS = 256  # ours: a valid completion has < 40 characters; anything longer is junk


def countdown_reward(completion: str, numbers, target) -> float:
    """1.0 if ``completion`` reaches ``target`` using each of ``numbers`` exactly once, else 0.0.

    The completion is "step,step,...", each step "a<op>b=c" with op in + - * /. Replaying it
    from the pool of given numbers, each step must take two numbers still in the pool, be
    arithmetically true with a positive-integer result (``world.apply_op``), and put its result in
    the pool; at the end the pool must be exactly ``[target]``. Surrounding whitespace is
    ignored; anything else is 0.0. Never raises, and the work is bounded by
    ``MAX_COMPLETION_CHARS``.
    """
    try:
        return 1.0 if _replays_to_target(completion, numbers, target) else 0.0
    except Exception:  # junk of any kind (wrong types, huge ints in the inputs) is simply wrong
        return 0.0


def _replays_to_target(completion, numbers, target) -> bool:
    if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
        return False
    numbers = [_as_int(n) for n in numbers]
    target = _as_int(target)
    steps = completion.strip().split(",")
    if len(steps) != len(numbers) - 1:
        return False
    pool = Counter(numbers)
    for step in steps:
        match = _STEP.fullmatch(step)
        if match is None:
            return False
        a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
        pool[a] -= 1
        pool[b] -= 1
        if pool[a] < 0 or pool[b] < 0 or apply_op(a, op, b) != c:
            return False
        pool[c] += 1
    return +pool == Counter([target])


def _as_int(x) -> int:
    if isinstance(x, bool) or int(x) != x:
        raise ValueError(f"{x!r} is not an integer")
    return int(x)


def completion_text(completion) -> str:
    """A completion as TRL passes it: a string, or a conversation whose last message is the answer."""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return completion[-1].get("content", "")
    return completion


def countdown_reward_func(completions, numbers, target, **kwargs) -> list[float]:
    """TRL reward function: ``GRPOTrainer`` passes the dataset's ``numbers`` and ``target`` columns.

    Shapes: ``completions``, ``numbers`` and ``target`` are lists of equal length (one entry per
    generated completion); returns one float per completion.
    """
    return [countdown_reward(completion_text(c), n, t) for c, n, t in zip(completions, numbers, target, strict=True)]
