"""The benchmarks' load loop: every id is sent exactly once, with the requested number in
flight and never more (a closed loop: a sender sends its next id once its last is answered);
and the fabric benchmark's arguments are refused before it starts anything."""

from __future__ import annotations

import asyncio

import pytest

from disrouter.bench.load import closed_loop


@pytest.mark.parametrize(("n", "concurrency"), [(100, 8), (5, 8), (1, 1), (0, 4)])
def test_closed_loop_sends_each_id_once_with_the_concurrency_in_flight(n, concurrency):
    sent: list[int] = []
    in_flight = peak = 0

    async def one(i: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        sent.append(i)
        await asyncio.sleep(0.001 * (i % 3))  # answers come back out of order
        in_flight -= 1

    asyncio.run(closed_loop(range(10, 10 + n), concurrency, one))
    assert sorted(sent) == list(range(10, 10 + n))
    assert peak == min(n, concurrency)


def test_closed_loop_stops_at_the_first_failure():
    async def one(i: int) -> None:
        if i == 3:
            raise RuntimeError("query 3 unanswered")
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="query 3"):
        asyncio.run(closed_loop(range(10), 2, one))


def test_scale_counts_are_parsed_and_a_bad_one_is_refused_before_anything_starts():
    import argparse
    import subprocess
    import sys

    from disrouter.bench.fabric import parse_counts

    assert parse_counts("2,4") == [2, 4] and parse_counts(" 8 ") == [8] and parse_counts("") == []
    for bad in ("''", "2;4", "0", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="such as 2,4"):
            parse_counts(bad)
    # A refused value ends the run with argparse's usage error, before any broker is started.
    done = subprocess.run([sys.executable, "-m", "disrouter.bench.fabric", "--scale-replicas", "''"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "argument --scale-replicas" in done.stderr and "got \"''\"" in done.stderr, done.stderr
