"""structlog set-up shared by the replicas and the CLI: one JSON-ish line per event."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO, cast

import structlog

_configured = False


class _Stderr:
    """Whatever sys.stderr is at write time: a logger built earlier must not keep a stale one
    (pytest swaps stderr per test; Ray redirects it per worker)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


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
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event", "query_id", "agent"], drop_missing=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level_name)),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _Stderr())),
        cache_logger_on_first_use=True,
    )
    _configured = True
