"""Prometheus metrics of one agent replica, through Ray Serve's metrics API.

Ray exports them from every node's metrics agent (`ray start --metrics-export-port`), with the
Serve tags `deployment`, `replica`, `application` added, and prefixes every name with `ray_`:
`disrouter_agent_consumed` is scraped as `ray_disrouter_agent_consumed_total`.

Three sources, chosen so the consume loop carries no Ray metric call at all:
- the worker's `stats` counters (consumed, answered, rejected, dead-lettered, …) are turned into
  Prometheus counters by their increments, on every `sample()`;
- each published outcome (`hop`, `ended`): the hop's decision latency and tokens, and at the
  egress (the agent that ends a query) its hops, latency, tokens and dollars per scenario.
  Counters are summed here and histograms bucketed here (`ReplicaHistogram`), and both are
  handed to Ray with each sample (`flush`): a Ray metric call costs 2 µs or more, and per query
  the chain made four histogram observations and a dozen counter increments, which cost the
  replay chain of `bench.fabric` a fifth of its throughput;
- the consumer: lag per assigned partition (end offset − position) and queries in flight,
  sampled every `interval_s`; the same numbers are the agent's autoscaling signal (`backlog`).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import Counter as Tally
from typing import TYPE_CHECKING, Any

import structlog
from ray.serve.metrics import Counter, Gauge

from disrouter.actors.contracts import Answer, Hop

if TYPE_CHECKING:
    from disrouter.actors.worker import AgentWorker

log = structlog.get_logger("disrouter.metrics")

# The worker's stats counters exported as Prometheus counters (the rest stay in `disrouter status`).
COUNTED = ("consumed", "answered", "rejected", "unanswered", "dead_lettered", "timed_out", "publish_failed",
           "stream_chunks", "stream_failed")
_HELP = {"stream_chunks": "Chunks of answers' text published while generated (streaming queries)",
         "stream_failed": "Chunk publishes that failed (the answer still went out whole)"}
LATENCY_MS: list[float] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000]
# Between whole numbers, so each bucket holds exact hop counts (a Ray `Histogram`, as the gateway's,
# exports a `_sum` built from bucket midpoints: there, use the counters for the mean).
HOPS: list[float] = [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 8.5, 12.5, 16.5, 32.5]


# A metric's tags as a hashable key, made once per distinct set and shared by every record with them.
TagKey = tuple[tuple[str, str], ...]


def _inc(counter: Counter, value: float | None, tags: dict[str, str]) -> None:
    # Ray's counters refuse an increment of 0 (no tokens, an unanswered query's cost of 0).
    if value:
        counter.inc(value, tags)


def _keys(*names: str) -> Any:
    # Ray types `tag_keys` as a 1-tuple (`Tuple[str]`); any tuple of names is what it takes.
    return names


class ReplicaHistogram:
    """A Prometheus histogram kept in the replica and handed to Ray on each flush.

    Observing is a bisect and three additions; `flush` sets, for every tag set observed, the
    cumulative `<name>_bucket{le=…}`, `<name>_count` and `<name>_sum` series:
    the names, `le` labels and values a Ray `Histogram` exports, with the exact sum (Ray's is
    built from bucket midpoints). Ray takes no counts, only one call per value, so the series are
    handed over as gauges: PromQL's `rate` and `histogram_quantile` read them as they read a
    histogram's (a replica that restarts starts a new `replica` series, as a histogram would).
    Every series is set on every flush, changed or not: Ray drops a gauge that has not been set
    for about 30 s, and a histogram's series must not vanish while its agent is idle.
    """

    def __init__(self, name: str, description: str, boundaries: list[float], tag_keys: tuple[str, ...]) -> None:
        self.name = name
        self.bounds = sorted(boundaries)
        # As Ray's exporter writes them: "10.0", "1.5", then "+Inf".
        self.les = [repr(float(bound)) for bound in self.bounds] + ["+Inf"]
        self.buckets = Gauge(f"{name}_bucket", f"{description} (cumulative count of values <= le)", tag_keys=_keys(*tag_keys, "le"))
        self.count = Gauge(f"{name}_count", f"{description} (count)", tag_keys=_keys(*tag_keys))
        self.sum = Gauge(f"{name}_sum", f"{description} (sum)", tag_keys=_keys(*tag_keys))
        # Per tag set: [count in each bucket (not cumulative; the last one is +Inf)…, count, sum].
        self._series: dict[TagKey, list[float]] = {}

    def observe(self, value: float, tags: TagKey) -> None:
        series = self._series.get(tags)
        if series is None:
            series = self._series[tags] = [0.0] * (len(self.les) + 2)
        series[bisect_left(self.bounds, value)] += 1  # bucket `le` holds values ≤ le
        series[-2] += 1
        series[-1] += value

    def flush(self) -> None:
        for tags, series in self._series.items():
            labels = dict(tags)
            cumulative = 0.0
            for le, n in zip(self.les, series, strict=False):
                cumulative += n
                self.buckets.set(cumulative, {**labels, "le": le})
            self.count.set(series[-2], labels)
            self.sum.set(series[-1], labels)


class AgentMetrics:
    def __init__(self, agent: str, namespace: str) -> None:
        self.tags = {"agent": agent, "namespace": namespace}
        keys = ("agent", "namespace")  # every metric of an agent carries these
        self.counters = {
            name: Counter(f"disrouter_agent_{name}", _HELP.get(name, f"Queries {name.replace('_', ' ')} by this agent"),
                          tag_keys=_keys(*keys))
            for name in COUNTED
        }
        self.decision_ms = ReplicaHistogram("disrouter_agent_decision_latency_ms", "Engine call + decision of one hop, ms",
                                            LATENCY_MS, (*keys, "decision"))
        self.tokens = Counter("disrouter_agent_tokens", "Tokens this agent's engine read and generated",
                              tag_keys=_keys(*keys, "direction"))
        self.in_flight = Gauge("disrouter_agent_in_flight", "Queries in work in this replica", tag_keys=_keys(*keys))
        self.lag = Gauge("disrouter_agent_consumer_lag", "Records behind the consumer's position, per partition",
                         tag_keys=_keys(*keys, "topic", "partition"))
        # Per query, recorded by the agent that ends it (the egress of the network).
        egress = (*keys, "scenario", "status")
        self.answers = Counter("disrouter_query_answers", "Queries ended here (answered or unanswered)", tag_keys=_keys(*egress))
        self.hops = ReplicaHistogram("disrouter_query_hops", "Agents a query visited", HOPS, egress)
        self.visits = Counter("disrouter_query_visits", "Hops of ended queries, summed (exact mean hops)", tag_keys=_keys(*egress))
        self.latency_ms = ReplicaHistogram("disrouter_query_latency_ms", "Sum of a query's hop latencies (engine time), ms",
                                           LATENCY_MS, egress)
        self.query_tokens = Counter("disrouter_query_tokens", "Tokens over every hop of ended queries",
                                    tag_keys=_keys(*egress, "direction"))
        self.query_usd = Counter("disrouter_query_cost_usd", "Dollars over every hop of ended queries", tag_keys=_keys(*egress))
        self.query_cost = Counter("disrouter_query_cost", "Normalised cost (the paper's metric) of ended queries",
                                  tag_keys=_keys(*egress))
        # Counter increments not handed to Ray yet, per (counter, tags).
        self._sums: dict[tuple[Counter, TagKey], float] = {}
        self._tag_keys: dict[TagKey, TagKey] = {}
        self._seen: Tally[str] = Tally()
        self._lagging: set[tuple[str, str]] = set()
        self.backlog = 0.0  # last sampled lag over this replica's partitions + in flight

    def _with(self, **extra: str) -> dict[str, str]:
        return {**self.tags, **extra}

    def _key(self, *extra: tuple[str, str]) -> TagKey:
        """The agent's tags and `extra`, as one key shared by every record with those tags."""
        key = self._tag_keys.get(extra)
        if key is None:
            key = self._tag_keys[extra] = (*self.tags.items(), *extra)
        return key

    def _add(self, counter: Counter, value: float | None, tags: TagKey) -> None:
        if value:
            key = (counter, tags)
            self._sums[key] = self._sums.get(key, 0.0) + value

    def flush(self) -> None:
        """Hand the summed counter increments and the histograms to Ray (each sample, and when
        the replica stops)."""
        sums, self._sums = self._sums, {}
        for (counter, tags), value in sums.items():
            try:
                _inc(counter, value, dict(tags))
            except Exception as exc:  # noqa: BLE001 - a metric must never fail the replica
                log.warning("metrics_failed", agent=self.tags["agent"], error=repr(exc))
        for histogram in (self.decision_ms, self.hops, self.latency_ms):
            try:
                histogram.flush()
            except Exception as exc:  # noqa: BLE001 - a metric must never fail the replica
                log.warning("metrics_failed", agent=self.tags["agent"], metric=histogram.name, error=repr(exc))

    # --- per outcome -----------------------------------------------------------------------------

    def hop(self, hop: Hop) -> None:
        """One hop of this agent was published (a reject passed on, or the query ended here)."""
        try:
            self.decision_ms.observe(hop.latency_ms, self._key(("decision", hop.decision)))
            self._add(self.tokens, hop.tokens_in, self._key(("direction", "in")))
            self._add(self.tokens, hop.tokens_out, self._key(("direction", "out")))
        except Exception as exc:  # noqa: BLE001 - a metric must never fail a published hop
            log.warning("metrics_failed", agent=self.tags["agent"], error=repr(exc))

    def ended(self, answer: Answer) -> None:
        """A query ends at this agent: its own hop, and the query as a whole."""
        if answer.trail and answer.trail[-1].agent == self.tags["agent"]:
            self.hop(answer.trail[-1])
        try:
            scenario = ("scenario", answer.scenario.value if answer.scenario else "alpha")
            status = ("status", answer.status)
            tags = self._key(scenario, status)
            totals = answer.totals
            self._add(self.answers, 1, tags)
            self.hops.observe(totals.hops, tags)
            self._add(self.visits, totals.hops, tags)
            self.latency_ms.observe(totals.latency_ms, tags)
            self._add(self.query_tokens, totals.tokens_in, self._key(scenario, status, ("direction", "in")))
            self._add(self.query_tokens, totals.tokens_out, self._key(scenario, status, ("direction", "out")))
            self._add(self.query_cost, answer.cost, tags)
            self._add(self.query_usd, totals.cost_usd, tags)
        except Exception as exc:  # noqa: BLE001 - a metric must never fail a published answer
            log.warning("metrics_failed", agent=self.tags["agent"], error=repr(exc))

    # --- sampled ---------------------------------------------------------------------------------

    async def sample(self, worker: AgentWorker) -> None:
        self.flush()
        for name in COUNTED:
            delta = worker.stats[name] - self._seen[name]
            if delta > 0:
                self.counters[name].inc(delta, self.tags)
                self._seen[name] = worker.stats[name]
        in_flight = len(worker.works())
        self.in_flight.set(in_flight, self.tags)
        consumer = worker.consumer
        tps = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        total = 0
        lagging = set()
        if tps:
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                lag = max(0, ends[tp] - await consumer.position(tp))
                total += lag
                key = (tp.topic, str(tp.partition))
                lagging.add(key)
                self.lag.set(lag, self._with(topic=key[0], partition=key[1]))
        for topic, partition in self._lagging - lagging:  # moved to another replica: not ours to report
            self.lag.set(0, self._with(topic=topic, partition=partition))
        self._lagging = lagging
        self.backlog = float(total + in_flight)

    async def run(self, worker: AgentWorker, interval_s: float = 2.0) -> None:
        """Sample until cancelled; a failed sample (a rebalance, the broker away) is skipped."""
        while True:
            try:
                await self.sample(worker)
            except Exception as exc:  # noqa: BLE001 - metrics never take the replica down
                log.debug("metrics_sample_failed", agent=self.tags["agent"], error=repr(exc))
            await asyncio.sleep(interval_s)

    def autoscaling_stats(self) -> dict[str, Any]:
        return {"backlog": self.backlog}
