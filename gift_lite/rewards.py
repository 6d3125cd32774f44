"""Task rewards: 1.0 for a verified answer, 0.0 otherwise (the paper's binary reward, FACTS.md §3).

``countdown_reward`` checks a completion of the miniature world (``gift_lite.world``) by replaying
it; ``countdown_reward_func`` is the same check in the form TRL's ``GRPOTrainer`` calls. A math
grader for the real benchmarks will sit beside them.
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


def _text(completion) -> str:
    """A completion as TRL passes it: a string, or a conversation whose last message is the answer."""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return completion[-1].get("content", "")
    return completion


def countdown_reward_func(completions, numbers, target, **kwargs) -> list[float]:
    """TRL reward function: ``GRPOTrainer`` passes the dataset's ``numbers`` and ``target`` columns.

    Shapes: ``completions``, ``numbers`` and ``target`` are lists of equal length (one entry per
    generated completion); returns one float per completion.
    """
    return [countdown_reward(_text(c), n, t) for c, n, t in zip(completions, numbers, target, strict=True)]


# =============================================================================================
# Math answers for the real benchmarks (issue 4): the last \boxed{...} answer, checked by a
# normalised string/number match and then by Math-Verify. Imports sit here so the section
# stays an append to the countdown code above.
# =============================================================================================

import atexit  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from fractions import Fraction  # noqa: E402

MATH_TAIL_CHARS = 4096  # ours: only the end of a completion is searched for its final answer
MATH_MAX_ANSWER_CHARS = 512  # ours: a longer boxed answer is not a final answer but junk
MATH_TIMEOUT_S = 5.0  # ours: hard limit per Math-Verify check; past it the answer counts as wrong
MATH_WORKER_START_S = 120.0  # ours: importing sympy in the worker, once per process
CHOICE_LETTERS = "ABCDEFGHIJ"  # MMLU-Pro has up to 10 options; GPQA and ARC-Challenge 4 or 5

_BOXED = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, else ``None``.

    Braces nest (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); the brace-less form
    ``\\boxed 5`` gives ``5``. Only the last box counts: if it is unterminated the answer is
    ``None`` (a truncated final answer is no answer), even when an earlier box is complete.
    """
    if not isinstance(text, str):
        return None
    start = max(text.rfind(name) for name in _BOXED)
    if start < 0:
        return None
    rest = text[start:]
    rest = rest[len(next(name for name in _BOXED if rest.startswith(name))):]
    if rest[:1] == "{":
        depth = 0
        for i, char in enumerate(rest):
            depth += (char == "{") - (char == "}")
            if depth == 0:
                return rest[1:i]
        return None
    if rest[:1] == " ":  # "\boxed 5": one token up to whitespace or "$"
        token = rest.strip().split(maxsplit=1)[0] if rest.strip() else ""
        return token.split("$")[0] or None
    return None


# -- the normalised string / number match -------------------------------------------------------
_SPACING = re.compile(r"\\[!,;: ]|\\q?quad|~")
_TRAILING_UNIT = re.compile(r"^(.*?\S)\s*\\(?:text|textrm|mbox|mathrm)\{[^{}]*\}\s*$")
_TEXT = re.compile(r"\\(?:text|textrm|textbf|mbox|mathrm)\{([^{}]*)\}")
_ASSIGNMENT = re.compile(r"^[a-zA-Z]\s*=\s*(?!.*=)")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")
_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_SLASH = re.compile(r"^(-?\d+)/(\d+)$")


def _normalise(answer: str) -> str:
    """Cosmetic differences removed: spacing, ``$``, ``\\left``/``\\right``, ``\\dfrac``, degree and
    percent signs, trailing units written as ``\\text{...}``, ``x =``, thousands separators."""
    s = answer.strip().strip("$").strip()
    s = _SPACING.sub(" ", s).replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    for mark in ("^\\circ", "^{\\circ}", "°", "\\%", "%"):
        s = s.replace(mark, "")
    while (m := _TRAILING_UNIT.match(s)) and not _TEXT.fullmatch(s):
        s = m[1]
    s = _TEXT.sub(r"\1", s)
    s = _ASSIGNMENT.sub("", s).rstrip(".").strip()
    s = "".join(s.split())
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s.lower()


def _as_number(s: str):
    """``Fraction`` for integers, decimals, ``a/b`` and ``\\frac{a}{b}``; ``None`` otherwise."""
    if len(s) > 64:
        return None
    if (m := _FRAC.match(s)) or (m := _SLASH.match(s)):
        groups = m.groups()
        sign = -1 if len(groups) == 3 and groups[0] == "-" else 1
        num, den = int(groups[-2]), int(groups[-1])
        return sign * Fraction(num, den) if den else None
    try:
        return Fraction(s) if re.fullmatch(r"-?\d+(\.\d+)?", s) else None
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(gold: str, pred: str) -> bool:
    """The fast check: equal after ``_normalise``, or equal as exact rational numbers."""
    g, p = _normalise(gold), _normalise(pred)
    if not g or not p:
        return False
    if g == p:
        return True
    gn, pn = _as_number(g), _as_number(p)
    return gn is not None and gn == pn


# -- Math-Verify in a worker process ----------------------------------------------------------
# Math-Verify's own timeouts use SIGALRM: they only work in the main thread, and they cannot
# interrupt sympy inside one long C-level operation (``9^{9^{9^9}}`` hangs for minutes). So the
# check runs in a child process that is killed when it overruns; the caller never waits longer
# than ``timeout_s`` (plus the one-time start of the worker).
_WORKER_SOURCE = r"""
import json, logging, sys
logging.disable(logging.CRITICAL)
from math_verify import parse, verify
sys.stdout.write('{"ready": true}\n'); sys.stdout.flush()
for line in sys.stdin:
    ok, rid = False, None
    try:
        request = json.loads(line)
        rid = request["id"]
        gold = parse("\\boxed{" + request["gold"] + "}", parsing_timeout=1)
        pred = parse("\\boxed{" + request["pred"] + "}", parsing_timeout=1)
        ok = bool(gold and pred and verify(gold, pred, timeout_seconds=1))
    except BaseException:
        ok = False
    sys.stdout.write(json.dumps({"id": rid, "ok": ok}) + "\n"); sys.stdout.flush()
"""


class _MathVerifyWorker:
    """One ``python -c`` child per process, answering JSON lines; restarted after a timeout."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc = None
        self._lines: queue.Queue | None = None
        self._owner = None
        self._next_id = 0
        self.failed_to_start = False
        self.restarts = 0

    def _start(self) -> bool:
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", _WORKER_SOURCE], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                          bufsize=1, env=env)
        except OSError:
            self.failed_to_start = True
            return False
        self._owner = os.getpid()
        self._lines = queue.Queue()
        threading.Thread(target=self._pump, args=(self._proc.stdout, self._lines), daemon=True).start()
        try:
            ready = json.loads(self._lines.get(timeout=MATH_WORKER_START_S))
        except (queue.Empty, ValueError, TypeError):
            ready = None
        if not (isinstance(ready, dict) and ready.get("ready")):
            self.stop()
            self.failed_to_start = True
            return False
        return True

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)  # EOF: the worker exited

    def stop(self) -> None:
        if self._proc is not None and self._owner == os.getpid():
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def check(self, gold: str, pred: str, timeout_s: float) -> bool:
        with self._lock:
            if self._proc is None or self._owner != os.getpid() or self._proc.poll() is not None:
                if self.failed_to_start or not self._start():
                    return False
            self._next_id += 1
            rid = self._next_id
            try:
                self._proc.stdin.write(json.dumps({"id": rid, "gold": gold, "pred": pred}) + "\n")
                self._proc.stdin.flush()
            except (OSError, ValueError):
                self.stop()
                return False
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    line = self._lines.get(timeout=left)
                except queue.Empty:
                    break
                if line is None:
                    break
                reply = json.loads(line)
                if reply.get("id") == rid:
                    return reply.get("ok") is True
            self.stop()  # overran (or died): kill it; the next call starts a fresh one
            self.restarts += 1
            return False


_WORKER = _MathVerifyWorker()
atexit.register(_WORKER.stop)


def math_verify_equal(gold: str, pred: str, *, timeout_s: float = MATH_TIMEOUT_S) -> bool:
    """Math-Verify's ``verify(parse(gold), parse(pred))`` (gold first), in the worker, time-limited."""
    return _WORKER.check(gold, pred, timeout_s)


def math_reward(completion: str, answer: str, *, timeout_s: float = MATH_TIMEOUT_S) -> float:
    """1.0 if the last ``\\boxed{}`` answer of ``completion`` equals ``answer``, else 0.0.

    Equal means: the normalised string/number match of ``answers_match`` agrees, or Math-Verify
    (Hugging Face's grader, ``verify(gold, pred)`` with the gold answer first) says so; this is
    the paper's binary reward (FACTS.md §3). Only the last ``MATH_TAIL_CHARS`` characters are
    searched, a boxed answer longer than ``MATH_MAX_ANSWER_CHARS`` is wrong, and Math-Verify runs
    in a worker process killed after ``timeout_s`` seconds. Never raises.
    """
    try:
        if not isinstance(completion, str) or not isinstance(answer, str):
            return 0.0
        pred = last_boxed(completion[-MATH_TAIL_CHARS:])
        gold = answer.strip()
        if pred is None or not pred.strip() or not gold or len(pred) > MATH_MAX_ANSWER_CHARS:
            return 0.0
        if answers_match(gold, pred):
            return 1.0
        gold_inner = last_boxed(gold) or gold  # a gold written as "\boxed{...}" is accepted too
        return 1.0 if math_verify_equal(gold_inner[:MATH_MAX_ANSWER_CHARS], pred, timeout_s=timeout_s) else 0.0
    except Exception:
        return 0.0


# -- multiple choice (GPQA, MMLU-Pro, ARC-Challenge) ----------------------------------------------
_BOXED_LETTER = re.compile(r"^\(?([A-J])\)?(?:$|[.:)\s])")
_ANSWER_IS = re.compile(r"answer(?:\s+is)?\s*[:：]?\s*\**\s*\(?([A-J])\)?(?![A-Za-z0-9])", re.IGNORECASE)


def _boxed_letter(text: str) -> tuple[int, str | None]:
    start = max(text.rfind(name) for name in _BOXED)
    content = last_boxed(text)
    if content is None:
        return -1, None
    content = _TEXT.sub(r"\1", content).strip().strip("$").strip()
    m = _BOXED_LETTER.match(content)
    return (start, m[1]) if m else (-1, None)


def choice_letter(completion: str) -> str | None:
    """The chosen letter A-J: the last boxed letter or final "answer is X", whichever comes last."""
    if not isinstance(completion, str):
        return None
    tail = completion[-MATH_TAIL_CHARS:]
    boxed_at, boxed = _boxed_letter(tail)
    said = None
    for said in _ANSWER_IS.finditer(tail):
        pass
    said_at = said.start() if said and said[1].isupper() else -1
    if boxed_at < 0 and said_at < 0:
        return None
    return boxed if boxed_at > said_at else said[1]


def choice_reward(completion: str, answer_letter: str) -> float:
    """1.0 if the completion's final choice (``choice_letter``) is ``answer_letter``, else 0.0. Never raises."""
    try:
        gold = answer_letter.strip().strip("()").upper() if isinstance(answer_letter, str) else ""
        if len(gold) != 1 or gold not in CHOICE_LETTERS:
            return 0.0
        return 1.0 if choice_letter(completion) == gold else 0.0
    except Exception:
        return 0.0


def math_reward_func(completions, answer, **kwargs) -> list[float]:
    """TRL reward function: ``GRPOTrainer`` passes the dataset's ``answer`` column, one per completion."""
    return [math_reward(_text(c), a) for c, a in zip(completions, answer, strict=True)]


def choice_reward_func(completions, answer, **kwargs) -> list[float]:
    """TRL reward function for multiple-choice prompts: ``answer`` holds the gold letters."""
    return [choice_reward(_text(c), a) for c, a in zip(completions, answer, strict=True)]
