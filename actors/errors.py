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


class PublishFailed(DisrouterError):
    """A record could not be published: an error not worth retrying (too large, not
    authorised), or errors worth retrying that outlasted the publish timeout.

    `retriable` tells the two apart: only the second suggests the broker itself is away, in
    which case a message is better left unfinished (redelivered later) than given up.
    """

    def __init__(self, topic: str, reason: str, *, retriable: bool) -> None:
        super().__init__(f"could not publish to {topic}: {reason}")
        self.topic = topic
        self.reason = reason
        self.retriable = retriable
