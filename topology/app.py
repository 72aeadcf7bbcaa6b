"""The Ray Serve application builder: `import_path: disrouter.topology.app:build_app`.

`serve deploy topology.yaml` calls `build_app(args)` with the application's `args:`; it returns
one Serve application holding a deployment per agent (named after the agent, with its replicas
and resources) behind a small status ingress.
"""

from __future__ import annotations

from typing import Any

import msgspec
from ray.serve import Application

from disrouter.actors.deployment import AgentDeployment, StatusIngress
from disrouter.topology.compile import actor_options, agent_configs
from disrouter.topology.load import parse_topology
from disrouter.topology.scaling import autoscaling_config
from disrouter.topology.schema import STATUS_DEPLOYMENT, Topology


def build_app(args: dict[str, Any]) -> Application:
    topology = args if isinstance(args, Topology) else parse_topology(dict(args))
    configs = agent_configs(topology)
    agents = []
    for spec in topology.agents:
        # A fixed replica count, or one that follows the agent's Kafka backlog (`scaling.py`).
        replicas: dict[str, Any] = (
            {"autoscaling_config": autoscaling_config(spec.autoscaling, spec.max_in_flight)}
            if spec.autoscaling is not None else {"num_replicas": spec.replicas}
        )
        agents.append(
            AgentDeployment.options(
                name=spec.name,
                **replicas,
                ray_actor_options=actor_options(spec),
                # Serve's request queue only carries status calls; queries come over Kafka.
                max_ongoing_requests=16,
            ).bind(msgspec.to_builtins(configs[spec.name]))
        )
    return StatusIngress.options(name=STATUS_DEPLOYMENT).bind(topology.namespace, topology.entry_agent, *agents)
