"""Rewards of the real benchmarks: 1.0 for a verified answer, 0.0 otherwise (docs/paper.md §3).

``math_reward`` grades a math completion against a reference answer: the final answer of a
completion (its last \\boxed{} group, or an answer statement after it), compared item by item with
the reference by an exact normalised match, then by Math-Verify (its docstring gives the rules, and
which of the official grader's we keep); ``choice_reward`` grades a multiple-choice one. The
``*_func`` forms are what TRL's ``GRPOTrainer`` calls.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
from fractions import Fraction

from gift_lite.rewards import completion_text

MATH_TAIL_CHARS = 4096  # ours: only the end of a completion is searched for its final answer
MATH_MAX_ANSWER_CHARS = 512  # ours: a longer boxed answer is not a final answer but junk
MATH_MAX_ITEMS = 10  # ours: a final answer of more parts than this is a list of guesses, not an answer
MATH_TIMEOUT_S = 5.0  # ours: hard limit on the Math-Verify checks of one call; past it the answer is wrong
MATH_WORKER_START_S = 120.0  # ours: importing sympy in the worker, once per process
CHOICE_LETTERS = "ABCDEFGHIJ"  # MMLU-Pro has up to 10 options; GPQA and ARC-Challenge 4 or 5

_BOXED = ("\\boxed", "\\fbox")
_BOX_START = re.compile(r"\\(?:boxed|fbox)")


# -- finding the final answer -----------------------------------------------------------------
def _closing_braces(text: str) -> dict[int, int]:
    """For each ``{`` of ``text`` the index of its matching ``}`` (one pass; unmatched ones absent)."""
    match, stack = {}, []
    for i, char in enumerate(text):
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            match[stack.pop()] = i
    return match


def boxed_spans(text: str) -> list[tuple[int, int, str | None]]:
    """Every outermost ``\\boxed{...}`` / ``\\fbox{...}`` of ``text``: ``(start, end, content)``.

    Braces nest; the brace-less ``\\boxed 5`` is one token up to whitespace or ``$``. A box left
    open has ``content=None`` and runs to the end (a truncated final answer). Boxes inside a box
    are part of its content. Linear in ``len(text)``.
    """
    closing = _closing_braces(text)
    spans, end = [], 0
    for m in _BOX_START.finditer(text):
        if m.start() < end:  # inside the previous box
            continue
        at = m.end()
        if text[at:at + 1] == "{":
            close = closing.get(at)
            end = len(text) if close is None else close + 1
            spans.append((m.start(), end, None if close is None else text[at + 1:close]))
        elif text[at:at + 1] == " ":
            token = re.match(r" +([^\s$]+)", text[at:])
            if token:
                end = at + token.end()
                spans.append((m.start(), end, token[1]))
    return spans


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, else ``None``.

    ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``, ``\\boxed 5`` gives ``5``. If the last box is
    unterminated the answer is ``None`` (a truncated final answer is no answer).
    """
    if not isinstance(text, str):
        return None
    spans = boxed_spans(text)
    return spans[-1][2] if spans else None


# Between two boxes of one answer ("\boxed{2} and \boxed{3}", "x = \boxed{1}, y = \boxed{2}"): only
# punctuation, "and"/"or", spacing commands and a short "name =" (after $, \( \), \[ \] are removed).
_BETWEEN_BOXES = re.compile(
    r"(?:[\s,;.:&]|\band\b|\bor\b|\\quad|\\qquad|\\[,;!]|\\text\{\s*(?:and|or|,)?\s*\})*"
    r"(?:[a-zA-Z](?:_\{?\w{1,3}\}?)?\s*(?:=|\\in)\s*)?")
_MATH_DELIMITERS = re.compile(r"\$|\\\(|\\\)|\\\[|\\\]")
# "The final answer is $6$." / "Answer: 6" after the last box: a math environment, or a bare number
# that ends the sentence (so "the answer: 3 + 9 = 12" is no statement of 3); GSM8K's "#### 72" line.
_STATEMENT = re.compile(
    r"(?:(?i:final\s+answer|\banswer)\s*(?:is|:|=|：)?\s*:?\s*(?:\*\*\s*)?|^#### ?)"
    r"(?:\$\$(?P<dd>[^$]{1,512}?)\$\$|\$(?P<d>[^$\n]{1,512}?)\$|\\\((?P<p>.{1,512}?)\\\)|\\\[(?P<b>.{1,512}?)\\\]"
    r"|(?P<n>-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?\s*\\?%?)(?=\s*(?:\*\*)?\s*(?:$|[.!\n])))",
    re.DOTALL | re.MULTILINE)


def _box_groups(text: str) -> list[tuple[int, list[str | None]]]:
    """Boxes joined into answers: ``(start, contents)`` per group of adjacent boxes (``_BETWEEN_BOXES``)."""
    groups: list[tuple[int, list[str | None]]] = []
    last_end = None
    for start, end, content in boxed_spans(text):
        between = None if last_end is None else _MATH_DELIMITERS.sub("", text[last_end:start])
        if groups and between is not None and len(between) <= 40 and _BETWEEN_BOXES.fullmatch(between):
            groups[-1][1].append(content)
        else:
            groups.append((start, [content]))
        last_end = end
    return groups


def final_answer(text: str) -> list[str] | None:
    """The answer a completion commits to, as the contents of its boxes (one per box), or ``None``.

    The last event wins: the last group of adjacent boxes (``\\boxed{(2, 2)} and \\boxed{(6, 2)}``
    is one answer of two boxes; ``\\boxed{3}, finally \\boxed{7}`` answers 7), unless an answer
    statement follows it ("The final answer is $6$", "Answer: 6"), which also stands on its own
    when there is no box. An unterminated last box, an empty one, or one longer than
    ``MATH_MAX_ANSWER_CHARS`` is no answer.
    """
    groups = _box_groups(text)
    after = groups[-1][0] if groups else 0
    statement = None
    for statement in _STATEMENT.finditer(text, after):
        pass
    if statement is not None and (not groups or statement.start() > after):
        if groups and _BOX_START.search(statement[0]):
            statement = None  # "answer is $\boxed{6}$": the box itself
        else:
            content = next(v for v in statement.group("dd", "d", "p", "b", "n") if v is not None)
            return [content]
    if not groups:
        return None
    contents = groups[-1][1]
    if any(c is None or not c.strip() or len(c) > MATH_MAX_ANSWER_CHARS for c in contents):
        return None
    return contents


# -- normalising one answer -----------------------------------------------------------------------
_SPACING = re.compile(r"(?<!\\)\\[!,;: ]|\\q?quad|~")  # not the "\\ " of a matrix row break
_TRAILING_UNIT = re.compile(r"^(.*?\S)\s*\\(?:text|textrm|mbox|mathrm)\{[^{}]*\}\s*$")
_TEXT = re.compile(r"\\(?:text|textrm|textbf|mbox|mathrm|textnormal)\{([^{}]*)\}")
_WORD_UNIT = re.compile(r"^(-?[\d.,]+)\s+(?!pi\b)[a-zA-Z]{2,}\.?(?:\s+[a-zA-Z]{2,}\.?)*$")  # "5 apples", not "2 pi"
_ASSIGNMENT = re.compile(r"^[a-zA-Z](?:_\{?\w{1,3}\}?)?\s*(?:=|\\in)\s*(?!.*=)")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")  # after _THOUSANDS failed: "1000,99", "3,5"
_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_SLASH = re.compile(r"^(-?\d+)/(\d+)$")
_LETTER = re.compile(r"^\(?([a-j])\)?$")
_WORD = re.compile(r"(?<![\\a-z])(?!(?:sin|cos|tan|cot|sec|csc|log|exp|sqrt|frac|infty|pi)[^a-z])[a-z]{3,}")
_COMMAND_ARGUMENT = re.compile(r"\\(?:begin|end|mathbb|mathbf|mathcal|operatorname)\{[^{}]*\}")  # names, not words
_MAX_NUMBER_CHARS = 64


def _normalise(answer: str) -> str:
    """Cosmetic differences removed: spacing, ``$``, ``\\left``/``\\right``, ``\\dfrac``, degree and
    percent signs, trailing units (``\\text{ cm}``, `` apples``), ``x =`` / ``x \\in``, thousands
    separators, an inner ``\\boxed``; lower case."""
    s = answer.strip().replace("\\$", "").strip("$").strip()
    s = s.replace("−", "-").replace("\\left", "").replace("\\right", "")
    s = _SPACING.sub(" ", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    while (whole := _whole_box(s)) is not None:
        s = whole.strip()
    for mark in ("^\\circ", "^{\\circ}", "°", "\\%", "%"):
        s = s.replace(mark, "")
    while (m := _TRAILING_UNIT.match(s)) and not _TEXT.fullmatch(s):
        s = m[1]
    s = _TEXT.sub(r"\1", s).strip()
    if (m := _WORD_UNIT.match(s)):
        s = m[1]
    s = _ASSIGNMENT.sub("", s).rstrip(".").strip()
    s = "".join(s.split())
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s.lower()


def _whole_box(s: str) -> str | None:
    """The content when ``s`` is one box and nothing else (``\\boxed{\\boxed{5}}``), else None."""
    spans = boxed_spans(s) if s.startswith(_BOXED) else []
    return spans[0][2] if len(spans) == 1 and spans[0][1] == len(s) else None


def _as_number(s: str):
    """``Fraction`` for integers, decimals, ``a/b`` and ``\\frac{a}{b}``; ``None`` otherwise."""
    if len(s) > _MAX_NUMBER_CHARS:
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
    """The exact check: equal after ``_normalise``, as exact rationals, or as the same choice letter."""
    g, p = _normalise(gold), _normalise(pred)
    if not g or not p:
        return False
    if g == p:
        return True
    gn, pn = _as_number(g), _as_number(p)
    if gn is not None:
        return gn == pn
    gl, pl = _LETTER.match(g), _LETTER.match(p)
    return bool(gl and pl and gl[1] == pl[1])


def _is_words(s: str) -> bool:
    """A text answer ("Evelyn", "\\text{Monday}"): Math-Verify would read it as a product of
    symbols, so that an anagram equals it; such answers are compared as strings only."""
    return bool(_WORD.search(_COMMAND_ARGUMENT.sub("", _normalise(s))))


# -- answers of several parts ---------------------------------------------------------------------
def split_items(answer: str) -> list[str]:
    """``answer`` cut at its top-level commas (and "and"): ``"(2, 2), (6, 2)"`` → two parts.

    Commas inside brackets of any kind (``(1, 4]``, ``\\{1, 2\\}``, ``\\frac{a}{b}``) do not cut,
    and neither do thousands separators (``1,000``); a decimal comma is read by ``pred_items``.
    """
    s = answer.strip()
    if _THOUSANDS.match("".join(s.split())):
        return [s]
    s = re.sub(r"\\text\{\s*(?:and|,)\s*\}|\s+and\s+", ",", s)
    parts, depth, start = [], 0, 0
    for i, char in enumerate(s):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return [p.strip() for p in parts if p.strip()]


def _unique(items: list[str]) -> list[str]:
    seen, out = set(), []
    for item in items:
        key = _normalise(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def gold_items(answer: str) -> list[str]:
    """The reference's parts: its boxes when written boxed (``\\boxed{1}\\boxed{2}``), else ``split_items``."""
    spans = boxed_spans(answer)
    if spans and all(c is not None for _, _, c in spans):
        items = [i for _, _, c in spans for i in split_items(c)]
    else:
        items = split_items(answer)
    return _unique(items)


def pred_items(contents: list[str], n_gold: int) -> list[str]:
    """The final answer's parts, read against a reference of ``n_gold`` parts.

    One box against a one-part reference stays whole, with a decimal comma read as a point
    (``1000,99`` → ``1000.99``; ``1,000`` stays one thousand). Otherwise every box is cut by
    ``split_items``, and repeated parts count once.
    """
    if len(contents) == 1 and n_gold == 1:
        s = contents[0]
        compact = "".join(_normalise(s).split())
        if _DECIMAL_COMMA.match(compact) and not _THOUSANDS.match(compact):
            return [compact.replace(",", ".")]
        return [s]
    return _unique([i for c in contents for i in split_items(c)])


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
        seconds = request["seconds"]  # the caller's budget: 1 s failed 2*sqrt(2) = sqrt(8) on a loaded CPU
        gold = parse("\\boxed{" + request["gold"] + "}", parsing_timeout=seconds)
        pred = parse("\\boxed{" + request["pred"] + "}", parsing_timeout=seconds)
        ok = bool(gold and pred and verify(gold, pred, timeout_seconds=seconds))
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
                self._proc.stdin.write(json.dumps({"id": rid, "gold": gold, "pred": pred,
                                                 "seconds": max(1, math.ceil(timeout_s))}) + "\n")
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
    return timeout_s > 0 and _WORKER.check(gold, pred, timeout_s)


class _Judge:
    """Equality of two answer parts, memoised, with Math-Verify calls sharing one deadline."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.seen: dict[tuple[str, str], bool] = {}

    def verify(self, gold: str, pred: str) -> bool:
        left = self.deadline - time.monotonic()
        return left > 0 and math_verify_equal(gold[:MATH_MAX_ANSWER_CHARS], pred, timeout_s=left)

    def equal(self, gold: str, pred: str) -> bool:
        key = (gold, pred)
        if key not in self.seen:
            self.seen[key] = answers_match(gold, pred) or (
                not (_is_words(gold) or _is_words(pred)) and self.verify(gold, pred))
        return self.seen[key]

    def same_parts(self, golds: list[str], preds: list[str]) -> bool:
        """A one-to-one pairing of equal parts exists (the order does not matter: Kuhn's matching)."""
        if len(golds) != len(preds):
            return False
        owner: dict[int, int] = {}  # pred index -> gold index

        def place(g: int, tried: set) -> bool:
            for p in range(len(preds)):
                if p not in tried and self.equal(golds[g], preds[p]):
                    tried.add(p)
                    if p not in owner or place(owner[p], tried):
                        owner[p] = g
                        return True
            return False

        return all(place(g, set()) for g in range(len(golds)))


def math_reward(completion: str, answer: str, *, timeout_s: float = MATH_TIMEOUT_S) -> float:
    """1.0 if the final answer of ``completion`` equals the reference ``answer``, else 0.0. Never raises.

    The paper's binary reward (docs/paper.md §3), graded as a careful human would:

    - *Which answer.* ``final_answer``: the last group of adjacent ``\\boxed{}`` (several boxes
      joined by commas or "and" are one answer of several parts), unless an answer statement
      ("The final answer is $6$", "Answer: 6") follows it; only the last ``MATH_TAIL_CHARS``
      characters are searched.
    - *Parts.* A reference such as ``(2, 2), (6, 2)`` or ``\\boxed{1}\\boxed{2}`` has several parts
      (``gold_items``); the answer must give the same parts, in any order, each equal to one
      (``\\boxed{1,2}`` or ``\\boxed{1}, \\boxed{2}``), and nothing else: a second guess fails.
    - *Equal.* ``answers_match`` (normalised strings: spacing, ``\\dfrac``, ``\\left``, degrees,
      units, ``x =``; exact rationals: ``0.5`` = ``\\frac{1}{2}`` = ``1/2``; choice letters:
      ``\\text{(C)}`` = ``C``), else Math-Verify (``verify(gold, pred)`` in a worker process killed
      at the deadline): radicals, intervals, sets, algebra. Text answers (``\\text{Evelyn}``) are
      compared as strings only, since Math-Verify reads them as products of letters.
    - *Numbers.* ``1,000`` is one thousand (GSM8K); a comma before other than three digits is a
      decimal comma against a one-number reference (``1000,99`` = 1000.99); ``033`` = 33 (AIME).

    Against the official grader (``utils/reward_utils/my_reward_func.py``: accept when
    OpenMathInstruct's ``math_equal`` on the last box *or* Math-Verify on the whole completion
    accepts), we keep Math-Verify's comparison (its 6-decimal rounding: ``1.41421356`` = √2; a
    percent sign is a factor 1/100: ``50\\%`` = 0.5 = 50) and the last box as the answer. We drop
    ``math_equal``'s ×100 rule (it accepts ``25`` for ``0.25`` with no percent sign) and its 1e-4
    relative tolerance (it accepts ``3.1416`` for π and ``0.3333`` for 1/3): both accept wrong
    answers. We drop the "either grader" union, which lets an answer through when one of two
    readings of the completion matches (Math-Verify reads ``\\boxed{3}, finally \\boxed{7}`` as
    the set {3, 7}); ours reads one final answer. Math-Verify's checks of one call share
    ``timeout_s`` seconds; past it the answer counts as wrong.
    """
    try:
        if not isinstance(completion, str) or not isinstance(answer, str) or not answer.strip():
            return 0.0
        contents = final_answer(completion[-MATH_TAIL_CHARS:])
        golds = gold_items(answer.strip())
        if contents is None or len(contents) > MATH_MAX_ITEMS or not golds or len(golds) > MATH_MAX_ITEMS:
            return 0.0
        preds = pred_items(contents, len(golds))
        if len(preds) > MATH_MAX_ITEMS:
            return 0.0
        judge = _Judge(time.monotonic() + timeout_s)
        if len(golds) == 1 and len(preds) == 1:
            return 1.0 if judge.equal(golds[0], preds[0]) else 0.0
        if judge.same_parts(golds, preds):
            return 1.0
        # the parts did not pair up: one set against the other, e.g. "\{1, 2\}" against "1, 2"
        whole_gold, whole_pred = ", ".join(golds), ", ".join(preds)
        if any(_is_words(x) for x in golds + preds):
            return 0.0
        return 1.0 if judge.verify(whole_gold, whole_pred) else 0.0
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
    return [math_reward(completion_text(c), a) for c, a in zip(completions, answer, strict=True)]


def choice_reward_func(completions, answer, **kwargs) -> list[float]:
    """TRL reward function for multiple-choice prompts: ``answer`` holds the gold letters."""
    return [choice_reward(completion_text(c), a) for c, a in zip(completions, answer, strict=True)]
