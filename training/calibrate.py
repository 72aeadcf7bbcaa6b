"""Per-scenario reject thresholds for a served agent: `disrouter train calibrate CONFIG`.

A generative agent with `reject_at` rejects when the probability that its reply opens with
"I don't know!" is at least the threshold. SFT teaches the model *where* its competence ends;
it does not make that probability land on ½ at the point where handing on starts to pay, and
the point differs by scenario: at α = 0.8 the successor's answer costs 0.8 · (its cost − ours)
more, so the agent should keep far more questions than at α = 0.2. A single threshold of ½
made the trained default hand on 54 % of questions at α = 0.8 and fall behind always answering
itself (README, "Calibrated thresholds").

This stage fits one threshold per scenario, for the agent exactly as a topology serves it
(its `engine:` block, adapter included), against the utility of the chain it serves in:
  1. validation questions: the next `calibrate.questions` of each set's train split after the
     training mix, so no stage trained on them (and the held-out test split stays unseen);
  2. per question and scenario, the agent's first-step reject probability and the answer it
     gives when it keeps the question (graded); then, on its own engine, the successor's forced
     answer (the agent the policy hands a fresh query to, answering as a terminal);
  3. per scenario, the threshold of the grid that maximises the mean utility
     (kept: right − α · own cost; handed on: successor right − α · successor cost), smoothed
     over neighbouring thresholds so one lucky question does not pick it.
The agent still decides alone when serving: the successor is consulted here, once, offline —
as the successor label rule does — never per query. For a chain of more than two agents the
successor's own answer stands for everything after it (an approximation: it may hand on).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from tqdm import tqdm

from disrouter.actors.config import AgentConfig
from disrouter.actors.contracts import SCENARIO_ALPHA, Query, Scenario
from disrouter.actors.decision import scenario_instruction
from disrouter.actors.engine import EngineRequest
from disrouter.actors.routing import next_hop
from disrouter.training.config import TrainConfig
from disrouter.training.data import Item
from disrouter.training.grading import is_correct

T = TypeVar("T")


class Measured(msgspec.Struct, omit_defaults=True):
    """One validation question: per scenario, the agent's reject probability and whether its
    kept answer is right; whether the successor's forced answer is right."""

    id: str
    level: str | None
    mass: dict[Scenario, float]
    correct: dict[Scenario, bool]
    successor_correct: bool


class ScenarioFit(msgspec.Struct):
    scenario: Scenario
    alpha: float
    threshold: float
    utility: float  # mean utility on the validation questions at `threshold`
    reject_rate: float
    current_threshold: float | None  # what the topology serves now (None: greedy decides)
    current_utility: float | None
    keep_all_utility: float  # never handing on
    hand_on_all_utility: float  # always handing on
    curve: list[tuple[float, float]]  # (threshold, mean utility) over the grid


class Calibration(msgspec.Struct):
    agent: str
    successor: str
    topology: str
    questions: int
    cost: float
    successor_cost: float
    successor_accuracy: float
    fits: list[ScenarioFit]

    def reject_at(self) -> dict[str, float]:
        return {fit.scenario.value: fit.threshold for fit in self.fits}


def utility(row: Measured, scenario: Scenario, threshold: float, cost: float, successor_cost: float) -> float:
    alpha = SCENARIO_ALPHA[scenario]
    if row.mass[scenario] >= threshold:
        return float(row.successor_correct) - alpha * successor_cost
    return float(row.correct[scenario]) - alpha * cost


def best_threshold(grid: list[float], curve: list[float]) -> int:
    """The index of the best of `grid` (ascending) by `curve`, its mean utility at each: smoothed
    over a threshold and its grid neighbours, so one lucky question does not pick it; ties go to
    the threshold nearest ½ (the uncalibrated default), so a flat stretch changes nothing."""
    smooth = [sum(curve[max(0, i - 1): i + 2]) / len(curve[max(0, i - 1): i + 2]) for i in range(len(curve))]
    return max(range(len(grid)), key=lambda i: (round(smooth[i], 9), -abs(grid[i] - 0.5)))


def fit(
    rows: list[Measured], grid: list[float], *, cost: float, successor_cost: float,
    current: float | dict[Scenario, float] | None = None,
) -> list[ScenarioFit]:
    """The best threshold of `grid` per scenario (see the module's doc)."""
    if not rows:
        raise ValueError("no validation question to calibrate on")
    grid = sorted(grid)
    fits = []
    for scenario in Scenario:

        def mean(threshold: float, scenario: Scenario = scenario) -> float:
            return sum(utility(r, scenario, threshold, cost, successor_cost) for r in rows) / len(rows)

        curve = [(t, mean(t)) for t in grid]
        best = best_threshold(grid, [u for _, u in curve])
        threshold = grid[best]
        now = current.get(scenario) if isinstance(current, dict) else current
        fits.append(ScenarioFit(
            scenario=scenario,
            alpha=SCENARIO_ALPHA[scenario],
            threshold=threshold,
            utility=round(curve[best][1], 6),
            reject_rate=round(sum(r.mass[scenario] >= threshold for r in rows) / len(rows), 6),
            current_threshold=now,
            current_utility=None if now is None else round(mean(now), 6),
            keep_all_utility=round(mean(math.inf), 6),
            hand_on_all_utility=round(mean(-math.inf), 6),
            curve=[(t, round(u, 6)) for t, u in curve],
        ))
    return fits


def successor_of(config: AgentConfig) -> str:
    """The agent a fresh query goes to when `config`'s agent rejects it."""
    peer = next_hop(config.policy, Query(prompt="", id="calibrate"), config.next)
    if peer is None:
        raise ValueError(f"agent {config.name!r} hands nothing on (it is terminal): there is no reject to calibrate")
    return peer.name


class Kept(msgspec.Struct):
    """The agent on one question: its reject probability and whether its kept answer is right."""

    id: str
    mass: dict[Scenario, float]
    correct: dict[Scenario, bool]


class Forced(msgspec.Struct):
    """The successor's forced answer on one question: right or not."""

    id: str
    correct: bool


def journal_path(folder: Path, config: AgentConfig) -> Path:
    """Where one agent's measurements are appended: named by its engine block and budget, so a
    changed adapter or model is measured afresh instead of read from an older journal."""
    key = msgspec.json.encode({"engine": config.engine, "max_tokens": config.max_tokens}, order="deterministic")
    return folder / f"{config.name}-{hashlib.sha256(key).hexdigest()[:12]}.jsonl"


def read_journal(path: Path | None, kind: type[T]) -> dict[str, T]:
    if path is None or not path.exists():
        return {}
    records = {}
    for line in path.read_bytes().splitlines():
        try:
            record = msgspec.json.decode(line, type=kind)
        except msgspec.DecodeError:
            continue  # a line torn by a killed run: that question is measured again
        records[record.id] = record  # type: ignore[attr-defined]
    return records


async def measure(
    items: list[Item], agent: AgentConfig, successor: AgentConfig, *, concurrency: int = 16,
    journal: Path | None = None, build: Any = None,
) -> list[Measured]:
    """Step 2 of the module's doc: the agent's engine, then the successor's, one at a time (on a
    small machine each then has every core). With a `journal` folder each question's result is
    appended as it completes and a rerun measures only what is missing (a cut run resumes)."""
    from disrouter.actors.engine import build_engine

    build = build or build_engine

    async def visit(config: AgentConfig, kind: type[T], one: Any) -> dict[str, T]:
        path = journal_path(journal, config) if journal is not None else None
        done = read_journal(path, kind)
        todo = [item for item in items if item.id not in done]
        if not todo:
            return done
        engine = build(config.engine, agent=config.name)
        await engine.start()
        semaphore = asyncio.Semaphore(concurrency)
        bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"calibrate {config.name}", unit="q")
        sink = path.open("ab") if path is not None else None

        async def bounded(item: Item) -> None:
            async with semaphore:
                record = await one(engine, item)
            done[item.id] = record
            if sink is not None:
                sink.write(b"\n" + msgspec.json.encode(record) + b"\n")  # own line, even after a torn one
                sink.flush()
            bar.update(1)

        try:
            await asyncio.gather(*(bounded(item) for item in todo))
        finally:
            bar.close()
            if sink is not None:
                sink.close()
            await engine.close()
        return done

    async def own(engine: Any, item: Item) -> Kept:
        record = Kept(id=item.id, mass={}, correct={})
        for scenario in Scenario:
            alpha = SCENARIO_ALPHA[scenario]
            # reject_at ∞: never rejected by the probability, so the reply is the answer the agent
            # gives when it keeps the question (its likeliest opening that is not the reject's).
            request = EngineRequest(query_id=item.id, prompt=item.prompt, alpha=alpha, instruction=scenario_instruction(alpha),
                                    allow_reject=True, max_tokens=agent.max_tokens, reject_at=math.inf)
            reply = await engine.generate(request)
            mass = reply.reject_probability  # read at the first step, which decided to keep it
            record.mass[scenario] = mass if mass is not None else await engine.reject_probability(request)
            record.correct[scenario] = reply.decision != "reject" and is_correct(item.kind, reply.text, item.gold)
        return record

    async def forced(engine: Any, item: Item) -> Forced:
        alpha = SCENARIO_ALPHA[Scenario.balance]
        request = EngineRequest(query_id=item.id, prompt=item.prompt, alpha=alpha, instruction=scenario_instruction(alpha),
                                allow_reject=False, max_tokens=successor.max_tokens)
        return Forced(id=item.id, correct=is_correct(item.kind, (await engine.generate(request)).text, item.gold))

    kept = await visit(agent, Kept, own)
    answered = await visit(successor, Forced, forced)
    return [Measured(id=item.id, level=item.level, mass=kept[item.id].mass, correct=kept[item.id].correct,
                     successor_correct=answered[item.id].correct) for item in items]


def calibrate(cfg: TrainConfig, *, force: bool = False) -> Calibration:
    """Measure (journalled under <out>/calibrate/, resumable) and fit; writes measured.jsonl and
    calibration.json."""
    from disrouter.topology.compile import agent_configs
    from disrouter.topology.load import load_topology
    from disrouter.training.mix import validation

    if cfg.calibrate.topology is None:
        raise ValueError("calibrate.topology is required: the topology that serves the agent")
    _, topology = load_topology(cfg.calibrate.topology)
    configs = agent_configs(topology)
    if cfg.agent not in configs:
        raise ValueError(f"{cfg.calibrate.topology} has no agent {cfg.agent!r} (agents: {', '.join(configs)})")
    agent = configs[cfg.agent]
    successor = successor_of(agent)
    out = cfg.out_dir / "calibrate"
    out.mkdir(parents=True, exist_ok=True)
    if force:
        for path in (journal_path(out, agent), journal_path(out, configs[successor])):
            path.unlink(missing_ok=True)
    rows = asyncio.run(measure(validation(cfg), agent, configs[successor], concurrency=cfg.calibrate.concurrency, journal=out))
    (out / "measured.jsonl").write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in rows))
    fits = fit(rows, cfg.calibrate.grid, cost=agent.cost, successor_cost=configs[successor].cost, current=agent.reject_at)
    result = Calibration(
        agent=cfg.agent, successor=successor, topology=str(cfg.calibrate.topology), questions=len(rows),
        cost=agent.cost, successor_cost=configs[successor].cost,
        successor_accuracy=round(sum(r.successor_correct for r in rows) / len(rows), 6), fits=fits,
    )
    (out / "calibration.json").write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    return result


def table(result: Calibration) -> str:
    lines = [
        f"{result.agent} → {result.successor} (successor right on {result.successor_accuracy:.3f}), "
        f"{result.questions} validation questions",
        "| scenario | α | threshold | reject rate | utility | at current threshold | keep all | hand on all |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in result.fits:
        current = "—" if f.current_utility is None else f"{f.current_utility:.3f} (t = {f.current_threshold})"
        lines.append(f"| {f.scenario.value} | {f.alpha} | {f.threshold} | {f.reject_rate:.2f} | {f.utility:.3f} | {current} | "
                     f"{f.keep_all_utility:.3f} | {f.hand_on_all_utility:.3f} |")
    inline = ", ".join(f"{k}: {v}" for k, v in result.reject_at().items())
    lines.append(f"\nin the topology, agent {result.agent!r}:  reject_at: {{{inline}}}")
    return "\n".join(lines)
