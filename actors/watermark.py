"""Commit watermarks: how far each partition may be committed when work finishes out of order.

Many queries are in flight at once and finish in any order, but a Kafka offset commit means
"everything before this is done". So each partition commits only up to its lowest unfinished
offset; a crash re-delivers the unfinished ones (at-least-once), never skips them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class PartitionWatermark:
    """Tracks started/finished offsets of one partition.

    Offsets are started in increasing order (Kafka delivers a partition in order), so a deque
    of pending offsets with a done-set gives O(1) amortised start/finish.
    """

    __slots__ = ("_pending", "_done", "_next_commit", "_committed", "_first_started", "_last_started")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._next_commit: int | None = None  # offset the next commit should carry
        self._committed: int | None = None  # offset last handed to Kafka
        self._first_started: int | None = None
        self._last_started: int | None = None

    def start(self, offset: int) -> None:
        if self._pending and offset <= self._pending[-1]:
            raise ValueError(f"offset {offset} started out of order (last {self._pending[-1]})")
        if not self._pending and self._next_commit is not None and offset < self._next_commit:
            raise ValueError(f"offset {offset} is below the watermark {self._next_commit}")
        self._pending.append(offset)
        if self._first_started is None:
            self._first_started = offset
        self._last_started = offset

    def finish(self, offset: int) -> None:
        if not self._pending or offset < self._pending[0] or offset in self._done:
            raise ValueError(f"offset {offset} was not in flight")
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            done = self._pending.popleft()
            self._done.discard(done)
            self._next_commit = done + 1

    @property
    def in_flight(self) -> int:
        return len(self._pending) - len(self._done)

    def committable(self) -> int | None:
        """The offset to commit now, or None when nothing new is safe to commit."""
        if self._next_commit is None or self._next_commit == self._committed:
            return None
        return self._next_commit

    def mark_committed(self, offset: int) -> None:
        self._committed = offset

    def owns_commit(self, committed: int | None) -> bool:
        """Whether the group's committed offset is still where this tracker left it (its own
        last commit, or, before it committed anything, where it started reading): then no
        other consumer finished work on the partition since."""
        if self._committed is not None:
            return committed == self._committed
        return committed is None or committed == self._first_started

    @property
    def next_offset(self) -> int | None:
        """The offset after the last one started: where reading resumes without re-reading
        work still in flight (None: nothing was started)."""
        return None if self._last_started is None else self._last_started + 1


class Watermarks:
    """One PartitionWatermark per assigned partition, keyed by aiokafka's TopicPartition."""

    def __init__(self) -> None:
        self._parts: dict[object, PartitionWatermark] = {}

    def start(self, tp: object, offset: int) -> PartitionWatermark:
        """Start an offset; finish it on the returned tracker.

        Holding the tracker (not the partition) matters after a rebalance: a query that was in
        flight when its partition was revoked finishes on the dropped tracker, harmlessly, and
        never corrupts the tracker of a later assignment of the same partition.
        """
        part = self._parts.setdefault(tp, PartitionWatermark())
        part.start(offset)
        return part

    def committable(self) -> dict[object, int]:
        out = {}
        for tp, part in self._parts.items():
            offset = part.committable()
            if offset is not None:
                out[tp] = offset
        return out

    def mark_committed(self, offsets: dict[object, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].mark_committed(offset)

    def drop(self, tps: Iterable[object]) -> None:
        for tp in tps:
            self._parts.pop(tp, None)

    def detach(self, tp: object) -> PartitionWatermark | None:
        """Take a partition's tracker out (its partition was revoked), to `attach` it again if
        the partition comes back to this consumer with its work still in flight."""
        return self._parts.pop(tp, None)

    def attach(self, tp: object, part: PartitionWatermark) -> None:
        self._parts[tp] = part

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self._parts.values())
