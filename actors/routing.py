"""Where a rejected query goes next: one small policy per topology shape.

A policy sees the query and the agent's candidates that the query has not visited yet, in
declaration order, and picks one (or none). Chains have one candidate, so every policy agrees;
trees and meshes pick by the policy named on the agent. Add a policy by subclassing
`NextHopPolicy` and registering it; callers never change.

    first_unvisited     the first candidate in declaration order
    cheapest_unvisited  the lowest normalised cost (ties: declaration order)
    tag_match           the first candidate sharing a tag with the query; when none shares a
                        tag, the cheapest (so untagged queries still make progress)
    hash_unvisited      a candidate chosen by a stable hash of the query id: spreads load
                        over peers in a mesh, and the same query always takes the same path
"""

from __future__ import annotations

import abc
import hashlib

from disrouter.actors.config import Peer
from disrouter.actors.contracts import Query


class NextHopPolicy(abc.ABC):
    @abc.abstractmethod
    def choose(self, query: Query, candidates: list[Peer]) -> Peer | None:
        """Pick among unvisited candidates (never empty when called)."""


class FirstUnvisited(NextHopPolicy):
    def choose(self, query: Query, candidates: list[Peer]) -> Peer | None:
        return candidates[0]


class CheapestUnvisited(NextHopPolicy):
    def choose(self, query: Query, candidates: list[Peer]) -> Peer | None:
        return min(candidates, key=lambda p: p.cost)


class TagMatch(NextHopPolicy):
    def choose(self, query: Query, candidates: list[Peer]) -> Peer | None:
        wanted = set(query.tags)
        for peer in candidates:
            if wanted.intersection(peer.tags):
                return peer
        return CheapestUnvisited().choose(query, candidates)


class HashUnvisited(NextHopPolicy):
    def choose(self, query: Query, candidates: list[Peer]) -> Peer | None:
        digest = hashlib.blake2b(f"{query.id}|{len(query.trail)}".encode(), digest_size=8).digest()
        return candidates[int.from_bytes(digest, "big") % len(candidates)]


POLICIES: dict[str, NextHopPolicy] = {
    "first_unvisited": FirstUnvisited(),
    "cheapest_unvisited": CheapestUnvisited(),
    "tag_match": TagMatch(),
    "hash_unvisited": HashUnvisited(),
}


def next_hop(policy: str, query: Query, peers: list[Peer]) -> Peer | None:
    """The next agent for a rejected query, or None when every candidate was visited."""
    visited = query.visited()
    candidates = [p for p in peers if p.name not in visited]
    if not candidates:
        return None
    return POLICIES[policy].choose(query, candidates)
