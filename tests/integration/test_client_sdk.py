"""The correlation `Client` stays bounded under many waits (the gateway holds thousands): a
future leaves the pending table when it is answered, times out or is cancelled, whether or not
anyone awaits it, and only the most recent finished ids are remembered. Real broker, no Ray."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from disrouter.actors.config import KafkaSpec
from disrouter.actors.contracts import Answer, Query
from disrouter.actors.kafka import GAP_PATIENCE_S, make_producer
from disrouter.client.sdk import Client


async def test_waits_end_by_answer_deadline_or_cancel_and_memory_is_bounded(kafka_bootstrap, namespace):
    producer = make_producer(KafkaSpec(bootstrap_servers=kafka_bootstrap))
    await producer.start()

    async def answer(query_id: str) -> None:  # stands in for the answering agent
        value = msgspec.json.encode(Answer(id=query_id, status="answered", alpha=0.5, answer=f"a-{query_id}"))
        await producer.send_and_wait(f"{namespace}.answers", value, key=query_id.encode())

    try:
        async with Client(kafka_bootstrap, namespace, remember=3) as client:
            # submit() without ask(): nobody awaits the future, yet it expires and is dropped.
            orphan = await client.submit(Query(id="orphan", prompt="p"), timeout_s=0.5)
            assert client.pending == 1
            with pytest.raises(TimeoutError):
                await orphan
            assert client.pending == 0

            # A cancelled ask gives its wait up at once.
            task = asyncio.create_task(client.ask(Query(id="gone", prompt="p"), 60))
            while client.pending == 0:  # noqa: ASYNC110 - waits for the query to be sent
                await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert client.pending == 0

            # Answered waits resolve; only the last `remember` ids are kept for spotting copies.
            futures = [await client.submit(Query(id=f"q{i}", prompt="p"), timeout_s=60) for i in range(5)]
            for i in range(5):
                await answer(f"q{i}")
            assert [(await f).answer for f in futures] == [f"a-q{i}" for i in range(5)]
            assert client.pending == 0
            assert len(client._finished) == 3

            # A late copy of a remembered id is a duplicate; one of a forgotten id is a stranger.
            await answer("q4")
            await answer("q0")
            probe = await client.submit(Query(id="probe", prompt="p"), timeout_s=60)
            await answer("probe")  # same partition order is not guaranteed: wait for the probe itself
            await probe
            # The copy's partition may be read a fetch later than the probe's, or held back while
            # the reader waits out an offset gap (`GapGuard`, up to GAP_PATIENCE_S): on a loaded
            # machine (CI) a 5 s wait missed it once, so the wait outlasts that patience.
            deadline = time.monotonic() + 4 * GAP_PATIENCE_S
            while client.duplicates < 1 and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a counter
                await asyncio.sleep(0.05)
            assert client.duplicates == 1

            with pytest.raises(ValueError, match="already waiting"):
                await client.submit(Query(id="probe-2", prompt="p"), timeout_s=60)
                await client.submit(Query(id="probe-2", prompt="p"), timeout_s=60)
    finally:
        await producer.stop()
