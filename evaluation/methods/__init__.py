"""Compared methods behind one interface (base.Method.route) and a name registry.

Importing this package registers every built-in method. `all_methods(chain)` lists the
concrete variants evaluated by default (one per single agent, learner, signal, …).
"""

from __future__ import annotations

from disrouter.evaluation.evalset import Chain
from disrouter.evaluation.methods import baselines, cascade, disrouter, router
from disrouter.evaluation.methods.base import REGISTRY, Context, Method, Routing, Unavailable, register

__all__ = ["REGISTRY", "Context", "Method", "Routing", "Unavailable", "all_methods", "register"]


def all_methods(chain: Chain) -> list[Method]:
    """Every built-in method, oracles first, in the order the report lists them."""
    return [
        baselines.Oracle(),
        baselines.OracleChain(),
        disrouter.Recorded(),
        *disrouter.SelfRouted.variants(),
        cascade.FrugalCascade(),
        *router.LearnedRouter.variants(),
        *(baselines.Single(agent) for agent in chain.agents),
        baselines.Smallest(),
        baselines.Largest(),
        baselines.Random(),
    ]
