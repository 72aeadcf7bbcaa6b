"""Topology fields of the trust boundary and the liveness bounds: decoded, compiled, validated."""

from __future__ import annotations

import pytest

from disrouter.actors.config import Timeouts
from disrouter.topology.compile import agent_configs
from disrouter.topology.errors import TopologyError
from disrouter.topology.load import parse_topology


def args(**extra) -> dict:
    agents = extra.pop("agents", [{"name": "small", "cost": 0.1, "engine": {"type": "replay", "trace": "t"}, "next": ["large"]},
                                  {"name": "large", "cost": 0.9, "engine": {"type": "replay", "trace": "t"}}])
    return {"namespace": "ns", "agents": agents, **extra}


def problems(raw: dict) -> str:
    with pytest.raises(TopologyError) as info:
        parse_topology(raw)
    return str(info.value)


def test_trust_timeouts_and_credentials_reach_each_agent():
    topology = parse_topology(args(
        trust={"key_file": "/run/secrets/k", "reply_to_prefixes": ["ns.", "shared.replies."]},
        timeouts={"process_s": 120, "publish_s": 10, "stall_s": 300},
        kafka={"security_protocol": "SASL_SSL", "credentials": {"sasl_username": "all", "sasl_password_env": "P"}},
        agents=[{"name": "small", "cost": 0.1, "engine": {"type": "replay", "trace": "t"}, "next": ["large"],
                 "kafka_credentials": {"sasl_username": "agent-small", "sasl_password_env": "PS"},
                 "timeouts": {"process_s": 30, "publish_s": 5, "stall_s": 60, "rebalance_grace_s": 0}},
                {"name": "large", "cost": 0.9, "engine": {"type": "replay", "trace": "t"}}],
    ))
    configs = agent_configs(topology)
    small, large = configs["small"], configs["large"]
    assert small.trust.key_file == "/run/secrets/k" and large.trust.reply_to_prefixes == ["ns.", "shared.replies."]
    assert small.kafka.credentials.sasl_username == "agent-small" and large.kafka.credentials.sasl_username == "all"
    assert small.timeouts == Timeouts(process_s=30, publish_s=5, stall_s=60, rebalance_grace_s=0)
    assert large.timeouts == Timeouts(process_s=120, publish_s=10, stall_s=300)
    assert small.ingress_topic == "ns.ingress"


def test_a_relative_key_file_is_resolved_against_the_topology(tmp_path):
    topology = parse_topology(args(trust={"key_file": "./secrets/key"}), base_dir=tmp_path)
    assert topology.trust.key_file == str(tmp_path / "secrets" / "key")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"timeouts": {"process_s": 0}}, "timeouts.process_s: must be > 0"),
        ({"timeouts": {"process_s": 100, "publish_s": 10, "stall_s": 100}}, "timeouts.stall_s: must exceed process_s + publish_s"),
        ({"timeouts": {"rebalance_grace_s": -1}}, "timeouts.rebalance_grace_s: must be ≥ 0"),
        ({"trust": {"reply_to_prefixes": [""]}}, "trust.reply_to_prefixes[0]"),
        ({"trust": {"key_env": ""}}, "trust: needs key_env or key_file"),
        ({"kafka": {"security_protocol": "SASL_SSL"}}, "kafka.credentials: security_protocol SASL_SSL needs credentials"),
        ({"kafka": {"security_protocol": "SASL_SSL", "credentials": {"sasl_username": "u"}}}, "sasl_password_env or sasl_password_file"),
        ({"agents": [{"name": "a" * 65, "cost": 0.1, "engine": {"type": "replay", "trace": "t"}}]}, "must be at most 64 characters"),
    ],
)
def test_bad_trust_and_liveness_settings_are_named(extra, needle):
    assert needle in problems(args(**extra))
