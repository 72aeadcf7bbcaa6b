"""Wire contracts: JSON round-trips, strict decoding, defaults left off the wire."""

from __future__ import annotations

import json

import msgspec
import pytest

from disrouter.actors.contracts import AGENT_ONLY_FIELDS, SCENARIO_ALPHA, Answer, DeadLetter, Hop, Query, Scenario, Totals

enc = msgspec.json.Encoder()


def wire(obj) -> dict:
    return json.loads(enc.encode(obj))


def full_query() -> Query:
    return Query(
        prompt="What is 2+2?",
        id="q-1",
        scenario=Scenario.cost_first,
        alpha=0.7,
        reply_to="my.answers",
        max_hops=4,
        tags=["math", "easy"],
        metadata={"user": "ann", "n": 3, "nested": {"a": [1, 2]}},
        trail=[Hop(agent="small", decision="reject", latency_ms=12.5, tokens_in=10, tokens_out=2, cost=0.1)],
    )


def test_query_round_trip():
    q = full_query()
    assert msgspec.json.decode(enc.encode(q), type=Query) == q


def test_query_wire_form_matches_the_design():
    data = wire(full_query())
    assert data["scenario"] == "cost_first"  # the enum travels as its name
    assert data["trail"] == [
        {"agent": "small", "decision": "reject", "latency_ms": 12.5, "tokens_in": 10, "tokens_out": 2, "cost": 0.1}
    ]


def test_minimal_query_only_needs_a_prompt_and_omits_defaults():
    q = msgspec.json.decode(b'{"prompt": "hi"}', type=Query)
    assert q.prompt == "hi"
    assert q.id is None and q.scenario is None and q.alpha is None and q.max_hops is None
    assert q.tags == [] and q.metadata == {} and q.trail == []
    assert enc.encode(q) == b'{"prompt":"hi"}'


def test_mutable_defaults_are_not_shared():
    a, b = Query(prompt="a"), Query(prompt="b")
    a.tags.append("x")
    a.trail.append(Hop(agent="s", decision="reject"))
    assert b.tags == [] and b.trail == []


def test_hop_omits_defaults():
    assert wire(Hop(agent="a", decision="answer")) == {"agent": "a", "decision": "answer"}
    assert wire(Hop(agent="a", decision="reject", forced=False, error=None, confidence=None)) == {
        "agent": "a",
        "decision": "reject",
    }
    assert wire(Hop(agent="a", decision="answer", forced=True, confidence=0.0)) == {
        "agent": "a",
        "decision": "answer",
        "confidence": 0.0,  # a known zero is not a missing value
        "forced": True,
    }


def test_answer_round_trip_and_defaults():
    trail = [
        Hop(agent="small", decision="reject", latency_ms=10.0, tokens_in=5, tokens_out=1, cost=0.1),
        Hop(agent="large", decision="answer", latency_ms=30.0, tokens_in=5, tokens_out=9, cost=0.9, cost_usd=0.002),
    ]
    ans = Answer(
        id="q-1",
        status="answered",
        alpha=0.5,
        answer="4",
        agent="large",
        scenario=Scenario.balance,
        cost=0.9,
        trail=trail,
        totals=Totals.of(trail),
        tags=["math"],
        metadata={"k": "v"},
    )
    assert msgspec.json.decode(enc.encode(ans), type=Answer) == ans
    data = wire(ans)
    assert "forced" not in data and "reason" not in data  # defaults left off
    assert data["totals"] == {
        "hops": 2,
        "latency_ms": 40.0,
        "tokens_in": 10,
        "tokens_out": 10,
        "cost": 1.0,
        "cost_usd": 0.002,
    }


def test_unanswered_answer_carries_a_reason():
    ans = Answer(id="q", status="unanswered", alpha=0.2, reason="no unvisited candidate left after 'x'")
    data = wire(ans)
    assert data["status"] == "unanswered" and data["reason"].startswith("no unvisited")
    assert "answer" not in data and "agent" not in data
    assert msgspec.json.decode(enc.encode(ans), type=Answer) == ans


def test_totals_of_a_trail():
    trail = [
        Hop(agent="a", decision="reject", latency_ms=1.0004, tokens_in=3, tokens_out=1, cost=0.1),
        Hop(agent="b", decision="reject", latency_ms=2.0, tokens_in=4, tokens_out=2, cost=0.2, cost_usd=0.5),
        Hop(agent="c", decision="answer", latency_ms=3.0, tokens_in=5, tokens_out=3, cost=0.4, cost_usd=0.25),
    ]
    t = Totals.of(trail)
    assert t.hops == 3
    assert t.latency_ms == 6.0  # rounded to 3 decimals
    assert (t.tokens_in, t.tokens_out) == (12, 6)
    assert t.cost == pytest.approx(0.7)
    assert t.cost_usd == pytest.approx(0.75)  # only hops that know dollars count
    assert Totals.of([Hop(agent="a", decision="answer")]).cost_usd is None
    assert Totals.of([]) == Totals()


def test_dead_letter_round_trip():
    letter = DeadLetter(reason="not valid JSON", agent="a", topic="ns.ingress", partition=2, offset=17, value="{x")
    data = wire(letter)
    # defaults (utf-8 text, no key, decode error) are left off the wire
    assert set(data) == {"reason", "agent", "topic", "partition", "offset", "value"}
    assert msgspec.json.decode(enc.encode(letter), type=DeadLetter) == letter


# --- strict decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"prompt": "hi", "bogus": 1}',
        b'{"prompt": "hi", "trail": [{"agent": "a", "decision": "reject", "bogus": 1}]}',
    ],
)
def test_query_unknown_fields_are_rejected(raw):
    with pytest.raises(msgspec.ValidationError, match="unknown field `bogus`"):
        msgspec.json.decode(raw, type=Query)


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b'{}', "prompt"),  # missing the one required field
        (b'{"prompt": 5}', "prompt"),
        (b'{"prompt": null}', "prompt"),
        (b'{"prompt": "hi", "alpha": "0.5"}', "alpha"),  # no coercion from strings
        (b'{"prompt": "hi", "alpha": true}', "alpha"),
        (b'{"prompt": "hi", "max_hops": "3"}', "max_hops"),
        (b'{"prompt": "hi", "max_hops": 2.5}', "max_hops"),
        (b'{"prompt": "hi", "max_hops": true}', "max_hops"),
        (b'{"prompt": "hi", "tags": "math"}', "tags"),
        (b'{"prompt": "hi", "tags": [1]}', "tags"),
        (b'{"prompt": "hi", "metadata": []}', "metadata"),
        (b'{"prompt": "hi", "scenario": "fast"}', "scenario"),
        (b'{"prompt": "hi", "id": 7}', "id"),
        (b'{"prompt": "hi", "trail": [{"agent": "a", "decision": "maybe"}]}', "decision"),
        (b'{"prompt": "hi", "trail": [{"decision": "answer"}]}', "agent"),
        (b'[]', "object"),
    ],
)
def test_query_wrong_types_are_rejected_and_named(raw, where):
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(raw, type=Query)
    assert where in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "q", "status": "answered", "alpha": 0.5, "bogus": 1}',
        b'{"id": "q", "status": "answered", "alpha": 0.5, "trail": [{"agent": "a", "decision": "answer", "x": 1}]}',
        b'{"id": "q", "status": "answered", "alpha": 0.5, "totals": {"hops": 1, "bogus": 1}}',
    ],
)
def test_answer_unknown_fields_are_rejected(raw):
    with pytest.raises(msgspec.ValidationError, match="unknown field `bogus`|unknown field `x`"):
        msgspec.json.decode(raw, type=Answer)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "q", "status": "done", "alpha": 0.5}',
        b'{"id": "q", "status": "answered"}',
        b'{"id": "q", "status": "answered", "alpha": "high"}',
    ],
)
def test_answer_wrong_values_are_rejected(raw):
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=Answer)


def test_scenarios_decode_by_name_and_carry_alpha():
    for scenario in Scenario:
        q = msgspec.json.decode(enc.encode(Query(prompt="p", scenario=scenario)), type=Query)
        assert q.scenario is scenario
        assert q.scenario.alpha == SCENARIO_ALPHA[scenario]


def test_visited_is_the_set_of_trail_agents():
    q = Query(
        prompt="p",
        trail=[Hop(agent="a", decision="reject"), Hop(agent="b", decision="reject")],
    )
    assert q.visited() == {"a", "b"}
    assert Query(prompt="p").visited() == set()


def test_agent_only_fields_are_query_fields_with_inert_defaults():
    # The boundary compares each to its default: the default must mean "not set by anyone".
    default = Query(prompt="p")
    for field in AGENT_ONLY_FIELDS:
        assert field in Query.__struct_fields__
        assert not getattr(default, field)


def test_dead_letter_of_an_unpublishable_outcome_round_trips():
    letter = DeadLetter(reason="could not publish to ns.answers: MessageSizeTooLargeError", agent="a", topic="ns.ingress",
                        partition=0, offset=3, value='{"id":"q"', error_type="publish", value_truncated=True,
                        value_bytes=400_000, destination="ns.answers")
    assert msgspec.json.decode(enc.encode(letter), type=DeadLetter) == letter
    assert {"value_truncated", "value_bytes", "destination"} <= set(wire(letter))
