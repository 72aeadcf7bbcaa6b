"""Recording metrics never fails a hop: Ray's counters refuse increments of 0, which an
unanswered query (cost 0) or an engine that reports no tokens would otherwise send them. Counter
increments are summed per tags and handed to Ray once per flush (each sample)."""

from __future__ import annotations

from disrouter.actors import metrics
from disrouter.actors.contracts import Answer, Hop, Scenario, Totals


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def warning(self, event: str, **kw) -> None:
        self.events.append((event, kw))

    debug = info = warning


def test_zero_tokens_and_zero_cost_are_recorded_without_errors(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(metrics, "log", recorder)
    agent = metrics.AgentMetrics("a", "n")
    hop = Hop(agent="a", decision="reject", error="engine failed")  # no tokens, no latency
    agent.hop(hop)
    agent.ended(Answer(id="q", status="unanswered", alpha=0.5, reason="r", trail=[hop], totals=Totals.of([hop])))
    answered = Hop(agent="a", decision="answer", tokens_in=3, tokens_out=2, cost=0.1, cost_usd=0.001)
    agent.ended(Answer(id="q2", status="answered", alpha=0.5, cost=0.1, trail=[answered], totals=Totals.of([answered])))
    agent.flush()
    assert recorder.events == []


class Counted:
    def __init__(self) -> None:
        self.calls: list[tuple[float, dict]] = []

    def inc(self, value: float, tags: dict) -> None:
        self.calls.append((value, tags))


def test_counter_increments_are_summed_per_tags_until_flushed():
    agent = metrics.AgentMetrics("a", "n")
    agent.answers = answers = Counted()  # type: ignore[assignment]
    agent.tokens = tokens = Counted()  # type: ignore[assignment]
    hop = Hop(agent="a", decision="answer", tokens_in=3, tokens_out=2, cost=0.1)
    for i, status in enumerate(["answered", "answered", "unanswered"]):
        agent.ended(Answer(id=f"q{i}", status=status, alpha=0.5, trail=[hop], totals=Totals.of([hop])))
    assert answers.calls == [] and tokens.calls == []  # nothing on the hot path
    agent.flush()
    by_status = {tags["status"]: value for value, tags in answers.calls}
    assert by_status == {"answered": 2, "unanswered": 1}
    assert sorted((tags["direction"], value) for value, tags in tokens.calls) == [("in", 9), ("out", 6)]
    agent.flush()  # handed over once
    assert len(answers.calls) == 2


class Gauged:
    def __init__(self) -> None:
        self.values: dict[tuple, float] = {}
        self.sets = 0

    def set(self, value: float, tags: dict) -> None:
        self.values[tuple(sorted(tags.items()))] = value
        self.sets += 1


def gauged(histogram: metrics.ReplicaHistogram) -> tuple[Gauged, Gauged, Gauged]:
    histogram.buckets, histogram.count, histogram.sum = gauges = Gauged(), Gauged(), Gauged()  # type: ignore[assignment]
    return gauges


def test_a_replica_histogram_exports_what_a_ray_histogram_would_with_the_exact_sum():
    histogram = metrics.ReplicaHistogram("h", "d", [2.5, 1.5, 10], ("agent",))
    assert histogram.les == ["1.5", "2.5", "10.0", "+Inf"]  # sorted, written as Ray's exporter writes them
    buckets, count, total = gauged(histogram)
    a, b = (("agent", "a"),), (("agent", "b"),)
    for value in (1, 1.5, 2, 2.5, 30):  # a value on a bound falls in that bound's bucket (≤ le)
        histogram.observe(value, a)
    histogram.observe(11, b)
    assert buckets.sets == 0  # nothing handed to Ray until the flush
    histogram.flush()
    assert {le: v for (agent, (_, le)), v in buckets.values.items() if agent == ("agent", "a")} == \
        {"1.5": 2, "2.5": 4, "10.0": 4, "+Inf": 5}  # cumulative
    assert {le: v for (agent, (_, le)), v in buckets.values.items() if agent == ("agent", "b")} == \
        {"1.5": 0, "2.5": 0, "10.0": 0, "+Inf": 1}
    assert count.values == {a: 5, b: 1} and total.values == {a: 37.0, b: 11.0}

    histogram.observe(3, a)  # still cumulative
    histogram.flush()
    assert buckets.values[(("agent", "a"), ("le", "10.0"))] == 5 and count.values[a] == 6 and total.values[a] == 40.0
    sets = buckets.sets
    histogram.flush()  # nothing new, every series set again all the same: Ray forgets a gauge left unset
    assert buckets.sets - sets == 8 and count.values == {a: 6, b: 1}


def test_hops_and_ends_record_into_the_replica_histograms_with_the_agents_tags():
    agent = metrics.AgentMetrics("a", "n")
    decision, _, _ = gauged(agent.decision_ms)
    hops_buckets, hops_count, _ = gauged(agent.hops)
    _, _, latency_sum = gauged(agent.latency_ms)
    first = Hop(agent="s", decision="reject", latency_ms=4.0)
    last = Hop(agent="a", decision="answer", latency_ms=20.0)
    agent.hop(Hop(agent="a", decision="reject", latency_ms=7.0))
    agent.ended(Answer(id="q", status="answered", alpha=0.5, scenario=Scenario("cost_first"), trail=[first, last],
                       totals=Totals.of([first, last])))
    agent.flush()

    def at(gauge: Gauged, **tags: str) -> float:
        return gauge.values[tuple(sorted({"agent": "a", "namespace": "n", **tags}.items()))]

    assert at(decision, decision="reject", le="10.0") == 1
    assert at(decision, decision="answer", le="10.0") == 0
    assert at(decision, decision="answer", le="25.0") == 1
    egress = {"scenario": "cost_first", "status": "answered"}
    assert len(hops_count.values) == 1 and at(hops_count, **egress) == 1
    assert at(hops_buckets, le="2.5", **egress) == 1 and at(hops_buckets, le="1.5", **egress) == 0
    assert len(latency_sum.values) == 1 and at(latency_sum, **egress) == 24.0
