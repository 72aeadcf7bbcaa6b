"""Garbage-collector settings for the long-lived processes that move queries.

CPython's cyclic collector starts a young collection every 700 container objects allocated
(net of those freed). A query in flight lives for tens to hundreds of milliseconds while many
others are handled, so its objects (the fetched record, the Query, its task and futures)
survive two young collections and are promoted to the old generation; that promotion is what
triggers full collections, and a full collection walks every object of the process (a Ray
process holds hundreds of thousands). Measured with the fabric's chain in one process
(`bench/chain_cpu.py`: three replay agents and the client, 256 queries in flight): the
collector took 93–111 µs of the 260–290 µs of Python CPU a query cost; with the objects that
exist after start-up frozen and young collections every 5,000 allocations, 6–10 µs.

- freeze (`gc.freeze`): what exists once a process has started (modules, Ray, the engine and
  its trace or weights) lives until it exits; frozen, no collection walks it again. Serve
  already does this at the end of a replica's start-up (`RAY_SERVE_FREEZE_GC_ON_STARTUP`),
  so agent replicas and the gateway need only the threshold; a client process of its own
  (a benchmark's driver, a tool) calls `settle()` once it is connected.
- threshold: young collections every `YOUNG_THRESHOLD` allocations instead of 700, so
  queries mostly finish before a collection can promote them. Garbage in reference cycles
  (rare here: exceptions with their tracebacks) waits a little longer to be freed; memory does
  not grow with it, since a collection still comes every few thousand allocations.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 5000


def tune() -> None:
    """Young collections every `YOUNG_THRESHOLD` allocations (the older generations keep
    CPython's ratios: every 10th young collection also collects the middle one, and so on)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def settle() -> None:
    """For a process that has finished starting: free what start-up left, freeze the rest, and
    `tune()`. Call it once; objects made later are collected as usual."""
    gc.collect()
    gc.freeze()
    tune()
