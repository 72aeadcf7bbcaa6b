"""The self-awareness decision: the reject phrase, the (1 − α)^γ threshold, α resolution and
calibrations. Expected numbers are worked out by hand in the comments."""

from __future__ import annotations

import math

import msgspec
import pytest

from disrouter.actors.contracts import Scenario
from disrouter.actors.decision import (
    REJECT_PHRASE,
    SCENARIO_INSTRUCTIONS,
    AnyCalibration,
    IdentityCalibration,
    IsotonicCalibration,
    PlattCalibration,
    PrefixState,
    classify_prefix,
    confident_enough,
    is_reject,
    reject_threshold,
    resolve_alpha,
    scenario_for_alpha,
    scenario_instruction,
)

# --- the reject phrase -------------------------------------------------------------------------


def test_the_paper_phrase_is_a_reject():
    assert REJECT_PHRASE == "I don't know!"
    assert is_reject(REJECT_PHRASE)


@pytest.mark.parametrize(
    "text",
    [
        "I don't know!",
        "i don't know!",
        "I DON'T KNOW!",
        "I Don't Know.",
        "I dont know!",  # apostrophe missing
        "I don\u2019t know!",  # curly apostrophe (what many tokenizers emit)
        "I don\u2018t know!",
        "I don`t know!",
        "I  don't   know!",  # extra spaces
        "I don't\nknow!",  # a line break inside
        "   I don't know!",  # leading whitespace
        "\n\nI don't know!",
        "I don't know",  # no punctuation at all
        "I don't know.",
        "I don't know?",
        "I don't know!!",
        "I don't know;",
        "I don't know, sorry.",
        "I don't know! The question is beyond me.",  # the phrase leads; the rest is chatter
        "I don't know \n",  # trailing whitespace
        "I don't know !",  # a space before the punctuation
        "I don't know .",
        "I don't know\u2026",  # a unicode ellipsis
        "\"I don't know!\"",  # quoted, as the prompt spells it
        "\"I don't know\"",
        "'I don't know!'",
        "\u201cI don\u2019t know!\u201d",  # curly double quotes
        "**I don't know!**",  # markdown emphasis
        "**I don't know**",
        "> I don't know!",
    ],
)
def test_reject_phrase_variants_are_rejects(text):
    assert is_reject(text), text
    assert classify_prefix(text, final=True) is PrefixState.REJECT


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "42",
        "The answer is: 42",
        # the phrase inside an answer never counts
        "The answer is 5. I don't know!",
        "Well, I don't know!",
        "Honestly I don't know!",
        "Step 1: I don't know! the value of x, so let x = 3. The answer is: 3",
        # the phrase leading but continued by words is the start of an answer
        "I don't know how many apples there were, but the answer is: 7",
        "I don't know whether it is 3 or 4; it is 4.",
        "I don't knowingly guess: 12",
        "I don't know 12",
        # prefixes of the phrase that stop short
        "I",
        "I don't",
        "I don't kno",
        "I do",
        # near misses
        "I do not know!",
        "I didn't know!",
        "You don't know!",
    ],
)
def test_answers_are_never_rejects(text):
    assert not is_reject(text), text
    assert classify_prefix(text, final=True) is PrefixState.ANSWER


@pytest.mark.parametrize(
    ("partial", "state"),
    [
        ("", PrefixState.UNDECIDED),
        ("I", PrefixState.UNDECIDED),
        ("I ", PrefixState.UNDECIDED),
        ("I don", PrefixState.UNDECIDED),
        ("I don\u2019", PrefixState.UNDECIDED),
        ("I don't kn", PrefixState.UNDECIDED),
        ("I don't know", PrefixState.UNDECIDED),  # "… how" may follow
        ("I don't know ", PrefixState.UNDECIDED),  # still: the next word decides
        ("I don't know!", PrefixState.REJECT),  # stop generating here
        ("I don't know.", PrefixState.REJECT),
        ("I don't know !", PrefixState.REJECT),
        ("I don't know h", PrefixState.ANSWER),
        ("I don't know how", PrefixState.ANSWER),
        ("T", PrefixState.ANSWER),  # cannot become the phrase any more
        ("The", PrefixState.ANSWER),
        ("I di", PrefixState.ANSWER),
        ("42", PrefixState.ANSWER),
    ],
)
def test_streaming_prefix_states(partial, state):
    assert classify_prefix(partial) is state


def test_streaming_a_reply_token_by_token_decides_once():
    """Feeding growing prefixes: UNDECIDED until a decision, which never flips back."""
    for reply, final_state in (
        ("I don't know!", PrefixState.REJECT),
        ("I don't know how to say it, but 7", PrefixState.ANSWER),
        ("The answer is: 7", PrefixState.ANSWER),
    ):
        states = [classify_prefix(reply[:i]) for i in range(1, len(reply) + 1)]
        decided = [s for s in states if s is not PrefixState.UNDECIDED]
        assert decided, reply
        first = states.index(decided[0])
        assert all(s is PrefixState.UNDECIDED for s in states[:first])
        assert all(s is final_state for s in states[first:]), (reply, states)


def test_final_flag_turns_an_exact_phrase_into_a_reject():
    assert classify_prefix("I don't know") is PrefixState.UNDECIDED
    assert classify_prefix("I don't know", final=True) is PrefixState.REJECT
    assert classify_prefix("I don't", final=True) is PrefixState.ANSWER
    assert classify_prefix("", final=True) is PrefixState.ANSWER


# --- threshold ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "gamma", "expected"),
    [
        (0.2, 0.5, math.sqrt(0.8)),  # 0.894…
        (0.5, 0.5, math.sqrt(0.5)),  # 0.707…
        (0.8, 0.5, math.sqrt(0.2)),  # 0.447…
        (0.0, 0.5, 1.0),  # cost does not matter: only certainty answers
        (1.0, 0.5, 0.0),  # cost is everything: always answer
        (0.5, 1.0, 0.5),
        (0.75, 2.0, 0.0625),  # 0.25²
        (0.36, 0.5, 0.8),  # √0.64
    ],
)
def test_reject_threshold_is_one_minus_alpha_to_the_gamma(alpha, gamma, expected):
    assert reject_threshold(alpha, gamma) == pytest.approx(expected)


def test_default_gamma_is_the_papers_half():
    assert reject_threshold(0.5) == pytest.approx(0.70710678)


def test_threshold_falls_as_cost_weight_rises():
    values = [reject_threshold(a) for a in (0.0, 0.2, 0.5, 0.8, 1.0)]
    assert values == sorted(values, reverse=True)


def test_confident_enough_is_strictly_above_the_threshold():
    # ≤ threshold rejects (the paper: answer iff p(x) > (1 − α)^γ)
    assert not confident_enough(0.8, 0.36)  # exactly the threshold 0.8
    assert confident_enough(0.8001, 0.36)
    assert not confident_enough(0.7999, 0.36)
    # one probability, three scenarios
    assert not confident_enough(0.8, Scenario.performance_first.alpha)  # 0.8 ≤ 0.894
    assert confident_enough(0.8, Scenario.balance.alpha)  # 0.8 > 0.707
    assert confident_enough(0.5, Scenario.cost_first.alpha)  # 0.5 > 0.447
    assert not confident_enough(0.5, Scenario.balance.alpha)


# --- α resolution ------------------------------------------------------------------------------


def test_scenario_alphas_are_the_papers():
    assert Scenario.performance_first.alpha == 0.2
    assert Scenario.balance.alpha == 0.5
    assert Scenario.cost_first.alpha == 0.8


def test_alpha_precedence_query_alpha_then_scenario_then_default():
    assert resolve_alpha(0.3, Scenario.cost_first, 0.5) == (0.3, Scenario.cost_first)
    assert resolve_alpha(0.3, None, 0.5) == (0.3, None)
    assert resolve_alpha(None, Scenario.cost_first, 0.5) == (0.8, Scenario.cost_first)
    assert resolve_alpha(None, Scenario.performance_first, 0.9) == (0.2, Scenario.performance_first)
    assert resolve_alpha(None, None, 0.65) == (0.65, None)


def test_alpha_zero_is_an_alpha_not_a_missing_value():
    assert resolve_alpha(0.0, Scenario.cost_first, 0.5) == (0.0, Scenario.cost_first)
    assert resolve_alpha(0.0, None, 0.5) == (0.0, None)


@pytest.mark.parametrize(
    ("alpha", "scenario"),
    [
        (0.0, Scenario.performance_first),
        (0.3, Scenario.performance_first),  # |0.3−0.2| < |0.3−0.5|
        (0.4, Scenario.balance),
        (0.6, Scenario.balance),
        (0.7, Scenario.cost_first),
        (1.0, Scenario.cost_first),
    ],
)
def test_raw_alpha_maps_to_the_nearest_scenario(alpha, scenario):
    assert scenario_for_alpha(alpha) is scenario


def test_every_scenario_instruction_names_its_alpha():
    assert set(SCENARIO_INSTRUCTIONS) == set(Scenario)
    assert len(set(SCENARIO_INSTRUCTIONS.values())) == 3
    for scenario, text in SCENARIO_INSTRUCTIONS.items():
        assert f"α = {scenario.alpha}" in text and scenario_instruction(scenario.alpha) == text
    # Between the scenarios the instruction spells α out (the trained model reads it).
    assert scenario_instruction(0.35) == "Scenario: cost weight α = 0.35."


# --- calibration -------------------------------------------------------------------------------


def test_identity_calibration():
    assert IdentityCalibration()(0.37) == 0.37


@pytest.mark.parametrize(
    ("a", "b", "raw", "expected"),
    [
        (1.0, 0.0, 0.3, 0.3),  # a=1, b=0 is the identity
        (1.0, 0.0, 0.9, 0.9),
        # logit(0.75) = ln 3; z = 2 ln 3 = ln 9; sigmoid(ln 9) = 9 / 10
        (2.0, 0.0, 0.75, 0.9),
        # logit(0.5) = 0; z = ln 2; sigmoid(ln 2) = 2 / 3
        (1.0, math.log(2), 0.5, 2 / 3),
        # logit(0.8) = ln 4; z = −ln 4; sigmoid = 1 / 5
        (-1.0, 0.0, 0.8, 0.2),
        # logit(0.25) = −ln 3; z = 0.5·(−ln 3) + ln √3 = 0; sigmoid(0) = 1/2
        (0.5, 0.5 * math.log(3), 0.25, 0.5),
    ],
)
def test_platt_values(a, b, raw, expected):
    assert PlattCalibration(a=a, b=b)(raw) == pytest.approx(expected)


def test_platt_clamps_certainties_instead_of_dividing_by_zero():
    cal = PlattCalibration(a=1.0, b=0.0)
    assert cal(0.0) == pytest.approx(1e-6)
    assert cal(1.0) == pytest.approx(1 - 1e-6)
    assert 0.0 < cal(0.0) < cal(1.0) < 1.0


def test_isotonic_interpolates_between_knots_and_clamps_outside():
    cal = IsotonicCalibration(x=[0.2, 0.6, 1.0], y=[0.1, 0.5, 0.7])
    assert cal(0.0) == pytest.approx(0.1)  # below the first knot → y[0]
    assert cal(0.2) == pytest.approx(0.1)  # on a knot
    assert cal(0.4) == pytest.approx(0.3)  # halfway 0.1 → 0.5
    assert cal(0.5) == pytest.approx(0.4)  # three quarters of the way
    assert cal(0.6) == pytest.approx(0.5)
    assert cal(0.8) == pytest.approx(0.6)  # halfway 0.5 → 0.7
    assert cal(1.0) == pytest.approx(0.7)
    assert cal(1.5) == pytest.approx(0.7)  # above the last knot → y[-1]


def test_isotonic_single_knot_is_a_constant():
    cal = IsotonicCalibration(x=[0.5], y=[0.42])
    assert cal(0.0) == cal(0.5) == cal(1.0) == 0.42


@pytest.mark.parametrize(
    ("x", "y", "needle"),
    [
        ([0.5, 0.2], [0.1, 0.2], "sorted"),
        ([0.1, 0.2], [0.1], "equally long"),
        ([], [], "non-empty"),
    ],
)
def test_isotonic_rejects_bad_knots(x, y, needle):
    with pytest.raises(ValueError, match=needle):
        IsotonicCalibration(x=x, y=y)
    # the same check applies when a calibration is decoded from a topology
    with pytest.raises(msgspec.ValidationError, match=needle):
        msgspec.convert({"type": "isotonic", "x": x, "y": y}, AnyCalibration)


def test_calibrations_decode_by_their_type_tag():
    assert msgspec.convert({"type": "platt", "a": 2.0}, AnyCalibration) == PlattCalibration(a=2.0, b=0.0)
    assert msgspec.convert({"type": "identity"}, AnyCalibration) == IdentityCalibration()
    iso = msgspec.convert({"type": "isotonic", "x": [0, 1], "y": [0.2, 0.9]}, AnyCalibration)
    assert iso(0.5) == pytest.approx(0.55)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"type": "beta"}, AnyCalibration)
    with pytest.raises(msgspec.ValidationError, match="c"):
        msgspec.convert({"type": "platt", "c": 1.0}, AnyCalibration)


def test_reject_watch_stops_on_the_phrase_and_stops_looking_once_answering():
    from disrouter.actors.decision import RejectWatch

    watch = RejectWatch(active=True)
    assert [watch.feed(t) for t in ["I", "I don", "I don't know"]] == [False, False, False]
    assert watch.feed("I don't know!") is True and watch.rejected
    answering = RejectWatch(active=True)
    assert answering.feed("The answer") is False and not answering.rejected
    assert answering.feed("The answer. I don't know!") is False  # decided: no longer looking
    assert RejectWatch(active=False).feed("I don't know!") is False


def test_platt_with_a_steep_slope_saturates_instead_of_overflowing():
    # A fitted slope this steep put exp() out of range (OverflowError in the agent).
    assert PlattCalibration(a=1000.0, b=0.0)(0.1) == 0.0
    assert PlattCalibration(a=1000.0, b=0.0)(0.9) == 1.0
    assert PlattCalibration(a=-1000.0, b=0.0)(0.1) == 1.0
