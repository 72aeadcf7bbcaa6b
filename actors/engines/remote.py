"""A remote agent: any OpenAI-compatible `/v1/chat/completions` server (a vLLM server, a hosted
model). The paper plugs strong closed models into the network this way, without training them.

    engine:
      type: openai
      base_url: http://127.0.0.1:8000/v1
      model: gpt-4o-mini
      api_key_env: OPENAI_API_KEY      # or api_key_file: /run/secrets/openai

The reply is streamed so a reject is recognised after its first few tokens and the stream is
closed (cheap rejects: a closed connection makes vLLM and hosted APIs stop generating).
Failures that are worth retrying (429, 5xx, connection errors, timeouts) are retried with
exponential backoff, honouring Retry-After; anything else fails at once with the server's reason.
The API key is held only in the client's headers: it is never part of the options, a log line
or an error message.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import structlog

from disrouter.actors.engine import EngineRequest, EngineResult
from disrouter.actors.engines.options import decode_options
from disrouter.actors.engines.prompting import (
    PromptStyle,
    ReplyWatch,
    as_dicts,
    build_messages,
    confidence_from_logprobs,
)
from disrouter.actors.errors import EngineError

log = structlog.get_logger("disrouter.engines.remote")

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAIOptions(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    base_url: str
    model: str
    # Where the key comes from; neither set means no Authorization header (a local server).
    api_key_env: str | None = None
    api_key_file: str | None = None
    timeout_s: float = 120.0  # a whole attempt, first byte to last
    read_timeout_s: float = 60.0  # longest silence between two streamed chunks
    connect_timeout_s: float = 5.0
    max_retries: int = 3
    backoff_s: float = 0.5  # first retry's wait; doubles, with jitter, up to backoff_max_s
    backoff_max_s: float = 8.0
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    stream: bool = True
    # vLLM's server can report usage in every chunk, so a stream cut short on a reject still
    # knows its token counts; hosted APIs reject the field, hence off by default.
    continuous_usage_stats: bool = False
    max_connections: int = 64
    headers: dict[str, str] = {}
    extra_body: dict[str, Any] = {}
    prompt: PromptStyle = msgspec.field(default_factory=PromptStyle)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        for name in ("timeout_s", "read_timeout_s", "connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_retries < 0:
            raise ValueError("max_retries must be ≥ 0")
        if any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("do not put the Authorization header in the topology; use api_key_env or api_key_file")


class _Retry(Exception):
    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


class OpenAIEngine:
    """Engine over an OpenAI-compatible chat completions endpoint."""

    # It asks for log-probs; a server that sends none makes the agent pass the query on with
    # the hop's `error` saying so (agent.py), never answer unaware.
    provides_confidence = True

    def __init__(self, options: OpenAIOptions, agent: str = "") -> None:
        self.options = options
        self.agent = agent
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_options(cls, agent: str = "", **options: Any) -> OpenAIEngine:
        if "api_key" in options:
            raise EngineError(
                f"agent {agent!r}: option 'api_key' is not accepted (a topology file is no place for "
                "a secret); name an environment variable with api_key_env or a file with api_key_file"
            )
        return cls(decode_options(OpenAIOptions, agent, "openai", options), agent=agent)

    def __repr__(self) -> str:  # the key lives in the client headers; never print them
        return f"OpenAIEngine(agent={self.agent!r}, base_url={self.options.base_url!r}, model={self.options.model!r})"

    def _api_key(self) -> str | None:
        opts = self.options
        if opts.api_key_env:
            key = os.environ.get(opts.api_key_env)
            if not key:
                raise EngineError(f"agent {self.agent!r}: environment variable {opts.api_key_env} (api_key_env) is not set")
            return key.strip()
        if opts.api_key_file:
            path = Path(opts.api_key_file).expanduser()
            try:
                key = path.read_text().strip()
            except OSError as exc:
                raise EngineError(f"agent {self.agent!r}: cannot read api_key_file {str(path)!r}: {exc.strerror}") from None
            if not key:
                raise EngineError(f"agent {self.agent!r}: api_key_file {str(path)!r} is empty")
            return key
        return None

    async def start(self) -> None:
        opts = self.options
        headers = {"Content-Type": "application/json", **opts.headers}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=opts.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(opts.read_timeout_s, connect=opts.connect_timeout_s),
            limits=httpx.Limits(max_connections=opts.max_connections, max_keepalive_connections=opts.max_connections),
        )
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder()
        log.info("remote_engine_started", agent=self.agent, base_url=opts.base_url, model=opts.model)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- one request ---------------------------------------------------------------------------

    def _body(self, request: EngineRequest) -> dict[str, Any]:
        opts = self.options
        body: dict[str, Any] = {
            "model": opts.model,
            "messages": as_dicts(build_messages(request, opts.prompt)),
            "max_tokens": request.max_tokens or opts.max_tokens,
            "temperature": opts.temperature,
            "stream": opts.stream,
        }
        if opts.top_p is not None:
            body["top_p"] = opts.top_p
        if request.want_confidence:
            body["logprobs"] = True
            body["top_logprobs"] = 0
        if opts.stream:
            body["stream_options"] = {"include_usage": True}
            if opts.continuous_usage_stats:
                body["stream_options"]["continuous_usage_stats"] = True
        body.update(opts.extra_body)
        return body

    async def generate(self, request: EngineRequest) -> EngineResult:
        if self._client is None:
            raise EngineError("engine not started")
        opts = self.options
        bound = log.bind(query_id=request.query_id, agent=self.agent)
        body = self._encoder.encode(self._body(request))
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(opts.timeout_s):
                    if opts.stream:
                        return await self._stream(body, request)
                    return await self._once(body, request)
            except _Retry as exc:
                reason, hinted = str(exc), exc.wait_s
            except TimeoutError:
                reason, hinted = f"no complete reply within timeout_s={opts.timeout_s}", None
            except httpx.TimeoutException as exc:
                reason, hinted = f"{type(exc).__name__} (read_timeout_s={opts.read_timeout_s})", None
            except httpx.TransportError as exc:
                reason, hinted = f"{type(exc).__name__}: {exc}", None
            if attempt >= opts.max_retries:
                raise EngineError(f"{opts.base_url}: giving up after {attempt + 1} attempt(s): {reason}")
            wait = min(opts.backoff_max_s, opts.backoff_s * 2**attempt) * random.uniform(0.8, 1.2)
            if hinted is not None:
                wait = min(max(wait, hinted), opts.backoff_max_s)
            attempt += 1
            bound.warning("remote_retry", attempt=attempt, reason=reason, wait_s=round(wait, 3))
            await asyncio.sleep(wait)

    def _check(self, response: httpx.Response, payload: bytes) -> None:
        if response.status_code < 400:
            return
        detail = payload[:300].decode("utf-8", "replace")
        reason = f"HTTP {response.status_code}: {detail}"
        if response.status_code in RETRY_STATUS:
            raise _Retry(reason, _retry_after(response))
        raise EngineError(f"{self.options.base_url}: {reason}")

    async def _once(self, body: bytes, request: EngineRequest) -> EngineResult:
        assert self._client is not None
        response = await self._client.post("/chat/completions", content=body)
        payload = await response.aread()
        self._check(response, payload)
        data = self._decoder.decode(payload)
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        pieces = _logprob_pieces(choice.get("logprobs"))
        usage = data.get("usage") or {}
        return EngineResult(
            text=text,
            tokens_in=int(usage.get("prompt_tokens") or 0),
            tokens_out=int(usage.get("completion_tokens") or len(pieces)),
            confidence=confidence_from_logprobs(pieces, text) if request.want_confidence else None,
            cost_usd=_usage_cost(usage),
        )

    async def _stream(self, body: bytes, request: EngineRequest) -> EngineResult:
        assert self._client is not None
        # The reply so far, appended to (not joined again from every piece at each chunk); the
        # watch reads it each chunk but scans only what it has not settled yet.
        reply = ""
        pieces: list[tuple[str, float]] = []
        usage: dict[str, Any] = {}
        chunks = 0
        stopped = False
        watch = ReplyWatch(request)
        started = time.perf_counter()
        async with self._client.stream("POST", "/chat/completions", content=body) as response:
            if response.status_code >= 400:
                self._check(response, await response.aread())
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = self._decoder.decode(data)
                if event.get("error"):  # vLLM reports mid-stream failures as an error event
                    raise _Retry(f"stream error: {event['error']}")
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or ():
                    delta = (choice.get("delta") or {}).get("content") or ""
                    if delta:
                        chunks += 1
                        reply += delta
                    pieces.extend(_logprob_pieces(choice.get("logprobs")))
                if watch.feed(reply):
                    # Leaving the block closes the connection: the server stops generating.
                    stopped = True
                    break
        tokens_out = int(usage.get("completion_tokens") or 0)
        if stopped or not tokens_out:
            # Usage may lag or never come for a stream we cut: count what we received.
            tokens_out = max(tokens_out, len(pieces), chunks)
        log.debug(
            "remote_reply",
            query_id=request.query_id,
            agent=self.agent,
            stopped_early=stopped,
            tokens_out=tokens_out,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return EngineResult(
            text=reply,
            tokens_in=int(usage.get("prompt_tokens") or 0),
            tokens_out=tokens_out,
            confidence=confidence_from_logprobs(pieces, reply) if request.want_confidence else None,
            decision="reject" if watch.rejected else None,
            cost_usd=_usage_cost(usage),
            stopped_early=stopped,
        )


def _logprob_pieces(logprobs: dict[str, Any] | None) -> list[tuple[str, float]]:
    if not logprobs:
        return []
    return [(item.get("token", ""), float(item["logprob"])) for item in logprobs.get("content") or () if "logprob" in item]


def _usage_cost(usage: dict[str, Any]) -> float | None:
    # Some gateways (OpenRouter, LiteLLM proxies) report the dollars of a call in its usage.
    cost = usage.get("cost")
    return float(cost) if isinstance(cost, (int, float)) else None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
