"""Value objects the client library hands back: produced-record metadata,
consumed messages, topics, partitions and offsets, consumer groups and their
committed offsets, retry policies and dead letters.

All are frozen dataclasses with slots except ``Message``, which is made once
per consumed record and is therefore a tuple subclass that the reader builds
without running Python code (see its docstring).  None of them keeps a
connection or refers back to the object that made it; a ``Message`` (and a
``MessageBatch``) made by the reader keeps the response it arrived in.

What these objects do not guarantee: a ``TopicDescription``,
``PartitionOffsets``, ``GroupSummary`` or ``GroupDescription`` is a snapshot
taken when the broker answered; offsets, lag and membership move on as soon
as anyone produces, consumes or retention runs.  A ``DeadLetter`` may have
been redriven or purged by the time it is read.  ``RetryPolicy`` checks only
the types of its fields; the broker checks their ranges when the policy is
set (``InvalidArgument`` naming the field).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import count, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from logstore.errors import InvalidArgument

if TYPE_CHECKING:
    from logstore._proto.logstore.v1 import records_pb2

__all__ = [
    "RecordMetadata",
    "Message",
    "MessageBatch",
    "record_messages",
    "TopicConfig",
    "TopicInfo",
    "PartitionInfo",
    "TopicDescription",
    "PartitionOffsets",
    "OffsetCommit",
    "GroupSummary",
    "GroupMember",
    "GroupPartition",
    "GroupDescription",
    "RetryPolicy",
    "DeadLetter",
]


_tuple_new = tuple.__new__


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


class Message(tuple):
    """One consumed record with its position.

    ``key`` and ``value`` are ``None`` for a null key or value, which differs
    from an empty ``b""``.  ``headers`` keeps the producer's order and may
    repeat a name.

    A read-only value object with seven fields (``topic``, ``partition``,
    ``offset``, ``timestamp_ms``, ``key``, ``value``, ``headers``): messages
    compare, hash, print and pickle by them, and ``dataclasses.fields``,
    ``asdict`` and ``replace`` work on them.  It is not a sequence: the
    ``tuple`` base is there only because a tuple subclass is the cheapest
    Python object to create (the reader makes one per record without running
    Python code), so a message cannot be iterated or unpacked, and its tuple
    items and length are not part of the API.

    A message made by the reader is a view over its record in the batch as
    received: ``timestamp_ms``, ``key``, ``value`` and ``headers`` are read
    from the record on every access (each access looks the record up again and
    returns new ``bytes`` or a new ``headers`` tuple: read a field once into a
    variable when you need it several times), and the message keeps the whole
    response it arrived in (up to the reader's ``max_bytes``, about 1 MiB by
    default) in memory while it is referenced.  To keep a few messages for
    long, keep the fields you need, or ``copy.copy(message)``: the copy holds
    only its own fields.
    """

    # Layout (private): a message built from its fields (``Message(...)``, a copy,
    # an unpickled one) is (topic, partition, offset, None, timestamp_ms, key,
    # value, headers); one the reader made is (topic, partition, offset, records,
    # log_append_time_ms or None, index): its record is ``records[index]``, read
    # only on access, so making a message makes no protobuf wrapper object.
    __slots__ = ()
    __match_args__ = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers")

    def __new__(
        cls,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> "Message":
        return _tuple_new(cls, (topic, partition, offset, None, timestamp_ms, key, value, headers))

    if TYPE_CHECKING:
        topic: str
        partition: int
        offset: int
    else:  # C-level getters: reading these runs no Python code
        topic = property(itemgetter(0), doc="The topic the record was read from.")
        partition = property(itemgetter(1), doc="The partition the record was read from.")
        offset = property(itemgetter(2), doc="The record's offset in its partition.")

    @property
    def timestamp_ms(self) -> int:
        """The record's timestamp (the batch's append time for a LOG_APPEND_TIME batch)."""
        timestamp = self[4]
        if timestamp is None:
            records = self[3]
            if records is not None:
                return records[self[5]].timestamp_ms
        return timestamp

    @property
    def key(self) -> bytes | None:
        """The record key; ``None`` for a null key."""
        records = self[3]
        if records is None:
            return self[5]
        record = records[self[5]]
        key = record.key
        if key or record.HasField("key"):  # HasField only to tell b"" from null
            return key
        return None

    @property
    def value(self) -> bytes | None:
        """The record value; ``None`` for a null value."""
        records = self[3]
        if records is None:
            return self[6]
        record = records[self[5]]
        value = record.value
        if value or record.HasField("value"):
            return value
        return None

    @property
    def headers(self) -> tuple[tuple[str, bytes], ...]:
        """The record's headers as ``(name, value)`` pairs, in the producer's order."""
        records = self[3]
        if records is None:
            return self[7]
        headers = records[self[5]].headers
        return tuple([(h.name, h.value) for h in headers]) if headers else ()

    def _values(self) -> tuple:
        return (self[0], self[1], self[2], self.timestamp_ms, self.key, self.value, self.headers)

    # Equal only to a message of the same class with the same fields; never to a
    # plain tuple (tuple's own comparison would look at the private layout).
    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() == other._values()  # type: ignore[attr-defined]
        return False if isinstance(other, tuple) else NotImplemented

    def __ne__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() != other._values()  # type: ignore[attr-defined]
        return True if isinstance(other, tuple) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    # Neither ordered nor a sequence, like the frozen dataclass this replaced
    # (tuple's versions would compare and expose the private layout).
    def __lt__(self, other: object) -> bool:
        return NotImplemented

    __le__ = __gt__ = __ge__ = __lt__
    __iter__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__qualname__}(topic={self[0]!r}, partition={self[1]!r}, offset={self[2]!r}, "
            f"timestamp_ms={self.timestamp_ms!r}, key={self.key!r}, value={self.value!r}, headers={self.headers!r})"
        )

    def __reduce__(self) -> tuple:
        # Pickling and copy.copy/deepcopy give a message holding only its fields.
        return (self.__class__, self._values())


@dataclass(frozen=True)
class _MessageFields:
    """The fields of ``Message`` as a dataclass declares them, lent to ``Message``
    so that ``dataclasses.fields``, ``asdict``, ``astuple`` and ``replace`` keep
    working on it (they read the fields by name)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


Message.__dataclass_fields__ = _MessageFields.__dataclass_fields__  # type: ignore[attr-defined]
Message.__dataclass_params__ = _MessageFields.__dataclass_params__  # type: ignore[attr-defined]


def record_messages(
    topic: str,
    partition: int,
    offsets: Iterable[int],
    records: Sequence[records_pb2.Record],
    log_append_time_ms: int | None = None,
) -> Iterator[Message]:
    """Messages viewing ``records``: the i-th has the i-th of ``offsets`` and views
    ``records[i]``, made as the iterator advances, which ends when ``offsets``
    does (so exhausting ``offsets`` stops it early).

    Everything per message runs in C (``map``, ``zip``, ``tuple.__new__``) and
    no protobuf wrapper is made until a field is read.  Make messages as they
    are consumed rather than all at once: thousands of live messages cost the
    cyclic garbage collector, one at a time costs it nothing.
    """
    return map(
        _tuple_new,
        repeat(Message),
        zip(repeat(topic), repeat(partition), offsets, repeat(records), repeat(log_append_time_ms), count()),
    )


@dataclass(frozen=True, slots=True)
class MessageBatch:
    """Consecutive records of one partition, appended together, trimmed to the
    range being read: what ``Reader.batches()`` yields.

    ``records`` are the protobuf ``Record`` messages as received: ``records[i]``
    has offset ``offset + i``, and ``HasField("key")``/``HasField("value")``
    tell null from empty (see ``records.proto``).  Read them to work a batch at
    a time without a ``Message`` per record, or iterate the batch for
    ``Message`` objects.  ``log_append_time_ms`` is set for a LOG_APPEND_TIME
    batch: it is every record's timestamp, whatever ``Record.timestamp_ms`` says.

    What it does not guarantee: that it is a whole stored batch (the first and
    last ones of a read are cut to its start and stop), or any size.
    """

    topic: str
    partition: int
    offset: int
    records: Sequence[records_pb2.Record]
    log_append_time_ms: int | None = None

    @property
    def next_offset(self) -> int:
        """The offset after the batch's last record."""
        return self.offset + len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Message]:
        """The batch's records as ``Message`` objects, made as the iterator advances."""
        offset = self.offset
        offsets = range(offset, offset + len(self.records))
        return record_messages(self.topic, self.partition, offsets, self.records, self.log_append_time_ms)


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


@dataclass(frozen=True, slots=True)
class OffsetCommit:
    """A group's committed offset for one partition: every record below
    ``offset`` is done, ``offset`` is the next one the group reads.

    ``metadata`` is text stored with the offset (at most 4096 bytes of UTF-8).
    ``commit_time_ms`` is when the broker stored it (epoch ms); ``None`` in an
    offset about to be committed.
    """

    topic: str
    partition: int
    offset: int
    metadata: str = ""
    commit_time_ms: int | None = None


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """A group as ``Admin.list_groups`` reports it: its name, how many members
    consume now, and the topics it consumes or has committed offsets for
    (sorted)."""

    name: str
    member_count: int
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One live member of a group.

    ``assignment`` holds the ``(topic, partition)`` pairs it owns, sorted;
    ``in_flight_records`` the records delivered to it and not yet acked or
    nacked; ``joined_ms`` and ``last_seen_ms`` are epoch milliseconds by the
    broker's clock.
    """

    member_id: str
    client_id: str
    peer: str
    assignment: tuple[tuple[str, int], ...]
    in_flight_records: int
    joined_ms: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class GroupPartition:
    """A group's progress on one partition.

    ``committed_offset`` is ``None`` when the group has committed nothing for
    it yet; ``lag`` is ``log_end_offset - committed_offset`` (from the log
    start offset when nothing is committed).  ``member_id`` is the owner, or
    ``None`` when no member owns the partition.
    """

    topic: str
    partition: int
    committed_offset: int | None
    log_end_offset: int
    lag: int
    member_id: str | None
    in_flight_records: int


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """A group's members, assignment and per-partition progress.

    ``delivery_mode`` is ``"partition_ordered"``, ``"key_ordered"`` or
    ``"unspecified"`` (no live members); ``delivery_guarantee`` is
    ``"at_least_once"``, ``"at_most_once"`` or ``"unspecified"``.
    ``generation`` counts the rebalances since the broker started.
    """

    group: str
    generation: int
    delivery_mode: str
    delivery_guarantee: str
    members: tuple[GroupMember, ...]
    partitions: tuple[GroupPartition, ...]

    @property
    def lag(self) -> int:
        """The records not yet done, summed over the partitions."""
        return sum(p.lag for p in self.partitions)


def _whole(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"RetryPolicy.{name} must be a whole number of milliseconds, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a group retries the records of one topic (``RetryPolicy`` in
    ``groups.proto``): a failed record (a nack, or an ack deadline that
    passed) is delivered again after a wait, at most ``max_attempts``
    deliveries in all (the first included), then goes to the group's
    dead-letter topic.  ``max_attempts=1`` dead-letters at the first failure.

    The waits are ``delays_ms`` (before attempt 2, 3, ...; the last one
    repeats) when given, else an exponential backoff: ``initial_delay_ms``
    before attempt 2, times ``multiplier`` for each later one, at most
    ``max_delay_ms``.  ``jitter`` (0 to 0.5) spreads each wait over
    ``[wait * (1 - jitter), wait]``.  Each distinct wait is one retry tier
    (a topic), at most 10.  On the wire a ``multiplier`` of 0 means 2 and a
    ``max_delay_ms`` of 0 means 60000 (``groups.proto``).
    """

    max_attempts: int
    delays_ms: tuple[int, ...] = ()
    initial_delay_ms: int = 1000
    multiplier: float = 2.0
    max_delay_ms: int = 60_000
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise InvalidArgument(f"RetryPolicy.max_attempts must be a whole number, got {self.max_attempts!r}")
        if isinstance(self.delays_ms, (str, bytes)) or not isinstance(self.delays_ms, Iterable):
            raise InvalidArgument(f"RetryPolicy.delays_ms must be a sequence of milliseconds, got {self.delays_ms!r}")
        object.__setattr__(self, "delays_ms", tuple(_whole("delays_ms", d) for d in self.delays_ms))
        _whole("initial_delay_ms", self.initial_delay_ms)
        _whole("max_delay_ms", self.max_delay_ms)
        for name in ("multiplier", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidArgument(f"RetryPolicy.{name} must be a number, got {value!r}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record in a group's dead-letter topic, with its provenance.

    ``partition`` and ``offset`` are its place in the dead-letter topic
    (``<topic>.<group>.dlq``, partition = the partition it came from).
    ``key``, ``value`` (``None`` when null), ``headers`` (provenance headers
    ``logstore.*`` included) and ``timestamp_ms`` are the record's.
    ``origin_topic``/``origin_partition``/``origin_offset`` say where it was
    first produced; ``attempts`` is how many deliveries were made,
    ``first_failure_ms`` when the first one failed, ``error`` the reason of
    the last failure and ``dead_lettered_ms`` when it was dead-lettered
    (epoch ms, the broker's clock).
    """

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    origin_topic: str
    origin_partition: int
    origin_offset: int
    attempts: int
    first_failure_ms: int
    error: str
    dead_lettered_ms: int
