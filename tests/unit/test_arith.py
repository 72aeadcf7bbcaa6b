from collections import Counter

import pytest

from disrouter.training import data
from disrouter.training.arith import LEVEL_NAMES, LEVELS, generate
from disrouter.training.grading import is_correct


def test_same_seed_same_questions_and_growing_count_only_appends():
    assert generate(50, seed=3) == generate(50, seed=3)
    assert generate(80, seed=3)[:50] == generate(50, seed=3)
    assert generate(50, seed=3) != generate(50, seed=4)


def test_levels_take_turns_and_ids_name_seed_and_index():
    questions = generate(len(LEVEL_NAMES) * 3, seed=1)
    assert [q.level for q in questions[: len(LEVEL_NAMES)]] == list(LEVEL_NAMES)
    assert Counter(q.level for q in questions) == {name: 3 for name in LEVEL_NAMES}
    assert questions[7].id == "arith-1-7"


def test_gold_answers_are_what_the_question_computes():
    # Re-derive each bare expression's value independently of the generator.
    for q in generate(400, seed=0):
        if q.prompt.startswith(("What is", "Calculate")) and not any(w in q.prompt for w in ("plus", "minus", "times")):
            expression = q.prompt.removeprefix("What is").removeprefix("Calculate").strip(" ?.")
            assert eval(expression, {"__builtins__": {}}) == q.gold, q  # noqa: S307 - our own digits and + - *
        assert q.gold >= 0
        assert is_correct("numeric", f"The answer is: {q.gold}", str(q.gold))


def test_difficulty_axes_grow_with_rank():
    levels = sorted((level for level, _ in LEVELS.values()), key=lambda lv: lv.rank)
    assert levels[0].digits == 1 and levels[0].operations == 1
    assert max(lv.digits for lv in levels) == 3 and max(lv.steps for lv in levels) >= 2
    assert any(lv.words for lv in levels)


def test_word_problems_are_consistent():
    for q in generate(300, seed=5):
        if q.level == "word1" and "gives away" in q.prompt:
            numbers = [int(t) for t in q.prompt.replace(".", " ").split() if t.isdigit()]
            assert numbers[0] - numbers[1] == q.gold


def test_unknown_level_is_named():
    with pytest.raises(ValueError, match="nope"):
        generate(3, levels=("add1", "nope"))


def test_arith_is_a_data_set_with_the_hash_split():
    ds = data.load("arith", limit=200)
    assert len(ds.items) == 200 and ds.items[0].id == "arith-0-0" and ds.items[0].task == "arith"
    assert {item.split for item in ds.items} == {"train", "test"}
    assert all(item.split == data.assign_split(item.id) and item.level in LEVELS for item in ds.items)
    assert data.load("arith", limit=50).items == ds.items[:50]
