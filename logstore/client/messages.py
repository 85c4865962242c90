"""Value objects the client library hands back: produced-record metadata,
consumed messages, topics, partitions and offsets.

All are frozen dataclasses with slots.  They are plain data: none of them
keeps a connection or refers back to the object that made it.

What these objects do not guarantee: a ``TopicDescription`` or
``PartitionOffsets`` is a snapshot taken when the broker answered; offsets
move on as soon as anyone produces or retention runs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "RecordMetadata",
    "Message",
    "TopicConfig",
    "TopicInfo",
    "PartitionInfo",
    "TopicDescription",
    "PartitionOffsets",
]


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where a produced record was appended.

    ``offset`` is -1 when the record was sent with ``acks="none"`` (the broker
    reports no offsets then).  ``timestamp_ms`` is the record's timestamp: the
    one the producer set, or the broker's append time for a record sent with
    timestamp 0.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Message:
    """One consumed record with its position.

    ``key`` and ``value`` are ``None`` for a null key or value, which differs
    from an empty ``b""``.  ``headers`` keeps the producer's order and may
    repeat a name.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def message_setters() -> tuple:
    """The slot setters of ``Message`` fields, in field order, for code that builds
    many messages (``object.__new__(Message)`` then one setter per field costs
    about half of the frozen dataclass ``__init__``).  Every field must be set."""
    return tuple(Message.__dict__[name].__set__ for name in Message.__slots__)


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """A topic's settings as in effect on the broker (see ``admin.proto``).

    ``durability`` is ``"always"``, ``"interval"``, ``"os"``, or
    ``"unspecified"`` when the broker did not say.
    """

    retention_ms: int | None = None
    retention_bytes: int | None = None
    segment_bytes: int | None = None
    durability: str = "unspecified"
    durability_interval_ms: int | None = None
    max_record_bytes: int | None = None
    max_batch_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic: its name, partition count and configuration."""

    name: str
    partition_count: int
    config: TopicConfig


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """The state of one partition when the broker described it."""

    partition: int
    log_start_offset: int
    log_end_offset: int
    size_bytes: int
    segment_count: int

    @property
    def record_count(self) -> int:
        """Records retained: ``log_end_offset - log_start_offset``."""
        return self.log_end_offset - self.log_start_offset


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic with the state of each of its partitions, in partition order."""

    name: str
    partition_count: int
    config: TopicConfig
    partitions: tuple[PartitionInfo, ...]


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """The answer of ``Admin.list_offsets`` for one partition.

    ``timestamp_ms`` is set only for a lookup by time that found a record: it
    is that record's timestamp.  When no record is at or after the time,
    ``offset`` is the log end offset and ``timestamp_ms`` is ``None``.
    """

    partition: int
    offset: int
    timestamp_ms: int | None
    log_start_offset: int
    log_end_offset: int
