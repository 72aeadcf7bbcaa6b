"""Rebalances without doubled work: fence in-flight queries of revoked partitions.

aiokafka rebalances eagerly: every membership change (a replica added or removed) revokes
*every* partition of every member, then hands out a new assignment. Work in flight for a
revoked partition must not publish after the partition has moved (its new owner re-reads it
from the last commit and does it again: duplicate LLM work, duplicate answers). So on revoke:

1. work in flight gets a short grace (`timeouts.rebalance_grace_s`) to finish and publish as
   usual: what finishes in it is committed before the move and never redone;
2. then the rest is *fenced*: it keeps computing but may not publish; work already publishing
   finishes (bounded), and what is finished is committed.

On the new assignment, a fenced partition that came back to this replica, with its committed
offset still where this replica left it (nobody else took it in between), is resumed: its
tracker is re-attached, the consumer seeks past the queries in flight (so they are not read
twice) and the fenced work publishes. A partition that moved elsewhere has its fenced work
cancelled (engines stop generating on cancel); the new owner redoes exactly those queries.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

from disrouter.actors.watermark import PartitionWatermark

if TYPE_CHECKING:
    from disrouter.actors.worker import AgentWorker

log = structlog.get_logger("disrouter.rebalance")


class Work:
    """One consumed record being handled by one task."""

    __slots__ = ("tp", "offset", "part", "started", "publishing", "fence", "task", "deadline", "expired")

    def __init__(self, tp: TopicPartition, offset: int, part: PartitionWatermark, started: float) -> None:
        self.tp = tp
        self.offset = offset
        self.part = part
        self.started = started  # monotonic
        self.publishing = False
        # While the engine works on it: when that must end (monotonic, `timeouts.process_s`),
        # and whether the worker's deadline sweep has cancelled the task for overrunning it.
        self.deadline: float | None = None
        self.expired = False
        self.fence: asyncio.Event | None = None  # set while the partition's owner is undecided
        self.task: asyncio.Task | None = None

    async def enter_publishing(self) -> None:
        """Wait while fenced; a fenced task whose partition moved is cancelled here."""
        while self.fence is not None:
            await self.fence.wait()
        self.publishing = True


class Fenced:
    __slots__ = ("part", "gate", "works")

    def __init__(self, part: PartitionWatermark, gate: asyncio.Event, works: list[Work]) -> None:
        self.part = part
        self.gate = gate
        self.works = works


class RebalanceFence(ConsumerRebalanceListener):
    def __init__(self, worker: AgentWorker) -> None:
        self.worker = worker
        self.fenced: dict[TopicPartition, Fenced] = {}

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        worker = self.worker
        if revoked:
            worker.stats["revocations"] += 1
        grace = worker.config.timeouts.rebalance_grace_s
        running = [w.task for w in worker.works() if w.tp in revoked and w.task is not None]
        if running and grace > 0:
            # No new record of these partitions is handed out from here on (aiokafka stopped
            # fetching them), so this only waits for work already started.
            await asyncio.wait(running, timeout=grace)
        works = [w for w in worker.works() if w.tp in revoked]
        # Fence, before anything else awaits: no task may start publishing from here on.
        gates: dict[TopicPartition, asyncio.Event] = {}
        for w in works:
            if not w.publishing:
                w.fence = gates.setdefault(w.tp, asyncio.Event())
        publishing = [w.task for w in works if w.publishing and w.task is not None]
        if publishing:
            # Each publish is bounded (timeouts.publish_s), a dead letter and a fallback
            # answer at most follow it.
            _, late = await asyncio.wait(publishing, timeout=4 * worker.config.timeouts.publish_s)
            for task in late:  # cannot be fenced mid-publish; its partition is about to move
                task.cancel()
        await worker.commit()
        for tp in revoked:
            part = worker.watermarks.detach(tp)
            pending = [w for w in works if w.tp == tp and w.fence is not None and w.task is not None and not w.task.done()]
            if part is None or not pending:
                continue
            self.fenced[tp] = Fenced(part, gates[tp], pending)
        worker.forget_stuck(revoked)
        log.info("revoked", agent=worker.config.name, partitions=len(revoked), fenced=sum(len(f.works) for f in self.fenced.values()))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        worker = self.worker
        worker.stats["assignments"] += 1
        worker.assignment_changed()
        resumed = cancelled = 0
        fenced, self.fenced = self.fenced, {}
        for tp, state in fenced.items():
            if tp in assigned and await self._still_ours(tp, state.part):
                worker.watermarks.attach(tp, state.part)
                if state.part.next_offset is not None:
                    worker.consumer.seek(tp, state.part.next_offset)
                for w in state.works:
                    w.fence = None
                state.gate.set()
                resumed += len(state.works)
            else:
                for w in state.works:
                    if w.task is not None and not w.task.done():
                        w.task.cancel()
                        cancelled += 1
        await worker.orphans_assigned(assigned)
        worker.stats["resumed_after_rebalance"] += resumed
        worker.stats["cancelled_on_revoke"] += cancelled
        log.info("assigned", agent=worker.config.name, partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
                 resumed=resumed, cancelled=cancelled)

    async def _still_ours(self, tp: TopicPartition, part: PartitionWatermark) -> bool:
        """True when nobody committed the partition since this replica last did: then nobody
        else finished work on it in between, and this replica's in-flight work is still due."""
        try:
            committed = await self.worker.consumer.committed(tp)
        except Exception as exc:  # noqa: BLE001 - unsure: cancel (the new read redoes the work)
            log.warning("committed_unknown", agent=self.worker.config.name, partition=f"{tp.topic}:{tp.partition}", error=repr(exc))
            return False
        return part.owns_commit(committed)

    def release_all(self) -> None:
        """The consumer is stopping: no assignment will decide, so cancel fenced work."""
        for state in self.fenced.values():
            for w in state.works:
                if w.task is not None and not w.task.done():
                    w.task.cancel()
        self.fenced.clear()
