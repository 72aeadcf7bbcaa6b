"""Topology → one AgentConfig per agent: everything a replica needs, nothing it must look up."""

from __future__ import annotations

from disrouter.actors import topics
from disrouter.actors.config import AgentConfig, Peer
from disrouter.topology.schema import Topology

DEFAULT_NUM_CPUS = 0.25  # a 2-core laptop fits several agents; GPU agents set their own


def agent_configs(topology: Topology) -> dict[str, AgentConfig]:
    ns = topology.namespace
    by_name = {a.name: a for a in topology.agents}
    every_topic = topics.all_topics(ns, list(by_name))
    configs = {}
    for spec in topology.agents:
        inputs = [topics.agent(ns, spec.name)]
        if spec.name == topology.entry_agent:
            inputs.insert(0, topics.ingress(ns))
        peers = [
            Peer(name=n, cost=by_name[n].cost, topic=topics.agent(ns, n), tags=tuple(by_name[n].tags))
            for n in spec.next
        ]
        configs[spec.name] = AgentConfig(
            name=spec.name,
            namespace=ns,
            cost=spec.cost,
            engine=dict(spec.engine),
            input_topics=inputs,
            answers_topic=topics.answers(ns),
            dlq_topic=topics.dlq(ns),
            next=peers,
            policy=spec.policy,
            terminal=spec.is_terminal,
            awareness=spec.awareness,
            calibration=spec.calibration,
            prices=spec.prices,
            gamma=topology.gamma,
            default_alpha=topology.alpha,
            max_hops=topology.max_hops,
            on_exhausted=topology.on_exhausted,
            max_in_flight=spec.max_in_flight,
            max_tokens=spec.max_tokens,
            kafka=topology.kafka,
            limits=topology.limits,
            all_topics=every_topic,
        )
    return configs


def actor_options(spec_options: dict) -> dict:
    options = dict(spec_options)
    options.setdefault("num_cpus", DEFAULT_NUM_CPUS)
    return options
