"""A seeded generator of arithmetic questions whose difficulty straddles small models' limits.

GSM8K is out of reach for a 135M model and MMLU sits at chance for both default agents, so
neither has a known/unknown boundary to be self-aware of. These questions do: difficulty grows
along the three axes that break small models — digits, operations, steps — from "7 + 5" (which
SmolLM2-135M gets right about half the time) to "47 * 36" (which Qwen2.5-0.5B rarely does), so
every agent of the default chain has questions it knows, questions it does not, and a band in
between.

Each level is a recipe (`LEVELS`); an item's id is `arith-<seed>-<n>`, and item n is a pure
function of (seed, n): the same seed always gives the same questions, a larger `count` only
appends, and the train/test split is the same hash split as every other data set. Phrasings
vary (plain, "plus", word problems with several names and objects) so a model cannot key on one
sentence shape. Gold answers are exact integers, graded by the numeric grader.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import msgspec

# Names and objects for word problems; pronouns follow the name.
_PEOPLE = [("Sam", "he"), ("Maria", "she"), ("Tom", "he"), ("Aisha", "she"), ("Ken", "he"), ("Lena", "she"),
           ("Omar", "he"), ("Zoe", "she"), ("Ravi", "he"), ("Ines", "she")]
_THINGS = ["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards", "eggs", "books"]
_BOXES = ["boxes", "bags", "packs", "jars", "crates", "baskets"]


class Level(msgspec.Struct, frozen=True):
    """One difficulty recipe: what the axes are, and how to draw a question from an RNG."""

    name: str
    rank: int  # 1 = easiest; the report orders levels by it
    digits: int  # largest operand's digit count
    operations: int  # arithmetic operations in the question
    steps: int  # reasoning steps a solver needs (word problems: one per sentence of work)
    words: bool  # a word problem rather than a bare expression


def _bare(rng: random.Random, a: int, op: str, b: int) -> str:
    spoken = {"+": "plus", "-": "minus", "*": "times"}[op]
    return rng.choice([f"What is {a} {op} {b}?", f"Calculate {a} {op} {b}.", f"What is {a} {spoken} {b}?"])


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_PEOPLE)


def _add1(rng):  # 7 + 5
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return _bare(rng, a, "+", b), a + b


def _mul1(rng):  # 6 * 8
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return _bare(rng, a, "*", b), a * b


def _add2(rng):  # 47 + 36
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return _bare(rng, a, "+", b), a + b


def _sub2(rng):  # 83 - 27 (never negative)
    a, b = sorted((rng.randint(10, 99), rng.randint(10, 99)), reverse=True)
    return _bare(rng, a, "-", b), a - b


def _word1(rng):  # one step, small numbers
    name, he = _person(rng)
    thing = rng.choice(_THINGS)
    a, b = rng.randint(3, 30), rng.randint(2, 20)
    if rng.random() < 0.5:
        return f"{name} has {a} {thing}. {he.capitalize()} gets {b} more. How many {thing} does {name} have now?", a + b
    a = a + b  # keep the result positive
    return f"{name} has {a} {thing}. {he.capitalize()} gives away {b}. How many {thing} does {name} have left?", a - b


def _mul21(rng):  # 47 * 6
    a, b = rng.randint(11, 99), rng.randint(2, 9)
    return _bare(rng, a, "*", b), a * b


def _chain3(rng):  # 48 + 27 - 19: two operations
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    c = rng.randint(10, min(99, a + b))
    return rng.choice([f"What is {a} + {b} - {c}?", f"Calculate {a} + {b} - {c}."]), a + b - c


def _word2(rng):  # two steps: groups, then a change
    name, he = _person(rng)
    thing, box = rng.choice(_THINGS), rng.choice(_BOXES)
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    c = rng.randint(1, a * b - 1)
    if rng.random() < 0.5:
        return (f"{name} has {a} {box} with {b} {thing} in each. {he.capitalize()} gives away {c} {thing}. "
                f"How many {thing} does {name} have left?"), a * b - c
    return (f"{name} buys {a} {box} of {thing} with {b} in each, and finds {c} more {thing}. "
            f"How many {thing} does {name} have in total?"), a * b + c


def _add3(rng):  # 569 + 714
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    return _bare(rng, a, "+", b), a + b


def _mul22(rng):  # 47 * 36
    a, b = rng.randint(11, 99), rng.randint(11, 99)
    return _bare(rng, a, "*", b), a * b


_Draw = Callable[[random.Random], tuple[str, int]]

LEVELS: dict[str, tuple[Level, _Draw]] = {
    level.name: (level, draw)
    for level, draw in (
        (Level("add1", 1, digits=1, operations=1, steps=1, words=False), _add1),
        (Level("mul1", 2, digits=1, operations=1, steps=1, words=False), _mul1),
        (Level("add2", 3, digits=2, operations=1, steps=1, words=False), _add2),
        (Level("sub2", 4, digits=2, operations=1, steps=1, words=False), _sub2),
        (Level("word1", 5, digits=2, operations=1, steps=1, words=True), _word1),
        (Level("mul21", 6, digits=2, operations=1, steps=1, words=False), _mul21),
        (Level("chain3", 7, digits=2, operations=2, steps=2, words=False), _chain3),
        (Level("word2", 8, digits=2, operations=2, steps=2, words=True), _word2),
        (Level("add3", 9, digits=3, operations=1, steps=1, words=False), _add3),
        (Level("mul22", 10, digits=2, operations=1, steps=3, words=False), _mul22),
    )
}
LEVEL_NAMES = tuple(LEVELS)


class Question(msgspec.Struct, frozen=True):
    id: str
    prompt: str
    gold: int
    level: str


def _rng(seed: int, n: int) -> random.Random:
    # One RNG per item, keyed by (seed, n): item n never depends on how many were drawn before.
    digest = hashlib.sha256(f"arith:{seed}:{n}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def generate(count: int, seed: int = 0, levels: tuple[str, ...] | None = None) -> list[Question]:
    """`count` questions, the levels taken in turn (item n is level n mod len(levels))."""
    names = levels or LEVEL_NAMES
    unknown = [name for name in names if name not in LEVELS]
    if unknown:
        raise ValueError(f"unknown arithmetic level(s) {unknown}; known: {', '.join(LEVEL_NAMES)}")
    out = []
    for n in range(count):
        name = names[n % len(names)]
        prompt, gold = LEVELS[name][1](_rng(seed, n))
        out.append(Question(f"arith-{seed}-{n}", prompt, gold, name))
    return out
