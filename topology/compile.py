"""Topology → one AgentConfig per agent: everything a replica needs, nothing it must look up."""

from __future__ import annotations

import msgspec

from disrouter.actors import topics
from disrouter.actors.config import AgentConfig, Peer
from disrouter.topology.schema import AgentSpec, Topology

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
            stream_topic=topics.stream(ns),
            next=peers,
            policy=spec.policy,
            terminal=spec.is_terminal,
            awareness=spec.awareness,
            calibration=spec.calibration,
            reject_at=spec.reject_at,
            prices=spec.prices,
            gamma=topology.gamma,
            default_alpha=topology.alpha,
            max_hops=topology.max_hops,
            on_exhausted=topology.on_exhausted,
            max_in_flight=spec.max_in_flight,
            max_tokens=spec.max_tokens,
            kafka=(msgspec.structs.replace(topology.kafka, credentials=spec.kafka_credentials)
                   if spec.kafka_credentials is not None else topology.kafka),
            limits=topology.limits,
            trust=topology.trust,
            timeouts=spec.timeouts or topology.timeouts,
            all_topics=every_topic,
            agents=([Peer(name=a.name, cost=a.cost, topic=topics.agent(ns, a.name), tags=tuple(a.tags)) for a in topology.agents]
                    if spec.name == topology.entry_agent else []),
        )
    return configs


def actor_options(spec: AgentSpec | dict) -> dict:
    """The replica's Ray actor options: the agent's own, a default CPU share, and its engine's
    `env:` as the replica process's environment (Ray sets it before the process starts, so an
    engine never rewrites the environment of a running process)."""
    spec_options = spec.ray_actor_options if isinstance(spec, AgentSpec) else spec
    options = dict(spec_options)
    options.setdefault("num_cpus", DEFAULT_NUM_CPUS)
    env = spec.engine.get("env") if isinstance(spec, AgentSpec) else None
    if isinstance(env, dict) and env:
        runtime_env = dict(options.get("runtime_env") or {})
        # The topology's runtime_env wins where both name a variable: it is the more explicit.
        runtime_env["env_vars"] = {**{k: str(v) for k, v in env.items()}, **(runtime_env.get("env_vars") or {})}
        options["runtime_env"] = runtime_env
    return options
