"""The streaming answer watch scans each part of a reply once, not the whole reply per chunk,
and still stops exactly where a full scan of the text so far would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from disrouter.actors.engines import prompting
from disrouter.actors.engines.prompting import AnswerWatch, answer_line_complete

# Pieces a reply is made of, awkward ones included: the marker split over chunks and lines,
# other case, values that strip to nothing, words that start like the marker.
PIECES = ["The", "the ", "final ", "answer", "ANSWER", "Answer", "answ", "er", " is", "is", ":", "：", " ", "  ",
          "\n", "\n\n", "\t", "5", "42", ".", "*", "$", "`", "answers", "was", "I think", "so", "\r"]


def reference(chunks: list[str]) -> int | None:
    """The first chunk after which the watch must stop: a full scan of the text so far, done
    whenever a chunk brings a line break (the watch before it became incremental)."""
    text = ""
    for i, chunk in enumerate(chunks):
        text += chunk
        if "\n" in chunk and answer_line_complete(text):
            return i
    return None


def incremental(chunks: list[str]) -> int | None:
    watch, text = AnswerWatch(), ""
    for i, chunk in enumerate(chunks):
        text += chunk
        if watch.feed(text):
            return i
    return None


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map("".join), max_size=40))
def test_the_watch_stops_where_a_full_scan_would(chunks):
    assert incremental(chunks) == reference(chunks)


def test_examples():
    assert incremental(["The answer", " is: 4", "2\n"]) == 2
    assert incremental(["The answer is\n", "\n42", "\n"]) == 2  # the value may sit lines below
    assert incremental(["answer is .\n", "5\n", "The answer is 7\n"]) == 2  # no value: not an answer line
    assert incremental(["I think ", "it is 5\n"]) is None


def test_a_long_reply_is_scanned_once_not_once_per_chunk(monkeypatch):
    scanned: list[int] = []
    real = prompting._scan_answer_lines

    def counting(text, pos=0):
        scanned.append(len(text) - pos)
        return real(text, pos)

    monkeypatch.setattr(prompting, "_scan_answer_lines", counting)
    watch, text = AnswerWatch(), ""
    for i in range(2000):  # 2,000 lines of reasoning without an answer line, a chunk each
        text += f"step {i}: we add the numbers\n"
        assert not watch.feed(text)
    # A full scan per chunk would read ~2000²/2 lines' worth; each line is read about once here.
    assert sum(scanned) < 3 * len(text)
