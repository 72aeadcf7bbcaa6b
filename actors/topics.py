"""Topic names derive from a namespace, so several topologies share one Kafka cluster."""

from __future__ import annotations

import re

_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def is_legal_topic(name: str) -> bool:
    return bool(_LEGAL.match(name)) and name not in (".", "..")


def ingress(namespace: str) -> str:
    return f"{namespace}.ingress"


def answers(namespace: str) -> str:
    return f"{namespace}.answers"


def stream(namespace: str) -> str:
    """Answers' text as it is generated (`contracts.Chunk`), for readers that relay it."""
    return f"{namespace}.stream"


def dlq(namespace: str) -> str:
    return f"{namespace}.dlq"


def agent(namespace: str, name: str) -> str:
    return f"{namespace}.agent.{name}"


def all_topics(namespace: str, agents: list[str]) -> list[str]:
    return [ingress(namespace), answers(namespace), stream(namespace), dlq(namespace)] + [agent(namespace, a) for a in agents]
