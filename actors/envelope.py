"""The envelope: turning Kafka bytes into a validated Query, and results back into bytes.

Every rule a message must satisfy is checked here, at the edge, and every breach raises
`MalformedMessage` with a reason a person can act on; the consume loop sends those to the
dead-letter topic and carries on.
"""

from __future__ import annotations

import base64
import uuid

import msgspec

from disrouter.actors.config import Limits
from disrouter.actors.contracts import Answer, DeadLetter, Query
from disrouter.actors.errors import MalformedMessage
from disrouter.actors.topics import is_legal_topic


class Envelope:
    """Decoder/encoders for one agent. Built inside the replica (msgspec objects don't pickle)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._decoder = msgspec.json.Decoder(Query)
        self._encoder = msgspec.json.Encoder()

    def decode(self, value: bytes | None, key: bytes | None = None, *, max_bytes: int | None = None) -> Query:
        """The structural rules every query meets, wherever it comes from. Who may set what
        (ingress vs. agent hand-offs) is `boundary.py`'s job, on top of this. `max_bytes`
        defaults to the ingress limit; hand-offs get room for their trail."""
        limits = self.limits
        max_bytes = limits.max_message_bytes if max_bytes is None else max_bytes
        if value is None:
            raise MalformedMessage("empty", "message has no value (tombstone)")
        if len(value) > max_bytes:
            raise MalformedMessage("limit", f"message is {len(value)} bytes, over the limit of {max_bytes}")
        try:
            query = self._decoder.decode(value)
        except msgspec.ValidationError as exc:
            raise MalformedMessage("schema", f"does not match the Query schema: {exc}") from None
        except msgspec.DecodeError as exc:
            raise MalformedMessage("invalid_json", f"not valid JSON: {exc}") from None

        if not query.prompt.strip():
            raise MalformedMessage("schema", "`prompt` is empty")
        if len(query.prompt) > limits.max_prompt_chars:
            raise MalformedMessage(
                "limit", f"`prompt` is {len(query.prompt)} characters, over the limit of {limits.max_prompt_chars}"
            )
        if query.alpha is not None and not 0.0 <= query.alpha <= 1.0:
            raise MalformedMessage("schema", f"`alpha` must be within [0, 1], got {query.alpha}")
        if query.max_hops is not None and not 1 <= query.max_hops <= limits.max_hops:
            raise MalformedMessage(
                "limit", f"`max_hops` must be within [1, {limits.max_hops}], got {query.max_hops}"
            )
        if len(query.tags) > limits.max_tags:
            raise MalformedMessage("limit", f"{len(query.tags)} tags, over the limit of {limits.max_tags}")
        if query.reply_to is not None and not is_legal_topic(query.reply_to):
            raise MalformedMessage("schema", f"`reply_to` {query.reply_to!r} is not a legal topic name")
        if len(query.trail) >= limits.max_hops:
            raise MalformedMessage("limit", f"trail already has {len(query.trail)} hops")
        if query.id is None:
            # The Kafka key is the query id when the producer set one; else mint one so the
            # answer can still be matched (and logged) by a stable id.
            query.id = key.decode("utf-8", "replace") if key else f"q-{uuid.uuid4().hex}"
        if not query.id or len(query.id) > limits.max_id_chars:
            raise MalformedMessage("limit", f"`id` must be 1..{limits.max_id_chars} characters")
        return query

    def encode(self, message: Query | Answer | DeadLetter) -> bytes:
        return self._encoder.encode(message)


def raw_value(value: bytes | None) -> tuple[str, str]:
    """Keep a dead message's bytes verbatim: text when UTF-8, else base64."""
    if value is None:
        return "", "utf-8"
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


def dead_letter_bytes(letter: DeadLetter, raw: bytes | None, budget: int, encode) -> bytes:
    """Encode a dead letter carrying `raw`, cut so the whole letter fits `budget` bytes.

    A letter over the producer's request limit could never be published, and a dead letter
    that cannot be published would hold its partition forever. Base64 and JSON escaping make
    the encoded size hard to predict, so the value is cut in proportion until the letter fits.
    """
    raw = raw or b""
    text = raw_value(raw)[1] == "utf-8"
    cut = raw
    while True:
        letter.value, letter.value_encoding = raw_value(cut)
        letter.value_truncated = len(cut) < len(raw)
        letter.value_bytes = len(raw) if letter.value_truncated else None
        data = encode(letter)
        if len(data) <= budget or not cut:
            return data
        # Shrink in proportion to the overshoot, with a margin for the letter's other fields.
        cut = cut[: max(0, min(len(cut) - 1, len(cut) * budget // len(data) - 1024))]
        if text:  # cut on a character boundary, so text stays text
            cut = cut.decode("utf-8", "ignore").encode("utf-8")
