"""A FrugalGPT-style cascade (Chen, Zaharia, Zou 2023): run the agents cheapest first and stop
at the first whose answer scores at least its threshold; the last always answers.

The score is the trace's `confidence` when every line has one; otherwise FrugalGPT's own
scorer, a model of P(answer right | query, answer) trained on the training split (see
features.answer_scorer). Thresholds are tuned per α on the training split only, maximising its
utility, by coordinate ascent over each agent's score quantiles (start: never stop early;
passes back to front until nothing improves; ties keep the earlier, lower candidate). Training
scores are out-of-fold, so the thresholds are tuned on scores as noisy as the test ones.
"""

from __future__ import annotations

import numpy as np

from disrouter.evaluation.methods.base import Context, Method, Routing, register
from disrouter.evaluation.methods.features import answer_scorer

GRID = 41  # quantiles per agent: 0, 2.5, …, 100 %
MAX_PASSES = 8


def stops(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    m = scores.shape[1]
    stop_here = np.ones(scores.shape, bool)
    stop_here[:, : m - 1] = scores[:, : m - 1] >= thresholds[None, :]
    return np.argmax(stop_here, axis=1)


def chain_utility(stop: np.ndarray, correct: np.ndarray, costs: np.ndarray, alpha: float) -> float:
    rows = np.arange(len(stop))
    return float(np.mean(correct[rows, stop] - alpha * costs[stop]))


def tune_thresholds(scores: np.ndarray, correct: np.ndarray, costs: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Per-agent thresholds (m − 1 of them) maximising utility on these (training) rows."""
    m = scores.shape[1]
    candidates = [
        np.unique(np.concatenate(([-np.inf, np.inf], np.quantile(scores[:, j], np.linspace(0, 1, GRID)))))
        for j in range(m - 1)
    ]
    thresholds = np.full(m - 1, np.inf)
    best = chain_utility(stops(scores, thresholds), correct, costs, alpha)
    for _ in range(MAX_PASSES):
        improved = False
        for j in range(m - 2, -1, -1):
            for candidate in candidates[j]:
                trial = thresholds.copy()
                trial[j] = candidate
                value = chain_utility(stops(scores, trial), correct, costs, alpha)
                if value > best + 1e-12:
                    best, thresholds, improved = value, trial, True
        if not improved:
            break
    return thresholds, best


@register
class FrugalCascade(Method):
    name = "frugalgpt-cascade"
    family = "cascade"

    def route(self, ctx: Context) -> Routing:
        train = ctx.need_train(self.name)
        m = ctx.test.chain.m
        conf_ok = not np.isnan(train.confidence[:, : m - 1]).any() and not np.isnan(ctx.test.confidence[:, : m - 1]).any()
        if conf_ok:
            train_s, test_s, signal = train.confidence, ctx.test.confidence, "confidence"
        else:
            train_s, test_s, signal = answer_scorer(ctx, self.name)
        costs = ctx.test.chain.cost_array
        thresholds, train_utility = tune_thresholds(train_s, train.correct, costs, ctx.alpha)
        return Routing.chain(
            stops(test_s, thresholds),
            m,
            signal=signal,
            # ±inf (never / always stop early) spelled out: JSON has no infinities.
            thresholds={a: float(t) if np.isfinite(t) else f"{t:+}" for a, t in zip(ctx.test.chain.agents, thresholds)},
            train_utility=round(train_utility, 6),
        )
