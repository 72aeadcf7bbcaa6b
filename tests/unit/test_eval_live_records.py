"""Live mode's trace writing, without a broker: answers in, replay-trace lines out."""

import math

import numpy as np
import pytest

from disrouter.actors.contracts import Answer, Hop
from disrouter.actors.decision import REJECT_PHRASE
from disrouter.evaluation.evalset import Chain, build
from disrouter.evaluation.live import LiveError, deployed_items, deployed_records, forced_records, merge
from disrouter.evaluation.methods import Context
from disrouter.evaluation.methods.disrouter import Recorded
from disrouter.evaluation.metrics import score
from disrouter.training.data import Item

CHAIN = Chain(("small", "large"), (0.1, 0.9))
ITEMS = [
    Item("g-1", "gsm8k", "2 + 2?", "4", "numeric", "test"),
    Item("g-2", "gsm8k", "3 * 3?", "9", "numeric", "test"),
    Item("g-3", "gsm8k", "10 - 1?", "9", "numeric", "test"),
    Item("g-4", "gsm8k", "5 + 5?", "10", "numeric", "test"),
]


def hop(agent, decision, **kw):
    return Hop(agent=agent, decision=decision, latency_ms=kw.pop("latency_ms", 10.0), cost=0.1 if agent == "small" else 0.9, **kw)


def answered(qid, agent, text, trail, **kw):
    return Answer(id=qid, status="answered", alpha=0.5, answer=text, agent=agent, trail=trail, **kw)


DEPLOYED = {
    # small answers right
    "g-1": answered("g-1", "small", "The answer is: 4", [hop("small", "answer", confidence=0.9)]),
    # small rejects, large answers wrong
    "g-2": answered("g-2", "large", "The answer is: 8", [hop("small", "reject", confidence=0.2), hop("large", "answer", latency_ms=30.0)]),
    # nobody answered: a failure of the live run, counted as wrong
    "g-3": Answer(id="g-3", status="unanswered", alpha=0.5, reason="exhausted", trail=[hop("small", "reject")]),
    # g-4: no answer before the timeout (absent)
}


def test_deployed_lines_grade_the_answer_and_leave_reject_hops_unknown():
    rows = deployed_records(ITEMS, DEPLOYED, CHAIN)
    assert [(r.query_id, r.agent, r.decision, r.correct, r.status) for r in rows] == [
        ("g-1", "small", "answer", True, None),
        ("g-2", "small", "reject", False, None),
        ("g-2", "large", "answer", False, None),
        ("g-3", "small", "reject", False, "unanswered"),
        ("g-4", "small", None, False, "timeout"),
    ]
    reject = rows[1]
    assert reject.answer == REJECT_PHRASE and reject.confidence == 0.2
    assert rows[0].split == "test" and rows[0].prompt == "2 + 2?" and rows[2].latency_ms == 30.0
    table = build(rows[:3], CHAIN)
    assert math.isnan(table.correct[1, 0])  # g-2 at small: unknown, not wrong
    # Replaying the recorded decisions gives back what happened: g-1 small (right), g-2 large (wrong).
    routing = Recorded().route(Context(None, table.hidden(), 0.5, 0.5, 0))
    result = score("disrouter-live", "disrouter", routing, table, 0.5, seed=0)
    assert result.accuracy == 0.5 and result.cost == pytest.approx(0.5)
    assert result.cumulative_cost == pytest.approx((0.1 + 1.0) / 2)
    assert result.latency_ms == pytest.approx((10 + 40) / 2)
    assert result.failed == 0
    # The failures are in the table, unknown rather than wrong at the agent they stopped at.
    full = build(rows, CHAIN)
    assert full.n == 4 and full.failed.tolist() == [False, False, True, True]
    assert np.isnan(full.correct[2:, 0]).all()


def forced_answers(override=None):
    texts = {("g-1", "small"): "4", ("g-1", "large"): "4", ("g-2", "small"): "9", ("g-2", "large"): "8", ("g-3", "small"): "1", ("g-3", "large"): "9"}
    answers = {
        f"{q}|{a}": answered(q, a, t, [hop(a, "answer", confidence=0.5, latency_ms=5.0)]) for (q, a), t in texts.items()
    }
    answers.update(override or {})
    return answers


def test_forced_lines_and_the_merge():
    forced = forced_records(ITEMS, CHAIN, forced_answers())
    assert len(forced) == 6 and all(r.decision is None for r in forced)
    assert {(r.query_id, r.agent): r.correct for r in forced}[("g-2", "small")] is True
    merged = merge(deployed_records(ITEMS[:3], DEPLOYED, CHAIN), forced)
    by = {(r.query_id, r.agent): r for r in merged}
    assert set(by) == {(q, a) for q in ("g-1", "g-2", "g-3") for a in ("small", "large")}
    assert by[("g-3", "small")].status == by[("g-3", "large")].status == "unanswered"
    assert by[("g-3", "large")].correct is True  # forced: the baselines still see what large answers
    # g-2 at small: the deployed decision (reject) with the forced answer's correctness (right!).
    assert by[("g-2", "small")].decision == "reject" and by[("g-2", "small")].correct is True
    assert by[("g-2", "small")].latency_ms == 10.0  # what the deployed hop took
    # The answering agent keeps its deployed answer; an unvisited agent has no decision.
    assert by[("g-2", "large")].answer == "The answer is: 8" and by[("g-1", "large")].decision is None
    table = build(merged, CHAIN)
    assert not np.isnan(table.correct).any()
    # The live run failed g-3: it counts as wrong at the terminal's cost, not left out.
    routing = Recorded().route(Context(None, table.hidden(), 0.5, 0.5, 0))
    live = score("disrouter-live", "disrouter", routing, table, 0.5, seed=0)
    assert live.n == 3 and live.failed == 1
    assert live.accuracy == pytest.approx(1 / 3) and live.cost == pytest.approx((0.1 + 0.9 + 0.9) / 3)
    # A central baseline re-routes g-3 on the forced answers: large is right there.
    from disrouter.evaluation.methods.baselines import Largest

    largest = score("largest", "baseline", Largest().route(Context(None, table.hidden(), 0.5, 0.5, 0)), table, 0.5, seed=0)
    assert largest.accuracy == pytest.approx(2 / 3) and largest.failed == 0


def test_a_forced_query_answered_by_another_agent_means_the_hook_is_missing():
    wrong = answered("g-1", "large", "4", [hop("small", "reject"), hop("large", "answer")])
    with pytest.raises(LiveError, match="force_answer"):
        forced_records(ITEMS, CHAIN, forced_answers({"g-1|small": wrong}))


def test_skip_drops_only_the_first_held_out_questions():
    from disrouter.evaluation.evalset import EvalInputError
    from disrouter.evaluation.live import select_items
    from disrouter.training.data import Item

    items = [Item(f"q{i}", "arith", "p", "1", "numeric", split) for i, split in enumerate(["test", "test", "test", "train", "test", "train", "test", "train"])]
    assert [i.id for i in select_items(items, "all", 2)] == ["q2", "q3", "q4", "q5", "q6", "q7"]
    assert [i.id for i in select_items(items, "test", 2)] == ["q2", "q4", "q6"]
    assert [i.id for i in select_items(items, "train", 2)] == ["q3", "q5", "q7"]
    assert select_items(items, "test", 9) == []
    with pytest.raises(EvalInputError):
        select_items(items, "all", -1)


def test_the_deployed_phases_ask_the_held_out_questions_when_forced_answers_cover_the_rest():
    items = [Item(f"q{i}", "gsm8k", f"question {i}", "1", "numeric", "train" if i % 3 == 0 else "test") for i in range(6)]
    held_out = [item for item in items if item.split == "test"]
    assert deployed_items(items, forced_alone=True) == held_out
    # Without a forced phase the deployed trace is all the report has: every question is asked.
    assert deployed_items(items, forced_alone=False) == items
    # Only training questions (--split train): there is nothing held out to narrow to.
    train = [item for item in items if item.split == "train"]
    assert deployed_items(train, forced_alone=True) == train
