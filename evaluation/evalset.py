"""From replay-trace lines to (query × agent) tables, split into train and test.

Every method and metric works on an `EvalSet`: for one split, numpy arrays indexed
[query, agent] in chain order. A cell that the trace does not know is NaN, so a method can tell
"this agent was wrong" from "nobody recorded this agent on this query" (a live run records only
the agents a query visited).

Correctness of a reject hop: a live run records what an agent decided, not what it would have
answered. Such a line carries `decision: "reject"` with the reject phrase as its `answer` and
`correct: false` (the reply "I don't know!" is indeed not a right answer). Read here, that line's
correctness is *unknown* (NaN), never "wrong": it must not count against the agent in a baseline
or in self-awareness F1. Any other line's `correct` is the agent's correctness on that query
(for an external trace's reject line: what the agent would have answered when forced).

The test split reaches a method with its labels hidden (`EvalSet.hidden()`): reading
`correct` there raises, so "nothing is tuned on the test trace" is enforced, not promised.
Only methods that declare they are oracles see test labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import msgspec
import numpy as np
import structlog
import yaml

from disrouter.actors.decision import is_reject
from disrouter.actors.trace import TraceRecord
from disrouter.training.data import DEFAULT_SEED, DEFAULT_TRAIN_FRACTION, assign_split

log = structlog.get_logger("disrouter.evaluation")


class EvalInputError(ValueError):
    """The trace and the chain cannot be evaluated together (says what and where)."""


class LabelsHidden(RuntimeError):
    """A method read the correctness of the test split, which only oracles may see."""


@dataclass(frozen=True)
class Chain:
    """Agents in chain order (entry first, terminal last) and their normalised costs."""

    agents: tuple[str, ...]
    costs: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.agents:
            raise EvalInputError("the chain has no agents")
        if len(set(self.agents)) != len(self.agents):
            raise EvalInputError(f"the chain names an agent twice: {list(self.agents)}")
        if len(self.costs) != len(self.agents):
            raise EvalInputError("the chain needs one cost per agent")

    @property
    def m(self) -> int:
        return len(self.agents)

    @property
    def cost_array(self) -> np.ndarray:
        return np.asarray(self.costs, dtype=float)

    def by_cost(self) -> list[int]:
        """Agent indices cheapest first (chain order breaks ties)."""
        return sorted(range(self.m), key=lambda j: (self.costs[j], j))

    @classmethod
    def parse(cls, spec: str) -> Chain:
        """`name:cost,name:cost,…` in chain order, the last one terminal."""
        agents, costs = [], []
        for part in spec.split(","):
            name, sep, cost = part.strip().rpartition(":")
            if not sep or not name:
                raise EvalInputError(f"--agents entry {part.strip()!r} is not name:cost")
            try:
                costs.append(float(cost))
            except ValueError:
                raise EvalInputError(f"--agents entry {part.strip()!r}: cost {cost!r} is not a number") from None
            agents.append(name)
        return cls(tuple(agents), tuple(costs))

    @classmethod
    def from_topology(cls, path: str | Path) -> tuple[Chain, float]:
        """Chain order (entry, then each agent's next[0]) and costs from a topology file.

        Returns the chain and the topology's γ. Only a chain is evaluated; a tree or mesh is
        read along its first branches.
        """
        from disrouter.topology.schema import Topology

        try:
            config = yaml.safe_load(Path(path).read_text())
            args = config["applications"][0]["args"]
            topology = msgspec.convert(args, Topology)
        except FileNotFoundError:
            raise EvalInputError(f"topology file {path} does not exist") from None
        except (KeyError, IndexError, TypeError, yaml.YAMLError, msgspec.ValidationError) as exc:
            raise EvalInputError(f"{path}: not a topology file: {exc}") from None
        names, costs = [], []
        current: str | None = topology.entry_agent
        while current is not None and current not in names:
            try:
                spec = topology.agent(current)
            except KeyError:
                raise EvalInputError(f"{path}: agent {current!r} is named but not declared") from None
            names.append(spec.name)
            costs.append(spec.cost)
            current = None if spec.is_terminal or not spec.next else spec.next[0]
        return cls(tuple(names), tuple(costs)), topology.gamma


@dataclass(frozen=True)
class EvalSet:
    """One split's (query × agent) table. NaN = unknown; decision: 1 answer, 0 reject."""

    chain: Chain
    query_ids: tuple[str, ...]
    _correct: np.ndarray | None
    confidence: np.ndarray
    decision: np.ndarray
    latency_ms: np.ndarray
    tokens_out: np.ndarray
    cost_usd: np.ndarray
    prompts: tuple[str | None, ...]
    answers: tuple[tuple[str | None, ...], ...]
    name: str = "test"
    extra: dict = field(default_factory=dict)
    # Queries the recorded (live) run failed: unanswered or timed out. They count as wrong for
    # the recorded decisions; the other methods re-route them on the agents' forced answers.
    failed: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.query_ids)

    @property
    def correct(self) -> np.ndarray:
        if self._correct is None:
            raise LabelsHidden(f"the correctness of the {self.name} split is hidden from this method")
        return self._correct

    @property
    def labelled(self) -> bool:
        return self._correct is not None

    def hidden(self) -> EvalSet:
        return replace(self, _correct=None)

    def subset(self, rows: Sequence[int] | np.ndarray) -> EvalSet:
        rows = np.asarray(rows, dtype=int)
        return replace(
            self,
            query_ids=tuple(self.query_ids[i] for i in rows),
            _correct=None if self._correct is None else self._correct[rows],
            confidence=self.confidence[rows],
            decision=self.decision[rows],
            latency_ms=self.latency_ms[rows],
            tokens_out=self.tokens_out[rows],
            cost_usd=self.cost_usd[rows],
            prompts=tuple(self.prompts[i] for i in rows),
            answers=tuple(self.answers[i] for i in rows),
            failed=None if self.failed is None else self.failed[rows],
        )

    def has_all(self, array: np.ndarray) -> bool:
        return self.n > 0 and not np.isnan(array).any()

    @property
    def has_prompts(self) -> bool:
        return self.n > 0 and all(p for p in self.prompts)


def _nan(n: int, m: int) -> np.ndarray:
    return np.full((n, m), np.nan)


def build(records: Iterable[TraceRecord], chain: Chain, name: str = "test") -> EvalSet:
    """Tabulate trace lines for the chain's agents; lines of other agents are ignored."""
    column = {a: j for j, a in enumerate(chain.agents)}
    rows: dict[str, int] = {}
    cells: list[tuple[int, int, TraceRecord]] = []
    seen: set[tuple[str, str]] = set()
    for rec in records:
        j = column.get(rec.agent)
        if j is None:
            continue
        if (rec.query_id, rec.agent) in seen:
            raise EvalInputError(f"query {rec.query_id!r} has two lines for agent {rec.agent!r}")
        seen.add((rec.query_id, rec.agent))
        i = rows.setdefault(rec.query_id, len(rows))
        cells.append((i, j, rec))
    n, m = len(rows), chain.m
    correct, conf, dec, lat, tok, usd = (_nan(n, m) for _ in range(6))
    prompts: list[str | None] = [None] * n
    answers = [[None] * m for _ in range(n)]
    failed = np.zeros(n, bool)
    for i, j, rec in cells:
        # A reject hop says nothing of what the agent would have answered; nor does the line
        # of a query that failed with no answer text (a timeout): both are unknown, not wrong.
        unknown = (rec.decision == "reject" and rec.answer is not None and is_reject(rec.answer)) or (
            rec.status is not None and rec.answer is None
        )
        if rec.status is not None:
            failed[i] = True
        correct[i, j] = np.nan if unknown else float(rec.correct)
        if rec.confidence is not None:
            conf[i, j] = rec.confidence
        if rec.decision is not None:
            dec[i, j] = 1.0 if rec.decision == "answer" else 0.0
        if rec.latency_ms is not None:
            lat[i, j] = rec.latency_ms
        if rec.tokens_out is not None:
            tok[i, j] = rec.tokens_out
        if rec.cost_usd is not None:
            usd[i, j] = rec.cost_usd
        if rec.prompt and not prompts[i]:
            prompts[i] = rec.prompt
        if not unknown:
            answers[i][j] = rec.answer
    return EvalSet(
        chain=chain,
        query_ids=tuple(rows),
        _correct=correct,
        confidence=conf,
        decision=dec,
        latency_ms=lat,
        tokens_out=tok,
        cost_usd=usd,
        prompts=tuple(prompts),
        answers=tuple(tuple(a) for a in answers),
        name=name,
        failed=failed,
    )


@dataclass(frozen=True)
class Splits:
    train: EvalSet | None
    test: EvalSet
    how: str  # how the split was made, for the report


def split_records(
    records: list[TraceRecord],
    chain: Chain,
    *,
    train_records: list[TraceRecord] | None = None,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    seed: int = DEFAULT_SEED,
) -> Splits:
    """Train and test tables, by the first rule that applies:

    1. a separate training trace: train on it, test on the trace's `split: test` lines when it
       has splits, else on all of it;
    2. the trace's own `split` field ("train" / "test"; other values are left out);
    3. no split anywhere: a seeded hash split of query ids (training.data.assign_split), so an
       external trace that carries only confidence still gets its calibration fitted on train.
    """
    chain_agents = set(chain.agents)
    records = [r for r in records if r.agent in chain_agents]
    if not records:
        raise EvalInputError(f"the trace has no lines for any chain agent {list(chain.agents)}")
    query_split: dict[str, str | None] = {}
    for rec in records:
        previous = query_split.setdefault(rec.query_id, rec.split)
        if previous != rec.split:
            raise EvalInputError(
                f"query {rec.query_id!r} is in split {previous!r} on one line and {rec.split!r} on another"
            )
    has_split = any(s is not None for s in query_split.values())
    if has_split and any(s is None for s in query_split.values()):
        missing = next(q for q, s in query_split.items() if s is None)
        raise EvalInputError(f"some lines carry `split` and some do not (e.g. query {missing!r})")
    if has_split:
        other = sorted({s for s in query_split.values() if s not in ("train", "test")})
        if other:
            log.warning("split_values_ignored", values=other)

    if train_records is not None:
        test_recs = [r for r in records if r.split == "test"] if has_split else records
        overlap = {r.query_id for r in train_records} & {r.query_id for r in test_recs}
        if overlap:
            raise EvalInputError(
                f"--train-trace shares {len(overlap)} query id(s) with the test trace (e.g. {min(overlap)!r}): "
                "a method would be tuned on the questions it is scored on"
            )
        train = build([r for r in train_records if r.agent in chain_agents], chain, "train")
        return Splits(train if train.n else None, build(test_recs, chain, "test"), "separate training trace")
    if has_split:
        train = build([r for r in records if r.split == "train"], chain, "train")
        test = build([r for r in records if r.split == "test"], chain, "test")
        if not test.n:
            raise EvalInputError("the trace's `split` fields name no test queries")
        return Splits(train if train.n else None, test, "the trace's split field")
    which = {q: assign_split(q, train_fraction, seed) for q in query_split}
    train = build([r for r in records if which[r.query_id] == "train"], chain, "train")
    test = build([r for r in records if which[r.query_id] == "test"], chain, "test")
    if not test.n:
        raise EvalInputError("the hash split left no test queries; lower --train-fraction")
    return Splits(
        train if train.n else None,
        test,
        f"hash split of query ids (train fraction {train_fraction}, seed {seed})",
    )
