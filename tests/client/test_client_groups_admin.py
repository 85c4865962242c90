"""Admin's group methods against a real broker: commit and fetch offsets, list, describe,
seek and delete groups, and the logstore.errors class of each refusal."""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timezone
from typing import Callable

import pytest

from logstore import errors
from logstore.client import (
    Admin,
    Consumer,
    GroupDescription,
    GroupMember,
    GroupPartition,
    GroupSummary,
    OffsetCommit,
    Producer,
)

_groups = itertools.count()
WAIT_S = 10.0


@pytest.fixture
def group(request: pytest.FixtureRequest) -> str:
    return f"admin-g{next(_groups)}-{request.node.name[:40]}".replace("[", "-").replace("]", "")


def fill(broker: str, topic: str, partitions: int, per_partition: int, timestamp_ms: int | None = None) -> None:
    with Producer(broker, linger_ms=20) as producer:
        for p in range(partitions):
            for i in range(per_partition):
                when = None if timestamp_ms is None else timestamp_ms + i * 1000
                producer.send(topic, b"%d-%d" % (p, i), partition=p, timestamp_ms=when)


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def offsets_of(admin: Admin, group: str) -> dict[tuple[str, int], int]:
    return {tp: c.offset for tp, c in admin.fetch_committed_offsets(group).items()}


def test_commit_then_fetch_round_trips_offsets_and_metadata(admin: Admin, make_topic, group: str, broker: str) -> None:
    """commit_offsets (mapping or OffsetCommit list) stores what fetch_committed_offsets returns, sorted, with commit times."""
    a, b = make_topic(2), make_topic(1)
    fill(broker, a, 2, 5)
    fill(broker, b, 1, 5)
    before = int(time.time() * 1000)
    admin.commit_offsets(group, {(a, 0): 3, (a, 1): 5})
    admin.commit_offsets(group, [OffsetCommit(b, 0, 2, metadata="batch 7"), (a, 1, 4, "rewound")])
    found = admin.fetch_committed_offsets(group)
    assert list(found) == sorted([(a, 0), (a, 1), (b, 0)])
    assert {tp: (c.offset, c.metadata) for tp, c in found.items()} == {
        (a, 0): (3, ""),
        (a, 1): (4, "rewound"),
        (b, 0): (2, "batch 7"),
    }
    assert all(isinstance(c, OffsetCommit) and c.commit_time_ms is not None and c.commit_time_ms >= before - 1000 for c in found.values())
    assert list(admin.fetch_committed_offsets(group, b)) == [(b, 0)]
    assert admin.fetch_committed_offsets(group + "-never") == {}


def test_commit_offsets_refusals_map_to_error_classes(admin: Admin, make_topic, group: str, broker: str) -> None:
    """A negative offset -> InvalidArgument, an unknown topic -> NotFound, a group with live members -> FailedPrecondition."""
    topic = make_topic()
    with pytest.raises(errors.InvalidArgument):
        admin.commit_offsets(group, {(topic, 0): -1})
    with pytest.raises(errors.NotFound, match="no-such-topic"):
        admin.commit_offsets(group, {("no-such-topic", 0): 1})
    with pytest.raises(errors.InvalidArgument, match="topic, partition"):
        admin.commit_offsets(group, {topic: 1})  # type: ignore[dict-item]
    with Consumer(broker, group, topic):
        with pytest.raises(errors.FailedPrecondition):
            admin.commit_offsets(group, {(topic, 0): 0})


def test_list_groups_shows_committed_and_live_groups(admin: Admin, make_topic, group: str, broker: str) -> None:
    """list_groups returns GroupSummary objects sorted by name, with member counts and topics."""
    topic = make_topic()
    admin.commit_offsets(group + "-idle", {(topic, 0): 0})
    with Consumer(broker, group + "-live", topic):
        groups = {g.name: g for g in admin.list_groups()}
        assert groups[group + "-idle"] == GroupSummary(group + "-idle", 0, (topic,))
        assert groups[group + "-live"] == GroupSummary(group + "-live", 1, (topic,))
    names = [g.name for g in admin.list_groups()]
    assert names == sorted(names)


def test_describe_group_shows_members_assignment_lag_and_in_flight(admin: Admin, make_topic, group: str, broker: str) -> None:
    """describe_group lists the member with its partitions, and per partition committed offset, log end, lag, owner and in-flight."""
    topic = make_topic(2)
    fill(broker, topic, 2, 10)
    with Consumer(broker, group, topic, start="earliest", client_id="describer", delivery_mode="key_ordered") as consumer:
        held = []
        while len(held) < 20:
            message = consumer.poll(WAIT_S)
            assert message is not None
            held.append(message)
        for m in held:
            if m.partition == 0 and m.offset < 4:
                m.ack()
        wait_for(lambda: consumer.committed.get((topic, 0)) == 4, "partition 0 to commit 4")
        d = admin.describe_group(group)
        assert isinstance(d, GroupDescription) and d.group == group and d.generation > 0
        assert (d.delivery_mode, d.delivery_guarantee) == ("key_ordered", "at_least_once")
        (member,) = d.members
        assert isinstance(member, GroupMember)
        assert (member.member_id, member.client_id, member.in_flight_records) == (consumer.member_id, "describer", 16)
        assert member.assignment == ((topic, 0), (topic, 1)) and member.peer
        assert member.joined_ms <= member.last_seen_ms
        assert d.partitions == (
            GroupPartition(topic, 0, 4, 10, 6, consumer.member_id, 6),
            GroupPartition(topic, 1, 0, 10, 10, consumer.member_id, 10),
        )
        assert d.lag == 16
    after = admin.describe_group(group)
    assert after.members == () and after.delivery_mode == "unspecified"
    assert [(p.committed_offset, p.member_id, p.in_flight_records) for p in after.partitions] == [(4, None, 0), (0, None, 0)]


def test_describe_or_delete_an_unknown_group_is_not_found(admin: Admin, group: str) -> None:
    """describe_group and delete_group of a group nobody used raise NotFound; a malformed name raises InvalidArgument."""
    with pytest.raises(errors.NotFound):
        admin.describe_group(group)
    with pytest.raises(errors.NotFound):
        admin.delete_group(group)
    with pytest.raises(errors.InvalidArgument):
        admin.describe_group("bad name!")


def test_seek_group_to_each_kind_of_target(admin: Admin, make_topic, group: str, broker: str) -> None:
    """seek_group moves every (or the listed) partitions to earliest, latest, an offset (clamped) or a time, and returns them."""
    topic = make_topic(2)
    fill(broker, topic, 2, 5, timestamp_ms=1_000_000)  # timestamps 1_000_000, 1_001_000, ... per partition
    latest = admin.seek_group(group, topic, latest=True)
    assert {p: o.offset for p, o in latest.items()} == {0: 5, 1: 5}
    assert all(isinstance(o, OffsetCommit) and o.topic == topic for o in latest.values())
    assert offsets_of(admin, group) == {(topic, 0): 5, (topic, 1): 5}
    assert {p: o.offset for p, o in admin.seek_group(group, topic, earliest=True, partitions=[1]).items()} == {1: 0}
    assert offsets_of(admin, group) == {(topic, 0): 5, (topic, 1): 0}
    assert {p: o.offset for p, o in admin.seek_group(group, topic, offset=3).items()} == {0: 3, 1: 3}
    assert {p: o.offset for p, o in admin.seek_group(group, topic, offset=99).items()} == {0: 5, 1: 5}
    assert {p: o.offset for p, o in admin.seek_group(group, topic, timestamp_ms=1_002_500).items()} == {0: 3, 1: 3}
    when = datetime.fromtimestamp(1_001_000 / 1000, tz=timezone.utc)
    assert {p: o.offset for p, o in admin.seek_group(group, topic, timestamp_ms=when, partitions=0).items()} == {0: 1}


def test_seek_group_needs_exactly_one_target(admin: Admin, make_topic, group: str) -> None:
    """No target or two targets raise InvalidArgument before any call; an unknown partition raises NotFound."""
    topic = make_topic()
    with pytest.raises(errors.InvalidArgument, match="exactly one target"):
        admin.seek_group(group, topic)
    with pytest.raises(errors.InvalidArgument, match="earliest, offset"):
        admin.seek_group(group, topic, earliest=True, offset=1)
    with pytest.raises(errors.NotFound):
        admin.seek_group(group, topic, earliest=True, partitions=[7])


def test_seek_while_consuming_restarts_delivery_at_the_new_offset(admin: Admin, make_topic, group: str, broker: str) -> None:
    """A seek back while a member consumes makes it receive the records again from the new offset."""
    topic = make_topic()
    fill(broker, topic, 1, 6)
    with Consumer(broker, group, topic, start="earliest") as consumer:
        first = [consumer.poll(WAIT_S) for _ in range(6)]
        assert [m.offset for m in first if m is not None] == list(range(6))
        for m in first:
            m.ack()  # type: ignore[union-attr]
        wait_for(lambda: consumer.committed.get((topic, 0)) == 6, "everything to commit")
        admin.seek_group(group, topic, offset=2)
        again = [consumer.poll(WAIT_S) for _ in range(4)]
        assert [(m.offset, m.value) for m in again if m is not None] == [(i, b"0-%d" % i) for i in range(2, 6)]


def test_delete_group_forgets_offsets_but_not_while_members_consume(admin: Admin, make_topic, group: str, broker: str) -> None:
    """delete_group refuses a group with a live member (FailedPrecondition); once it left, deletion removes its offsets."""
    topic = make_topic()
    admin.commit_offsets(group, {(topic, 0): 0})
    with Consumer(broker, group, topic):
        with pytest.raises(errors.FailedPrecondition):
            admin.delete_group(group)
    admin.delete_group(group)
    assert admin.fetch_committed_offsets(group) == {}
    assert group not in [g.name for g in admin.list_groups()]
