"""Signed hand-offs: the shared key that tells an agent's message from anyone else's.

Kafka alone says nothing about who wrote a record (unless the cluster enforces ACLs), so every
message an agent passes to another agent carries an HMAC-SHA256 in the record header
`disrouter-mac`, over the destination topic, the record key and the value. The receiving agent
refuses a message on its own topic without a valid one: a client that produces straight to
`<ns>.agent.<name>` (to skip the cheap agents, force an answer, or forge a trail) is
dead-lettered. Binding the topic stops a signed message from being replayed into another
agent's topic.

Keys are text (at least 32 characters; `secrets.token_hex(32)` makes one). A key source may
hold several keys, one per line: the first signs, any of them verifies, so a key is rotated
without dead-lettering the hand-offs in flight (add the new key second, roll out, swap the
order, roll out, drop the old one).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from disrouter.actors.config import TrustSpec
from disrouter.actors.errors import DisrouterError

MAC_HEADER = "disrouter-mac"
MIN_KEY_CHARS = 32
_DOMAIN = b"disrouter-handoff-v1"


class TrustKeyError(DisrouterError):
    """No usable trust key where the topology says it is."""


def parse_keys(text: str, source: str) -> list[bytes]:
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    if not keys:
        raise TrustKeyError(f"{source} holds no key")
    short = [i + 1 for i, key in enumerate(keys) if len(key) < MIN_KEY_CHARS]
    if short:
        raise TrustKeyError(f"{source}: key {short[0]} is shorter than {MIN_KEY_CHARS} characters")
    return [key.encode() for key in keys]


class TrustKeys:
    """The signing key (first) and every key accepted when verifying."""

    def __init__(self, keys: list[bytes], source: str = "keys") -> None:
        if not keys:
            raise TrustKeyError("no trust key given")
        self._keys = list(keys)
        self.source = source  # where the keys came from, for messages; never the keys

    def __repr__(self) -> str:  # never print a key
        return f"TrustKeys(source={self.source!r}, count={len(self._keys)})"

    @classmethod
    def load(cls, spec: TrustSpec, environ: Mapping[str, str] | None = None) -> TrustKeys:
        """The keys of a topology's `trust:` spec: `key_file` if set, else `$key_env`."""
        environ = os.environ if environ is None else environ
        if spec.key_file:
            path = Path(spec.key_file).expanduser()
            try:
                text = path.read_text()
            except OSError as exc:
                raise TrustKeyError(f"trust.key_file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
            return cls(parse_keys(text, f"trust.key_file {str(path)!r}"), f"file {path}")
        value = environ.get(spec.key_env)
        if not value:
            raise TrustKeyError(
                f"no trust key: agents sign what they pass to each other with a shared key, read from "
                f"${spec.key_env} (trust.key_env) or trust.key_file; set it in every replica's environment "
                f"(`disrouter up` makes one for its local stack)"
            )
        return cls(parse_keys(value, f"${spec.key_env}"), f"${spec.key_env}")

    def mac(self, topic: str, key: bytes | None, value: bytes, signing_key: bytes | None = None) -> bytes:
        digest = hmac.new(signing_key or self._keys[0], digestmod=hashlib.sha256)
        # Lengths before each part, so no two (topic, key, value) triples share a message.
        for part in (_DOMAIN, topic.encode(), key or b"", value):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.digest()

    def sign(self, topic: str, key: bytes | None, value: bytes) -> list[tuple[str, bytes]]:
        """The record headers that make (topic, key, value) a trusted hand-off."""
        return [(MAC_HEADER, self.mac(topic, key, value))]

    def verify(self, topic: str, key: bytes | None, value: bytes, headers: Iterable[tuple[str, bytes]] | None) -> str | None:
        """None when a header carries a valid signature; else why not."""
        macs = [v for k, v in (headers or ()) if k == MAC_HEADER]
        if not macs:
            return "unsigned"
        if len(macs) > 1:
            return "signed more than once"
        for candidate in self._keys:
            if hmac.compare_digest(macs[0] or b"", self.mac(topic, key, value, candidate)):
                return None
        return "signature does not match (another key, or the message was altered or moved to another topic)"
