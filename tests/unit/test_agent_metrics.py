"""Recording metrics never fails a hop: Ray's counters refuse increments of 0, which an
unanswered query (cost 0) or an engine that reports no tokens would otherwise send them."""

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
    assert recorder.events == []
