"""Reference points: single agents, random, and the oracles (which see test labels)."""

from __future__ import annotations

import numpy as np

from disrouter.evaluation.methods.base import Context, Method, Routing, Unavailable, first_answer, register


@register
class Single(Method):
    """Every query to one agent."""

    name = "single"

    def __init__(self, agent: str) -> None:
        self.agent = agent

    @property
    def label(self) -> str:
        return f"single-{self.agent}"

    def route(self, ctx: Context) -> Routing:
        j = ctx.test.chain.agents.index(self.agent)
        return Routing.central(np.full(ctx.test.n, j), ctx.test.chain.m, agent=self.agent)


@register
class Smallest(Method):
    """Every query to the cheapest agent."""

    name = "smallest"

    def route(self, ctx: Context) -> Routing:
        j = ctx.test.chain.by_cost()[0]
        return Routing.central(np.full(ctx.test.n, j), ctx.test.chain.m, agent=ctx.test.chain.agents[j])


@register
class Largest(Method):
    """Every query to the most expensive agent (chain order breaks ties: the later one)."""

    name = "largest"

    def route(self, ctx: Context) -> Routing:
        chain = ctx.test.chain
        j = max(range(chain.m), key=lambda k: (chain.costs[k], k))
        return Routing.central(np.full(ctx.test.n, j), chain.m, agent=chain.agents[j])


@register
class Random(Method):
    """Uniform over agents, reported as its expected value (no sampling noise, no seed)."""

    name = "random"

    def route(self, ctx: Context) -> Routing:
        n, m = ctx.test.n, ctx.test.chain.m
        p = np.full((n, m), 1.0 / m)
        return Routing(p, p.copy())


@register
class Oracle(Method):
    """The cheapest agent that is right; when none is, the cheapest agent.

    For costs in [0, 1] and α ≤ 1 this is the per-query utility maximum over single agents,
    the paper's upper bound.
    """

    name = "oracle"
    family = "oracle"
    uses_test_labels = True

    def route(self, ctx: Context) -> Routing:
        test = ctx.test
        order = test.chain.by_cost()
        correct = test.correct[:, order]
        if np.isnan(correct).any():
            raise Unavailable("oracle needs every agent's correctness on every test query")
        right = correct > 0.5
        # argmax of the first right agent in cost order; no one right → cost order's first.
        pick = np.where(right.any(axis=1), np.argmax(right, axis=1), 0)
        return Routing.central(np.asarray(order)[pick], test.chain.m)


@register
class OracleChain(Method):
    """A chain of perfectly self-aware agents: each answers iff it is right, the terminal
    always answers. The ceiling of any DiSRouter chain (it may still pay for the terminal
    when nobody is right, unlike the oracle)."""

    name = "oracle-chain"
    family = "oracle"
    uses_test_labels = True

    def route(self, ctx: Context) -> Routing:
        correct = ctx.test.correct
        if np.isnan(correct).any():
            raise Unavailable("oracle-chain needs every agent's correctness on every test query")
        decisions = correct > 0.5
        return Routing.chain(first_answer(decisions), ctx.test.chain.m, decisions=decisions)
