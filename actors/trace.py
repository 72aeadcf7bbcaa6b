"""Replay traces: recorded outcomes, one JSON line per (query, agent).

The format is a public contract (README, "Wire format"): external traces are fed to the
replay engine and to `disrouter eval` as they are, so only `query_id`, `agent` and `correct`
are required and unknown fields are tolerated rather than rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import msgspec

from disrouter.actors.errors import TraceFormatError


class TraceRecord(msgspec.Struct, omit_defaults=True):
    query_id: str
    agent: str
    correct: bool
    answer: str | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    confidence: float | None = None
    decision: Literal["answer", "reject"] | None = None
    prompt: str | None = None
    task: str | None = None
    split: str | None = None
    # A live run's query that got no answer (an `unanswered` Answer, or none before the
    # timeout): set on its lines so the evaluation counts it as a failure, never drops it.
    status: Literal["unanswered", "timeout"] | None = None


_decoder = msgspec.json.Decoder(TraceRecord)
_encoder = msgspec.json.Encoder()


def parse_lines(lines: Iterable[bytes | str], source: str = "<trace>") -> Iterator[TraceRecord]:
    """Decode trace lines, skipping blank ones; a bad line raises with its 1-based number."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = _decoder.decode(line)
        except msgspec.ValidationError as exc:
            raise TraceFormatError(source, line_no, f"does not match the trace format: {exc}") from None
        except msgspec.DecodeError as exc:
            raise TraceFormatError(source, line_no, f"is not valid JSON: {exc}") from None
        if record.confidence is not None and not 0.0 <= record.confidence <= 1.0:
            raise TraceFormatError(source, line_no, f"confidence {record.confidence} is outside [0, 1]")
        yield record


def read_trace(path: str | Path) -> list[TraceRecord]:
    path = Path(path)
    with path.open("rb") as fh:
        return list(parse_lines(fh, str(path)))


def write_trace(path: str | Path, records: Iterable[TraceRecord]) -> int:
    n = 0
    with Path(path).open("wb") as fh:
        for record in records:
            fh.write(_encoder.encode(record) + b"\n")
            n += 1
    return n
