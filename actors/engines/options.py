"""Validation of a topology's `engine:` options, shared by the engine classes."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from disrouter.actors.errors import EngineError

T = TypeVar("T", bound=msgspec.Struct)


def decode_options(cls: type[T], agent: str, engine: str, options: dict[str, Any]) -> T:
    """Options → the engine's msgspec Struct; the error names the agent and the bad option.

    msgspec's messages carry the path (`Object contains unknown field `retries``,
    `Expected `int`, got `str` - at `$.max_tokens``), and `__post_init__` checks raise
    ValueErrors that name their field.
    """
    try:
        return msgspec.convert(options, cls, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise EngineError(f"agent {agent!r}: invalid {engine} engine options: {exc}") from None
