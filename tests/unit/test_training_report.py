"""The self-awareness report's arithmetic, on a fake engine (the real one: tests/training)."""

import asyncio

import numpy as np
import pytest

from disrouter.actors.decision import REJECT_PHRASE
from disrouter.actors.engine import EngineRequest, EngineResult
from disrouter.training.config import TrainConfig
from disrouter.training.report import build_report, collect, fit_reject_at, mass_row
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


def test_reject_at_is_fitted_to_the_agents_own_reward():
    """On validation, the threshold keeps the questions where the agent's competence beats the
    reject's reward (1 − α)^γ: few at α = 0.2 (0.894), most at α = 0.8 (0.447)."""
    mass = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    p = np.array([1.0, 0.95, 0.7, 0.5, 0.0])
    grid = [round(0.05 * k, 2) for k in range(1, 21)]
    low, high = fit_reject_at(mass, p, 0.2, 0.5, grid), fit_reject_at(mass, p, 0.8, 0.5, grid)
    assert (mass < low).tolist() == [True, True, False, False, False]
    assert (mass < high).tolist() == [True, True, True, True, False]
    # A flat stretch goes to the threshold nearest ½: here every threshold keeps everything.
    assert fit_reject_at(np.full(5, 0.01), p, 0.8, 0.5, grid) == 0.5


def test_a_fitted_reject_at_is_scored_like_the_half():
    items = [item(i, str(i)) for i in range(10)]
    cfg = TrainConfig(agent="a", model="m", out="/tmp/x")
    replies = asyncio.run(collect(SplitOpenings(), items, cfg, (0.2, 0.8), confidence=False, label="t"))
    report = build_report(cfg, items, replies, replies, None, alphas=(0.2, 0.8), reject_at={0.2: 0.5, 0.8: 0.2})
    kept, none = report["trained"]
    assert kept["reject_at_fitted"] == 0.5 and kept["answer_rate_fitted"] == 0.5 and kept["f1_correct_fitted"] == 1.0
    assert none["answer_rate_fitted"] == 0.0 and none["f1_correct_fitted"] == 0.0  # 0.3 and 0.6 are both ≥ 0.2
    assert "| 0.2 | 0.500 | 0.500 | 1.000 |" in report["table"] and "| 0.8 | 0.200 | 0.000 | 0.000 |" in report["table"]
    plain = build_report(cfg, items, replies, replies, None, alphas=(0.2, 0.8))
    assert "reject_at_fitted" not in plain["trained"][0] and "fitted per α" not in plain["table"]


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
    assert report["auc"] == {"untrained_confidence": 1.0, "minilm_probe": 0.0, "minilm_probe_base": None}
    assert "untrained confidence 1.000 (base), MiniLM probe 0.000 (trained)" in report["table"]
    assert report["minilm_probe_base_rule"] is None and "probe of the base model" not in report["table"]


def test_each_probe_is_scored_against_the_model_it_routes_for():
    """The probe of the trained model is scored against the trained model's correctness and
    competence, the base model's probe against the base's: a router is right or wrong about
    the agent it routes for."""
    items = [item(i, str(i)) for i in range(10)]
    cfg = TrainConfig(agent="a", model="m", out="/tmp/x")
    base = asyncio.run(collect(SplitOpenings(), items, cfg, (0.5,), confidence=False, label="b"))
    trained = asyncio.run(collect(SplitOpenings(), items, cfg, (0.5,), confidence=False, label="t"))
    base.forced_correct = np.arange(10) < 2  # the base model got q0 and q1 right
    knows_trained = trained.forced_correct.copy()  # the trained one gets the even ones
    probe = np.where(knows_trained, 0.99, 0.01)
    base_probe = np.where(base.forced_correct, 0.99, 0.01)
    report = build_report(cfg, items, base, trained, probe, alphas=(0.5,), base_p=base.forced_correct.astype(float),
                          trained_p=knows_trained.astype(float), base_probe=base_probe)
    assert report["auc"]["minilm_probe"] == 1.0 and report["auc"]["minilm_probe_base"] == 1.0
    row, base_row = report["minilm_probe_rule"][0], report["minilm_probe_base_rule"][0]
    assert row["answer_rate"] == 0.5 and row["f1_correct"] == 1.0 and row["f1_competence"] == 1.0
    assert base_row["answer_rate"] == 0.2 and base_row["f1_correct"] == 1.0 and base_row["f1_competence"] == 1.0
    # The base model's probe put to route for the trained model answers q0 and q1, and only q0 is
    # one the trained model gets right (of its five): F1 = 2·1 / (2 + 5).
    swapped = build_report(cfg, items, base, trained, base_probe, alphas=(0.5,), trained_p=knows_trained.astype(float))
    assert swapped["minilm_probe_rule"][0]["f1_correct"] == round(2 * 1 / (2 + 5), 4)
    assert "probe of the base model (fitted on the training mix, scored against the base): F1 correctness 1.000" \
        in report["table"]


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
    from disrouter.training.report import competence_cache, own_competence, p_of
    from disrouter.training.sampling import as_item

    items = [item(i, str(i)) for i in range(3)]
    cfg = TrainConfig(agent="a", model="m", out=str(tmp_path), sample=SampleConfig(n=4))
    engine = Sampler(right=3)
    path = tmp_path / "competence-x.jsonl"
    p = p_of(asyncio.run(own_competence(engine, [as_item(r) for r in items], cfg, path, "trained")), items)
    assert p.tolist() == [0.75, 0.75, 0.75] and engine.calls == 3
    again = p_of(asyncio.run(own_competence(Sampler(right=0), [as_item(r) for r in items], cfg, path, "trained")), items)
    assert again.tolist() == p.tolist()  # read from the cache, not sampled again
    more = [item(i, str(i)) for i in range(3, 5)]
    both = asyncio.run(own_competence(Sampler(right=1), [as_item(r) for r in items + more], cfg, path, "trained"))
    assert list(both) == [f"q{i}" for i in range(5)] and engine.calls == 3  # only the new two were sampled
    assert p_of(both, more).tolist() == [0.25, 0.25]

    one, two = tmp_path / "one", tmp_path / "two"
    for folder, weights in ((one, b"a"), (two, b"b")):
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(weights)
    assert competence_cache(tmp_path, one) != competence_cache(tmp_path, two)
    assert competence_cache(tmp_path, None).name == "competence-base.jsonl"
