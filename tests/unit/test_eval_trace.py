"""Reading traces into tables: unknown cells, splits, chains, and bad input named by line."""

import math

import numpy as np
import pytest

from disrouter.actors.decision import REJECT_PHRASE
from disrouter.actors.trace import TraceRecord
from disrouter.cli import main
from disrouter.evaluation.evalset import Chain, EvalInputError, LabelsHidden, build, split_records
from tests.unit.eval_traces import CHAIN, records, write


def test_a_live_reject_line_has_unknown_correctness_not_wrong():
    rows = [
        # What live mode writes for a reject hop: the reject phrase, correct=false.
        TraceRecord("q1", "a", False, answer=REJECT_PHRASE, decision="reject"),
        TraceRecord("q1", "b", True, answer="42", decision="answer"),
        # An external trace's reject line with a known counterfactual stays as recorded.
        TraceRecord("q2", "a", True, decision="reject"),
        TraceRecord("q2", "b", False, decision="answer"),
    ]
    table = build(rows, Chain(("a", "b", "c"), (0.1, 0.5, 0.9)))
    assert table.query_ids == ("q1", "q2")
    assert math.isnan(table.correct[0, 0])  # unknown, not 0
    assert table.correct[0, 1] == 1.0
    assert table.correct[1, 0] == 1.0 and table.correct[1, 1] == 0.0
    assert np.isnan(table.correct[:, 2]).all()  # agent c never recorded
    assert table.decision.tolist()[0][:2] == [0.0, 1.0]
    assert table.answers[0][0] is None and table.answers[0][1] == "42"


def test_lines_of_agents_outside_the_chain_are_ignored_and_duplicates_refused():
    rows = records() + [TraceRecord("q1", "zeta", True)]
    assert build(rows, CHAIN).n == 4
    with pytest.raises(EvalInputError, match="two lines for agent 'a'"):
        build(records() + [TraceRecord("q1", "a", True)], CHAIN)


def test_the_test_split_hides_its_labels():
    table = build(records(), CHAIN)
    hidden = table.hidden()
    with pytest.raises(LabelsHidden):
        _ = hidden.correct
    assert hidden.n == 4 and table.correct.shape == (4, 3)


def test_split_field_separate_training_trace_and_hash_split():
    train = records({"t1": (1, 1, 1)}, split="train")
    test = records(split="test")
    splits = split_records(train + test, CHAIN)
    assert splits.train.query_ids == ("t1",) and splits.test.n == 4
    assert splits.how == "the trace's split field"

    separate = split_records(records(), CHAIN, train_records=records({"t9": (0, 1, 1)}))
    assert separate.train.query_ids == ("t9",) and separate.test.n == 4

    many = {f"q{i}": (1, 0, 1) for i in range(200)}
    hashed = split_records(records(many), CHAIN, train_fraction=0.3, seed=0)
    assert hashed.train.n + hashed.test.n == 200 and 40 < hashed.train.n < 80
    again = split_records(records(many), CHAIN, train_fraction=0.3, seed=0)
    assert again.train.query_ids == hashed.train.query_ids
    assert split_records(records(many), CHAIN, seed=5).train.query_ids != hashed.train.query_ids


def test_inconsistent_splits_are_errors():
    rows = records(split="test")
    rows[0] = TraceRecord("q1", "a", True, split="train")
    with pytest.raises(EvalInputError, match="'q1' is in split"):
        split_records(rows, CHAIN)
    rows = records(split="test")
    rows[0] = TraceRecord("q1", "a", True)
    with pytest.raises(EvalInputError):
        split_records(rows, CHAIN)
    with pytest.raises(EvalInputError, match="no lines for any chain agent"):
        split_records(records(), Chain(("x",), (1.0,)))


def test_chain_from_agents_and_topology(tmp_path):
    assert Chain.parse("s:0.1, m:0.4,l:0.9") == Chain(("s", "m", "l"), (0.1, 0.4, 0.9))
    for bad in ("s", "s:cheap", "s:0.1,s:0.2"):
        with pytest.raises(EvalInputError):
            Chain.parse(bad)
    topo = tmp_path / "t.yaml"
    topo.write_text(
        """
applications:
  - name: demo
    import_path: disrouter.topology.app:build_app
    args:
      namespace: demo
      gamma: 0.7
      entry: small
      agents:
        - {name: large, cost: 0.9, engine: {type: replay, trace: t.jsonl}}
        - {name: small, cost: 0.1, engine: {type: replay, trace: t.jsonl}, next: [mid]}
        - {name: mid, cost: 0.4, engine: {type: replay, trace: t.jsonl}, next: [large]}
"""
    )
    chain, gamma = Chain.from_topology(topo)
    assert chain == Chain(("small", "mid", "large"), (0.1, 0.4, 0.9)) and gamma == 0.7
    with pytest.raises(EvalInputError, match="does not exist"):
        Chain.from_topology(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("bad_line", "says"),
    [
        ('{"query_id": "q9", "agent": "a", "correct": tru', "is not valid JSON"),
        ('{"query_id": "q9", "agent": "a"}', "does not match the trace format"),
        ('{"query_id": "q9", "agent": "a", "correct": true, "confidence": 1.5}', "outside [0, 1]"),
    ],
)
def test_malformed_trace_lines_are_named_by_line(tmp_path, capsys, bad_line, says):
    path = write(tmp_path / "trace.jsonl", records())
    lines = path.read_text().splitlines()
    lines.insert(2, bad_line)  # becomes line 3
    path.write_text("\n".join(lines) + "\n")
    code = main(["eval", str(path), "--agents", "a:0.1,b:0.5,c:0.9", "--out", str(tmp_path / "out"), "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}:3:" in err and says in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_cli_errors_are_clear(tmp_path, capsys):
    path = write(tmp_path / "trace.jsonl", records())
    assert main(["eval", str(path), "--out", str(tmp_path)]) == 2
    assert "--agents" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope.jsonl"), "--agents", "a:1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", str(path), "--agents", "a:0.1,b:0.5,c:0.9", "--methods", "nosuch*", "--no-plots", "--out", str(tmp_path)]) == 2
    assert "match no method" in capsys.readouterr().err
    assert main(["eval", "--live", "--dataset", "gsm8k"]) == 2
    assert "--live needs --topology" in capsys.readouterr().err
