"""The one interface every compared method implements, and the registry of methods.

A method turns a test split into a `Routing` at one α: for each query, the probability that
each agent gives the final answer (a deterministic method puts 1 on one agent; the random
baseline spreads it) and the probability that each agent ran at all (a cascade or a DiSRouter
chain runs every agent it passes through; a central router runs one). Metrics follow from the
two matrices alone, so every method is scored by the same code (metrics.py).

Methods see the training split with labels and the test split without (`EvalSet.hidden()`),
unless they declare `uses_test_labels` (the oracles). A method that cannot run on the given
trace (no confidence, no decisions, no prompts, no training split) raises `Unavailable` with the
reason, and the report lists it as skipped instead of failing the whole evaluation.

Registry in the style of RouteLLM's routers.py: a name → class mapping filled by `@register`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from disrouter.evaluation.evalset import EvalSet


class Unavailable(Exception):
    """This method cannot run on this trace; the message says what is missing."""


@dataclass
class Routing:
    answer: np.ndarray  # (n, m): P(agent j gives the final answer); rows sum to 1
    ran: np.ndarray  # (n, m): P(agent j ran for this query)
    # Each agent's own answer/reject decision on every query, for self-routing methods
    # (self-awareness F1 and answer rates need it); None for central methods.
    decisions: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)  # fitted knobs, for the report
    walks: bool = False  # visits agents in chain order (answer rates per agent mean something)
    # Queries this routing failed to answer at all (a live run's unanswered or timed-out ones):
    # scored as wrong, at the cost of the agent `answer` puts them on (the terminal).
    failed: np.ndarray | None = None

    @classmethod
    def central(cls, choice: np.ndarray, m: int, **params: Any) -> Routing:
        """One agent per query, nothing else runs."""
        answer = np.zeros((len(choice), m))
        answer[np.arange(len(choice)), choice] = 1.0
        return cls(answer, answer.copy(), params=params)

    @classmethod
    def chain(cls, stop: np.ndarray, m: int, decisions: np.ndarray | None = None, **params: Any) -> Routing:
        """Walk the chain in order; query i stops (is answered) at agent stop[i]."""
        answer = np.zeros((len(stop), m))
        answer[np.arange(len(stop)), stop] = 1.0
        ran = (np.arange(m)[None, :] <= np.asarray(stop)[:, None]).astype(float)
        return cls(answer, ran, decisions, params, walks=True)


def first_answer(answers: np.ndarray) -> np.ndarray:
    """Index of the first agent whose decision is "answer"; the terminal always answers."""
    answers = np.asarray(answers, bool).copy()
    answers[:, -1] = True
    return np.argmax(answers, axis=1)


@dataclass
class Context:
    """What a method gets for one α. `shared` lives across α and methods (fitted probes,
    embeddings), so work that does not depend on α is done once."""

    train: EvalSet | None
    test: EvalSet
    alpha: float
    gamma: float
    seed: int
    embedder_factory: Callable[[], Any] | None = None
    shared: dict[str, Any] = field(default_factory=dict)

    def need_train(self, method: str) -> EvalSet:
        if self.train is None or self.train.n == 0:
            raise Unavailable(f"{method} needs a training split (a `split` field or --train-trace)")
        if np.isnan(self.train.correct).any():
            raise Unavailable(f"{method} needs every agent's correctness on every training query")
        return self.train

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.shared:
            self.shared[key] = compute()
        return self.shared[key]


class Method(abc.ABC):
    name: ClassVar[str]
    uses_test_labels: ClassVar[bool] = False
    family: ClassVar[str] = "baseline"  # baseline | oracle | disrouter | router | cascade

    @abc.abstractmethod
    def route(self, ctx: Context) -> Routing:
        """Route every test query at ctx.alpha."""

    @property
    def label(self) -> str:
        return self.name


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls
