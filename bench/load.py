"""The benchmarks' load loop: a closed loop, a fixed number of queries in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def closed_loop(ids: range, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    """Run `one(i)` for every id with `concurrency` in flight: that many senders, each sending
    its next id once its last one is answered. (A task per id behind a semaphore would make the
    load generator pay for every id not yet sent: its waiters are scanned and removed one by
    one, which at 1,024 in flight cost more CPU than the chain it loads.)"""
    pending = iter(ids)

    async def sender() -> None:
        for i in pending:  # shared: each id goes to one sender
            await one(i)

    await asyncio.gather(*(sender() for _ in range(max(1, min(concurrency, len(ids))))))
