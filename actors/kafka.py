"""Kafka clients configured the way the runtime relies on them.

Tansu (the local broker) has no idempotent producer or transactions through aiokafka, so the
design is at-least-once: publish, then commit; consumers of answers de-duplicate by query id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from disrouter.actors.config import KafkaSpec


def make_producer(spec: KafkaSpec, *, max_request_size: int = 1_048_576 * 2) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=spec.bootstrap_servers,
        security_protocol=spec.security_protocol,
        acks="all",
        enable_idempotence=False,
        linger_ms=spec.linger_ms,
        max_request_size=max_request_size,
    )


def make_consumer(spec: KafkaSpec, *topics: str, group_id: str | None, **overrides) -> AIOKafkaConsumer:
    options = dict(
        bootstrap_servers=spec.bootstrap_servers,
        security_protocol=spec.security_protocol,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=spec.auto_offset_reset,
        session_timeout_ms=spec.session_timeout_ms,
        heartbeat_interval_ms=spec.heartbeat_interval_ms,
        fetch_max_wait_ms=spec.fetch_max_wait_ms,
    )
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def ensure_topics(spec: KafkaSpec, names: Iterable[str], partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created. Idempotent."""
    admin = AIOKafkaAdminClient(bootstrap_servers=spec.bootstrap_servers, security_protocol=spec.security_protocol)
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


async def wait_for_broker(spec: KafkaSpec, timeout_s: float = 30.0) -> None:
    """Block until the bootstrap server accepts TCP connections."""
    host, _, port = spec.bootstrap_servers.split(",")[0].rpartition(":")
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"Kafka at {spec.bootstrap_servers} not reachable after {timeout_s}s") from None
            await asyncio.sleep(0.1)
