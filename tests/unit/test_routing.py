"""Next-hop policies: each documented choice, visited agents never chosen, None when exhausted."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disrouter.actors.config import Peer
from disrouter.actors.contracts import Hop, Query
from disrouter.actors.routing import POLICIES, next_hop


def peer(name: str, cost: float, *tags: str) -> Peer:
    return Peer(name=name, cost=cost, topic=f"ns.agent.{name}", tags=tuple(tags))


def query(*visited: str, tags=(), qid: str = "q-1") -> Query:
    return Query(prompt="p", id=qid, tags=list(tags), trail=[Hop(agent=a, decision="reject") for a in visited])


PEERS = [peer("b", 0.5, "code"), peer("c", 0.2, "math"), peer("d", 0.9, "math", "law"), peer("e", 0.2)]


def name(p: Peer | None) -> str | None:
    return p.name if p else None


def test_the_documented_policies_are_registered():
    assert set(POLICIES) == {"first_unvisited", "cheapest_unvisited", "tag_match", "hash_unvisited"}


# --- first_unvisited ---------------------------------------------------------------------------


def test_first_unvisited_takes_declaration_order():
    assert name(next_hop("first_unvisited", query("a"), PEERS)) == "b"
    assert name(next_hop("first_unvisited", query("a", "b"), PEERS)) == "c"
    assert name(next_hop("first_unvisited", query("b", "c", "d"), PEERS)) == "e"


# --- cheapest_unvisited ------------------------------------------------------------------------


def test_cheapest_unvisited_takes_the_lowest_cost_ties_by_declaration_order():
    # c and e both cost 0.2; c is declared first
    assert name(next_hop("cheapest_unvisited", query("a"), PEERS)) == "c"
    assert name(next_hop("cheapest_unvisited", query("c"), PEERS)) == "e"
    assert name(next_hop("cheapest_unvisited", query("c", "e"), PEERS)) == "b"
    assert name(next_hop("cheapest_unvisited", query("c", "e", "b"), PEERS)) == "d"


# --- tag_match ---------------------------------------------------------------------------------


def test_tag_match_takes_the_first_peer_sharing_a_tag():
    assert name(next_hop("tag_match", query(tags=["math"]), PEERS)) == "c"
    assert name(next_hop("tag_match", query(tags=["law"]), PEERS)) == "d"
    assert name(next_hop("tag_match", query(tags=["code", "law"]), PEERS)) == "b"  # declaration order


def test_tag_match_skips_visited_matches():
    assert name(next_hop("tag_match", query("c", tags=["math"]), PEERS)) == "d"


def test_tag_match_without_a_match_falls_back_to_the_cheapest():
    assert name(next_hop("tag_match", query(tags=["poetry"]), PEERS)) == "c"
    assert name(next_hop("tag_match", query(tags=[]), PEERS)) == "c"
    # the matches are visited: the cheapest unvisited, not a visited match
    assert name(next_hop("tag_match", query("c", "d", tags=["math"]), PEERS)) == "e"


# --- hash_unvisited ----------------------------------------------------------------------------


def test_hash_unvisited_is_stable_for_a_query():
    q = query("a", qid="q-stable")
    first = name(next_hop("hash_unvisited", q, PEERS))
    for _ in range(5):
        assert name(next_hop("hash_unvisited", query("a", qid="q-stable"), PEERS)) == first


def test_hash_unvisited_spreads_queries_over_peers():
    counts = Counter(name(next_hop("hash_unvisited", query(qid=f"q-{i}"), PEERS)) for i in range(2000))
    assert set(counts) == {"b", "c", "d", "e"}
    assert min(counts.values()) > 2000 / 4 * 0.7  # roughly uniform


def test_hash_unvisited_never_picks_visited():
    for i in range(200):
        assert name(next_hop("hash_unvisited", query("b", "d", qid=f"q-{i}"), PEERS)) in {"c", "e"}


# --- every policy ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_exhausted_candidates_give_none(policy):
    assert next_hop(policy, query("b", "c", "d", "e"), PEERS) is None
    assert next_hop(policy, query(), []) is None


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_single_candidate_every_policy_agrees(policy):
    assert name(next_hop(policy, query("b", "c", "e", tags=["x"]), PEERS)) == "d"
    chain = [peer("next", 0.4)]
    assert name(next_hop(policy, query("me"), chain)) == "next"


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(sorted(POLICIES)),
    peers=st.lists(
        st.builds(
            peer,
            st.sampled_from("abcdefgh"),
            st.floats(min_value=0, max_value=1),
            st.sampled_from(["math", "code", "law"]),
        ),
        max_size=8,
        unique_by=lambda p: p.name,
    ),
    visited=st.sets(st.sampled_from("abcdefghxyz")),
    tags=st.lists(st.sampled_from(["math", "code", "law", "art"]), max_size=3),
    qid=st.text(max_size=10),
)
def test_policies_choose_an_unvisited_candidate_or_none(policy, peers, visited, tags, qid):
    q = query(*sorted(visited), tags=tags, qid=qid)
    chosen = next_hop(policy, q, peers)
    unvisited = [p for p in peers if p.name not in visited]
    if not unvisited:
        assert chosen is None
    else:
        assert chosen in unvisited
