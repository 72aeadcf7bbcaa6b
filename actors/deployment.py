"""The Ray Serve deployment that hosts one agent: a replica runs one AgentWorker.

Replicas of an agent share its consumer group, so Kafka spreads the agent's partitions over
them; scaling an agent is `replicas:` in the topology. Serve's health check fails as soon as
the consume loop dies or stalls (no progress with work pending, `worker.stalled`), so Serve
restarts the replica instead of leaving a silent zombie.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from ray import serve

from disrouter.actors import heap
from disrouter.actors.config import AgentConfig
from disrouter.actors.engine import build_engine
from disrouter.actors.logs import configure_logging
from disrouter.actors.metrics import AgentMetrics
from disrouter.actors.worker import AgentWorker


@serve.deployment(max_ongoing_requests=16, health_check_period_s=5, health_check_timeout_s=10)
class AgentDeployment:
    # The config travels as plain builtins: Serve pickles the bound arguments and the class,
    # and msgspec objects (encoders, decoders) are made here, inside the replica.
    async def __init__(self, config: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits an async constructor
        configure_logging()
        # Fewer collections walking queries still in flight (`heap.py`); Serve freezes what
        # start-up made once this constructor returns.
        heap.tune()
        self.config = msgspec.convert(config, AgentConfig)
        self.worker = AgentWorker(self.config, build_engine(self.config.engine, agent=self.config.name))
        self.metrics = self.worker.observer = AgentMetrics(self.config.name, self.config.namespace)
        await self.worker.start()
        self._sampler = asyncio.create_task(self.metrics.run(self.worker), name=f"metrics-{self.config.name}")

    async def check_health(self) -> None:
        failure = self.worker.failure
        if failure is not None:
            raise RuntimeError(f"agent {self.config.name!r} consume loop is unhealthy: {failure!r}")

    async def stats(self) -> dict[str, Any]:
        return self.worker.snapshot()

    async def __call__(self, request: Any = None) -> dict[str, Any]:
        return self.worker.snapshot()

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's replica-reported autoscaling metrics: this replica's consumer backlog
        (`topology/scaling.py` turns the agent's total into a replica count)."""
        return self.metrics.autoscaling_stats()

    async def __del__(self) -> None:
        # Serve calls __del__ when the replica is stopped (scale-down, redeploy, shutdown).
        self._sampler.cancel()
        await self.worker.stop()
        self.metrics.flush()  # what the last queries counted since the last sample


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.05})
class StatusIngress:
    """The application's ingress: a read-only status view over the agents of a topology.

    Queries never pass through here (they flow over Kafka); Serve needs one ingress per
    application, and this one binds every agent deployment so one config deploys them all.
    """

    def __init__(self, namespace: str, entry: str, *agents: Any) -> None:
        self.namespace = namespace
        self.entry = entry
        self.agents = agents

    async def status(self) -> dict[str, Any]:
        stats = [await handle.stats.remote() for handle in self.agents]
        return {"namespace": self.namespace, "entry": self.entry, "agents": stats}

    async def __call__(self, request: Any = None) -> dict[str, Any]:
        return await self.status()
