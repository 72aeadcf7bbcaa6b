"""Graders: is a model's reply the right answer? Written once, used by eval and training.

Two kinds of gold answer cover the shipped data sets:

- numeric (GSM8K): the reply's final number equals the gold number exactly, compared as
  fractions so "18", "18.00", "$18" and "18.0" all match 18 and no float noise creeps in;
- multiple choice (MMLU): the reply's chosen letter equals the gold letter.

Extraction prefers explicit answer markers over "the last thing that looks like an answer",
because a model's reasoning mentions many numbers and letters before its final one. The order
(first match wins): the paper's template line "The answer is: X", GSM8K's "#### X", LaTeX
"\\boxed{X}", a JSON "answer" field, "Answer: X", then the last number in the reply (numeric) or a
reply that is just a letter (multiple choice). A reply that is the reject phrase is never right.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Literal

from disrouter.actors.decision import is_reject

Kind = Literal["numeric", "choice"]

# A number as models write it: optional sign and currency, thousands separators, decimals,
# a simple fraction, an optional percent sign (kept apart so "50%" can match gold 50).
_NUMBER = r"[-−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?%?|[-−]?\$?\.\d+"
NUMBER_RE = re.compile(_NUMBER)

# Markers that introduce the final answer, strongest first.
_MARKERS = [
    re.compile(r"(?:the\s+)?(?:final\s+|correct\s+|right\s+)?answer\s+is\s*[:：]?\s*(?P<rest>.*)", re.IGNORECASE),
    re.compile(r"####\s*(?P<rest>.*)"),
    re.compile(r"\\boxed\s*\{(?P<rest>[^{}]*)\}"),
    re.compile(r"\"answer\"\s*:\s*\"?(?P<rest>[^\"\n}]*)"),
    re.compile(r"\b(?:final\s+)?answer\**\s*[:：]\s*\**(?P<rest>.*)", re.IGNORECASE),
]


def parse_number(text: str) -> Fraction | None:
    """One number token ("$1,234.50", "3/4", "-2", "50%") as an exact Fraction."""
    token = text.strip().replace("−", "-").replace("$", "").replace(",", "").replace(" ", "")
    token = token.rstrip("%").rstrip(".")
    if not token:
        return None
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            value = Fraction(num) / Fraction(den)
        else:
            value = Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None
    return value


def _marked_segments(text: str) -> list[str]:
    """The text after each answer marker, the last occurrence of the strongest marker first."""
    segments = []
    for marker in _MARKERS:
        hits = list(marker.finditer(text))
        if hits:
            segments.append(hits[-1].group("rest"))
    return segments


def extract_number(text: str) -> Fraction | None:
    """The final numeric answer of a reply, or None when it states no number."""
    if not text:
        return None
    for segment in _marked_segments(text):
        # After a marker the *first* number is the answer ("The answer is: 18 dollars, i.e. …"),
        # unless the marked line is a calculation ("The answer is: 12 + 5 = 17"): then the
        # result after its last "=".
        line = segment.split("\n", 1)[0]
        if "=" in line:
            segment = line[line.rindex("=") + 1 :]
        match = NUMBER_RE.search(segment)
        if match:
            value = parse_number(match.group(0))
            if value is not None:
                return value
    # No marker: models end with their result, so take the last number.
    for match in reversed(list(NUMBER_RE.finditer(text))):
        value = parse_number(match.group(0))
        if value is not None:
            return value
    return None


def gold_number(gold: str) -> Fraction:
    """A gold numeric answer: a bare number, or a GSM8K solution ending in "#### N"."""
    value = extract_number(gold)
    if value is None:
        raise ValueError(f"gold answer {gold!r} holds no number")
    return value


def extract_choice(text: str, letters: str = "ABCD") -> str | None:
    """The chosen letter of a multiple-choice reply, or None when it picks none.

    Only explicit forms count: "(B)", "B.", "B)", "**B**", "Answer: B", "The answer is B",
    or a reply that is a single letter. A bare capital inside prose ("A car travels…", "I think")
    is not a choice.
    """
    if not text:
        return None
    # A capital letter standing alone: wrapped in () [] ** or followed by . ) : , a space or
    # the end. Lower case only inside brackets, so "the answer is a bit tricky" picks nothing.
    lone = re.compile(rf"^\W*?(?:\((?P<p>[{letters}{letters.lower()}])\)|\[?\**(?P<l>[{letters}])\**\]?\)?(?:[.):,]|\s|$))")
    for segment in _marked_segments(text):
        match = lone.match(segment.strip())
        if match:
            return (match.group("p") or match.group("l")).upper()
        # "The answer is option C" / "answer is choice (C)".
        match = re.match(rf"\W*(?:option|choice|letter)\s*\(?(?P<l>[{letters}{letters.lower()}])\b", segment.strip(), re.IGNORECASE)
        if match:
            return match.group("l").upper()
    stripped = text.strip()
    # The whole reply (or its first line) is the letter: "B", "(B)", "B. Paris".
    first_line = stripped.splitlines()[0] if stripped else ""
    match = re.match(rf"^\W*\(?\**(?P<l>[{letters}])\**\)?(?:[.):]|\s*$)", first_line)
    if match:
        return match.group("l")
    # Last resort: the last parenthesised letter "(C)" anywhere.
    hits = re.findall(rf"\(([{letters}])\)", text)
    return hits[-1] if hits else None


def is_correct(kind: Kind, reply: str | None, gold: str) -> bool:
    """Grade one reply against its gold answer; a missing reply or a reject is wrong."""
    if reply is None or not reply.strip() or is_reject(reply):
        return False
    if kind == "numeric":
        value = extract_number(reply)
        return value is not None and value == gold_number(gold)
    if kind == "choice":
        return extract_choice(reply) == gold.strip().upper()
    raise ValueError(f"unknown grader kind {kind!r}")
