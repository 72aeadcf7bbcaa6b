"""Prompt building and answer extraction shared by the LLM engines (vLLM, remote).

One prompt layout for every engine, so a model sees the same thing in-process and behind an
OpenAI-compatible server, and the self-awareness training (which uses the same layout) matches
what serving sends:

    system: <role> <scenario instruction> <reject instruction> <answer template>
    user:   <the query's prompt>

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

from disrouter.actors.decision import REJECT_PHRASE, SCENARIO_INSTRUCTIONS, scenario_for_alpha
from disrouter.actors.engine import EngineRequest

DEFAULT_ROLE = "You are a helpful assistant. Answer the user's question concisely."

REJECT_INSTRUCTION = (
    "If you are not confident that you can answer correctly, reply with exactly "
    f'"{REJECT_PHRASE}" and nothing else.'
)

# The paper's fixed answer template: brief reasoning, then a final line the evaluator can parse.
ANSWER_TEMPLATE = 'Otherwise, reason briefly and end with a final line "The answer is: <answer>".'
ANSWER_TEMPLATE_TERMINAL = 'Reason briefly and end with a final line "The answer is: <answer>".'


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
        parts.append(request.instruction or SCENARIO_INSTRUCTIONS[scenario_for_alpha(request.alpha)])
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
