"""Kafka clients configured the way the runtime relies on them.

Tansu (the local broker) has no idempotent producer or transactions through aiokafka, so the
design is at-least-once: publish, then commit; consumers of answers de-duplicate by query id.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from disrouter.actors.config import KafkaSpec
from disrouter.actors.errors import DisrouterError


class KafkaConfigError(DisrouterError):
    """TLS/SASL settings that cannot work (a missing secret, a SASL protocol with no user)."""


def _secret(env: str | None, file: str | None, what: str) -> str | None:
    if file:
        try:
            return Path(file).expanduser().read_text().strip()
        except OSError as exc:
            raise KafkaConfigError(f"{what}: cannot read {file!r}: {exc.strerror or exc}") from None
    if env:
        value = os.environ.get(env)
        if not value:
            raise KafkaConfigError(f"{what}: ${env} is not set")
        return value
    return None


def connection_options(spec: KafkaSpec) -> dict[str, Any]:
    """The aiokafka keyword arguments that say where the brokers are and who we are to them.

    Secrets are read here, inside the process that connects, never from the topology.
    """
    options: dict[str, Any] = {"bootstrap_servers": spec.bootstrap_servers, "security_protocol": spec.security_protocol}
    creds = spec.credentials
    if spec.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        context = create_ssl_context(
            cafile=spec.ssl_cafile,
            certfile=creds.ssl_certfile if creds else None,
            keyfile=creds.ssl_keyfile if creds else None,
            password=_secret(creds.ssl_password_env, None, "kafka.credentials.ssl_password_env") if creds else None,
        )
        context.check_hostname = spec.ssl_check_hostname
        options["ssl_context"] = context
    if spec.security_protocol.startswith("SASL_"):
        if creds is None or not creds.sasl_username:
            raise KafkaConfigError(f"security_protocol {spec.security_protocol} needs kafka.credentials.sasl_username")
        options["sasl_mechanism"] = spec.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = creds.sasl_username
        options["sasl_plain_password"] = _secret(
            creds.sasl_password_env, creds.sasl_password_file, "kafka.credentials.sasl_password"
        )
        if options["sasl_plain_password"] is None:
            raise KafkaConfigError("SASL needs kafka.credentials.sasl_password_env or sasl_password_file")
    return options


def make_producer(spec: KafkaSpec, *, max_request_size: int = 1_048_576 * 2, **overrides: Any) -> AIOKafkaProducer:
    options = dict(
        **connection_options(spec),
        acks="all",
        enable_idempotence=False,
        linger_ms=spec.linger_ms,
        max_request_size=max_request_size,
    )
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(spec: KafkaSpec, *topics: str, group_id: str | None, **overrides) -> AIOKafkaConsumer:
    options = dict(
        **connection_options(spec),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=spec.auto_offset_reset,
        session_timeout_ms=spec.session_timeout_ms,
        heartbeat_interval_ms=spec.heartbeat_interval_ms,
        fetch_max_wait_ms=spec.fetch_max_wait_ms,
        max_poll_interval_ms=spec.max_poll_interval_ms,
    )
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def ensure_topics(spec: KafkaSpec, names: Iterable[str], partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created. Idempotent."""
    admin = AIOKafkaAdminClient(**connection_options(spec))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if not missing:
            return []
        new = [NewTopic(n, partitions or spec.partitions, spec.replication_factor) for n in missing]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass  # another replica won the race: the topics exist, which is all we need
        return missing
    finally:
        await admin.close()


async def list_topics(spec: KafkaSpec) -> set[str]:
    admin = AIOKafkaAdminClient(**connection_options(spec))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def committed_offsets(spec: KafkaSpec, group: str, topic: str) -> dict[TopicPartition, int]:
    """Where `group` has committed each partition of `topic` (partitions it never committed are
    left out). Reads the offsets only: it does not join the group."""
    probe = make_consumer(spec, group_id=group)
    await probe.start()
    try:
        await probe.topics()  # loads the metadata that names the topic's partitions
        out = {}
        for partition in sorted(probe.partitions_for_topic(topic) or ()):
            tp = TopicPartition(topic, partition)
            offset = await probe.committed(tp)
            if offset is not None:
                out[tp] = offset
        return out
    finally:
        await probe.stop()


# How long a reader waits for the records of a gap in a partition's offsets before taking the
# gap as real (a compacted topic, transaction markers), re-reading from its start meanwhile.
GAP_PATIENCE_S = 5.0


class GapGuard:
    """Keeps a tail reader from skipping records that the broker serves out of order.

    With several producers writing one partition, Tansu (the local broker) can serve a later
    record batch before an earlier one is readable: a fetch then returns offsets …41, 48… and
    the reader's position moves past 42–47, which it never sees, although the broker
    acknowledged them and serves them to a later read. DiSRouter's topics are neither
    compacted nor transactional, so their offsets are dense: a jump is such a batch. `check`
    drops the records after the jump and seeks back to it, so they are read again, in order,
    once the batch is readable; a gap still there after `GAP_PATIENCE_S` is taken as real.
    """

    def __init__(self, consumer: AIOKafkaConsumer, patience_s: float = GAP_PATIENCE_S) -> None:
        self.consumer = consumer
        self.patience_s = patience_s
        self.rereads = 0
        self._next: dict[TopicPartition, int] = {}  # the offset after the last record passed on
        self._gaps: dict[tuple[TopicPartition, int], float] = {}  # gap start → first seen (monotonic)

    def check(self, batches: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        out = {}
        assigned = self.consumer.assignment() if batches else set()
        for tp, records in batches.items():
            expected = self._next.get(tp)
            for i, record in enumerate(records):
                if expected is not None and record.offset > expected and not self._accept_gap(tp, expected):
                    if tp in assigned:  # (a partition a rebalance took is read afresh by its next owner)
                        self.consumer.seek(tp, expected)  # also drops what was fetched after the gap
                    self.rereads += 1
                    records = records[:i]
                    break
                expected = record.offset + 1
            if records:
                self._next[tp] = records[-1].offset + 1
                out[tp] = records
        if self._gaps:  # gaps read since are closed
            self._gaps = {k: v for k, v in self._gaps.items() if k[1] >= self._next.get(k[0], 0)}
        return out

    def _accept_gap(self, tp: TopicPartition, start: int) -> bool:
        now = time.monotonic()
        first = self._gaps.setdefault((tp, start), now)
        if now - first < self.patience_s:
            return False
        del self._gaps[(tp, start)]
        return True

    def forget(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """After a seek or a new assignment: the next record of these partitions is where reading is."""
        for tp in list(self._next) if tps is None else tps:
            self._next.pop(tp, None)
        self._gaps = {k: v for k, v in self._gaps.items() if k[0] in self._next}
