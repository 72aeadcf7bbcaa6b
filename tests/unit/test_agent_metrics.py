"""Recording metrics never fails a hop: Ray's counters refuse increments of 0, which an
unanswered query (cost 0) or an engine that reports no tokens would otherwise send them. Counter
increments are summed per tags and handed to Ray once per flush (each sample)."""

from __future__ import annotations

from disrouter.actors import metrics
from disrouter.actors.contracts import Answer, Hop, Totals


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
