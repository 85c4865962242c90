"""Admin against a real broker: topic lifecycle, configuration, partitions and offsets."""

from __future__ import annotations

import pytest

from logstore import errors
from logstore.client import Admin, Producer, TopicDescription


def test_create_describe_list_delete_round_trip(admin: Admin, request: pytest.FixtureRequest) -> None:
    """A created topic shows its settings in describe and list, and is gone after delete."""
    name = "admin-roundtrip"
    created = admin.create_topic(
        name, 3, retention_ms=60_000, retention_bytes=1 << 20, segment_bytes=1 << 20, durability="always",
        max_record_bytes=4096,
    )
    assert (created.name, created.partition_count) == (name, 3)
    assert (created.config.retention_ms, created.config.durability, created.config.max_record_bytes) == (
        60_000, "always", 4096,
    )
    described = admin.describe_topic(name)
    assert isinstance(described, TopicDescription)
    assert [p.partition for p in described.partitions] == [0, 1, 2]
    assert all(p.log_end_offset == 0 and p.record_count == 0 for p in described.partitions)
    assert described.config.retention_bytes == 1 << 20
    assert name in [t.name for t in admin.list_topics()]
    admin.delete_topic(name)
    assert name not in [t.name for t in admin.list_topics()]
    with pytest.raises(errors.NotFound):
        admin.describe_topic(name)


def test_errors_come_back_as_logstore_errors(admin: Admin, make_topic) -> None:
    """Duplicate create -> AlreadyExists, missing delete -> NotFound, bad name or durability -> InvalidArgument."""
    topic = make_topic()
    with pytest.raises(errors.AlreadyExists):
        admin.create_topic(topic)
    with pytest.raises(errors.NotFound):
        admin.delete_topic("never-created-topic")
    with pytest.raises(errors.InvalidArgument):
        admin.create_topic("bad/name")
    with pytest.raises(errors.InvalidArgument, match="durability"):
        admin.create_topic("fine-name", durability="sometimes")


def test_create_partitions_only_grows(admin: Admin, make_topic) -> None:
    """create_partitions raises the count, repeating it is harmless, lowering it is InvalidArgument."""
    topic = make_topic(2)
    assert admin.create_partitions(topic, 5).partition_count == 5
    assert admin.create_partitions(topic, 5).partition_count == 5
    with pytest.raises(errors.InvalidArgument):
        admin.create_partitions(topic, 3)
    assert admin.describe_topic(topic).partition_count == 5


def test_list_offsets_earliest_latest_and_by_time(admin: Admin, broker: str, make_topic) -> None:
    """list_offsets gives log start/end and the first offset at or after a time (log end if none)."""
    topic = make_topic(2)
    with Producer(broker) as producer:
        for i in range(4):
            producer.send(topic, b"x", partition=0, timestamp_ms=(i + 1) * 1000)
    latest = admin.list_offsets(topic)
    assert {p: o.offset for p, o in latest.items()} == {0: 4, 1: 0}
    assert admin.list_offsets(topic, 0, "earliest")[0].offset == 0
    by_time = admin.list_offsets(topic, [0], 2500)[0]
    assert (by_time.offset, by_time.timestamp_ms, by_time.log_end_offset) == (2, 3000, 4)
    past_end = admin.list_offsets(topic, 0, 10_000)[0]
    assert (past_end.offset, past_end.timestamp_ms) == (4, None)
    with pytest.raises(errors.InvalidArgument):
        admin.list_offsets(topic, 0, "middle")
