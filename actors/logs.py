"""structlog set-up shared by the replicas, the gateway and the CLI: one JSON object per line.

Every line of a query's handling carries its `query_id` and the `agent` (bound once per hop in
the worker, through contextvars, so the engine, publisher and agent lines all get them):
`grep '"query_id": "q-1"'` over every replica's log follows one query across agents. The first
keys are always timestamp, level, event, query_id, agent; the rest follow as logged.

`DISROUTER_LOG_FORMAT=console` renders key=value lines instead (for a terminal);
`DISROUTER_LOG_LEVEL` sets the level (INFO).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO, cast

import structlog

_configured = False
KEY_ORDER = ("timestamp", "level", "event", "query_id", "agent")


class _Stderr:
    """Whatever sys.stderr is at write time: a logger built earlier must not keep a stale one
    (pytest swaps stderr per test; Ray redirects it per worker)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _ordered(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    head = {key: event.pop(key) for key in KEY_ORDER if key in event}
    return {**head, **event}


def renderer(fmt: str | None = None) -> Any:
    if (fmt or os.environ.get("DISROUTER_LOG_FORMAT", "json")).lower() == "console":
        return structlog.processors.KeyValueRenderer(key_order=list(KEY_ORDER), drop_missing=True)
    return structlog.processors.JSONRenderer(default=repr)


def configure_logging(level: str | None = None) -> None:
    global _configured
    if _configured:
        return
    level_name = (level or os.environ.get("DISROUTER_LOG_LEVEL", "INFO")).upper()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _ordered,
            renderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level_name)),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _Stderr())),
        cache_logger_on_first_use=True,
    )
    _configured = True
