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


def test_each_model_is_scored_against_its_own_competence():
    """Training changes what the agent can do: the trained rows are scored against the trained
    model's sampled competence, the references against the untrained model's."""
    items = [item(i, str(i)) for i in range(10)]
    cfg = TrainConfig(agent="a", model="m", out="/tmp/x")
    replies = asyncio.run(collect(SplitOpenings(), items, cfg, (0.5,), confidence=False, label="t"))
    replies.confidence = np.full(10, 0.95)  # the untrained rule answers everything
    even = np.asarray([i % 2 == 0 for i in range(10)])
    base_p = np.where(np.arange(10) < 2, 1.0, 0.0)  # the untrained model knew only q0 and q1
    trained_p = np.where(even, 1.0, 1 / 3)  # training taught it the even ones
    report = build_report(cfg, items, replies, replies, None, alphas=(0.5,), base_p=base_p, trained_p=trained_p)
    row = report["trained"][0]
    assert row["optimal_answer_rate"] == 0.5  # the trained model's optimum, not the base's 0.2
    assert row["f1_competence_mass"] == 1.0  # P(reject) < ½ exactly on the even ones
    conf = report["untrained_confidence_rule"][0]
    assert conf["optimal_answer_rate"] == 0.2 and conf["f1_competence"] == round(2 * 2 / (10 + 2), 4)
    assert report["competence"] == {"before": 0.2, "after": round((5 + 5 / 3) / 10, 4), "trained_sampled": True}
    assert "| 0.5 | 0.000 | – | 0.000 | " in report["table"] and "F1 competence, P(reject) < ½" in report["table"]

    alone = build_report(cfg, items, replies, replies, None, alphas=(0.5,))  # no sampling after training
    assert alone["competence"]["trained_sampled"] is False and "not sampled after training" in alone["table"]


class Sampler:
    """Draws `n` replies; the first `right` of them carry the gold answer."""

    def __init__(self, right: int) -> None:
        self.right, self.calls = right, 0

    async def sample(self, request: EngineRequest, n: int, temperature: float, top_p: float = 1.0):
        from disrouter.actors.engines.vllm import Sample

        self.calls += 1
        gold = request.prompt.split()[2].rstrip("?")
        return [Sample(text=f"The answer is: {gold if k < self.right else -1}", tokens_in=3, tokens_out=4) for k in range(n)]


def test_own_competence_is_sampled_once_and_cached_per_adapter(tmp_path):
    from disrouter.training.config import SampleConfig
    from disrouter.training.report import competence_cache, own_competence

    items = [item(i, str(i)) for i in range(3)]
    cfg = TrainConfig(agent="a", model="m", out=str(tmp_path), sample=SampleConfig(n=4))
    engine = Sampler(right=3)
    path = tmp_path / "competence-x.jsonl"
    p = asyncio.run(own_competence(engine, items, cfg, path, "trained"))
    assert p.tolist() == [0.75, 0.75, 0.75] and engine.calls == 3
    again = asyncio.run(own_competence(Sampler(right=0), items, cfg, path, "trained"))
    assert again.tolist() == p.tolist()  # read from the cache, not sampled again

    one, two = tmp_path / "one", tmp_path / "two"
    for folder, weights in ((one, b"a"), (two, b"b")):
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(weights)
    assert competence_cache(tmp_path, one) != competence_cache(tmp_path, two)
    assert competence_cache(tmp_path, None).name == "competence-base.jsonl"
