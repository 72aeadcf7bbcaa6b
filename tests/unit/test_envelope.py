"""The envelope: Kafka bytes → a validated Query, every breach a MalformedMessage with a reason."""

from __future__ import annotations

import json
import re

import pytest

from disrouter.actors.config import HOP_BYTES, Limits
from disrouter.actors.contracts import Answer, DeadLetter, Hop, Query, Scenario
from disrouter.actors.envelope import Envelope, dead_letter_bytes, raw_value
from disrouter.actors.errors import MalformedMessage

LIMITS = Limits(max_message_bytes=2000, max_prompt_chars=100, max_hops=5, max_tags=3, max_id_chars=40)


@pytest.fixture
def env() -> Envelope:
    return Envelope(LIMITS)


def js(**fields) -> bytes:
    return json.dumps(fields).encode()


def malformed(env: Envelope, value, key=None) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as info:
        env.decode(value, key)
    err = info.value
    assert err.reason and str(err) == err.reason  # the reason is the exception text
    return err


def test_a_valid_query_decodes(env):
    q = env.decode(
        js(prompt="What is 2+2?", id="q-1", scenario="cost_first", alpha=0.8, reply_to="me.answers",
           max_hops=5, tags=["a", "b", "c"], metadata={"x": 1})
    )
    assert q == Query(
        prompt="What is 2+2?", id="q-1", scenario=Scenario.cost_first, alpha=0.8, reply_to="me.answers",
        max_hops=5, tags=["a", "b", "c"], metadata={"x": 1},
    )


def test_boundary_values_are_accepted(env):
    # exactly at each limit is fine; the limits are "over", not "at"
    assert env.decode(js(prompt="x" * 100, id="i" * 40, alpha=0.0, max_hops=1, tags=["a", "b", "c"]))
    assert env.decode(js(prompt="x", alpha=1.0, max_hops=5)).alpha == 1.0


def test_tombstone(env):
    err = malformed(env, None)
    assert err.kind == "empty"
    assert "tombstone" in err.reason


@pytest.mark.parametrize("value", [b"not json", b"{", b"", b"\xff\xfe{", b'{"prompt": "hi"} trailing'])
def test_not_json(env, value):
    err = malformed(env, value)
    assert err.kind == "invalid_json"
    assert "not valid JSON" in err.reason


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b"[1, 2]", "Expected `object`"),
        (b'"just a string"', "Expected `object`"),
        (js(id="q"), "prompt"),
        (js(prompt=5), "prompt"),
        (js(prompt="hi", bogus=True), "bogus"),
        (js(prompt="hi", scenario="fast"), "scenario"),
        (js(prompt="hi", max_hops="3"), "max_hops"),
    ],
)
def test_wrong_schema(env, value, needle):
    err = malformed(env, value)
    assert err.kind == "schema"
    assert "Query schema" in err.reason and needle in err.reason


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_empty_prompt(env, prompt):
    err = malformed(env, js(prompt=prompt))
    assert err.kind == "schema"
    assert "`prompt` is empty" in err.reason


def test_prompt_over_limit(env):
    err = malformed(env, js(prompt="x" * 101))
    assert err.kind == "limit"
    assert "`prompt`" in err.reason and "101" in err.reason and "100" in err.reason


def test_prompt_limit_counts_characters_not_bytes(env):
    # 100 three-byte characters: 300 bytes, but within max_prompt_chars=100
    assert env.decode(js(prompt="\u20ac" * 100)).prompt == "\u20ac" * 100


def test_message_over_byte_limit_is_rejected_before_parsing(env):
    value = b"x" * 2001  # not even JSON: the size check comes first
    err = malformed(env, value)
    assert err.kind == "limit"
    assert "2001 bytes" in err.reason and "2000" in err.reason


@pytest.mark.parametrize("max_hops", [0, -1, 6, 1000])
def test_max_hops_out_of_range(env, max_hops):
    err = malformed(env, js(prompt="hi", max_hops=max_hops))
    assert err.kind == "limit"
    assert "`max_hops`" in err.reason and "[1, 5]" in err.reason and str(max_hops) in err.reason


@pytest.mark.parametrize("alpha", [-0.01, 1.01, 5, -1])
def test_alpha_out_of_range(env, alpha):
    err = malformed(env, js(prompt="hi", alpha=alpha))
    assert err.kind == "schema"
    assert "`alpha`" in err.reason and "[0, 1]" in err.reason and str(alpha) in err.reason


def test_alpha_overflowing_a_float_is_a_schema_error(env):
    err = malformed(env, b'{"prompt": "hi", "alpha": 1e999}')
    assert err.kind == "schema"
    assert "alpha" in err.reason


@pytest.mark.parametrize("reply_to", ["", "has space", "a/b", "..", ".", "x" * 250, "t\u00e9"])
def test_illegal_reply_to(env, reply_to):
    err = malformed(env, js(prompt="hi", reply_to=reply_to))
    assert err.kind == "schema"
    assert "`reply_to`" in err.reason and repr(reply_to) in err.reason


@pytest.mark.parametrize("reply_to", ["answers", "my-app.answers_v2", "x" * 249])
def test_legal_reply_to(env, reply_to):
    assert env.decode(js(prompt="hi", reply_to=reply_to)).reply_to == reply_to


def test_too_many_tags(env):
    err = malformed(env, js(prompt="hi", tags=["a", "b", "c", "d"]))
    assert err.kind == "limit"
    assert "4 tags" in err.reason and "3" in err.reason


def test_trail_already_at_the_hop_ceiling(env):
    trail = [{"agent": f"a{i}", "decision": "reject"} for i in range(5)]
    err = malformed(env, js(prompt="hi", trail=trail))
    assert err.kind == "limit"
    assert "5 hops" in err.reason
    assert len(env.decode(js(prompt="hi", trail=trail[:4])).trail) == 4


def test_id_length(env):
    err = malformed(env, js(prompt="hi", id="i" * 41))
    assert err.kind == "limit" and "`id`" in err.reason
    err = malformed(env, js(prompt="hi", id=""))
    assert err.kind == "limit" and "`id`" in err.reason
    # a too-long Kafka key used as the id is caught the same way
    err = malformed(env, js(prompt="hi"), key=b"k" * 41)
    assert err.kind == "limit" and "`id`" in err.reason


def test_custom_limits_are_enforced():
    tight = Envelope(Limits(max_prompt_chars=3))
    assert tight.decode(js(prompt="abc")).prompt == "abc"
    with pytest.raises(MalformedMessage):
        tight.decode(js(prompt="abcd"))
    default = Envelope(Limits())
    assert default.decode(js(prompt="abcd")).prompt == "abcd"


# --- ids ---------------------------------------------------------------------------------------


def test_id_from_the_body_wins_over_the_key(env):
    assert env.decode(js(prompt="hi", id="body-id"), key=b"key-id").id == "body-id"


def test_id_taken_from_the_kafka_key_when_absent(env):
    assert env.decode(js(prompt="hi"), key=b"key-id").id == "key-id"


def test_non_utf8_key_still_gives_an_id(env):
    q = env.decode(js(prompt="hi"), key=b"k\xff")
    assert q.id == "k\ufffd"


@pytest.mark.parametrize("key", [None, b""])
def test_id_minted_when_neither_body_nor_key_has_one(env, key):
    a = env.decode(js(prompt="hi"), key=key)
    b = env.decode(js(prompt="hi"), key=key)
    assert re.fullmatch(r"q-[0-9a-f]{32}", a.id)
    assert a.id != b.id


# --- encoding ----------------------------------------------------------------------------------


def test_encode_round_trips_through_decode(env):
    q = Query(prompt="hi", id="q-1", trail=[Hop(agent="a", decision="reject", cost=0.1)])
    assert env.decode(env.encode(q)) == q


def test_encode_answer_and_dead_letter(env):
    assert json.loads(env.encode(Answer(id="q", status="answered", alpha=0.5, answer="4")))["answer"] == "4"
    letter = DeadLetter(reason="r", agent="a", topic="t", partition=0, offset=1, value="v")
    assert json.loads(env.encode(letter))["reason"] == "r"


def test_raw_value_keeps_bytes_verbatim():
    assert raw_value(b'{"a": 1}') == ('{"a": 1}', "utf-8")
    assert raw_value(None) == ("", "utf-8")
    text, encoding = raw_value(b"\xff\x00")
    assert encoding == "base64" and text == "/wA="


# --- hand-off room and dead letters that always fit ----------------------------------------------


def test_hand_offs_may_exceed_the_ingress_limit_by_the_trail_room(env):
    value = js(prompt="hi", metadata={"pad": "x" * 2100})
    assert malformed(env, value).kind == "limit"
    assert env.decode(value, max_bytes=LIMITS.handoff_bytes).metadata["pad"] == "x" * 2100
    assert LIMITS.handoff_bytes - LIMITS.max_message_bytes == LIMITS.max_hops * HOP_BYTES


@pytest.mark.parametrize("raw", [b"\xff" * 50_000, ("\u20ac" * 20_000).encode(), b"\x01" * 30_000])
def test_a_dead_letter_is_cut_to_fit_its_budget(env, raw):
    letter = DeadLetter(reason="r", agent="a", topic="t", partition=0, offset=1, value="")
    data = dead_letter_bytes(letter, raw, 8000, env.encode)
    decoded = json.loads(data)
    assert len(data) <= 8000
    assert decoded["value_truncated"] is True and decoded["value_bytes"] == len(raw)
    if decoded.get("value_encoding") != "base64":  # text stays text, cut on a character boundary
        assert raw.decode().startswith(decoded["value"])


def test_a_small_dead_letter_is_kept_whole(env):
    letter = DeadLetter(reason="r", agent="a", topic="t", partition=0, offset=1, value="")
    decoded = json.loads(dead_letter_bytes(letter, b'{"prompt": 1}', 8000, env.encode))
    assert decoded["value"] == '{"prompt": 1}' and "value_truncated" not in decoded and "value_bytes" not in decoded
