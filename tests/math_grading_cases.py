"""Graded answers in the forms real benchmarks use: (completion, reference, verdict, form).

Written for this repository from the answer formats of GSM8K (integers, money, thousands
separators), MATH / MATH500 (fractions, radicals, intervals, sets, tuples, \\text{} answers,
matrices, degrees, choice letters of its AMC problems), OlympiadBench (several answers), AIME
(integers 000-999) and from how completions state a final answer. The verdict is what a careful
grader says: 1 correct, 0 wrong. ``tests/test_rewards_math.py`` holds ``math_reward`` to every row.
"""

B = "\\boxed"

GSM8K = [
    (f"She earns 3 * 6 = 18 dollars, so {B}{{18}}.", "18", 1),
    (f"{B}{{\\$18}}", "18", 1),
    (f"{B}{{18 \\text{{ dollars}}}}", "18", 1),
    (f"{B}{{18.00}}", "18", 1),
    (f"{B}{{18 apples}}", "18", 1),
    (f"{B}{{180}}", "18", 0),
    (f"{B}{{1,000}}", "1000", 1),
    (f"{B}{{1,000}}", "1", 0),  # a thousand, not one
    (f"{B}{{10,000}}", "10000", 1),
    (f"{B}{{1,234,567}}", "1234567", 1),
    (f"{B}{{1{{,}}000}}", "1000", 1),
    (f"{B}{{1\\,000}}", "1000", 1),
    (f"{B}{{1,500}}", "1.5", 0),  # thousands, never a decimal comma
    (f"{B}{{1,500}}", "1500", 1),
    (f"{B}{{1,5}}", "1.5", 1),  # a decimal comma
    (f"{B}{{1000,99}}", "1000.99", 1),
    (f"{B}{{0,25}}", "0.25", 1),
    (f"{B}{{3,50}}", "3.5", 1),
    (f"{B}{{3,50}}", "350", 0),
    (f"{B}{{2,3}}", "2", 0),
    (f"{B}{{-5}}", "-5", 1),
    (f"{B}{{\u22125}}", "-5", 1),  # a Unicode minus sign
    (f"{B}{{5}}", "-5", 0),
    (f"{B}{{5.0}}", "5", 1),
    (f"{B}{{5.5}}", "5", 0),
    (f"{B}{{50\\%}}", "50", 1),
    (f"{B}{{50}}", "50\\%", 1),
    (f"{B}{{25}}", "0.25", 0),  # the official x100 rule would accept it
    (f"{B}{{0.25}}", "25", 0),
    (f"{B}{{12}}", "12.5", 0),
    (f"{B}{{13}}", "12", 0),
    ("The answer is 42.", "42", 1),
    ("#### 72", "72", 1),
    ("So she has 12 apples left.", "12", 0),  # no stated answer
    (f"{B}{{42}}. Actually no, I made a slip: the final answer is 44.", "44", 1),
    (f"{B}{{42}}. Actually no, I made a slip: the final answer is 44.", "42", 0),
    (f"I first thought the answer is 7, but {B}{{8}} is right.", "8", 1),
    (f"I first thought the answer is 7, but {B}{{8}} is right.", "7", 0),
    (f"{B}{{12}}. Let me check the answer: 3 + 9 = 12.", "12", 1),
    (f"{B}{{7}}\n\nThe answer is not 8.", "7", 1),
    (f"The answer is correct: {B}{{7}}", "7", 1),
    ("**Answer:** 12", "12", 1),
    ("Answer: 1,200", "1200", 1),
    ("Answer: 1,200", "12", 0),
]

MATH_NUMBERS = [
    (f"{B}{{\\frac{{3}}{{4}}}}", "\\frac34", 1),
    (f"{B}{{3/4}}", "\\frac{3}{4}", 1),
    (f"{B}{{0.75}}", "\\frac{3}{4}", 1),
    (f"{B}{{\\dfrac{{6}}{{8}}}}", "\\frac34", 1),
    (f"{B}{{\\tfrac{{5}}{{2}}}}", "2.5", 1),
    (f"{B}{{\\frac{{4}}{{3}}}}", "\\frac34", 0),
    (f"{B}{{-\\frac{{1}}{{2}}}}", "-\\frac12", 1),
    (f"{B}{{\\frac{{-1}}{{2}}}}", "-\\frac{1}{2}", 1),
    (f"{B}{{\\frac{{1}}{{2}}}}", "-\\frac{1}{2}", 0),
    (f"{B}{{0.3333}}", "\\frac{1}{3}", 0),  # the official 1e-4 tolerance would accept it
    (f"{B}{{0.33}}", "\\frac{1}{3}", 0),
    (f"{B}{{3.1416}}", "\\pi", 0),
    (f"{B}{{3.14}}", "\\pi", 0),
    (f"{B}{{2.0001}}", "2", 0),
    (f"{B}{{10^{{-3}}}}", "0.001", 1),
    (f"{B}{{2^{{10}}}}", "1024", 1),
    (f"{B}{{2^{{10}}}}", "1000", 0),
    (f"{B}{{9}}", "3^2", 1),
    (f"{B}{{-0}}", "0", 1),
    (f"{B}{{\\infty}}", "\\infty", 1),
    (f"{B}{{-\\infty}}", "\\infty", 0),
    (f"{B}{{90^\\circ}}", "90", 1),
    (f"{B}{{90^{{\\circ}}}}", "90^\\circ", 1),
    (f"{B}{{45^\\circ}}", "90", 0),
    (f"{B}{{10\\text{{ cm}}}}", "10", 1),
    (f"{B}{{10\\text{{ cm}}}}", "100", 0),
    (f"{B}{{x = 3}}", "3", 1),
    (f"{B}{{x = 4}}", "3", 0),
    (f"{B}{{\\frac{{\\pi}}{{6}}}}", "\\frac{\\pi}{6}", 1),
    (f"{B}{{\\frac{{\\pi}}{{3}}}}", "\\frac{\\pi}{6}", 0),
    (f"{B}{{e^2}}", "e^{2}", 1),
    (f"{B}{{e^3}}", "e^{2}", 0),
]

MATH_RADICALS = [
    (f"{B}{{2\\sqrt{{2}}}}", "\\sqrt{8}", 1),
    (f"{B}{{\\sqrt{{8}}}}", "2\\sqrt2", 1),
    (f"{B}{{\\sqrt2}}", "\\sqrt{2}", 1),
    (f"{B}{{\\frac{{\\sqrt{{3}}}}{{2}}}}", "\\frac{\\sqrt3}{2}", 1),
    (f"{B}{{\\frac{{1}}{{\\sqrt{{2}}}}}}", "\\frac{\\sqrt{2}}{2}", 1),
    (f"{B}{{\\sqrt[3]{{8}}}}", "2", 1),
    (f"{B}{{5+2\\sqrt{{6}}}}", "(\\sqrt2+\\sqrt3)^2", 1),
    (f"{B}{{\\sqrt{{2}}+1}}", "1+\\sqrt2", 1),
    (f"{B}{{3\\sqrt{{2}}}}", "2\\sqrt{3}", 0),
    (f"{B}{{\\sqrt{{3}}}}", "\\sqrt{2}", 0),
    (f"{B}{{\\sqrt{{2}}-1}}", "1-\\sqrt2", 0),
    (f"{B}{{\\frac{{\\sqrt{{3}}}}{{3}}}}", "\\frac{\\sqrt3}{2}", 0),
    (f"{B}{{1.41421356}}", "\\sqrt{2}", 1),  # Math-Verify's 6-decimal rounding, kept
    (f"{B}{{1.414}}", "\\sqrt{2}", 0),
]

MATH_INTERVALS = [
    (f"{B}{{(1, 4]}}", "(1,4]", 1),
    (f"{B}{{[1, 4]}}", "(1,4]", 0),
    (f"{B}{{(1, 4)}}", "(1,4]", 0),
    (f"{B}{{(-\\infty, 3)}}", "(-\\infty,3)", 1),
    (f"{B}{{(-\\infty,3]}}", "(-\\infty,3)", 0),
    (f"{B}{{[2,5) \\cup (6, \\infty)}}", "[2,5)\\cup(6,\\infty)", 1),
    (f"{B}{{(6, \\infty) \\cup [2, 5)}}", "[2,5)\\cup(6,\\infty)", 1),
    (f"{B}{{[2,5] \\cup (6, \\infty)}}", "[2,5)\\cup(6,\\infty)", 0),
    (f"{B}{{x \\in [2, 5)}}", "[2,5)", 1),
    (f"{B}{{[0,1]}}", "[0,1)", 0),
    (f"{B}{{(0,\\infty)}}", "(0, \\infty)", 1),
    (f"{B}{{\\left( -2, 3 \\right)}}", "(-2,3)", 1),
    (f"{B}{{\\left[ -2, 3 \\right)}}", "(-2,3)", 0),
]

MATH_SETS_AND_TUPLES = [
    (f"{B}{{\\{{1, 2, 3\\}}}}", "\\{1,2,3\\}", 1),
    (f"{B}{{\\{{3,2,1\\}}}}", "\\{1,2,3\\}", 1),
    (f"{B}{{\\{{1,2\\}}}}", "\\{1,2,3\\}", 0),
    (f"{B}{{1, 2, 3}}", "\\{1,2,3\\}", 1),
    (f"{B}{{1, 2}}", "\\{1,2,3\\}", 0),
    (f"{B}{{(3, \\frac{{\\pi}}{{2}})}}", "\\left(3,\\frac{\\pi}{2}\\right)", 1),
    (f"{B}{{(3, \\frac{{\\pi}}{{4}})}}", "\\left(3,\\frac{\\pi}{2}\\right)", 0),
    (f"{B}{{(1,-2,3)}}", "(1,-2,3)", 1),
    (f"{B}{{(1,2,-3)}}", "(1,-2,3)", 0),
    (f"{B}{{(2, 1)}}", "(1,2)", 0),  # an ordered pair, not a set
    (f"{B}{{\\begin{{pmatrix}} 1 \\\\ 2 \\end{{pmatrix}}}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 1),
    (f"{B}{{\\begin{{pmatrix}} 2 \\\\ 1 \\end{{pmatrix}}}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 0),
]

MATH_ALGEBRA = [
    (f"{B}{{(x+1)^2}}", "x^2+2x+1", 1),
    (f"{B}{{x^2+1}}", "x^2+2x+1", 0),
    (f"{B}{{y = 2x + 3}}", "y=2x+3", 1),
    (f"{B}{{2x+3}}", "y = 2x+3", 1),
    (f"{B}{{3x+2}}", "2x+3", 0),
    (f"{B}{{\\frac{{x}}{{2}}}}", "\\frac{1}{2}x", 1),
    (f"{B}{{x^2-4}}", "(x-2)(x+2)", 1),
    (f"{B}{{x^2+4}}", "(x-2)(x+2)", 0),
    (f"{B}{{2x}}", "2", 0),  # a variable is not a unit
    (f"{B}{{a+b}}", "b+a", 1),
    (f"{B}{{a-b}}", "b-a", 0),
]

MATH_TEXT_AND_LETTERS = [
    (f"{B}{{\\text{{Evelyn}}}}", "\\text{Evelyn}", 1),
    (f"{B}{{Evelyn}}", "\\text{Evelyn}", 1),
    (f"{B}{{\\text{{Nyleve}}}}", "\\text{Evelyn}", 0),  # an anagram: Math-Verify alone would accept it
    (f"{B}{{\\text{{Monday}}}}", "\\text{Monday}", 1),
    (f"{B}{{\\text{{monday}}}}", "\\text{Monday}", 1),
    (f"{B}{{\\text{{Tuesday}}}}", "\\text{Monday}", 0),
    (f"{B}{{\\text{{odd}}}}", "\\text{odd}", 1),
    (f"{B}{{\\text{{even}}}}", "\\text{odd}", 0),
    (f"{B}{{\\text{{(C)}}}}", "\\text{(C)}", 1),
    (f"{B}{{C}}", "\\text{(C)}", 1),
    (f"{B}{{(C)}}", "C", 1),
    (f"{B}{{\\text{{(B)}}}}", "\\text{(C)}", 0),
    (f"{B}{{D}}", "\\text{(C)}", 0),
]

SEVERAL_ANSWERS = [
    (f"The pairs are {B}{{(2, 2)}} and {B}{{(6, 2)}}.", "(2, 2), (6, 2)", 1),
    (f"{B}{{(6, 2), (2, 2)}}", "(2, 2), (6, 2)", 1),
    (f"{B}{{(2, 2)}}", "(2, 2), (6, 2)", 0),  # one missing
    (f"{B}{{(2,2),(6,2),(1,1)}}", "(2, 2), (6, 2)", 0),  # one too many
    (f"{B}{{1,2}}", f"{B}{{1}}{B}{{2}}", 1),
    (f"{B}{{1}} and {B}{{2}}", f"{B}{{1}}{B}{{2}}", 1),
    (f"{B}{{1}}, {B}{{2}}", "1, 2", 1),
    (f"${B}{{1}}$, ${B}{{3}}$", "1, 3", 1),
    (f"{B}{{2,1}}", "1, 2", 1),
    (f"{B}{{1}}", "1, 2", 0),
    (f"{B}{{1, 2, 2}}", "1, 2", 1),  # a repeated root counts once
    (f"x = {B}{{3}} and y = {B}{{4}}", "3, 4", 1),
    (f"x = {B}{{3}} and y = {B}{{5}}", "3, 4", 0),
    (f"{B}{{-1, 5}}", "5, -1", 1),
    (f"{B}{{-1, 5}}", "-1", 0),
    (f"{B}{{1 \\text{{ and }} 2}}", "1, 2", 1),
    (f"{B}{{x=1, y=2}}", "x=1, y=2", 1),
    (f"{B}{{x=1, y=3}}", "x=1, y=2", 0),
    (f"{B}{{3}}, {B}{{7}}", "7", 0),  # two answers to a one-answer question: a hedge
    (f"first {B}{{3}}, finally {B}{{7}}", "7", 1),  # the last box decides
    (f"{B}{{7}}, finally {B}{{3}}", "7", 0),
    (f"{B}{{\\frac{{1}}{{2}}, \\frac{{1}}{{3}}}}", "\\frac13, \\frac12", 1),
    (f"{B}{{\\frac{{1}}{{2}}, \\frac{{1}}{{4}}}}", "\\frac13, \\frac12", 0),
    (f"{B}{{1,000, 2,000}}", "1000, 2000", 0),  # ambiguous commas: no reading is guessed
]

MODEL_OUTPUTS = [  # how completions of reasoning models end
    (f"**Final Answer**\n{B}{{189}}", "189", 1),
    (f"<think>so maybe {B}{{27}}? no.</think>\nThe area is \\({B}{{189}}\\) square centimeters.", "189", 1),
    (f"<think>so maybe {B}{{27}}? no.</think>\nThe area is \\({B}{{189}}\\) square centimeters.", "27", 0),
    (f"Hence $N = {B}{{12{{,}}408}}$.", "12408", 1),
    (f"The area is ${B}{{24\\text{{ m}}^2}}$.", "24", 1),
    (f"The area is ${B}{{24\\mbox{{ m}}^2}}$.", "24\\mbox{ m}^2", 1),
    (f"The distance is ${B}{{125\\textnormal{{ miles}}}}.$", "125", 1),
    (f"The distance is ${B}{{125\\textnormal{{ miles}}}}.$", "152", 0),
    (f"so $x = {B}{{2 \\pm \\sqrt{{7}}}}$.", "2 \\pm \\sqrt{7}", 1),
    (f"so $x = {B}{{2 \\pm \\sqrt{{7}}}}$.", "2 \\pm \\sqrt{5}", 0),
    (f"the sum lies between ${B}{{8\\text{{ and }}9}}$.", "8\\text{ and }9", 1),
    (f"the integer roots are ${B}{{-3,2}}.$", "-3,2", 1),
    (f"the integer roots are ${B}{{-3,2}}.$", "-3,1", 0),
    (f"so $x \\in {B}{{\\{{-2\\}} \\cup [1,5)}}.$", "\\{-2\\} \\cup [1,5)", 1),
    (f"so $x \\in {B}{{\\{{-2\\}} \\cup [1,5]}}.$", "\\{-2\\} \\cup [1,5)", 0),
    (f"Hence ${B}{{g(3) < g(0) < g(5)}}$.", "g(3) < g(0) < g(5)", 1),
    (f"the solution is ${B}{{x \\geq 4}}$.", "x \\ge 4", 1),
    (f"the solution is ${B}{{x \\leq 4}}$.", "x \\ge 4", 0),
    (f"Then $5^{{20}} \\equiv {B}{{4}} \\pmod{{7}}$.", "4", 1),
    (f"The quotient is ${B}{{312_4}}$.", "312_4", 1),
    (f"Therefore ${B}{{\\frac{{7}}{{3}}\\pi}}$.", "\\frac{7\\pi}{3}", 1),
    (f"The point is ${B}{{(2, 3.5)}}$.", "(2,\\frac72)", 1),
    (f"The point is ${B}{{(2, 3.5)}}$.", "(2,\\frac52)", 0),
    (f"We get ${B}{{\\cos^2 \\theta}}$.", "1 - \\sin^2 \\theta", 1),
]

AIME = [
    (f"{B}{{033}}", "33", 1),
    (f"{B}{{33}}", "033", 1),
    (f"{B}{{0}}", "000", 1),
    (f"{B}{{204}}", "204", 1),
    (f"{B}{{240}}", "204", 0),
    (f"{B}{{999}}", "998", 0),
    (f"Thus, the final answer is ${B}{{113}}$.", "113", 1),
    (f"{B}{{113.}}", "113", 1),
    (f"{B}{{113}}", "131", 0),
]

STATEMENTS = [
    ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "0.5", 1),
    ("Final Answer: The final answer is $\\frac{1}{3}$. I hope it is correct.", "0.5", 0),
    (f"... {B}{{5}}. Wait, I made an error: the final answer is $6$.", "6", 1),
    (f"... {B}{{5}}. Wait, I made an error: the final answer is $6$.", "5", 0),
    (f"{B}{{5}}. Answer: 5", "5", 1),
    ("The answer is $\\frac{3}{4}$.", "0.75", 1),
    ("The answer is \\(2\\sqrt{2}\\).", "\\sqrt8", 1),
    ("The answer is \\(2\\sqrt{3}\\).", "\\sqrt8", 0),
    ("Therefore the answer is $$x = 7$$", "7", 1),
    ("the answer is \\[ (1, 4] \\]", "(1,4]", 1),
    ("The answer is 12 apples and 3 pears.", "12", 0),  # not a bare final number
]

HEDGES = [  # more than one answer, or the reference inside something else: never credited
    (f"{B}{{12}} or {B}{{13}}", "12", 0),
    (f"{B}{{12 \\text{{ or }} 13}}", "12", 0),
    (f"{B}{{1,2,3,4,5,6,7,8,9,10,11,12}}", "12", 0),
    ("Answer: 12 or 13", "12", 0),
    (f"{B}{{12-1}}", "12", 0),
    (f"{B}{{12x}}", "12", 0),
    (f"{B}{{\\frac{{12}}{{5}}}}", "12", 0),
    (f"{B}{{(12, 5)}}", "12", 0),
    (f"{B}{{[12, \\infty)}}", "12", 0),
    (f"{B}{{x}}", "12", 0),
    (f"{B}{{0.12}}", "12", 0),
]

MALFORMED = [
    (f"{B}{{12", "12", 0),  # truncated
    (f"{B}{{}}", "12", 0),
    (f"{B}{{7}} then {B}{{12", "12", 0),  # the last box is cut off
    ("", "12", 0),
    ("no answer here", "12", 0),
    (f"{B}{{\\frac{{1}}{{", "1", 0),
    (f"{B}{{12}}", "", 0),  # no reference
    (f"{B}{{" + "1" * 600 + "}", "1" * 600, 0),  # too long to be a final answer
    (f"{B}{{\\sqrt{{}}", "0", 0),
    (f"{B}{{}}{{}}}}}}{{{{", "1", 0),
]

FORMS = {"gsm8k": GSM8K, "math_numbers": MATH_NUMBERS, "math_radicals": MATH_RADICALS,
         "math_intervals": MATH_INTERVALS, "math_sets_tuples": MATH_SETS_AND_TUPLES, "math_algebra": MATH_ALGEBRA,
         "math_text_letters": MATH_TEXT_AND_LETTERS, "several_answers": SEVERAL_ANSWERS, "model_outputs": MODEL_OUTPUTS, "aime": AIME,
         "statements": STATEMENTS, "hedges": HEDGES, "malformed": MALFORMED}
CASES = [(completion, gold, verdict, form) for form, rows in FORMS.items() for completion, gold, verdict in rows]
