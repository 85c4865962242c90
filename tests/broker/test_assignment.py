"""Balanced, sticky partition assignment: invariants by property, plus join/leave/grow examples."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.broker.assignment import TopicPartition, assign, moved_partitions
from logstore.errors import InvalidArgument

TP = TopicPartition


def tps(topic: str, *numbers: int) -> frozenset[TopicPartition]:
    return frozenset(TP(topic, n) for n in numbers)


# -- oracles ------------------------------------------------------------------------------


def check_balanced_cover(result, partitions, members) -> None:
    """Every listed member present, every partition owned once, nothing foreign, sizes within 1."""
    assert set(result) == set(members)
    owned = [tp for tps_ in result.values() for tp in tps_]
    assert len(owned) == len(set(owned)), "a partition is owned by two members"
    assert set(owned) == set(partitions)
    if members:
        sizes = [len(v) for v in result.values()]
        assert max(sizes) - min(sizes) <= 1, sizes


def valid_claims(partitions, members, previous) -> dict[str, set[TopicPartition]]:
    return {m: set(previous.get(m, ())) & set(partitions) for m in members}


def min_moves_by_share_choice(partitions, members, previous) -> int:
    """For disjoint claims: try every choice of which members get the larger share."""
    members = sorted(set(members))
    claims = valid_claims(partitions, members, previous)
    share, larger = divmod(len(set(partitions)), len(members))
    total = sum(len(c) for c in claims.values())
    best_kept = max(
        sum(min(len(claims[m]), share + (m in big)) for m in members)
        for big in map(set, itertools.combinations(members, larger))
    )
    return total - best_kept


def min_moves_brute_force(partitions, members, previous) -> int:
    """Every balanced assignment of a tiny input, enumerated; the fewest moved partitions."""
    partitions = sorted(set(partitions))
    members = sorted(set(members))
    best = None
    for owners in itertools.product(members, repeat=len(partitions)):
        sizes = [owners.count(m) for m in members]
        if max(sizes) - min(sizes) > 1:
            continue
        current = {m: {p for p, o in zip(partitions, owners) if o == m} for m in members}
        moves = len(moved_partitions(previous, current))
        best = moves if best is None else min(best, moves)
    assert best is not None
    return best


# -- strategies ----------------------------------------------------------------------------

UNIVERSE = [TP(t, n) for t in ("a", "b", "c") for n in range(8)]
MEMBER_POOL = [f"m{i}" for i in range(8)]


@st.composite
def scenarios(draw, max_partitions: int = len(UNIVERSE), max_members: int = 8):
    """(partitions, members, previous) where previous is a valid (disjoint) old assignment,
    possibly naming departed members and partitions that no longer exist."""
    partitions = draw(st.lists(st.sampled_from(UNIVERSE), unique=True, max_size=max_partitions))
    members = draw(st.lists(st.sampled_from(MEMBER_POOL[:max_members]), unique=True, min_size=1, max_size=max_members))
    old_members = draw(st.lists(st.sampled_from(MEMBER_POOL), unique=True, max_size=8))
    previous: dict[str, set[TopicPartition]] = {m: set() for m in old_members}
    if old_members:
        owners = draw(st.lists(st.none() | st.sampled_from(old_members), min_size=len(UNIVERSE), max_size=len(UNIVERSE)))
        for tp, owner in zip(UNIVERSE, owners):
            if owner is not None:
                previous[owner].add(tp)
    return partitions, members, {m: frozenset(v) for m, v in previous.items()}


# -- properties ------------------------------------------------------------------------------


@given(scenarios())
@settings(max_examples=300, deadline=None)
def test_result_is_a_balanced_exact_cover_with_fewest_moves(scenario):
    """Exact cover, sizes within 1, and moves equal the minimum over every larger-share choice."""
    partitions, members, previous = scenario
    result = assign(partitions, members, previous)
    check_balanced_cover(result, partitions, members)
    assert len(moved_partitions(previous, result)) == min_moves_by_share_choice(partitions, members, previous)


@given(scenarios(max_partitions=6, max_members=3))
@settings(max_examples=150, deadline=None)
def test_moves_match_exhaustive_search_on_small_inputs(scenario):
    """On tiny inputs, no balanced assignment at all moves fewer partitions than assign()."""
    partitions, members, previous = scenario
    result = assign(partitions, members, previous)
    assert len(moved_partitions(previous, result)) == min_moves_brute_force(partitions, members, previous)


@given(scenarios())
@settings(max_examples=150, deadline=None)
def test_each_member_keeps_as_much_as_its_share_allows(scenario):
    """A member keeps all its old partitions that still exist, or fills its whole share with them."""
    partitions, members, previous = scenario
    result = assign(partitions, members, previous)
    claims = valid_claims(partitions, members, previous)
    for m in members:
        assert len(result[m] & claims[m]) == min(len(claims[m]), len(result[m])), m


@given(scenarios(), st.randoms(use_true_random=False))
@settings(max_examples=100, deadline=None)
def test_input_order_does_not_change_the_answer(scenario, rnd):
    """Shuffled partitions, members and previous entries give the identical assignment."""
    partitions, members, previous = scenario
    expected = assign(sorted(partitions), sorted(members), dict(sorted(previous.items())))
    p2, m2, prev_items = list(partitions), list(members), list(previous.items())
    for seq in (p2, m2, prev_items):
        rnd.shuffle(seq)
    assert assign(p2, m2, dict(prev_items)) == expected


@given(scenarios())
@settings(max_examples=100, deadline=None)
def test_reassigning_the_result_moves_nothing(scenario):
    """Feeding an assignment back in with the same inputs returns it unchanged (a fixed point)."""
    partitions, members, previous = scenario
    first = assign(partitions, members, previous)
    assert assign(partitions, members, first) == first


@given(
    st.lists(st.sampled_from(UNIVERSE), unique=True),
    st.lists(st.sampled_from(MEMBER_POOL), unique=True, min_size=1),
    st.dictionaries(st.sampled_from(MEMBER_POOL), st.frozensets(st.sampled_from(UNIVERSE))),
)
@settings(max_examples=150, deadline=None)
def test_overlapping_previous_claims_still_give_a_balanced_cover(partitions, members, previous):
    """Even when old claims overlap (zombie members), the result is a balanced exact cover."""
    check_balanced_cover(assign(partitions, members, previous), partitions, members)


# -- examples --------------------------------------------------------------------------------


def test_a_joining_member_takes_exactly_its_share_from_the_others():
    """With 6 partitions over a and b, c joining takes 2 partitions; a and b keep 2 of theirs each."""
    partitions = tps("t", *range(6))
    before = {"a": tps("t", 0, 1, 2), "b": tps("t", 3, 4, 5)}
    after = assign(partitions, ["a", "b", "c"], before)
    check_balanced_cover(after, partitions, ["a", "b", "c"])
    assert len(after["a"] & before["a"]) == 2 and len(after["b"] & before["b"]) == 2
    assert len(moved_partitions(before, after)) == 2
    assert after["c"] == tps("t", 2, 5)


def test_a_leaving_members_partitions_go_to_the_rest_and_nothing_else_moves():
    """When c leaves, a and b keep everything they had and split c's partitions."""
    partitions = tps("t", *range(6))
    before = {"a": tps("t", 0, 1), "b": tps("t", 2, 3), "c": tps("t", 4, 5)}
    after = assign(partitions, ["a", "b"], before)
    assert after["a"] >= before["a"] and after["b"] >= before["b"]
    assert after["a"] | after["b"] == partitions
    assert len(after["a"]) == len(after["b"]) == 3
    assert moved_partitions(before, after) == frozenset()


def test_new_partitions_of_a_topic_are_spread_without_moving_old_ones():
    """Growing a topic from 4 to 7 partitions keeps old owners and deals the new ones out 2/1."""
    before = {"a": tps("t", 0, 1), "b": tps("t", 2, 3)}
    after = assign(tps("t", *range(7)), ["a", "b"], before)
    assert after["a"] >= before["a"] and after["b"] >= before["b"]
    assert sorted(len(v) for v in after.values()) == [3, 4]
    assert moved_partitions(before, after) == frozenset()


def test_shrinking_share_releases_only_the_excess():
    """An over-full member keeps exactly its share of its old partitions when others are empty."""
    before = {"a": tps("t", *range(6))}
    after = assign(tps("t", *range(6)), ["a", "b", "c"], before)
    assert after["a"] < before["a"] and len(after["a"]) == 2
    assert len(after["b"]) == len(after["c"]) == 2


def test_more_members_than_partitions_leaves_some_members_empty():
    """Three members and two partitions: two own one each, one owns nothing but is listed."""
    after = assign(tps("t", 0, 1), ["a", "b", "c"], {"c": tps("t", 1)})
    assert after["c"] == tps("t", 1)
    assert sorted(len(v) for v in after.values()) == [0, 1, 1]


def test_the_larger_shares_go_to_the_members_that_can_keep_more():
    """With 5 partitions and 2 members, the member that owned 3 keeps all 3 (the larger share)."""
    before = {"a": tps("t", 0), "b": tps("t", 1, 2, 3)}
    after = assign(tps("t", *range(5)), ["a", "b"], before)
    assert after["b"] == before["b"]
    assert after["a"] == tps("t", 0, 4)


def test_no_members_owns_nothing():
    """With no members the answer is empty rather than an error."""
    assert assign(tps("t", 0, 1), [], {"a": tps("t", 0)}) == {}


def test_overlapping_claim_goes_to_the_claimant_with_fewer_claims():
    """A partition claimed by a and b goes to b (fewer claims), so a can keep its other one."""
    before = {"a": tps("t", 0, 1), "b": tps("t", 0)}
    after = assign(tps("t", 0, 1), ["a", "b"], before)
    assert after == {"a": tps("t", 1), "b": tps("t", 0)}


def test_topic_partitions_order_by_topic_then_number():
    """TopicPartition sorts by topic name, then partition number (not as strings)."""
    assert sorted([TP("b", 0), TP("a", 10), TP("a", 2)]) == [TP("a", 2), TP("a", 10), TP("b", 0)]
    assert str(TP("orders", 3)) == "orders/3"


@pytest.mark.parametrize(("topic", "partition"), [("", 0), ("t", -1), ("t", True), (None, 0), ("t", 1.0)])
def test_bad_topic_partitions_are_refused(topic, partition):
    """An empty topic or a partition that is not a non-negative int raises InvalidArgument."""
    with pytest.raises(InvalidArgument):
        TP(topic, partition)


def test_empty_member_id_is_refused():
    """A member id must be a non-empty string."""
    with pytest.raises(InvalidArgument, match="member ids"):
        assign(tps("t", 0), ["a", ""], {})
