"""The replica's deadline sweep (actors/worker.py): an engine call past `timeouts.process_s` is
cancelled by the sweep and ends `unanswered`, saying so; any other cancellation of the same
task (a revoke, a stop), even at the same moment, still cancels it. No Kafka: the worker's
per-query step is driven directly."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition

from disrouter.actors.agent import Final
from disrouter.actors.config import AgentConfig
from disrouter.actors.contracts import Query
from disrouter.actors.engine import EngineRequest, EngineResult
from disrouter.actors.rebalance import Work
from disrouter.actors.watermark import PartitionWatermark
from disrouter.actors.worker import AgentWorker


class HangingEngine:
    provides_confidence = False

    def __init__(self) -> None:
        self.cancelled = 0

    async def generate(self, request: EngineRequest) -> EngineResult:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")


def worker(engine: HangingEngine) -> AgentWorker:
    config = AgentConfig(name="solo", namespace="ns", cost=0.5, engine={}, input_topics=["ns.ingress"],
                         answers_topic="ns.answers", dlq_topic="ns.dlq")
    return AgentWorker(config, engine)  # type: ignore[arg-type]


async def in_work(agent: AgentWorker) -> tuple[Work, asyncio.Task]:
    work = Work(TopicPartition("ns.ingress", 0), 0, PartitionWatermark(), time.monotonic())
    task = asyncio.create_task(agent._process_once(Query(id="q", prompt="p"), work))
    work.task = task
    agent._work[task] = work
    await asyncio.sleep(0.01)  # inside the engine
    assert work.deadline is not None
    return work, task


async def test_an_overdue_engine_call_ends_unanswered_and_the_engine_is_cancelled():
    engine = HangingEngine()
    agent = worker(engine)
    work, task = await in_work(agent)
    assert agent.expire_overdue() == 0  # not due yet (process_s is minutes)
    assert work.deadline is not None
    assert agent.expire_overdue(now=work.deadline) == 1
    outcome, internal = await task
    assert isinstance(outcome, Final) and outcome.answer.status == "unanswered" and internal is None
    assert outcome.answer.reason is not None and "timed out after" in outcome.answer.reason
    assert engine.cancelled == 1 and agent.stats["timed_out"] == 1
    assert work.deadline is None and agent.expire_overdue(now=time.monotonic() + 1e6) == 0  # swept once


async def test_another_cancellation_at_the_same_moment_still_cancels_the_task():
    agent = worker(HangingEngine())
    work, task = await in_work(agent)
    assert work.deadline is not None
    agent.expire_overdue(now=work.deadline)
    task.cancel()  # a revoke or a stop
    with pytest.raises(asyncio.CancelledError):
        await task
    assert agent.stats["timed_out"] == 0


async def test_a_cancellation_that_is_not_the_sweeps_is_no_timeout():
    agent = worker(HangingEngine())
    _, task = await in_work(agent)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert agent.stats["timed_out"] == 0
