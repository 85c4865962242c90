"""Group membership: the member transition table (exhaustively) and the pure Group value, no I/O."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.broker.assignment import TopicPartition
from logstore.broker.membership import (
    OWNING_STATES,
    TRANSITIONS,
    Group,
    MemberEvent,
    MemberState,
    transition,
)
from logstore.errors import FailedPrecondition, InvalidArgument, NotFound

S, E = MemberState, MemberEvent
T0 = 1_700_000_000_000
TIMEOUT = 10_000


def tps(topic: str, *numbers: int) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(topic, n) for n in numbers)


SIX = tps("t", *range(6))

EXPECTED = {
    (S.JOINING, E.JOIN): S.JOINING,
    (S.JOINING, E.ASSIGNED): S.ACTIVE,
    (S.JOINING, E.HEARTBEAT): S.JOINING,
    (S.JOINING, E.REBALANCE): S.JOINING,
    (S.JOINING, E.LEAVE): S.LEAVING,
    (S.JOINING, E.SESSION_EXPIRED): S.GONE,
    (S.JOINING, E.STREAM_BROKEN): S.GONE,
    (S.ACTIVE, E.JOIN): S.JOINING,
    (S.ACTIVE, E.HEARTBEAT): S.ACTIVE,
    (S.ACTIVE, E.REBALANCE): S.JOINING,
    (S.ACTIVE, E.LEAVE): S.LEAVING,
    (S.ACTIVE, E.SESSION_EXPIRED): S.GONE,
    (S.ACTIVE, E.STREAM_BROKEN): S.GONE,
    (S.LEAVING, E.HEARTBEAT): S.LEAVING,
    (S.LEAVING, E.REBALANCE): S.LEAVING,
    (S.LEAVING, E.SESSION_EXPIRED): S.GONE,
    (S.LEAVING, E.STREAM_BROKEN): S.GONE,
}


# -- the table ---------------------------------------------------------------------------------


def test_table_is_exactly_the_documented_moves():
    """TRANSITIONS holds the 17 documented moves and nothing else."""
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, E)), ids=lambda x: x.value)
def test_every_state_event_pair_moves_or_is_refused(state, event):
    """Each of the 28 (state, event) pairs gives its table entry or raises FailedPrecondition naming both."""
    if (state, event) in EXPECTED:
        assert transition(state, event) is EXPECTED[(state, event)]
    else:
        with pytest.raises(FailedPrecondition) as info:
            transition(state, event)
        assert repr(state.value) in str(info.value) and repr(event.value) in str(info.value)


def test_gone_is_final():
    """No event leads out of GONE: a gone member must join again as a new one."""
    for event in E:
        with pytest.raises(FailedPrecondition, match="join again as a new member"):
            transition(S.GONE, event)


def test_session_end_always_leads_to_gone():
    """Expiry and a broken stream end every live member's session."""
    for state, event in itertools.product((S.JOINING, S.ACTIVE, S.LEAVING), (E.SESSION_EXPIRED, E.STREAM_BROKEN)):
        assert transition(state, event) is S.GONE


def test_only_joining_and_active_members_own_partitions():
    """OWNING_STATES is JOINING and ACTIVE: leaving and gone members count for no assignment."""
    assert OWNING_STATES == {S.JOINING, S.ACTIVE}


# -- Group: joins, acknowledgements, generations -------------------------------------------------


def active_group(*member_ids: str, partitions=SIX, now: int = T0) -> Group:
    """A group whose members all joined at ``now`` and acknowledged the final generation."""
    g = Group.new("g", partitions)
    for mid in member_ids:
        g = g.join(mid, now)
    for mid in member_ids:
        g = g.acknowledge(mid, g.generation, now)
    return g


def test_first_join_bumps_to_generation_one_and_owns_everything():
    """The first member to join starts generation 1 as JOINING and owns every partition."""
    g = Group.new("g", SIX).join("a", T0)
    assert g.generation == 1
    assert g.member("a").state is S.JOINING
    assert g.assignment == {"a": SIX}


def test_acknowledging_the_current_generation_makes_a_member_active():
    """acknowledge() with the current generation moves JOINING to ACTIVE without a bump."""
    g = Group.new("g", SIX).join("a", T0)
    g2 = g.acknowledge("a", 1, T0 + 5)
    assert g2.member("a").state is S.ACTIVE and g2.generation == 1
    assert g2.member("a").last_seen_ms == T0 + 5


def test_acknowledging_a_stale_generation_is_refused():
    """A member acknowledging an old generation gets FailedPrecondition naming both generations."""
    g = Group.new("g", SIX).join("a", T0).join("b", T0)
    with pytest.raises(FailedPrecondition, match="acknowledged generation 1 but group 'g' is at generation 2"):
        g.acknowledge("a", 1, T0)


def test_a_second_join_rebalances_and_sends_active_members_back_to_joining():
    """b joining bumps the generation, splits the partitions 3/3 and puts active a back in JOINING."""
    g = active_group("a")
    g2 = g.join("b", T0 + 1)
    assert g2.generation == g.generation + 1
    assert g2.member("a").state is S.JOINING and g2.member("b").state is S.JOINING
    assert len(g2.assignment["a"]) == len(g2.assignment["b"]) == 3
    assert g2.assignment["a"] | g2.assignment["b"] == SIX


def test_rejoin_of_a_known_member_does_not_bump():
    """An active member joining again goes to JOINING, keeps its partitions, and the generation stays."""
    g = active_group("a", "b")
    g2 = g.join("a", T0 + 7)
    assert g2.generation == g.generation
    assert g2.member("a").state is S.JOINING and g2.member("b").state is S.ACTIVE
    assert g2.assignment == g.assignment


def test_heartbeat_refreshes_last_seen_and_never_bumps():
    """A heartbeat moves last_seen_ms forward only; state and generation stay."""
    g = active_group("a")
    g2 = g.heartbeat("a", T0 + 500)
    assert g2.member("a").last_seen_ms == T0 + 500 and g2.generation == g.generation
    assert g2.member("a").state is S.ACTIVE
    g3 = g2.heartbeat("a", T0 + 100)  # a clock stepping back
    assert g3.member("a").last_seen_ms == T0 + 500


def test_unknown_member_is_not_found():
    """Heartbeats and acknowledgements from ids not in the group raise NotFound."""
    g = active_group("a")
    with pytest.raises(NotFound, match="member 'zz' is not in group 'g'"):
        g.heartbeat("zz", T0)
    with pytest.raises(NotFound):
        g.acknowledge("zz", g.generation, T0)


def test_groups_are_immutable_values():
    """Operations return new groups; the old value still shows the old generation and members."""
    g = active_group("a")
    g.join("b", T0)
    assert g.generation == 1 and g.owners() == ["a"]


# -- leaving, broken streams, expiry --------------------------------------------------------------


def test_leave_releases_partitions_and_rebalances():
    """A leaving member owns nothing, the others take its partitions, the generation bumps."""
    g = active_group("a", "b", "c")
    g2 = g.leave("c", T0 + 1)
    assert g2.generation == g.generation + 1
    assert g2.member("c").state is S.LEAVING and g2.member("c").assignment == frozenset()
    assert set(g2.assignment) == {"a", "b"}
    assert g2.assignment["a"] >= g.assignment["a"] and g2.assignment["b"] >= g.assignment["b"]


def test_leaving_member_stream_close_removes_it_without_a_bump():
    """The stream of a LEAVING member closing drops it; ownership did not change, so no bump."""
    g = active_group("a", "b").leave("b", T0)
    g2 = g.stream_broken("b")
    assert g2.generation == g.generation
    assert [m.member_id for m in g2.members] == ["a"]


def test_leaving_member_cannot_rejoin_under_the_same_id():
    """join() from a LEAVING member is refused until it is gone."""
    g = active_group("a", "b").leave("b", T0)
    with pytest.raises(FailedPrecondition, match="is leaving"):
        g.join("b", T0)


def test_broken_stream_of_an_owner_rebalances():
    """An active member's stream breaking removes it and hands its partitions to the rest."""
    g = active_group("a", "b")
    g2 = g.stream_broken("a")
    assert g2.generation == g.generation + 1
    assert g2.assignment == {"b": SIX}
    with pytest.raises(NotFound):
        g2.member("a")


def test_a_gone_id_can_join_again_as_a_new_member():
    """After its removal, the same id joins as a fresh JOINING member with a generation bump."""
    g = active_group("a", "b").stream_broken("b")
    g2 = g.join("b", T0 + 9)
    assert g2.generation == g.generation + 1 and g2.member("b").state is S.JOINING


def test_expiry_is_exact_to_the_millisecond():
    """Last seen at t with timeout T: alive at t+T-1, expired at t+T."""
    g = active_group("a", "b").heartbeat("b", T0 + 3_000)
    assert g.expired(T0 + TIMEOUT - 1, TIMEOUT) == []
    assert g.expired(T0 + TIMEOUT, TIMEOUT) == ["a"]
    assert g.expired(T0 + 3_000 + TIMEOUT, TIMEOUT) == ["a", "b"]


def test_expire_drops_all_expired_members_with_one_bump():
    """Two members expiring together cost one generation; the survivor owns everything."""
    g = active_group("a", "b", "c").heartbeat("c", T0 + 5_000)
    g2 = g.expire(T0 + TIMEOUT, TIMEOUT)
    assert g2.generation == g.generation + 1
    assert g2.assignment == {"c": SIX}


def test_expire_with_nobody_expired_changes_nothing():
    """expire() before any deadline returns an equal group at the same generation."""
    g = active_group("a", "b")
    assert g.expire(T0 + 1, TIMEOUT) == g


def test_expiry_of_only_leaving_members_does_not_bump():
    """A LEAVING member timing out is removed without a rebalance."""
    g = active_group("a", "b").leave("b", T0).heartbeat("a", T0 + TIMEOUT)
    g2 = g.expire(T0 + TIMEOUT, TIMEOUT)
    assert g2.owners() == ["a"] and g2.generation == g.generation and len(g2.members) == 1


def test_non_positive_session_timeout_is_refused():
    """session_timeout_ms must be positive."""
    with pytest.raises(InvalidArgument, match="session_timeout_ms must be positive"):
        active_group("a").expired(T0, 0)


# -- partitions change -----------------------------------------------------------------------------


def test_growing_topic_rebalances_stickily():
    """New partitions bump the generation; every member keeps what it owned."""
    g = active_group("a", "b")
    g2 = g.with_partitions(SIX | tps("t", 6, 7))
    assert g2.generation == g.generation + 1
    for mid in ("a", "b"):
        assert g2.assignment[mid] >= g.assignment[mid] and len(g2.assignment[mid]) == 4


def test_same_partitions_do_not_bump():
    """Setting the same partition set returns the group unchanged."""
    g = active_group("a", "b")
    assert g.with_partitions(set(SIX)) is g


def test_bad_names_and_ids_are_refused():
    """Group names follow validate_group_name ('__' reserved); member ids must be non-empty."""
    with pytest.raises(InvalidArgument):
        Group.new("bad/name")
    with pytest.raises(InvalidArgument, match="reserved"):
        Group.new("__internal")
    assert Group.new("__internal", internal=True).generation == 0
    with pytest.raises(InvalidArgument, match="member id"):
        Group.new("g").join("", T0)


# -- random sequences --------------------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["join", "ack", "heartbeat", "leave", "broken", "expire", "grow"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(0, 4_000),
    ),
    max_size=40,
)


@given(OPS)
@settings(max_examples=150, deadline=None)
def test_random_histories_keep_a_balanced_cover_and_bump_exactly_on_ownership_changes(ops):
    """Any history: generation bumps iff owners/partitions change; assignment stays a balanced cover."""
    g = Group.new("g", tps("t", 0, 1, 2))
    now = T0
    for op, mid, dt in ops:
        now += dt
        before = g
        try:
            if op == "join":
                g = g.join(mid, now)
            elif op == "ack":
                g = g.acknowledge(mid, g.generation, now)
            elif op == "heartbeat":
                g = g.heartbeat(mid, now)
            elif op == "leave":
                g = g.leave(mid, now)
            elif op == "broken":
                g = g.stream_broken(mid)
            elif op == "expire":
                g = g.expire(now, TIMEOUT)
            else:
                g = g.with_partitions(g.partitions | tps("t", len(g.partitions)))
        except (FailedPrecondition, NotFound):
            assert g is before
            continue
        changed = before.owners() != g.owners() or before.partitions != g.partitions
        assert g.generation == before.generation + (1 if changed else 0), (op, mid)
        owned = [tp for tps_ in g.assignment.values() for tp in tps_]
        expected_owned = sorted(g.partitions) if g.owners() else []
        assert sorted(owned) == expected_owned
        sizes = [len(v) for v in g.assignment.values()]
        assert not sizes or max(sizes) - min(sizes) <= 1
        assert all(m.state is not S.GONE for m in g.members)
        assert [m.member_id for m in g.members] == sorted(m.member_id for m in g.members)
