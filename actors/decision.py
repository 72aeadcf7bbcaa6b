"""Self-awareness decisions: answer or reject, from an engine's reply.

Two modes, both from the paper:
- generative: the model itself says the reject phrase "I don't know!";
- confidence: reject when the calibrated probability of being right is ≤ (1 − α)^γ, which is
  exactly the policy the paper's RL reward (1 right, 0 wrong, (1 − α)^γ reject) makes optimal.
Terminal agents always answer; that override lives in the agent, which knows the topology.
"""

from __future__ import annotations

import bisect
import enum
import math
import re
from typing import Literal

import msgspec

from disrouter.actors.contracts import Scenario

REJECT_PHRASE = "I don't know!"
DEFAULT_GAMMA = 0.5

# The paper's scenario instructions: the scenario reaches the model as part of its prompt, so one
# trained agent serves every scenario. They name α because a raw α (between the scenarios) is
# spelled the same way (`scenario_instruction`), and the training pipeline teaches the model
# what each value means; the sentence after it only orients an untrained model.
SCENARIO_INSTRUCTIONS: dict[Scenario, str] = {
    Scenario.performance_first: "Scenario: performance first (cost weight α = 0.2). Accuracy matters most.",
    Scenario.balance: "Scenario: balance (cost weight α = 0.5). Accuracy and cost matter equally.",
    Scenario.cost_first: "Scenario: cost first (cost weight α = 0.8). Cost matters most.",
}


def scenario_instruction(alpha: float) -> str:
    """The prompt line for a cost weight: the named scenario's when α is one, else α itself."""
    for scenario, text in SCENARIO_INSTRUCTIONS.items():
        if abs(scenario.alpha - alpha) < 1e-9:
            return text
    return f"Scenario: cost weight α = {alpha:.2f}."


def scenario_for_alpha(alpha: float) -> Scenario:
    """The named scenario whose α is nearest a raw α (used to pick the prompt instruction)."""
    return min(Scenario, key=lambda s: abs(s.alpha - alpha))


def resolve_alpha(
    alpha: float | None, scenario: Scenario | None, default_alpha: float
) -> tuple[float, Scenario | None]:
    """A query's own α wins, then its scenario, then the topology default."""
    if alpha is not None:
        return alpha, scenario
    if scenario is not None:
        return scenario.alpha, scenario
    return default_alpha, None


def reject_threshold(alpha: float, gamma: float = DEFAULT_GAMMA) -> float:
    """(1 − α)^γ: answer only when the chance of being right is above this."""
    return (1.0 - alpha) ** gamma


def confident_enough(probability: float, alpha: float, gamma: float = DEFAULT_GAMMA) -> bool:
    return probability > reject_threshold(alpha, gamma)


# --- the reject phrase -------------------------------------------------------------------------

# Tolerant of case, curly apostrophes, a missing apostrophe and extra spaces; strict about the
# phrase leading the reply and about what follows it (end of text or punctuation, never more
# words: "I don't know how many…" is the start of an answer, not a reject).
_LEAD = re.compile(r"""^[\s"'`*_>#\-\u201c\u201d]*""")
# What may follow the phrase in a reject: sentence punctuation, a closing quote or markup.
_AFTER = "!.?;,\u2026\"\u201d*_"
_PHRASE = "i dont know"
_APOSTROPHES = str.maketrans({"\u2019": "", "\u2018": "", "'": "", "`": ""})


def _normalise(text: str) -> str:
    text = _LEAD.sub("", text).lower().translate(_APOSTROPHES)
    return re.sub(r"\s+", " ", text)


class PrefixState(enum.Enum):
    REJECT = "reject"  # the reply is the reject phrase: stop generating
    ANSWER = "answer"  # the reply cannot become the reject phrase any more
    UNDECIDED = "undecided"  # need more text


def classify_prefix(text: str, *, final: bool = False) -> PrefixState:
    """Classify a (possibly partial) reply; `final` means no more text will come.

    Streaming engines call this on the text so far and stop as soon as it says REJECT.
    """
    norm = _normalise(text)
    if len(norm) <= len(_PHRASE):
        if not _PHRASE.startswith(norm):
            return PrefixState.ANSWER
        if not final:
            return PrefixState.UNDECIDED
        return PrefixState.REJECT if norm == _PHRASE else PrefixState.ANSWER
    if not norm.startswith(_PHRASE):
        return PrefixState.ANSWER
    rest = norm[len(_PHRASE):].lstrip()  # "I don't know !" is spacing, not another word
    if not rest:
        # "I don't know " — the next character decides (a word means an answer follows).
        return PrefixState.REJECT if final else PrefixState.UNDECIDED
    if rest[0] in _AFTER:
        return PrefixState.REJECT
    return PrefixState.ANSWER


class RejectWatch:
    """What a streaming engine feeds its reply to, chunk by chunk, for cheap rejects.

    `feed(text_so_far)` returns True the moment the reply can only be the reject phrase (stop
    generating there); once the reply is certain to be an answer it stops looking.
    """

    def __init__(self, active: bool) -> None:
        self.active = active
        self.rejected = False

    def feed(self, text: str) -> bool:
        if not self.active or not text:
            return False
        state = classify_prefix(text)
        if state is PrefixState.UNDECIDED:
            return False
        self.active = False
        self.rejected = state is PrefixState.REJECT
        return self.rejected


def is_reject(text: str) -> bool:
    """True when a complete reply is the paper's reject phrase."""
    return classify_prefix(text, final=True) is PrefixState.REJECT


def opens_reject(piece: str) -> bool:
    """True when a reply's first token could begin the reject phrase ("I", " I"; not "I'm",
    "It", nor a token of only spaces or markup, which begins nothing yet)."""
    norm = _normalise(piece)
    return bool(norm) and _PHRASE.startswith(norm)


# --- calibration -------------------------------------------------------------------------------


class Calibration(msgspec.Struct, forbid_unknown_fields=True, tag_field="type"):
    """Maps an engine's raw confidence to a calibrated probability of being right."""

    def __call__(self, raw: float) -> float:
        return raw


class IdentityCalibration(Calibration, tag="identity"):
    pass


class PlattCalibration(Calibration, tag="platt"):
    """p = sigmoid(a · logit(raw) + b)."""

    a: float = 1.0
    b: float = 0.0

    def __call__(self, raw: float) -> float:
        raw = min(max(raw, 1e-6), 1 - 1e-6)
        z = self.a * math.log(raw / (1 - raw)) + self.b
        # The logistic in the form that cannot overflow: a steep fitted slope puts |z| past
        # exp's range (~709) for raw values near 0 or 1.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


class IsotonicCalibration(Calibration, tag="isotonic"):
    """A monotone step function through fitted (x, y) knots, interpolated linearly."""

    x: list[float]
    y: list[float]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or not self.x:
            raise ValueError("isotonic calibration needs equally long, non-empty x and y")
        if any(b < a for a, b in zip(self.x, self.x[1:])):
            raise ValueError("isotonic calibration x must be sorted ascending")

    def __call__(self, raw: float) -> float:
        i = bisect.bisect_left(self.x, raw)
        if i <= 0:
            return self.y[0]
        if i >= len(self.x):
            return self.y[-1]
        x0, x1, y0, y1 = self.x[i - 1], self.x[i], self.y[i - 1], self.y[i]
        return y0 if x1 == x0 else y0 + (y1 - y0) * (raw - x0) / (x1 - x0)


AnyCalibration = IdentityCalibration | PlattCalibration | IsotonicCalibration
Awareness = Literal["generative", "confidence"]
