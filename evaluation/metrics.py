"""Scoring a routing on the labelled test split: the paper's metric and the cumulative view.

For query i and agent j let A[i,j] = P(j gives the final answer) and R[i,j] = P(j ran):

    accuracy         = mean_i Σ_j A[i,j]·correct[i,j]
    cost             = mean_i Σ_j A[i,j]·c_j            (the paper's: cost of who answered)
    utility          = accuracy − α·cost
    pct_of_oracle    = 100 · utility / utility(oracle)   (None when the oracle's is ≤ 0)
    cumulative_cost  = mean_i Σ_j R[i,j]·c_j            (every agent that ran, rejects included)
    latency_ms       = mean_i Σ_j R[i,j]·latency[i,j]    (None unless known wherever R > 0)
    cost_usd         = mean_i Σ_j R[i,j]·usd[i,j]        (None unless prices are known)
    routing[agent]   = mean_i A[i,j]                     (share answered by each agent)
    answer_rate[a]   = Σ_i A[i,j] / Σ_i R[i,j]           (of the queries that reached a, the
                                                          share it answered; chains only)

Easy vs hard: a query is easy when some agent in the cheaper half of the chain (the ⌊m/2⌋
cheapest, at least one) is right; accuracy and mean cost are reported for each group.
Self-awareness F1 of an agent: "answer" is the positive prediction of "I am right", scored on
the queries where both its decision and its correctness are known.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from disrouter.actors.contracts import SCENARIO_ALPHA
from disrouter.evaluation.evalset import EvalSet
from disrouter.evaluation.methods.base import Routing
from disrouter.evaluation.significance import Comparison


class GroupStats(msgspec.Struct):
    n: int
    accuracy: float | None
    cost: float | None


class AgentF1(msgspec.Struct):
    n: int  # queries with both decision and correctness known
    answer_rate: float
    precision: float | None  # P(right | answered)
    recall: float | None  # P(answered | right)
    f1: float | None


class Result(msgspec.Struct, omit_defaults=True):
    """One row of results.json: one method at one α on the test split."""

    method: str
    family: str
    scenario: str
    alpha: float
    n: int
    accuracy: float
    cost: float
    utility: float
    pct_of_oracle: float | None
    cumulative_cost: float
    latency_ms: float | None
    cost_usd: float | None
    routing: dict[str, float]
    answer_rate: dict[str, float | None]
    easy: GroupStats
    hard: GroupStats
    seed: int
    uses_test_labels: bool = False
    self_awareness: dict[str, AgentF1] | None = None
    params: dict[str, Any] = {}
    failed: int = 0  # queries that got no answer (live runs): counted as wrong above
    # The reference method (the deployed self-routing) against this row on the same queries,
    # with a paired bootstrap interval (significance.py); None on the reference's own row.
    versus: Comparison | None = None


def scenario_name(alpha: float) -> str:
    for scenario, value in SCENARIO_ALPHA.items():
        if abs(value - alpha) < 1e-9:
            return scenario.value
    return f"alpha={alpha:g}"


def easy_mask(test: EvalSet) -> np.ndarray:
    cheap = test.chain.by_cost()[: max(1, test.chain.m // 2)]
    return (np.nan_to_num(test.correct[:, cheap], nan=0.0) > 0.5).any(axis=1)


def _weighted(weights: np.ndarray, values: np.ndarray) -> float | None:
    """mean_i Σ_j w·v, or None when v is unknown somewhere w > 0."""
    used = weights > 0
    if np.isnan(values[used]).any():
        return None
    return float(np.mean(np.sum(weights * np.nan_to_num(values), axis=1)))


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def decision_f1(answered: np.ndarray, right: np.ndarray) -> float | None:
    """F1 of "answer" against "would be right" (boolean arrays); None when neither ever holds."""
    denominator = int(answered.sum() + right.sum())
    return 2 * int((answered & right).sum()) / denominator if denominator else None


def self_awareness_f1(decisions: np.ndarray, correct: np.ndarray, agents: tuple[str, ...]) -> dict[str, AgentF1]:
    out = {}
    for j, agent in enumerate(agents):
        known = ~np.isnan(decisions[:, j]) & ~np.isnan(correct[:, j])
        if not known.any():
            continue
        answered = decisions[known, j] > 0.5
        right = correct[known, j] > 0.5
        tp = int((answered & right).sum())
        precision = tp / answered.sum() if answered.any() else None
        recall = tp / right.sum() if right.any() else None
        out[agent] = AgentF1(int(known.sum()), _r(answered.mean()), _r(precision), _r(recall), _r(decision_f1(answered, right)))
    return out


class UnscorableRouting(ValueError):
    """The routing sends queries to agents whose test correctness is unknown."""


def _scorable(method: str, routing: Routing, test: EvalSet) -> np.ndarray:
    """The test correctness a routing is scored on; raises where it cannot be scored."""
    correct = test.correct
    if routing.failed is not None:
        # A query the routing failed to answer is wrong whatever the agents' forced answers say.
        correct = np.where(routing.failed[:, None], 0.0, correct)
    answer, ran = routing.answer, routing.ran
    if answer.shape != correct.shape or ran.shape != correct.shape:
        raise ValueError(f"{method}: routing shape {answer.shape} does not match the test split {correct.shape}")
    if not np.allclose(answer.sum(axis=1), 1.0):
        raise ValueError(f"{method}: every query must be answered by exactly one agent in expectation")
    if np.isnan(correct[answer > 0]).any():
        raise UnscorableRouting(f"{method}: routes test queries to agents whose correctness is unknown")
    return correct


def query_utilities(method: str, routing: Routing, test: EvalSet, alpha: float) -> np.ndarray:
    """Each test query's expected utility under a routing; their mean is `score`'s utility.

    Kept per query so that two methods can be compared on the same queries (significance.py).
    """
    correct = _scorable(method, routing, test)
    answer = routing.answer
    return np.sum(answer * np.nan_to_num(correct), axis=1) - alpha * (answer @ test.chain.cost_array)


def score(
    method: str,
    family: str,
    routing: Routing,
    test: EvalSet,
    alpha: float,
    *,
    seed: int,
    uses_test_labels: bool = False,
) -> Result:
    correct = _scorable(method, routing, test)
    answer, ran = routing.answer, routing.ran
    costs = test.chain.cost_array
    agents = test.chain.agents
    accuracy = float(np.mean(np.sum(answer * np.nan_to_num(correct), axis=1)))
    cost = float(np.mean(answer @ costs))
    easy = easy_mask(test)

    def group(mask: np.ndarray) -> GroupStats:
        if not mask.any():
            return GroupStats(0, None, None)
        return GroupStats(
            int(mask.sum()),
            _r(np.mean(np.sum(answer[mask] * np.nan_to_num(correct[mask]), axis=1))),
            _r(np.mean(answer[mask] @ costs)),
        )

    reached = ran.sum(axis=0)
    is_chain = routing.walks
    return Result(
        method=method,
        family=family,
        scenario=scenario_name(alpha),
        alpha=alpha,
        n=test.n,
        accuracy=_r(accuracy),
        cost=_r(cost),
        utility=_r(accuracy - alpha * cost),
        pct_of_oracle=None,  # filled in by the harness once the oracle is scored
        cumulative_cost=_r(np.mean(ran @ costs)),
        latency_ms=_r(_weighted(ran, test.latency_ms), 3),
        cost_usd=_r(_weighted(ran, test.cost_usd), 9),
        routing={a: _r(answer[:, j].mean()) for j, a in enumerate(agents)},
        answer_rate={
            a: (_r(answer[:, j].sum() / reached[j]) if reached[j] > 0 else None) for j, a in enumerate(agents)
        }
        if is_chain
        else {},
        easy=group(easy),
        hard=group(~easy),
        seed=seed,
        uses_test_labels=uses_test_labels,
        self_awareness=None if routing.decisions is None else self_awareness_f1(routing.decisions, test.correct, agents),
        params=routing.params,
        failed=0 if routing.failed is None else int(routing.failed.sum()),
    )
