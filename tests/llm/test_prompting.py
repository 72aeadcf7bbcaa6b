"""Prompt building, answer extraction and log-prob confidence (no model needed)."""

from __future__ import annotations

import math

import pytest

from disrouter.actors.contracts import Scenario
from disrouter.actors.decision import REJECT_PHRASE, SCENARIO_INSTRUCTIONS
from disrouter.actors.engine import EngineRequest
from disrouter.actors.engines.prompting import (
    PromptStyle,
    answer_span,
    build_messages,
    confidence_from_logprobs,
    extract_answer,
    offers_reject,
)


def req(**kw) -> EngineRequest:
    kw.setdefault("query_id", "q")
    kw.setdefault("prompt", "What is 6 times 7?")
    kw.setdefault("alpha", 0.5)
    return EngineRequest(**kw)


def test_reject_offered_with_scenario():
    system, user = build_messages(req(instruction=SCENARIO_INSTRUCTIONS[Scenario.cost_first]))
    assert system.role == "system" and user.role == "user"
    assert user.content == "What is 6 times 7?"
    assert REJECT_PHRASE in system.content and "cost first" in system.content
    assert "The answer is:" in system.content


@pytest.mark.parametrize(
    "alpha,line",
    [(0.2, "Scenario: performance first (cost weight α = 0.2)"), (0.5, "Scenario: balance (cost weight α = 0.5)"),
     (0.8, "Scenario: cost first (cost weight α = 0.8)"),
     # A raw α is said as itself, not rounded to the nearest named scenario: a trained agent reads it.
     (0.75, "Scenario: cost weight α = 0.75.")],
)
def test_scenario_from_alpha_when_no_instruction(alpha, line):
    system = build_messages(req(alpha=alpha))[0].content
    assert line in system


def test_terminal_and_confidence_prompts_do_not_offer_reject():
    for request in (req(allow_reject=False), req(want_confidence=True)):
        assert not offers_reject(request)
        system = build_messages(request)[0].content
        assert REJECT_PHRASE not in system and "Scenario" not in system
        assert "The answer is:" in system


def test_style_without_system_role_folds_into_user():
    (only,) = build_messages(req(), PromptStyle(system_role=False, answer_template=False, role="Be brief."))
    assert only.role == "user"
    assert only.content.startswith("Be brief.") and only.content.endswith("What is 6 times 7?")
    assert "The answer is" not in only.content


@pytest.mark.parametrize(
    "text,answer",
    [
        ("6*7 is 42.\nThe answer is: 42", "42"),
        ("The answer is 42.", "42"),
        ("first guess: the answer is: 41\nno wait. The final answer is: **42**.", "42"),
        ("So $\\boxed{42}$", "42"),
        ("Answer: B", None),
        ("no template here", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_confidence_is_the_answer_tokens_probability():
    pieces = [("The", -0.5), (" answer", -0.1), (" is", -0.1), (":", -0.1), (" 4", math.log(0.5)), ("2", math.log(0.8))]
    text = "".join(p for p, _ in pieces)
    assert text[slice(*answer_span(text))] == "42"
    assert confidence_from_logprobs(pieces) == pytest.approx(0.4)


def test_confidence_falls_back_to_first_token():
    assert confidence_from_logprobs([("B", math.log(0.7)), (".", -2.0)]) == pytest.approx(0.7)
    assert confidence_from_logprobs([]) is None
