"""The gateway's Prometheus metrics (Ray Serve's metrics API, exported as `ray_disrouter_gateway_*`):
the true end-to-end view of a query, from the HTTP request to its answer, per model name."""

from __future__ import annotations

from typing import Any

from ray.serve.metrics import Counter, Histogram

from disrouter.actors.metrics import HOPS, LATENCY_MS


def _keys(*names: str) -> Any:
    return names  # Ray types tag_keys as a 1-tuple


class GatewayMetrics:
    def __init__(self) -> None:
        self.requests = Counter("disrouter_gateway_requests", "Chat completions by outcome (ok, timeout, unanswered, cancelled)",
                                tag_keys=_keys("namespace", "model", "outcome"))
        self.latency_ms = Histogram("disrouter_gateway_latency_ms", "End-to-end latency: query sent to answer read, ms",
                                    boundaries=LATENCY_MS, tag_keys=_keys("namespace", "model"))
        self.hops = Histogram("disrouter_gateway_hops", "Agents visited by the queries answered through the gateway",
                              boundaries=HOPS, tag_keys=_keys("namespace", "model"))

    def request(self, namespace: str, model: str, outcome: str, latency_ms: float | None = None, hops: int | None = None) -> None:
        tags = {"namespace": namespace, "model": model}
        self.requests.inc(1, {**tags, "outcome": outcome})
        if latency_ms is not None:
            self.latency_ms.observe(latency_ms, tags)
        if hops is not None:
            self.hops.observe(hops, tags)
