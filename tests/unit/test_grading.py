from fractions import Fraction

import pytest

from disrouter.training.grading import extract_choice, extract_number, gold_number, is_correct


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is: 18", Fraction(18)),
        ("16 - 3 - 4 = 9 eggs, so 9 * 2 = $18.", Fraction(18)),  # no marker: the last number
        ("#### 1,000", Fraction(1000)),
        ("The answer is $1,234.50 in total, not 99", Fraction(246900, 200)),  # first number after the marker
        ("\\boxed{3/4}", Fraction(3, 4)),
        ('{"reasoning": "5 apples and 6 pears", "answer": "42"}', Fraction(42)),
        ("Answer: -7", Fraction(-7)),
        ("It grew by 50%", Fraction(50)),
        ("The answer is: 18.00", Fraction(18)),
        ("The final answer is .5", Fraction(1, 2)),
        ("I reckon 3 + 4 = 7. The correct answer is 7.", Fraction(7)),
        ("no numbers at all", None),
        ("", None),
    ],
)
def test_extract_number(reply, expected):
    assert extract_number(reply) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("The answer is: B", "B"),
        ("The answer is (D) because of X", "D"),
        ("A car travels fast, so... Answer: C", "C"),
        ("A. Paris", "A"),
        ("answer is option c", "C"),
        ("**B**", "B"),
        ("The correct answer is C, since", "C"),
        ("The answer is (b)", "B"),
        ("D) 42", "D"),
        ("I think so", None),  # a capital "I" is not a choice
        ("The answer is a bit tricky", None),  # nor is the article "a"
        ("E", None),  # outside A–D
    ],
)
def test_extract_choice(reply, expected):
    assert extract_choice(reply) == expected


def test_gold_number_reads_gsm8k_solutions():
    assert gold_number("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18") == 18
    assert gold_number("#### 1,600") == 1600
    with pytest.raises(ValueError):
        gold_number("no number here")


def test_is_correct():
    assert is_correct("numeric", "so the total is 18.0 dollars", "18")
    assert not is_correct("numeric", "The answer is: 17", "18")
    assert is_correct("choice", "The answer is: B", "B")
    assert not is_correct("choice", "The answer is: C", "B")
    # A reject, an empty reply or no reply is never right, even if a number follows the phrase.
    assert not is_correct("numeric", "I don't know!", "0")
    assert not is_correct("numeric", None, "18")
    assert not is_correct("choice", "   ", "A")
    with pytest.raises(ValueError):
        is_correct("essay", "x", "y")
