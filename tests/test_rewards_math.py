"""The math and multiple-choice rewards: tables of graded answers, and never raising or hanging."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gift_lite.math_rewards import (answers_match, choice_letter, choice_reward, choice_reward_func, final_answer,
                               gold_items, last_boxed, math_reward, math_reward_func, pred_items, split_items)
from math_grading_cases import CASES, FORMS

MB = 1_000_000

# (completion, gold answer): the reward must be 1.0
EQUAL = [
    ("so the answer is \\boxed{12}", "12"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),  # fraction vs decimal
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}"),  # dfrac
    ("\\boxed{\\frac12}", "\\frac{1}{2}"),  # brace-less fraction (Math-Verify)
    ("\\boxed{1/2}", "\\frac{1}{2}"),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"),  # radicals (Math-Verify)
    ("\\boxed{\\sqrt2}", "\\sqrt{2}"),
    ("\\boxed{(1, 4]}", "(1,4]"),  # intervals: spacing
    ("\\boxed{(-\\infty, 3)}", "(-\\infty,3)"),
    ("\\boxed{10\\text{ cm}}", "10"),  # units written as \text{...}
    ("\\boxed{90^\\circ}", "90"),  # degrees
    ("\\boxed{50\\%}", "50"),  # percent
    ("\\boxed{x = 3}", "3"),  # an assignment
    ("\\boxed{1,000}", "1000"),  # thousands separator
    ("\\boxed{(x+1)^2}", "x^2+2x+1"),  # symbolic (Math-Verify)
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),  # nested braces
    ("first \\boxed{3}, finally \\boxed{7}", "7"),  # multiple boxes: the last counts
    ("\\boxed{\\boxed{5}}", "5"),  # a box in a box
    ("\\boxed 7.", "7"),  # brace-less \boxed
    ("\\fbox{42}", "42"),
    ("\\boxed{12}", "\\boxed{12}"),  # gold written boxed
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}"),  # text answers
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left(3,\\frac{\\pi}{2}\\right)"),
    ("the answer is 12", "12"),  # no box, but a stated final answer
]

# (completion, gold answer): the reward must be 0.0
UNEQUAL = [
    ("\\boxed{13}", "12"),
    ("\\boxed{\\frac{1}{3}}", "0.5"),
    ("\\boxed{\\sqrt{3}}", "\\sqrt{2}"),
    ("\\boxed{[1, 4]}", "(1,4]"),  # open vs closed interval
    ("\\boxed{10\\text{ cm}}", "100"),
    ("\\boxed{2x}", "2"),  # a variable is not a unit
    ("\\boxed{7}, finally \\boxed{3}", "7"),  # the last box is wrong
    ("", "12"),
    ("\\boxed{}", "12"),  # empty box
    ("\\boxed{12", "12"),  # unterminated box
    ("\\boxed{7} then \\boxed{12", "12"),  # the last box is unterminated
    ("\\boxed{\\frac{1}{", "1"),  # malformed LaTeX
    ("\\boxed{}{}}}{{", "1"),
    ("\\boxed{\\sqrt{}", "0"),
    ("\\boxed{12}", ""),  # no gold
    ("\\boxed{" + "1" * 600 + "}", "1" * 600),  # a boxed answer too long to be a final answer
]


@pytest.mark.parametrize("completion,answer", EQUAL)
def test_equal_answers_score_one(completion, answer):
    assert math_reward(completion, answer) == 1.0


@pytest.mark.parametrize("completion,answer", UNEQUAL)
def test_unequal_answers_score_zero(completion, answer):
    assert math_reward(completion, answer) == 0.0


def test_last_boxed():
    assert last_boxed("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{1} \\boxed{2}") == "2"
    assert last_boxed("\\boxed 5 apples") == "5"
    assert last_boxed("\\boxed{1} \\boxed{2") is None
    assert last_boxed("no box") is None
    assert last_boxed(None) is None


@pytest.mark.parametrize("completion,answer,verdict,form", CASES,
                         ids=[f"{form}-{i}" for i, (_, _, _, form) in enumerate(CASES)])
def test_graded_answers_of_benchmark_forms(completion, answer, verdict, form):
    start = time.monotonic()
    assert math_reward(completion, answer) == float(verdict)
    assert time.monotonic() - start < 12.0


def test_the_table_covers_every_form_both_ways():
    assert len(CASES) >= 150
    for form, rows in FORMS.items():
        verdicts = {v for _, _, v in rows}
        assert verdicts == {0, 1} or form == "malformed" or form == "hedges", form
    assert sum(v for _, _, v, _ in CASES) >= 100 and sum(1 - v for _, _, v, _ in CASES) >= 70


def test_final_answer_takes_the_last_group_of_boxes_or_a_later_statement():
    assert final_answer("\\boxed{(2, 2)} and \\boxed{(6, 2)}.") == ["(2, 2)", "(6, 2)"]
    assert final_answer("x = \\boxed{3}, y = \\boxed{4}") == ["3", "4"]
    assert final_answer("first \\boxed{3}, finally \\boxed{7}") == ["7"]
    assert final_answer("\\boxed{5}. Wait: the final answer is $6$.") == ["6"]
    assert final_answer("The final answer is $\\boxed{6}$.") == ["6"]
    assert final_answer("the answer: 3 + 9 = 12") is None  # a bare number must end the sentence
    assert final_answer("\\boxed{1} \\boxed{2") is None and final_answer("\\boxed{}") is None


def test_parts_of_references_and_answers():
    assert split_items("(2, 2), (6, 2)") == ["(2, 2)", "(6, 2)"]
    assert split_items("(1, 4]") == ["(1, 4]"] and split_items("\\{1, 2\\}") == ["\\{1, 2\\}"]
    assert split_items("1,000") == ["1,000"] and split_items("1 \\text{ and } 2") == ["1", "2"]
    assert gold_items("\\boxed{1}\\boxed{2}") == ["1", "2"] and gold_items("5") == ["5"]
    assert pred_items(["1000,99"], 1) == ["1000.99"] and pred_items(["1,000"], 1) == ["1,000"]
    assert pred_items(["1,2"], 2) == ["1", "2"] and pred_items(["1", "1"], 2) == ["1"]


def test_normalised_match_is_exact_on_numbers():
    assert answers_match("0.25", "\\frac{1}{4}") and answers_match("-\\frac{1}{2}", "-1/2")
    assert not answers_match("0.3333", "\\frac{1}{3}")  # the fast check is exact; Math-Verify may round


def test_one_megabyte_string_is_zero_and_fast():
    text = "\\boxed{1}" + "x" * MB  # the box is outside the searched tail
    start = time.monotonic()
    assert math_reward(text, "1") == 0.0
    assert math_reward("\\boxed{" + "9^" * (MB // 2) + "9}", "1") == 0.0
    assert math_reward("{" * MB, "1") == 0.0
    assert time.monotonic() - start < 2.0


def test_binary_junk_and_wrong_types_are_zero():
    junk = bytes(range(256)).decode("latin-1") * 20
    assert math_reward(junk + "\\boxed{\x00\xff}", "1") == 0.0
    assert math_reward(b"\\boxed{1}", "1") == 0.0
    assert math_reward(None, "1") == 0.0
    assert math_reward("\\boxed{1}", None) == 0.0
    assert choice_reward(None, "A") == 0.0 and choice_reward("\\boxed{A}", 3) == 0.0


ADVERSARIAL = [
    "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",  # deeply nested, balanced
    "\\boxed{" + "\\frac{" * 300 + "1" + "}{2}" * 300 + "}",  # nested fractions
    "\\boxed{" + "\\sqrt{" * 300 + "2" + "}" * 300 + "}",
    "\\boxed{\\left(" * 200 + "1",  # unbalanced, never closed
    "\\boxed{\\begin{pmatrix}" + "1&" * 3000 + "\\end{pmatrix}}",
    "\\boxed{" + "}" * 1000,
    "\\boxed{\\input{/etc/passwd}} \\boxed{\\def\\x{\\x}\\x}",  # TeX commands are never run
]


@pytest.mark.parametrize("completion", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_latex_scores_zero_within_the_limit(completion):
    start = time.monotonic()
    assert math_reward(completion, "12") == 0.0
    assert time.monotonic() - start < 12.0  # the per-call limit (5 s) plus a worker restart


def test_many_parts_and_boxes_stay_fast():
    start = time.monotonic()
    assert math_reward("\\boxed{1}, " * 600, "1") == 0.0  # one answer of 600 parts: a list of guesses
    assert math_reward("\\boxed{1}", ", ".join(map(str, range(50)))) == 0.0
    assert math_reward("answer is " * 400 + "\\boxed{3}", "3") == 1.0
    assert math_reward("\\boxed{" * 800, "1") == 0.0
    assert time.monotonic() - start < 5.0


def test_slow_parts_share_one_deadline():
    start = time.monotonic()  # every part would keep sympy busy for minutes
    slow = "9^{9^{9^{9}}}"
    assert math_reward(f"\\boxed{{{slow}, {slow}, {slow}}}", "1, 2, 3", timeout_s=0.5) == 0.0
    assert time.monotonic() - start < 3.0


def test_expensive_answer_is_cut_off_by_the_time_limit():
    start = time.monotonic()  # sympy would work on this for minutes without a limit
    assert math_reward("\\boxed{9^{9^{9^{9}}}}", "12", timeout_s=0.5) == 0.0
    # Without the limit this takes minutes; with it, the limit plus a worker's restart. The bound
    # only separates the two: 5 s were seen on a 2-core machine at load 8, so it is generous.
    assert time.monotonic() - start < 30.0
    assert math_reward("\\boxed{2\\sqrt{2}}", "\\sqrt{8}") == 1.0  # a fresh worker answers the next call


@pytest.mark.parametrize("completion,letter,expected", [
    ("... so \\boxed{B}", "B", 1.0),
    ("\\boxed{(C)}", "C", 1.0),
    ("\\boxed{\\text{D}}", "D", 1.0),
    ("\\boxed{A. Mercury}", "A", 1.0),
    ("Therefore, the answer is (C).", "C", 1.0),
    ("Answer: D", "D", 1.0),
    ("The answer is A. On reflection \\boxed{B}", "B", 1.0),  # the last statement counts
    ("\\boxed{B}. Hmm, no: the answer is C", "C", 1.0),
    ("\\boxed{B}", "A", 0.0),
    ("the answer is a mystery", "A", 0.0),  # a lower-case word is not a choice
    ("no choice at all", "A", 0.0),
    ("\\boxed{B}", "b", 1.0),  # gold letters are case-insensitive
    ("\\boxed{B}", "Z", 0.0),  # not a choice letter
])
def test_choice_reward(completion, letter, expected):
    assert choice_reward(completion, letter) == expected


def test_trl_wrappers_take_strings_and_conversations():
    completions = ["\\boxed{4}", [{"role": "assistant", "content": "\\boxed{5}"}]]
    assert math_reward_func(completions, answer=["4", "4"], prompts=["p", "p"]) == [1.0, 0.0]
    assert choice_reward_func(["\\boxed{A}", "answer: B"], answer=["A", "A"]) == [1.0, 0.0]
    assert choice_letter("answer is (E)") == "E"


text = st.text(max_size=300)
box_content = st.lists(st.sampled_from(list("0123456789+-*/^_{}()[]\\,.=xyz ") + ["\\frac", "\\sqrt", "\\pi",
                                                                               "\\infty"]),
                       max_size=30).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(text, box_content.map(lambda s: "\\boxed{" + s + "}"), st.tuples(text, box_content).map(
    lambda t: t[0] + "\\boxed{" + t[1] + "}")), st.one_of(text, box_content))
def test_random_inputs_score_zero_or_one_in_bounded_time(completion, answer):
    start = time.monotonic()
    assert math_reward(completion, answer) in (0.0, 1.0)
    assert choice_reward(completion, answer) in (0.0, 1.0)
    assert time.monotonic() - start < 12.0  # the per-call limit (5 s) plus a worker restart
