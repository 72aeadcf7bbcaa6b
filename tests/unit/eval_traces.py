"""Tiny synthetic traces for the evaluation tests; every expected number is worked by hand there.

Chain a (0.1) → b (0.5) → c (0.9). Test queries, correctness per agent:

    q1  a=1 b=1 c=1   oracle: a     (everyone right)
    q2  a=0 b=1 c=1   oracle: b
    q3  a=0 b=0 c=1   oracle: c
    q4  a=0 b=0 c=0   oracle: a     (nobody right → the cheapest)
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from disrouter.actors.trace import TraceRecord
from disrouter.evaluation.evalset import Chain

CHAIN = Chain(("a", "b", "c"), (0.1, 0.5, 0.9))
CORRECT = {
    "q1": (1, 1, 1),
    "q2": (0, 1, 1),
    "q3": (0, 0, 1),
    "q4": (0, 0, 0),
}


def records(
    correct: dict[str, tuple[int, ...]] = CORRECT,
    *,
    agents: tuple[str, ...] = CHAIN.agents,
    split: str | None = None,
    confidence: dict[str, tuple[float, ...]] | None = None,
    decisions: dict[str, tuple[str | None, ...]] | None = None,
    latency: float | None = None,
    prompts: dict[str, str] | None = None,
) -> list[TraceRecord]:
    rows = []
    for qid, outcome in correct.items():
        for j, agent in enumerate(agents):
            rows.append(
                TraceRecord(
                    query_id=qid,
                    agent=agent,
                    correct=bool(outcome[j]),
                    confidence=None if confidence is None else confidence[qid][j],
                    decision=None if decisions is None else decisions[qid][j],
                    latency_ms=latency,
                    prompt=(prompts or {}).get(qid, f"question {qid}"),
                    split=split,
                )
            )
    return rows


def write(path: Path, rows: list[TraceRecord]) -> Path:
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in rows))
    return path
