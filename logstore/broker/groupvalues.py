"""Value objects of consumer groups: options, deliveries, descriptions, seek targets.

Plain frozen values shared by the group coordinator (``coordinator.py``), its
members (``session.py``) and the Groups servicer.  No I/O, no locks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from logstore.broker.assignment import TopicPartition
from logstore.broker.retry import RetryPolicy
from logstore.errors import InvalidArgument, LogstoreError

__all__ = [
    "DeliveryMode",
    "Guarantee",
    "StartPosition",
    "ConsumeOptions",
    "Delivery",
    "Outbound",
    "MemberInfo",
    "PartitionProgress",
    "GroupDescription",
    "GroupSummary",
    "SeekTarget",
]


class DeliveryMode(enum.Enum):
    PARTITION_ORDERED = "partition_ordered"
    KEY_ORDERED = "key_ordered"
    UNORDERED = "unordered"
    """Offset order for first deliveries, but a redelivery blocks nothing (ordering NONE)."""


class Guarantee(enum.Enum):
    AT_LEAST_ONCE = "at_least_once"
    AT_MOST_ONCE = "at_most_once"


@dataclass(frozen=True, slots=True)
class StartPosition:
    """Where a group starts on a partition it has no committed offset for."""

    earliest: bool = False
    """True: the log start.  False (and no timestamp): the log end."""
    timestamp_ms: int | None = None
    """The first record at or after this time (the log end if none)."""

    def __post_init__(self) -> None:
        if self.timestamp_ms is not None and self.timestamp_ms < 0:
            raise InvalidArgument(f"start_position.timestamp_ms must not be negative, got {self.timestamp_ms}")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArgument(f"{name} must be in [{low}, {high}], got {value!r}")


@dataclass(frozen=True, slots=True)
class ConsumeOptions:
    """A member's options from its Join (0 in the proto means the default here)."""

    max_in_flight: int = 1000
    ack_deadline_ms: int = 30_000
    mode: DeliveryMode = DeliveryMode.PARTITION_ORDERED
    start: StartPosition = StartPosition()
    session_timeout_ms: int = 30_000
    guarantee: Guarantee = Guarantee.AT_LEAST_ONCE
    client_id: str = ""
    retry_policies: tuple[tuple[str, RetryPolicy], ...] = ()
    """(topic, policy) pairs stored for the group at the join (see ``set_retry_policy``)."""

    def __post_init__(self) -> None:
        _check_range("max_in_flight_records", self.max_in_flight, 1, 100_000)
        _check_range("ack_deadline_ms", self.ack_deadline_ms, 100, 600_000)
        _check_range("session_timeout_ms", self.session_timeout_ms, 100, 600_000)
        if not isinstance(self.client_id, str) or len(self.client_id) > 255:
            raise InvalidArgument("client_id must be a string of at most 255 characters")


@dataclass(frozen=True, slots=True)
class Delivery:
    """Records of one partition handed to a member (see the proto's ``Delivery``)."""

    tp: TopicPartition
    first_id: int
    base_offset: int
    offsets: tuple[int, ...] | None
    """Each record's offset when they are not consecutive from ``base_offset``."""
    attempt: int
    deadline_ms: int
    records: tuple[bytes | memoryview, ...]
    """Chunks of framed records (``repeated Record`` encoding), in order."""
    count: int
    append_time_ms: int = 0
    """The append time of a topic stamped with log-append time (every record's timestamp), else 0."""


@dataclass(frozen=True, slots=True)
class Outbound:
    """What one response to a member carries."""

    member_id: str
    generation: int
    assignment: tuple[TopicPartition, ...]
    deliveries: list[Delivery]
    stale: list[tuple[int, int]]
    committed: list[tuple[TopicPartition, int]]
    errors: list[LogstoreError]


@dataclass(frozen=True, slots=True)
class MemberInfo:
    member_id: str
    client_id: str
    peer: str
    assignment: tuple[TopicPartition, ...]
    in_flight: int
    joined_ms: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    tp: TopicPartition
    committed: int
    """-1 when the group has no committed offset for it."""
    log_end_offset: int
    lag: int
    owner: str
    in_flight: int


@dataclass(frozen=True, slots=True)
class GroupDescription:
    name: str
    generation: int
    mode: DeliveryMode | None
    guarantee: Guarantee | None
    members: tuple[MemberInfo, ...]
    partitions: tuple[PartitionProgress, ...]


@dataclass(frozen=True, slots=True)
class GroupSummary:
    name: str
    member_count: int
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SeekTarget:
    """Exactly one of: ``earliest``, ``latest``, ``offset``, ``timestamp_ms``."""

    earliest: bool = False
    latest: bool = False
    offset: int | None = None
    timestamp_ms: int | None = None

    def __post_init__(self) -> None:
        chosen = sum((self.earliest, self.latest, self.offset is not None, self.timestamp_ms is not None))
        if chosen != 1:
            raise InvalidArgument("a seek needs exactly one target: earliest, latest, an offset or a timestamp")
        if self.offset is not None and self.offset < 0:
            raise InvalidArgument(f"a seek offset must not be negative, got {self.offset}")
        if self.timestamp_ms is not None and self.timestamp_ms < 0:
            raise InvalidArgument(f"a seek timestamp must not be negative, got {self.timestamp_ms}")
