"""The backlog policy's arithmetic and the topology's autoscaling checks (Serve's wrapper adds
bounds and delays; the integration test runs the whole loop)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from disrouter.topology.errors import TopologyError
from disrouter.topology.load import parse_topology
from disrouter.topology.scaling import BacklogPolicy


def ctx(backlogs: dict[str, float] | None, target: int = 1):
    return SimpleNamespace(aggregated_metrics=None if backlogs is None else {"backlog": backlogs}, target_num_replicas=target)


def test_one_replica_per_target_backlog_summed_over_replicas():
    policy = BacklogPolicy(target_backlog=8)
    assert policy(ctx({"r1": 20, "r2": 5}))[0] == 4  # ⌈25 / 8⌉
    assert policy(ctx({"r1": 8}))[0] == 1
    assert policy(ctx({"r1": 0, "r2": 0}, target=2))[0] == 1  # drained: down to one (Serve bounds it)
    assert policy(ctx(None, target=3))[0] == 3  # no report yet: keep Serve's target


def _agents(autoscaling):
    return {"namespace": "n", "agents": [{"name": "a", "cost": 0.1, "engine": {"type": "replay", "trace": "t.jsonl"},
                                          "autoscaling": autoscaling}]}


@pytest.mark.parametrize(("autoscaling", "field"), [
    ({"max_replicas": 2, "min_replicas": 0}, "autoscaling.min_replicas"),
    ({"max_replicas": 1, "min_replicas": 2}, "autoscaling.max_replicas"),
    ({"max_replicas": 2, "target_backlog": 0}, "autoscaling.target_backlog"),
    ({"max_replicas": 2, "look_back_period_s": 1, "metrics_interval_s": 2}, "autoscaling.look_back_period_s"),
])
def test_bad_autoscaling_bounds_are_named(autoscaling, field):
    with pytest.raises(TopologyError, match=field.replace(".", r"\.")):
        parse_topology(_agents(autoscaling))


def test_an_autoscaled_agent_gets_serves_autoscaling_config_with_the_policy():
    from disrouter.topology.app import build_app

    app = build_app(_agents({"max_replicas": 3, "min_replicas": 1}))
    agent = app._bound_deployment.init_args[2]  # StatusIngress(namespace, entry, *agents)
    config = agent._bound_deployment._deployment_config.autoscaling_config
    assert (config.min_replicas, config.max_replicas) == (1, 3)
    assert config.policy.policy_function == "disrouter.topology.scaling:BacklogPolicy"
    assert config.policy.policy_kwargs == {"target_backlog": 32}  # the agent's max_in_flight
