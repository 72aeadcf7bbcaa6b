"""The HTTP side of the gateway: a Ray Serve application with a FastAPI ingress.

    POST <route_prefix>/chat/completions    (stream: server-sent events)
    GET  <route_prefix>/models

Deploy it next to a topology (`disrouter up` does, at route prefix /v1), or on its own:

    applications:
      - name: gateway
        route_prefix: /v1
        import_path: disrouter.gateway.app:build_app
        args: {namespace: chain, kafka: {bootstrap_servers: broker:9092}}
        # or several topologies, one model id each:
        # args: {kafka: {…}, networks: [{namespace: chain, model: chain}, {namespace: mesh, model: mesh}]}

Each replica holds one `Client`: one reply consumer shared by every request of the replica,
futures by query id. A request whose client goes away is cancelled by Serve, and so is its wait.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from ray import serve
from ray.serve import Application

from disrouter.actors import heap
from disrouter.actors.logs import configure_logging
from disrouter.gateway.metrics import GatewayMetrics
from disrouter.gateway.protocol import ChatCompletionRequest, encode
from disrouter.gateway.serving import ChatService, GatewayError, GatewaySpec

# Serve pickles the FastAPI app with the class: nothing unpicklable (msgspec decoders) at module level.
api = FastAPI(title="DiSRouter OpenAI-compatible gateway", docs_url=None, redoc_url=None)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(encode(body), status_code=status, media_type="application/json", headers=headers)


def _error(exc: GatewayError) -> Response:
    # A retry would send the whole query through the network again: the openai client must not
    # do that on its own (it retries 5xx unless told not to).
    return _json(exc.body, exc.status, {"x-should-retry": "false"})


@serve.deployment(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.05})
@serve.ingress(api)
class Gateway:
    async def __init__(self, spec: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits an async constructor
        configure_logging()
        heap.tune()  # thousands of waits in flight: see `actors/heap.py`
        config = msgspec.convert(spec, GatewaySpec)
        self.service = ChatService(config, GatewayMetrics())
        await self.service.start()

    @api.get("/models")
    async def models(self) -> Response:
        return _json(self.service.list_models())

    @api.post("/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body(), type=ChatCompletionRequest)
        except msgspec.DecodeError as exc:
            return _error(GatewayError(400, f"invalid request: {exc}", "invalid_request_error", "invalid_request"))
        try:
            if body.stream:
                events = await self.service.stream(body)
                return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
            return _json(await self.service.complete(body))
        except GatewayError as exc:
            return _error(exc)

    async def stats(self) -> dict[str, int]:
        """For `disrouter status` and tests: waits held now, late copies dropped."""
        return {"pending": self.service.pending, "duplicates": self.service.duplicates}

    async def __del__(self) -> None:
        await self.service.stop()


def build_app(args: dict[str, Any]) -> Application:
    spec = msgspec.convert(dict(args), GatewaySpec)
    spec.all_networks()  # fail at deploy time on a gateway that fronts nothing
    return Gateway.options(  # type: ignore[attr-defined]  # @serve.deployment makes it a Deployment
        num_replicas=spec.replicas, ray_actor_options=spec.ray_actor_options or {"num_cpus": 0.05}).bind(
        msgspec.to_builtins(spec))
