"""Topology errors name the field (and the agent) so a bad file is fixed in one look."""

from __future__ import annotations

from disrouter.actors.errors import DisrouterError


class TopologyError(DisrouterError):
    """One or more problems in a topology; `problems` holds each as (field path, message)."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{where}{field}: {message}" for field, message in problems]
        super().__init__("invalid topology:\n  " + "\n  ".join(lines) if len(lines) > 1 else f"invalid topology: {lines[0]}")
