"""Exception types of the runtime, one family per failure a caller may want to tell apart."""

from __future__ import annotations


class DisrouterError(Exception):
    """Base of every error this package raises on purpose."""


class MalformedMessage(DisrouterError):
    """A Kafka value that cannot become a Query: it goes to the dead-letter topic.

    `kind` is a short machine-readable tag (invalid_json, schema, limit, …) and the message is
    the human-readable reason written into the DeadLetter.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class EngineError(DisrouterError):
    """An engine failed to produce a reply for one request."""


class UnknownEngine(DisrouterError):
    """A topology names an engine type that is not registered."""


class TraceFormatError(DisrouterError):
    """A replay-trace line does not follow the documented format; names the line."""

    def __init__(self, path: str, line_no: int, reason: str) -> None:
        super().__init__(f"{path}:{line_no}: {reason}")
        self.path = path
        self.line_no = line_no
        self.reason = reason
