"""The OpenAI chat-completions shapes the gateway speaks (a subset), as msgspec structs.

Requests are decoded leniently: an OpenAI client sends many sampling fields (temperature,
top_p, …) that a DiSRouter network decides for itself, so unknown fields are ignored rather
than refused. What DiSRouter adds travels in extension fields: `disrouter` on the request
(α, tags, hop bound) and on the response (who answered, the trail, the totals).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from disrouter.actors.contracts import Hop, Totals

Role = Literal["system", "developer", "user", "assistant", "tool"]


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class RoutingOptions(msgspec.Struct, forbid_unknown_fields=True):
    """DiSRouter's own request fields (`extra_body={"disrouter": {...}}` with the openai client)."""

    alpha: float | None = None
    tags: list[str] = []
    max_hops: int | None = None
    timeout_s: float | None = None  # may shorten the gateway's wait, never lengthen it


class ChatCompletionRequest(msgspec.Struct):
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    disrouter: RoutingOptions | None = None


class Usage(msgspec.Struct):
    """Tokens summed over every hop of the query, rejects included (what the network spent)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, totals: Totals) -> Usage:
        return cls(totals.tokens_in, totals.tokens_out, totals.tokens_in + totals.tokens_out)


class Trail(msgspec.Struct, omit_defaults=True):
    """The response extension: DiSRouter's view of how the query was routed."""

    id: str
    status: str
    alpha: float
    agent: str | None = None
    scenario: str | None = None
    forced: bool = False
    cost: float = 0.0
    trail: list[Hop] = []
    totals: Totals = msgspec.field(default_factory=Totals)
    # On the last chunk of a stream only, when the text streamed before the answer was not its
    # beginning (a redelivered query's other run): the whole answer, which the deltas are not.
    answer: str | None = None


class AssistantMessage(msgspec.Struct):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class Choice(msgspec.Struct):
    index: int
    message: AssistantMessage
    finish_reason: str = "stop"
    logprobs: None = None


class ChatCompletion(msgspec.Struct):
    id: str
    model: str
    choices: list[Choice]
    usage: Usage
    disrouter: Trail
    object: Literal["chat.completion"] = "chat.completion"
    created: int = msgspec.field(default_factory=lambda: int(time.time()))


class Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, omit_defaults=True):
    id: str
    model: str
    choices: list[ChunkChoice]
    created: int
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    usage: Usage | None = None
    disrouter: Trail | None = None


class Model(msgspec.Struct):
    id: str
    owned_by: str = "disrouter"
    object: Literal["model"] = "model"
    created: int = 0


class ModelList(msgspec.Struct):
    data: list[Model]
    object: Literal["list"] = "list"


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorDetail


def encode(obj: Any) -> bytes:
    return msgspec.json.encode(obj)
