"""Streaming an answer's text: the agent releases only an answer's text (never a reject's), the
publisher never blocks nor fails the hop, and the reader's assembler turns best-effort chunks
(lost, repeated, reordered, another run's) plus the final Answer into exactly the answer."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from disrouter.actors.agent import Agent, Final, Forward
from disrouter.actors.contracts import Chunk, Query
from disrouter.actors.decision import REJECT_PHRASE
from disrouter.actors.engines.replay import ReplayEngine
from disrouter.actors.streaming import ChunkPublisher, ReleaseGate
from disrouter.client.stream import TextAssembler
from disrouter.topology.compile import agent_configs
from disrouter.topology.load import parse_topology

ANSWER = "The answer is: 42, because six times seven."


def piece(offset: int, text: str, run: str = "r1") -> Chunk:
    return Chunk(id="q", run=run, offset=offset, text=text)


# --- the reader's side --------------------------------------------------------------------------


def test_chunks_in_order_then_the_rest_of_the_answer():
    text = TextAssembler()
    got = [text.feed(piece(0, ANSWER[:10])), text.feed(piece(10, ANSWER[10:20]))]
    got.append(text.finish(ANSWER))
    assert got == [ANSWER[:10], ANSWER[10:20], ANSWER[20:]]
    assert "".join(got) == ANSWER and not text.diverged


def test_a_lost_chunk_delays_text_never_loses_it():
    text = TextAssembler()
    got = [text.feed(piece(0, ANSWER[:10])), text.feed(piece(20, ANSWER[20:30]))]  # 10..20 lost: a gap
    got.append(text.finish(ANSWER))
    assert got[1] == "" and text.dropped == 1
    assert "".join(got) == ANSWER


def test_reordered_repeated_and_overlapping_chunks():
    text = TextAssembler()
    got = [
        text.feed(piece(10, ANSWER[10:20])),  # ahead of what we have: dropped
        text.feed(piece(0, ANSWER[:10])),
        text.feed(piece(0, ANSWER[:10])),  # a repeat: nothing new
        text.feed(piece(5, ANSWER[5:25])),  # a resend from an older offset: only its new part
    ]
    assert got == ["", ANSWER[:10], "", ANSWER[10:25]]
    got.append(text.finish(ANSWER))
    assert "".join(got) == ANSWER


def test_another_run_of_the_same_query_is_ignored():
    text = TextAssembler()
    got = [text.feed(piece(0, "The answer is: 4")), text.feed(piece(0, "Something else entirely", run="r2"))]
    assert got == ["The answer is: 4", ""]
    assert text.finish("The answer is: 42") == "2"


def test_an_answer_that_does_not_extend_the_streamed_text_is_flagged():
    text = TextAssembler()
    text.feed(piece(0, "The answer is: 7"))
    assert text.finish("The answer is: 42") == "" and text.diverged


def test_no_chunks_at_all_gives_the_answer_in_one_piece():
    text = TextAssembler()
    assert text.finish(ANSWER) == ANSWER


# --- the agent's side ---------------------------------------------------------------------------


def test_the_gate_holds_back_the_reject_phrase_and_passes_an_answer():
    seen: list[str] = []
    gate = ReleaseGate(seen.append, certain=False)
    for prefix in ("I", "I don", "I don't know", "I don't know!"):
        gate(prefix)
    assert seen == []  # a reject's tokens never leave the agent
    gate = ReleaseGate(seen.append, certain=False)
    for prefix in ("I", "I don't", "I don't know how", "I don't know how, but 4"):
        gate(prefix)
    assert seen == ["I don't know how", "I don't know how, but 4"]  # released once it can only be an answer
    seen.clear()
    certain = ReleaseGate(seen.append, certain=True)
    certain("I")
    assert seen == ["I"]


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.jsonl"
    lines = [
        {"query_id": "easy", "agent": "small", "correct": True, "answer": ANSWER, "decision": "answer"},
        {"query_id": "hard", "agent": "small", "correct": False, "answer": "17", "decision": "reject"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


async def _agent(trace: Path, terminal: bool, awareness: str = "generative", stream_chars: int = 4) -> Agent:
    agents = [{"name": "small", "cost": 0.1, "awareness": awareness,
               "engine": {"type": "replay", "trace": str(trace), "stream_chars": stream_chars}}]
    if not terminal:
        agents[0]["next"] = ["large"]
        agents.append({"name": "large", "cost": 0.9, "engine": {"type": "replay", "trace": str(trace)}})
    config = agent_configs(parse_topology({"namespace": "ns", "agents": agents}))["small"]
    engine = ReplayEngine.from_options(agent="small", trace=str(trace), stream_chars=stream_chars)
    await engine.start()
    return Agent(config, engine)


async def test_an_answering_agent_streams_its_answer_in_pieces(trace):
    agent = await _agent(trace, terminal=False)
    seen: list[str] = []
    outcome = await agent.process(Query(prompt="?", id="easy", stream=True), seen.append)
    assert isinstance(outcome, Final) and outcome.answer.answer == ANSWER
    assert len(seen) > 2 and seen[-1] == ANSWER
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:]))  # it only grows


async def test_a_rejecting_agent_streams_nothing(trace):
    agent = await _agent(trace, terminal=False)
    seen: list[str] = []
    outcome = await agent.process(Query(prompt="?", id="hard", stream=True), seen.append)
    assert isinstance(outcome, Forward) and seen == []
    # the same agent forced to answer (terminal) streams the answer it gives
    forced = await _agent(trace, terminal=True)
    outcome = await forced.process(Query(prompt="?", id="hard", stream=True), seen.append)
    assert isinstance(outcome, Final) and outcome.answer.forced and seen[-1] == "17"


async def test_confidence_mode_streams_only_when_it_must_answer(trace):
    lines = [json.loads(line) | {"confidence": 0.9} for line in trace.read_text().splitlines()]
    trace.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    seen: list[str] = []
    agent = await _agent(trace, terminal=False, awareness="confidence")
    assert isinstance(await agent.process(Query(prompt="?", id="easy", stream=True), seen.append), Final)
    assert seen == []  # the confidence of the whole reply decided: nothing could go out before
    terminal = await _agent(trace, terminal=True, awareness="confidence")
    await terminal.process(Query(prompt="?", id="easy", stream=True), seen.append)
    assert seen[-1] == ANSWER


async def test_an_engine_that_does_not_stream_answers_in_one_piece(trace):
    agent = await _agent(trace, terminal=False, stream_chars=0)
    seen: list[str] = []
    outcome = await agent.process(Query(prompt="?", id="easy", stream=True), seen.append)
    assert isinstance(outcome, Final) and outcome.answer.answer == ANSWER and seen == []


# --- the publisher ------------------------------------------------------------------------------


class FakeProducer:
    def __init__(self, fail: int = 0, hang: bool = False) -> None:
        self.sent: list[Chunk] = []
        self.fail = fail
        self.hang = hang
        self.release = asyncio.Event()

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("broker away")
        self.sent.append(msgspec.json.decode(value, type=Chunk))
        await self.release.wait()


async def _settle(publisher: ChunkPublisher) -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_the_publisher_coalesces_while_a_send_is_in_flight():
    producer = FakeProducer()
    stats: Counter[str] = Counter()
    publisher = ChunkPublisher(producer, "ns.stream", "q", "small", stats)  # type: ignore[arg-type]
    publisher.offer("The")
    await _settle(publisher)
    for prefix in ("The an", "The answer", "The answer is"):
        publisher.offer(prefix)  # never blocks, though the first send is not acknowledged
    producer.release.set()
    await _settle(publisher)
    assert [(c.offset, c.text) for c in producer.sent] == [(0, "The"), (3, " answer is")]
    assert stats["stream_chunks"] == 2
    publisher.close()


async def test_a_failed_chunk_is_counted_and_its_text_resent_with_the_next():
    producer = FakeProducer(fail=1)
    producer.release.set()
    stats: Counter[str] = Counter()
    publisher = ChunkPublisher(producer, "ns.stream", "q", "small", stats)  # type: ignore[arg-type]
    publisher.offer("The")
    await _settle(publisher)
    publisher.offer("The answer")
    await _settle(publisher)
    assert stats["stream_failed"] == 1
    text = TextAssembler()
    assert "".join(text.feed(c) for c in producer.sent) == "The answer"
    publisher.close()


async def test_a_retried_engine_call_continues_the_stream_or_stops_it():
    producer = FakeProducer()
    producer.release.set()
    stats: Counter[str] = Counter()
    publisher = ChunkPublisher(producer, "ns.stream", "q", "small", stats)  # type: ignore[arg-type]
    for prefix in ("The", "The answer", "T", "The", "The answer", "The answer is"):  # failed once, then again
        publisher.offer(prefix)
        await _settle(publisher)
    text = TextAssembler()
    assert "".join(text.feed(c) for c in producer.sent) == "The answer is"
    publisher.offer("Something else")  # a retry that says otherwise: streaming stops there
    publisher.offer("Something else, longer")
    await _settle(publisher)
    assert stats["stream_diverged"] == 1 and producer.sent[-1].text == " is"
    publisher.close()


async def test_a_hung_broker_never_holds_the_hop():
    producer = FakeProducer(hang=True)
    stats: Counter[str] = Counter()
    publisher = ChunkPublisher(producer, "ns.stream", "q", "small", stats, send_timeout_s=0.05)  # type: ignore[arg-type]
    publisher.offer("The")
    publisher.offer("The answer")
    publisher.close()  # returns at once; what is unsent is left to the Answer
    publisher.offer("The answer is")  # after close: ignored
    await asyncio.sleep(0)
    assert producer.sent == []
    assert REJECT_PHRASE not in publisher.released
