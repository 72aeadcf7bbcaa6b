"""`disrouter train calibrate`: per-scenario reject thresholds fitted against the chain's utility.

The fit is worked by hand on four questions; the measurement runs on fake engines here (the
order engines start and close in, what each is asked) and on the real vLLM engine in
tests/llm/test_calibrate.py.
"""

from __future__ import annotations

import math

import msgspec
import pytest
import yaml

from disrouter.actors.contracts import Scenario
from disrouter.actors.engine import EngineResult
from disrouter.cli import main
from disrouter.topology.compile import agent_configs
from disrouter.topology.load import parse_topology
from disrouter.training.calibrate import Measured, fit, journal_path, measure, successor_of
from disrouter.training.config import TrainConfig
from disrouter.training.mix import questions, validation

P, B, C = Scenario.performance_first, Scenario.balance, Scenario.cost_first


def row(qid: str, mass: float, own: bool, successor: bool) -> Measured:
    return Measured(id=qid, level=None, mass=dict.fromkeys(Scenario, mass), correct=dict.fromkeys(Scenario, own),
                    successor_correct=successor)


# Two questions share the reject probability 0.6: one only the successor gets right (handing it
# on gains 1 − 0.8 α), one both get right (handing it on loses 0.8 α): together handing on pays
# iff α < 0.625, so the best threshold sits below 0.6 at α = 0.2 and above it at α = 0.8.
ROWS = [row("a", 0.6, False, True), row("b", 0.6, True, True), row("c", 0.2, True, True), row("d", 0.9, False, True)]
GRID = [round(0.1 * k, 1) for k in range(1, 11)]


def test_the_threshold_is_fitted_per_scenario_against_the_chains_utility():
    fits = {f.scenario: f for f in fit(ROWS, GRID, cost=0.1, successor_cost=0.9, current=0.5)}
    # α = 0.2: keep c (0.98), hand on a, b, d (1 − 0.18 each): (0.98 + 3 · 0.82) / 4.
    assert 0.2 < fits[P].threshold <= 0.6 and fits[P].utility == pytest.approx(0.86)
    assert fits[P].reject_rate == 0.75
    # α = 0.8: hand on d only (0.28); keep a (−0.08), b and c (0.92): 2.04 / 4.
    assert 0.6 < fits[C].threshold <= 0.9 and fits[C].utility == pytest.approx(0.51)
    assert fits[C].reject_rate == 0.25
    # Never handing on / always handing on, and the threshold served now (0.5), for comparison.
    assert fits[P].keep_all_utility == pytest.approx(0.48) and fits[P].hand_on_all_utility == pytest.approx(0.82)
    assert fits[C].keep_all_utility == pytest.approx(0.42) and fits[C].hand_on_all_utility == pytest.approx(0.28)
    assert fits[C].current_threshold == 0.5 and fits[C].current_utility == pytest.approx(0.44)
    assert [t for t, _ in fits[B].curve] == GRID


def test_a_flat_stretch_keeps_the_threshold_nearest_one_half():
    # Every threshold from 0.3 to 0.9 rejects the same single question: nothing to choose, ½ stays.
    rows = [row("x", 0.95, False, True), row("y", 0.1, True, False), row("z", 0.2, True, True)]
    assert {f.threshold for f in fit(rows, GRID, cost=0.1, successor_cost=0.9)} == {0.5}
    with pytest.raises(ValueError, match="no validation question"):
        fit([], GRID, cost=0.1, successor_cost=0.9)


def chain_topology(**first) -> dict:
    replay = {"type": "replay", "trace": "t.jsonl"}
    return {"namespace": "cal", "kafka": {"bootstrap_servers": "127.0.0.1:9"},
            "agents": [{"name": "small", "cost": 0.1, "next": ["big"], "engine": replay, "max_tokens": 40, **first},
                       {"name": "big", "cost": 0.9, "engine": replay}]}


def test_validation_questions_follow_the_training_mix_and_are_never_trained_on():
    cfg = msgspec.convert({"agent": "a", "model": "m", "out": "o", "calibrate": {"questions": 30},
                           "data": {"sets": [{"name": "arith", "limit": 400}], "train_questions": 50, "eval_questions": 20}}, TrainConfig)
    train, held_out = questions(cfg)
    chosen = validation(cfg)
    assert len(chosen) == 30 and all(item.split == "train" for item in chosen)
    assert not {i.id for i in chosen} & {i.id for i in train + held_out}
    everything = msgspec.convert({"agent": "a", "model": "m", "out": "o", "data": {"sets": [{"name": "arith", "limit": 400}]}}, TrainConfig)
    with pytest.raises(ValueError, match="no question is left to calibrate on"):
        validation(everything)


def test_a_skipping_entry_adds_later_questions_and_leaves_validation_where_it_was():
    first = {"name": "arith", "limit": 400}
    base = {"agent": "a", "model": "m", "out": "o", "calibrate": {"questions": 30},
            "data": {"sets": [first], "train_questions": 50, "eval_questions": 20}}
    more = {**base, "data": {**base["data"], "sets": [first, {"name": "arith", "limit": 900, "skip": 600,
                                                              "train_questions": 40, "eval_questions": 0}]}}
    train, held_out = questions(msgspec.convert(base, TrainConfig))
    train2, held_out2 = questions(msgspec.convert(more, TrainConfig))
    assert train2[:50] == train and held_out2 == held_out  # the first entry's questions, as they were
    extra = train2[50:]
    assert len(extra) == 40 and all(item.split == "train" for item in extra)
    assert all(600 <= int(item.id.rsplit("-", 1)[1]) < 900 for item in extra)  # arith-<seed>-<n>
    chosen = validation(msgspec.convert(base, TrainConfig))
    assert validation(msgspec.convert(more, TrainConfig))[:30] == chosen
    assert not {i.id for i in chosen} & {i.id for i in train2}


class FakeEngine:
    """Right on the questions in `knows`; its reject probability is 0.7 on the others. Like the
    vLLM engine, a reply decided by `reject_at` carries the probability read (`reports`)."""

    def __init__(self, name: str, knows: set[str], log: list[str], reports: bool = True) -> None:
        self.name, self.knows, self.log, self.reports = name, knows, log, reports
        self.requests: list = []
        self.probability_calls = 0

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def close(self) -> None:
        self.log.append(f"close {self.name}")

    def _mass(self, request) -> float:
        return 0.1 if request.query_id in self.knows else 0.7

    async def reject_probability(self, request) -> float:
        self.probability_calls += 1
        return self._mass(request)

    async def generate(self, request) -> EngineResult:
        self.requests.append(request)
        return EngineResult(text=f"The answer is: {self.answers[request.query_id]}" if request.query_id in self.knows else "The answer is: -1",
                            tokens_in=1, tokens_out=1,
                            reject_probability=self._mass(request) if self.reports and request.reject_at is not None else None)


@pytest.mark.parametrize("reports", [True, False], ids=["probability-in-reply", "probability-asked"])
async def test_the_agent_then_its_successor_are_measured_one_engine_at_a_time(reports):
    from disrouter.training.data import load

    items = [i for i in load("arith", limit=40).items if i.split == "train"][:4]
    configs = agent_configs(parse_topology(chain_topology()))
    log: list[str] = []
    engines = {"small": FakeEngine("small", {items[0].id}, log, reports), "big": FakeEngine("big", {i.id for i in items}, log)}
    for engine in engines.values():
        engine.answers = {i.id: i.gold for i in items}
    rows = await measure(items, configs["small"], configs["big"], build=lambda spec, agent: engines[agent])
    assert log == ["start small", "close small", "start big", "close big"]
    first = {r.id: r for r in rows}[items[0].id]
    assert first.correct == dict.fromkeys(Scenario, True) and first.mass == dict.fromkeys(Scenario, 0.1) and first.successor_correct
    assert all(not any(r.correct.values()) and r.successor_correct for r in rows[1:])
    small = engines["small"].requests
    # The agent is asked once per scenario, the reject offered but never taken by its probability.
    assert len(small) == 3 * len(items) and all(r.allow_reject and r.reject_at == math.inf and r.max_tokens == 40 for r in small)
    assert sorted({r.alpha for r in small}) == [0.2, 0.5, 0.8]
    # The probability comes with the reply that read it; only an engine that does not say is asked again.
    assert engines["small"].probability_calls == (0 if reports else len(small))
    assert all(not r.allow_reject for r in engines["big"].requests) and len(engines["big"].requests) == len(items)


async def test_a_cut_measurement_resumes_from_its_journal(tmp_path):
    from disrouter.training.data import load

    items = [i for i in load("arith", limit=40).items if i.split == "train"][:4]
    configs = agent_configs(parse_topology(chain_topology()))
    log: list[str] = []

    def fresh() -> dict[str, FakeEngine]:
        engines = {"small": FakeEngine("small", {items[0].id}, log), "big": FakeEngine("big", {i.id for i in items}, log)}
        for engine in engines.values():
            engine.answers = {i.id: i.gold for i in items}
        return engines

    engines = fresh()
    first = await measure(items, configs["small"], configs["big"], journal=tmp_path, build=lambda spec, agent: engines[agent])
    # Cut: the successor's journal loses its last two questions and ends in a torn line.
    big = journal_path(tmp_path, configs["big"])
    lines = [line for line in big.read_bytes().splitlines() if line.strip()]
    big.write_bytes(b"\n".join(lines[:2]) + b'\n{"id": "tor')
    log.clear()
    engines = fresh()
    again = await measure(items, configs["small"], configs["big"], journal=tmp_path, build=lambda spec, agent: engines[agent])
    assert again == first
    assert log == ["start big", "close big"] and len(engines["big"].requests) == 2  # only what was missing
    log.clear()
    engines = fresh()
    assert await measure(items, configs["small"], configs["big"], journal=tmp_path, build=lambda spec, agent: engines[agent]) == first
    assert log == []  # nothing left to measure: no engine is started
    # Another engine block (a new adapter) has a journal of its own.
    other = agent_configs(parse_topology(chain_topology(engine={"type": "replay", "trace": "u.jsonl"})))["small"]
    assert journal_path(tmp_path, other) != journal_path(tmp_path, configs["small"])


def test_the_successor_is_where_a_fresh_reject_goes_and_a_terminal_has_none():
    configs = agent_configs(parse_topology(chain_topology()))
    assert successor_of(configs["small"]) == "big"
    with pytest.raises(ValueError, match="terminal"):
        successor_of(configs["big"])


def test_the_command_names_what_is_missing(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"agent": "small", "model": "m", "out": str(tmp_path / "out")}))
    assert main(["train", "calibrate", str(recipe)]) == 2
    assert "calibrate.topology is required" in capsys.readouterr().err
    serve = {"applications": [{"name": "cal", "import_path": "disrouter.topology.app:build_app", "args": chain_topology()}]}
    (tmp_path / "topo.yaml").write_text(yaml.safe_dump(serve))
    recipe.write_text(yaml.safe_dump({"agent": "tiny", "model": "m", "out": str(tmp_path / "out"),
                                      "calibrate": {"topology": str(tmp_path / "topo.yaml")}}))
    assert main(["train", "calibrate", str(recipe)]) == 2
    assert "has no agent 'tiny'" in capsys.readouterr().err
