"""The self-awareness report's arithmetic, on a fake engine (the real one: tests/training)."""

import asyncio

import numpy as np
import pytest

from disrouter.actors.decision import REJECT_PHRASE
from disrouter.actors.engine import EngineRequest, EngineResult
from disrouter.training.config import TrainConfig
from disrouter.training.report import build_report, collect, mass_row
from disrouter.training.sampling import Competence


def item(i: int, gold: str) -> Competence:
    return Competence(id=f"q{i}", task="arith", split="test", kind="numeric", gold=gold, prompt=f"What is {gold}? ({i})",
                      p=0.5, samples=[], correct=[])


class SplitOpenings:
    """An agent that knows exactly which questions it gets right (the even ones) and gives the
    reject a probability of 0.6 there and 0.3 on the odd ones, yet whose greedy reply is the
    reject everywhere: the argmax of a reject that always opens with "I" against answers that
    open in many ways."""

    def __init__(self, with_mass: bool = True) -> None:
        if not with_mass:
            self.reject_probability = None  # type: ignore[assignment]

    async def generate(self, request: EngineRequest) -> EngineResult:
        i = int(request.query_id[1:].split("@")[0])
        if request.allow_reject:
            return EngineResult(text=REJECT_PHRASE, tokens_out=5)
        return EngineResult(text=f"The answer is: {i if i % 2 == 0 else -1}", tokens_out=6)

    async def reject_probability(self, request: EngineRequest) -> float:
        i = int(request.query_id[1:].split("@")[0])
        return 0.3 if i % 2 == 0 else 0.6


def test_the_first_token_mass_shows_what_greedy_decoding_hides():
    items = [item(i, str(i)) for i in range(10)]
    cfg = TrainConfig(agent="a", model="m", out="/tmp/x")
    replies = asyncio.run(collect(SplitOpenings(), items, cfg, (0.2, 0.8), confidence=False, label="t"))
    assert replies.forced_correct.tolist() == [i % 2 == 0 for i in range(10)]
    report = build_report(cfg, items, replies, replies, None, alphas=(0.2, 0.8))
    for row in report["trained"]:
        assert row["answer_rate"] == 0.0 and row["f1_correct"] == 0.0  # greedy: always the reject
        assert row["reject_mass_auc"] == 1.0 and row["reject_mass_median"] == pytest.approx(0.45)
        assert row["answer_rate_mass"] == 0.5 and row["f1_correct_mass"] == 1.0
    assert "AUC for own correctness" in report["table"] and "| 0.8 | 0.450 | 1.000 | 0.500 | 1.000 |" in report["table"]


def test_an_engine_without_the_mass_leaves_the_columns_out():
    items = [item(i, str(i)) for i in range(4)]
    cfg = TrainConfig(agent="a", model="m", out="/tmp/x")
    engine = SplitOpenings(with_mass=False)
    replies = asyncio.run(collect(engine, items, cfg, (0.5,), confidence=False, label="t"))
    assert replies.reject_mass == {}
    report = build_report(cfg, items, replies, replies, None, alphas=(0.5,))
    assert "reject_mass_auc" not in report["trained"][0] and "AUC" not in report["table"]


def test_the_references_are_ranked_too():
    items = [item(i, str(i)) for i in range(10)]
    cfg = TrainConfig(agent="a", model="m", out="/tmp/x")
    replies = asyncio.run(collect(SplitOpenings(), items, cfg, (0.5,), confidence=False, label="t"))
    replies.confidence = np.where(replies.forced_correct, 0.9, 0.2)  # a confidence that knows
    probe = np.where(replies.forced_correct, 0.2, 0.9)  # a probe that has it backwards
    report = build_report(cfg, items, replies, replies, probe, alphas=(0.5,))
    assert report["auc"] == {"untrained_confidence": 1.0, "minilm_probe": 0.0}
    assert "untrained confidence 1.000, MiniLM probe 0.000" in report["table"]


def test_mass_row_edges():
    right = np.array([True, True, False, False])
    assert mass_row(np.array([0.1, 0.2, 0.9, 0.7]), right)["reject_mass_auc"] == 1.0
    assert mass_row(np.array([0.9, 0.7, 0.1, 0.2]), right)["reject_mass_auc"] == 0.0  # ranks it backwards
    assert mass_row(np.array([0.5, 0.5, 0.5, 0.5]), right)["reject_mass_auc"] == 0.5
    one_class = mass_row(np.array([0.1, 0.9]), np.array([True, True]))
    assert one_class["reject_mass_auc"] is None and one_class["answer_rate_mass"] == 0.5
