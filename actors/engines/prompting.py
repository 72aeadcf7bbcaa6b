"""Prompt building and answer extraction shared by the LLM engines (vLLM, remote).

One prompt layout for every engine, so a model sees the same thing in-process and behind an
OpenAI-compatible server, and the self-awareness training (training/, which builds its prompts
with these same functions) matches what serving sends:

    system: <role> <scenario instruction> <reject instruction> <answer template>
    user:   <the query's prompt>

Competence first: small instruct models need room to reason. Asked to "answer concisely" a
0.5B model replies "The answer is: 12" with no working and solves almost nothing, so the
template asks for brief working first and one marked final line ("The answer is: X") that the
graders read. The reject, where offered, must come first ("reply only I don't know!") so that a
streaming engine recognises it in the first tokens and stops: a reject stays cheap. Once the
marked answer line is complete the reply is done (`AnswerWatch`): whatever a small model adds
after it is never read, so it is not generated either.

The scenario instruction sits in the system message on purpose: every query of a scenario then
shares the same leading tokens, which is what vLLM's prefix cache reuses.

A terminal agent must answer (`allow_reject=False`): its prompt neither mentions the reject
phrase nor the scenario trade-off, so the model is not nudged towards a reject it may not give.
Confidence mode (`want_confidence`) does not offer the reject either: there the decision comes
from the probability of the answer, so the model is asked to answer every time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import msgspec

from disrouter.actors.decision import REJECT_PHRASE, RejectWatch, scenario_instruction
from disrouter.actors.engine import EngineRequest

DEFAULT_ROLE = "You are a helpful assistant."

REJECT_INSTRUCTION = f'If you are unlikely to answer correctly, reply only "{REJECT_PHRASE}".'

# The paper's fixed answer template: working first, then one final line the graders parse.
ANSWER_TEMPLATE = 'Otherwise, work it out step by step and end with the line "The answer is: <answer>".'
ANSWER_TEMPLATE_TERMINAL = 'Work it out step by step and end with the line "The answer is: <answer>".'


class Message(msgspec.Struct):
    role: str
    content: str


class PromptStyle(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What an agent's topology may change about the prompt (all optional)."""

    role: str = DEFAULT_ROLE
    # Off for models trained without the answer template (e.g. a closed model used as is).
    answer_template: bool = True
    # Some chat templates (e.g. Gemma) reject a system role: fold it into the user turn.
    system_role: bool = True


def offers_reject(request: EngineRequest) -> bool:
    """Whether the prompt offers the reject phrase (and so a stream may stop on it)."""
    return request.allow_reject and not request.want_confidence


def system_text(request: EngineRequest, style: PromptStyle | None = None) -> str:
    style = style or PromptStyle()
    parts = [style.role]
    if offers_reject(request):
        parts.append(request.instruction or scenario_instruction(request.alpha))
        parts.append(REJECT_INSTRUCTION)
        if style.answer_template:
            parts.append(ANSWER_TEMPLATE)
    elif style.answer_template:
        parts.append(ANSWER_TEMPLATE_TERMINAL)
    return " ".join(p.strip() for p in parts if p and p.strip())


def build_messages(request: EngineRequest, style: PromptStyle | None = None) -> list[Message]:
    """The chat messages for one request (the engines apply the model's chat template)."""
    style = style or PromptStyle()
    system = system_text(request, style)
    if style.system_role:
        return [Message("system", system), Message("user", request.prompt)]
    return [Message("user", f"{system}\n\n{request.prompt}")]


def as_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


# --- answer extraction -------------------------------------------------------------------------

_ANSWER_LINE = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s+is\s*[:：]?\s*(.+)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def answer_span(text: str) -> tuple[int, int] | None:
    """Character span of the final answer in a reply, following the answer template.

    The last "The answer is: X" wins (a model may restate it); `\\boxed{X}` is accepted too
    because math-tuned models emit it regardless of instructions.
    """
    span = None
    for match in _ANSWER_LINE.finditer(text):
        start, end = match.span(1)
        # The answer ends at the line end; trailing punctuation/markup is not part of it.
        line_end = text.find("\n", start)
        end = line_end if line_end != -1 else end
        value = text[start:end]
        stripped = value.rstrip(" .*`$\t\r")
        lead = len(value) - len(value.lstrip(" *`$"))
        if stripped[lead:]:
            span = (start + lead, start + len(stripped))
    if span is None:
        boxed = list(_BOXED.finditer(text))
        if boxed:
            span = boxed[-1].span(1)
    return span


def extract_answer(text: str) -> str | None:
    """The final answer a reply states, or None when it follows no known template."""
    span = answer_span(text)
    return text[span[0]:span[1]].strip() if span else None


class ReplyWatch:
    """What a streaming engine feeds the reply so far: says when to stop generating.

    Two cuts: the reject phrase (a cheap reject, where the prompt offers it) and a completed
    final answer line. `rejected` tells which one stopped the stream.
    """

    def __init__(self, request: EngineRequest) -> None:
        self._reject = RejectWatch(offers_reject(request) and request.stop_on_reject)
        self._answer = AnswerWatch(request.stop_on_answer)

    @property
    def rejected(self) -> bool:
        return self._reject.rejected

    def feed(self, text: str) -> bool:
        return self._reject.feed(text) or self._answer.feed(text)


class AnswerWatch:
    """Stops a streamed reply once its marked final answer line is complete.

    `feed(text_so_far)` returns True when the text holds "The answer is: X" followed by a line
    break: the answer the graders and users read is there, and what a small model rambles on
    with after it ("The answer is: 5", again, or a new made-up question) is never used.

    Called once per streamed chunk, it does work only when a line break arrives, and then scans
    only the text after the answer lines already settled (`_scan_answer_lines`), so a long reply
    costs a scan of each part once, not of the whole text per chunk. The verdict is the one
    `answer_line_complete(text_so_far)` gives (tests/unit/test_answer_watch.py).
    """

    def __init__(self, active: bool = True) -> None:
        self.active = active
        self._checked = 0  # text before this offset holds no line break after an answer
        self._scan_from = 0  # no answer line that may still complete starts before this

    def feed(self, text: str) -> bool:
        if not self.active:
            return False
        # Only a new line break can complete an answer line: skip the scan otherwise.
        newline = text.find("\n", self._checked)
        if newline == -1:
            self._checked = max(self._checked, len(text))
            return False
        self._checked = len(text)
        end, self._scan_from = _scan_answer_lines(text, self._scan_from)
        return end is not None


_ANSWER_WORD = re.compile("answer", re.IGNORECASE)


def _scan_answer_lines(text: str, pos: int = 0) -> tuple[int | None, int]:
    """(the end of the first complete answer line at or after `pos`, or None; and where a
    later scan of the same text grown longer may start without missing one).

    Every match of the answer pattern holds the word "answer"; one whose value line has no line
    break yet, or whose value is whitespace the pattern gave back at the end of the text, may
    still change; a match that does not exist yet can only start at the last "answer" (or a word
    being written at the very end): the text after any other one already rules it out.
    """
    for match in _ANSWER_LINE.finditer(text, pos):
        start = match.start(1)
        line_end = text.find("\n", start)
        if line_end == -1:
            return None, match.start()  # its value line is still being written
        if text[start:line_end].strip(" .*`$\t\r"):
            return line_end, pos
        if text[start].isspace():
            # The pattern's whitespace ran into the end of the text and gave some back: with
            # more text it may reach a value on a later line. Not settled yet.
            return None, match.start()
        pos = match.end()  # settled: a marked line whose value is only punctuation
    last = None
    for found in _ANSWER_WORD.finditer(text, pos):
        last = found
    tail = max(pos, len(text) - len("answer") + 1)  # "answe" at the end may become "answer"
    return None, min(last.start(), tail) if last is not None else tail


def _first_answer_line_end(text: str) -> int | None:
    """Offset of the line break that ends the first marked answer line with a value."""
    return _scan_answer_lines(text)[0]


def answer_line_complete(text: str) -> bool:
    """True when a marked answer line with a value is followed by a line break."""
    return _first_answer_line_end(text) is not None


def cut_after_answer(text: str) -> str:
    """The reply up to the end of its first complete answer line (what serving would keep)."""
    end = _first_answer_line_end(text)
    return text if end is None else text[:end]


# --- confidence from log-probs -----------------------------------------------------------------


def confidence_from_logprobs(pieces: Sequence[tuple[str, float]], text: str | None = None) -> float | None:
    """A probability-like confidence from the sampled tokens' log-probs.

    `pieces` are (token text, log-prob of the sampled token) in order. When the reply states a
    templated answer, the confidence is the probability of the answer's tokens (the product over
    the tokens overlapping the answer span); otherwise the first token's probability, which for
    a short or multiple-choice reply is the decision itself.
    """
    if not pieces:
        return None
    text = text if text is not None else "".join(p for p, _ in pieces)
    span = answer_span(text)
    if span is not None:
        total, pos, hit = 0.0, 0, False
        for piece, logprob in pieces:
            end = pos + len(piece)
            if end > span[0] and pos < span[1]:
                total += logprob
                hit = True
            pos = end
        if hit:
            return _prob(total)
    return _prob(pieces[0][1])


def _prob(logprob: float) -> float:
    if math.isnan(logprob):
        return 0.0
    return min(1.0, max(0.0, math.exp(logprob)))
