"""Putting an answer's streamed text together on the reader's side (the gateway's SSE).

Chunks (`contracts.Chunk`, on `<ns>.stream`) are best effort: one may be lost, come twice, come
out of order, or come from a second run of the same query (a redelivery). `TextAssembler` keeps
only text that extends what the reader has already passed on (one run: the first it sees), and
when the `Answer` arrives, `finish` gives what the reader has not yet got: the rest of the
answer after what was streamed. So a lost chunk delays text, it never loses it.
"""

from __future__ import annotations

from disrouter.actors.contracts import Chunk


class TextAssembler:
    def __init__(self) -> None:
        self.text = ""  # what has been passed on
        self.run: str | None = None
        self.dropped = 0  # chunks that did not extend the text (gaps, repeats, another run)
        self.diverged = False  # the answer does not extend what was passed on

    def feed(self, chunk: Chunk) -> str:
        """The new text this chunk adds to what was passed on ("" when it adds nothing usable)."""
        if self.run is None:
            self.run = chunk.run
        have = len(self.text)
        if chunk.run != self.run or not (chunk.offset <= have < chunk.offset + len(chunk.text)):
            self.dropped += 1
            return ""
        new = chunk.text[have - chunk.offset:]
        self.text += new
        return new

    def finish(self, answer: str) -> str:
        """What of the final answer the reader has not yet got."""
        if answer.startswith(self.text):
            return answer[len(self.text):]
        # Only when the streamed run's text differs from the run that answered (a redelivery
        # or an engine retry sampling differently): what was passed on cannot be taken back,
        # so nothing is added to it; the caller says so and hands over the whole answer.
        self.diverged = True
        return ""
