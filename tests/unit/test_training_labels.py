import random

import msgspec
import pytest

from disrouter.actors.decision import REJECT_PHRASE, scenario_instruction
from disrouter.actors.engine import EngineRequest
from disrouter.actors.engines.prompting import as_dicts, build_messages
from disrouter.training.config import LabelConfig, SFTConfig, TrainConfig
from disrouter.training.grading import is_correct
from disrouter.training.labels import (
    build_examples,
    forced_messages,
    label,
    own_answer,
    self_aware_messages,
    successor_label,
    templated,
    token_cut,
)
from disrouter.training.sampling import Competence


def record(i: int, p: float, *, split: str = "train", gold: str = "12") -> Competence:
    n = 8
    right = round(p * n)
    samples = [f"7 + 5 = {gold}, so it is {gold}." if k < right else "7 + 5 = 11" for k in range(n)]
    return Competence(id=f"q{i:03d}", task="arith", split=split, kind="numeric", gold=gold, prompt=f"What is 7 + 5? ({i})",
                      p=p, samples=samples, correct=[k < right for k in range(n)])


@pytest.mark.parametrize(
    ("p", "alpha", "expected"),
    [
        (0.8, 0.2, "answer"),  # exactly δ = 1 − α: answer
        (0.79, 0.2, "reject"),
        (0.5, 0.5, "answer"),
        (0.49, 0.5, "reject"),
        (0.2, 0.8, "answer"),
        (0.19, 0.8, "reject"),
        (0.0, 0.8, "reject"),
        (1.0, 0.0, "answer"),
    ],
)
def test_sft_label_is_the_papers_delta_rule(p, alpha, expected):
    assert label(p, alpha) == expected


def test_training_prompts_are_exactly_what_serving_sends():
    served = as_dicts(build_messages(EngineRequest(query_id="x", prompt="What is 2 + 2?", alpha=0.8, instruction=scenario_instruction(0.8))))
    assert self_aware_messages("What is 2 + 2?", 0.8) == served
    assert REJECT_PHRASE in served[0]["content"] and "cost first" in served[0]["content"]
    terminal = as_dicts(build_messages(EngineRequest(query_id="x", prompt="What is 2 + 2?", alpha=0.8, allow_reject=False)))
    assert forced_messages("What is 2 + 2?") == terminal and REJECT_PHRASE not in terminal[0]["content"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is: 40", "The answer is: 40"),  # already templated: kept as it is
        ("5 * 8 = 40\nThe answer is: 40\nThe answer is: 40", "5 * 8 = 40\nThe answer is: 40"),  # cut after the line
        ("So 5 * 8 is 40.\n\nThis is a standard calculation: 40.", "So 5 * 8 is 40.\nThe answer is: 40"),
        ("First 3 + 4 = 7.\nThen 7 * 2 = 14.\nDone, 14 it is", "First 3 + 4 = 7.\nThen 7 * 2 = 14.\nThe answer is: 14"),
        ("It is 2.50 dollars", "It is 2.50 dollars\nThe answer is: 2.5"),
        ("no number here", None),
    ],
)
def test_own_answers_are_put_in_the_answer_template(reply, expected):
    assert templated(reply, "numeric") == expected


def test_choice_replies_get_the_template_too():
    assert templated("B. Paris is the capital", "choice") == "B. Paris is the capital\nThe answer is: B"


def test_own_answer_is_a_correct_sample_and_the_shortest():
    r = record(1, 0.5)
    r.samples[1] = "A long way round: 7 + 5 makes 12 in the end, so 12."
    text = own_answer(r)
    assert text == "7 + 5 = 12, so it is 12.\nThe answer is: 12" and is_correct("numeric", text, "12")
    assert own_answer(record(2, 0.0)) is None


def config(**sft) -> TrainConfig:
    return TrainConfig(agent="a", model="m", out="/tmp/x", sft=SFTConfig(**sft))


def test_examples_follow_the_labels_and_pooled_balance_keeps_each_scenarios_ratio():
    rng = random.Random(0)
    records = [record(i, rng.choice([0.0, 0.0, 0.0, 0.25, 0.5, 0.875])) for i in range(300)]
    records += [record(900 + i, 1.0, split="test") for i in range(20)]  # held out: never a label
    examples, stats = build_examples(config(forced_share=0.0), records)
    assert stats["labels"]["answer"] == stats["labels"]["reject"]
    assert all(e.id < "q900" for e in examples)
    for e in examples:
        assert e.label == label(e.p, e.alpha)
        target = e.completion[0]["content"]
        assert (target == REJECT_PHRASE) == (e.label == "reject")
        if e.label == "answer":
            assert is_correct("numeric", target, "12") and target.endswith("The answer is: 12")
        assert e.prompt == self_aware_messages(next(r.prompt for r in records if r.id == e.id), e.alpha)
    rate = {a: c["answer"] / (c["answer"] + c["reject"]) for a, c in stats["per_alpha"].items()}
    assert rate["0.2"] < rate["0.5"] < rate["0.8"]  # the scenario signal survives balancing


def test_per_scenario_balance_and_forced_share():
    records = [record(i, p) for i, p in enumerate([0.0] * 60 + [0.5] * 30 + [1.0] * 10)]
    examples, stats = build_examples(config(balance="scenario", forced_share=0.2), records)
    for counts in stats["per_alpha"].values():
        assert counts["answer"] == counts["reject"]
    forced = [e for e in examples if e.alpha is None]
    assert len(forced) == stats["forced"] and abs(len(forced) / len(examples) - 0.2) < 0.03
    assert all(REJECT_PHRASE not in e.prompt[0]["content"] and e.label == "answer" for e in forced)
    unbalanced, stats = build_examples(config(balance="none", forced_share=0.0), records)
    assert stats["labels"] == {"answer": 40 + 40 + 10, "reject": 60 + 60 + 90}


def test_a_balance_ratio_bounds_the_larger_class_and_keeps_the_scenario_signal():
    # 300 questions a strong agent mostly knows: its natural labels are mostly answers.
    rng = random.Random(1)
    records = [record(i, rng.choice([1.0, 1.0, 1.0, 0.875, 0.625, 0.375, 0.0])) for i in range(300)]
    natural = build_examples(config(balance="none", forced_share=0.0), records)[1]["labels"]
    assert natural["answer"] > 2 * natural["reject"]
    fifty, _ = build_examples(config(forced_share=0.0), records)
    bounded, stats = build_examples(config(forced_share=0.0, balance_ratio=2.0), records)
    assert stats["labels"] == {"answer": 2 * natural["reject"], "reject": natural["reject"]} and stats["balance_ratio"] == 2.0
    assert sum(e.label == "answer" for e in fifty) == natural["reject"]  # the default is still 50/50
    rate = {a: c["answer"] / (c["answer"] + c["reject"]) for a, c in stats["per_alpha"].items()}
    assert rate["0.2"] < rate["0.5"] < rate["0.8"]
    # Per scenario: each scenario's larger class at most twice its smaller.
    _, stats = build_examples(config(balance="scenario", forced_share=0.0, balance_ratio=2.0), records)
    for counts in stats["per_alpha"].values():
        assert max(counts["answer"], counts["reject"]) == min(2 * min(counts["answer"], counts["reject"]),
                                                             max(counts["answer_before"], counts["reject_before"]))
    with pytest.raises(ValueError, match="balance_ratio"):
        config(balance_ratio=0.5)


@pytest.mark.parametrize(
    ("p", "alpha", "p_next", "expected"),
    [
        (0.0, 0.2, 1.0, "reject"),  # only the successor can: hand on
        (0.0, 0.8, 1.0, "reject"),  # 0 < 1 − 0.8·0.8 = 0.36
        (0.4, 0.8, 1.0, "answer"),  # 0.4 ≥ 0.36: cheaper to take the chance
        (0.0, 0.2, 0.0, "answer"),  # neither can: be wrong cheaply (the paper's rule rejects)
        (0.5, 0.2, 0.6, "answer"),  # the successor is barely better: not worth 0.16
        (0.3, 0.2, 0.6, "reject"),  # 0.3 < 0.6 − 0.16
        (0.44, 0.5, 0.84, "answer"),  # exactly at the break-even point: answer
    ],
)
def test_successor_rule_rejects_only_when_handing_on_pays(p, alpha, p_next, expected):
    assert successor_label(p, alpha, p_next, cost_gap=0.8) == expected


def write_cache(path, competence: dict[str, float]) -> None:
    with path.open("w") as fh:
        for key, p in competence.items():
            fh.write(msgspec.json.encode(Competence(id=key, task="arith", split="train", kind="numeric", gold="1", prompt="x",
                                                   p=p, samples=[], correct=[])).decode() + "\n")


def test_successor_labels_read_the_successors_competence_and_count_what_it_lacks(tmp_path):
    records = [record(i, p) for i, p in enumerate([0.0, 0.0, 0.5, 1.0])]
    # q000: only the successor can; q001: neither can; q002: both half; q003: not in its cache.
    write_cache(tmp_path / "competence.jsonl", {"q000": 1.0, "q001": 0.0, "q002": 0.5})
    labels = LabelConfig(rule="successor", successor=str(tmp_path), cost=0.1, successor_cost=0.9, unsolved="attempt")
    examples, stats = build_examples(config(alphas=[0.5], balance="none", forced_share=0.0, labels=labels), records)
    by_id = {e.id: e.label for e in examples}
    # q001: neither can, so an answer whose target is its own (wrong) attempt.
    assert by_id == {"q000": "reject", "q001": "answer", "q002": "answer", "q003": "answer"}
    attempt = next(e for e in examples if e.id == "q001").completion[0]["content"]
    assert attempt == "7 + 5 = 11\nThe answer is: 11" and stats["answers_never_right"] == 1
    assert stats["successor_missing"] == 1 and stats["successor_fallback_p"] == 0.5
    assert "successor" in stats["rule"]


@pytest.mark.parametrize(("unsolved", "target"), [("skip", None), ("reference", "The answer is: 12")])
def test_where_neither_can_the_question_is_skipped_or_taught_its_reference_answer(tmp_path, unsolved, target):
    records = [record(0, 0.0), record(1, 1.0)]  # q000: never right, and the successor neither
    write_cache(tmp_path / "competence.jsonl", {"q000": 0.0, "q001": 1.0})
    labels = LabelConfig(rule="successor", successor=str(tmp_path), cost=0.1, successor_cost=0.9, unsolved=unsolved)
    examples, stats = build_examples(config(alphas=[0.8], balance="none", forced_share=0.0, labels=labels), records)
    by_id = {e.id: e for e in examples}
    assert by_id["q001"].completion[0]["content"] == "7 + 5 = 12, so it is 12.\nThe answer is: 12"
    if target is None:
        assert "q000" not in by_id and stats["answers_never_right"] == 0
    else:
        assert by_id["q000"].label == "answer" and by_id["q000"].completion[0]["content"] == target
        assert stats["answers_never_right"] == 1


def test_successor_rule_needs_its_inputs_and_says_which_is_missing(tmp_path):
    from disrouter.training.config import ConfigError, load_config

    path = tmp_path / "run.yaml"
    path.write_text("agent: a\nmodel: m\nout: o\nsft: {labels: {rule: successor, successor: x, cost: 0.1}}\n")
    with pytest.raises(ConfigError, match="sft.labels.successor_cost"):
        load_config(path)
    labels = LabelConfig(rule="successor", successor=str(tmp_path / "nowhere"), cost=0.1, successor_cost=0.9)
    with pytest.raises(FileNotFoundError, match="sft.labels.successor"):
        build_examples(config(labels=labels), [record(0, 0.5)])


def test_successor_rule_skips_what_neither_agent_can_by_default(tmp_path):
    records = [record(i, p) for i, p in enumerate([0.0, 0.0, 0.5])]
    write_cache(tmp_path / "competence.jsonl", {"q000": 1.0, "q001": 0.0, "q002": 0.5})
    labels = LabelConfig(rule="successor", successor=str(tmp_path), cost=0.1, successor_cost=0.9)
    examples, stats = build_examples(config(alphas=[0.5], balance="none", forced_share=0.0, labels=labels), records)
    assert {e.id: e.label for e in examples} == {"q000": "reject", "q002": "answer"}
    assert stats["answers_never_right"] == 0


class WordTokenizer:
    """A tokenizer of whitespace-separated words: enough to see what a cut keeps."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": text.split()}

    def decode(self, ids):
        return " ".join(ids)


def test_a_gate_is_taught_the_opening_of_each_answer_and_the_whole_reject():
    rng = random.Random(2)
    records = [record(i, rng.choice([0.0, 0.5, 1.0])) for i in range(60)]
    whole, _ = build_examples(config(forced_share=0.2), records)
    cut, stats = build_examples(config(forced_share=0.2, answer_tokens=3), records, WordTokenizer())
    assert stats["answer_tokens"] == 3
    # The same examples in the same order (the cut draws nothing), only the answers shorter.
    assert [(e.id, e.alpha, e.label) for e in cut] == [(e.id, e.alpha, e.label) for e in whole]
    for short, full in zip(cut, whole):
        text, target = short.completion[0]["content"], full.completion[0]["content"]
        if short.label == "reject":
            assert text == target == REJECT_PHRASE
        else:
            assert text == " ".join(target.split()[:3]) and len(target.split()) > 3
    assert any(e.alpha is None for e in cut)  # forced examples are cut too
    assert token_cut(WordTokenizer(), 3)("a b") == "a b"  # a short target is kept as it is
    with pytest.raises(ValueError, match="tokenizer"):  # the config asks for a cut: no silent whole answers
        build_examples(config(answer_tokens=3), records)
