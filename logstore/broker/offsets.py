"""Committed offsets of consumer groups, kept durably in the internal topic ``__consumer_offsets``.

``OffsetStore.open(broker)`` creates the topic if it is missing (8
partitions, unlimited retention, ``always`` durability), then replays every
partition into an in-memory map ``group -> {TopicPartition: CommittedOffset}``:
the last record for a key wins, and a tombstone (a record whose value is
null) removes the key.  Reads are answered from memory.

Writes: all offsets of one ``commit`` call become the records of ONE batch
appended to ONE partition, the group's ``partition_for_key(group, 8)``
(Kafka's murmur2), so a commit is atomic: after a crash either all of its
offsets are there or none.  Every group lives in a single partition, so the
log order of that partition is the order of the group's commits.  The append
is made with ``Acks.DURABLE`` (an fdatasync covers it) on a topic whose
durability is ``always``; ``commit`` returns only once its batch is on disk,
and only then does the in-memory map change.  ``delete_group`` writes one
tombstone per committed partition of the group, again as one batch.

Record layout (little-endian), inside an ordinary logstore record
------------------------------------------------------------------
Key (the record key, never null)::

    offset  size  field          meaning
    ------  ----  -------------  ----------------------------------------------
         0     2  key_version    uint16: key layout; 1 = offset commit key
                                 (other values are skipped on replay, so later
                                 kinds of group records can share the topic)
         2     2  group_length   uint16: length G of the group name
         4     2  topic_length   uint16: length T of the topic name
         6     4  partition      int32: partition number, >= 0
        10     G  group          the group name, ASCII (valid by validate_group_name)
      10+G     T  topic          the topic name, ASCII

Value (the record value; null is a tombstone for the key)::

    offset  size  field            meaning
    ------  ----  ---------------  ---------------------------------------------
         0     2  value_version    uint16: value layout; 1 is the only one
         2     8  offset           int64: the committed offset (the next offset
                                   the group will read), >= 0
        10     8  commit_time_ms   int64: when the client committed (epoch ms)
        18     4  metadata_length  uint32: length M of the metadata
        22     M  metadata         UTF-8 text chosen by the client, at most
                                   ``MAX_METADATA_BYTES`` bytes

The record timestamp is the broker clock at append time; record headers are
not used.

Commit intents (``ProduceAndCommit``, see ``commit_with_append``)
------------------------------------------------------------------
To commit offsets together with an append to another partition, the store
first writes an *intent* to the group's offsets partition, then the caller
appends its batch, then the store writes the ordinary commit records (the
*confirmation*).  An intent's key is ``key_version`` 2 with the group name
and no topic (``topic_length`` 0, ``partition`` -1); its value::

    offset  size  field              meaning
    ------  ----  -----------------  ---------------------------------------------
         0     2  value_version      uint16: 2
         2     4  target_partition   int32: the partition the batch goes to
         6     8  base_offset        int64: the offset the batch will start at
        14     4  record_count       int32: records in the batch
        18     4  batch_crc          uint32: the batch's CRC32C (header field)
        22     2  topic_length       uint16: length T of the target topic name
        24     4  entry_count        uint32: offsets to commit, N
        28     T  topic              the target topic, ASCII
      28+T     -  entries            N x (uint16 key length, key, uint32 value
                                     length, value): ordinary commit records

Replay applies an intent only if the target partition holds a batch that
starts at ``base_offset`` with that CRC and record count, i.e. only if the
append happened; an intent whose confirmation is missing (a crash right
after the append) is confirmed when the store opens.  So after any crash
either the batch and the offsets are both there, or neither is.

What this store does not guarantee (known limits, left for later):

- The topic is never compacted on disk yet: every commit stays in the log
  forever, which is why it must keep ``retention_ms=-1`` (deleting old
  segments would lose the latest commit of groups that commit rarely).  The
  cost of the start-up replay therefore grows with the number of commits
  ever made, not with the number of live offsets.
- A ``commit`` or ``delete_group`` that raised may or may not be there after
  a restart (the append can reach the disk before the error surfaces).
- No fencing: any caller can commit for any group; generation checks against
  the group's membership are the coordinator's job.
- No check that an offset lies within its partition's log.  Offsets of a
  deleted topic are dropped right after the deletion (``forget_topic``); if
  the broker dies in between, ``open`` drops them (``forget_missing_topics``).
- The topic's partition count must never change (nothing here grows it): a
  group's records would then be split over two partitions and replay could
  no longer tell which came last.
- Records written to the topic by anyone else are trusted if they parse;
  malformed ones are skipped with a warning.  The Produce path should refuse
  writes to internal topics.
"""

from __future__ import annotations

import logging
import struct
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

from logstore.broker.assignment import TopicPartition
from logstore.broker.broker import Acks, Broker
from logstore.broker.config import TopicConfig
from logstore.broker.names import validate_group_name, validate_topic_name
from logstore.broker.partitioner import partition_for_key
from logstore.broker.stored import iter_batches
from logstore.broker.topic import Partition
from logstore.errors import AlreadyExists, CorruptBatch, FailedPrecondition, InvalidArgument, NotFound
from logstore.storage.batch import HEADER
from logstore.storage.config import Durability
from logstore.storage.records import Record, decode_records, encode_records

_LOGGER = logging.getLogger(__name__)

__all__ = [
    "OFFSETS_TOPIC",
    "OFFSETS_PARTITIONS",
    "OFFSETS_TOPIC_CONFIG",
    "MAX_METADATA_BYTES",
    "CommittedOffset",
    "OffsetStore",
    "encode_key",
    "decode_key",
    "encode_value",
    "decode_value",
]

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITIONS = 8
"""Partitions of the offsets topic when the store creates it."""
OFFSETS_TOPIC_CONFIG = TopicConfig(retention_ms=-1, retention_bytes=-1, durability=Durability.ALWAYS)
"""Unlimited retention (nothing compacts it yet) and an fdatasync before every append returns."""
MAX_METADATA_BYTES = 4096
"""Longest metadata string of one committed offset, in UTF-8 bytes (Kafka's default)."""

KEY_VERSION = 1
VALUE_VERSION = 1

_KEY = struct.Struct(
    "<"
    "H"  # key_version    uint16, 1 = offset commit key
    "H"  # group_length   uint16, bytes of group name after the header
    "H"  # topic_length   uint16, bytes of topic name after the group name
    "i"  # partition      int32
)
_VALUE = struct.Struct(
    "<"
    "H"  # value_version    uint16, 1
    "q"  # offset           int64, the next offset to read
    "q"  # commit_time_ms   int64, epoch ms
    "I"  # metadata_length  uint32, bytes of UTF-8 metadata after the header
)
assert _KEY.size == 10, _KEY.size
assert _VALUE.size == 22, _VALUE.size
assert struct.calcsize("<HHH") == 6  # partition sits at byte 6, as documented

INTENT_KEY_VERSION = 2
INTENT_VALUE_VERSION = 2
_INTENT = struct.Struct(
    "<"
    "H"  # value_version     uint16, 2
    "i"  # target_partition  int32
    "q"  # base_offset       int64
    "i"  # record_count      int32
    "I"  # batch_crc         uint32
    "H"  # topic_length      uint16
    "I"  # entry_count       uint32
)
assert _INTENT.size == 28, _INTENT.size
_ENTRY_KEY_LENGTH = struct.Struct("<H")
_ENTRY_VALUE_LENGTH = struct.Struct("<I")

_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    """A group's position in one partition: the next offset it will read, plus client metadata."""

    offset: int
    metadata: str = ""
    commit_time_ms: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.offset, int) or isinstance(self.offset, bool) or not 0 <= self.offset <= _INT64_MAX:
            raise InvalidArgument(
                f"a committed offset is an integer from 0 to {_INT64_MAX}, got {self.offset!r}"
            )
        if not isinstance(self.metadata, str):
            raise InvalidArgument(f"offset metadata must be a string, got {type(self.metadata).__name__}")
        try:
            size = len(self.metadata.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"offset metadata is not encodable as UTF-8: {exc}") from None
        if size > MAX_METADATA_BYTES:
            raise InvalidArgument(
                f"offset metadata is {size} bytes of UTF-8; keep it to at most {MAX_METADATA_BYTES}"
            )
        if not isinstance(self.commit_time_ms, int) or not 0 <= self.commit_time_ms <= _INT64_MAX:
            raise InvalidArgument(
                f"commit_time_ms is milliseconds since the epoch (0 or more), got {self.commit_time_ms!r}"
            )


# -- record codec ----------------------------------------------------------------------------------


def encode_key(group: str, tp: TopicPartition) -> bytes:
    """The record key of ``group``'s offset for ``tp`` (layout in the module docstring)."""
    g = group.encode("ascii")
    t = tp.topic.encode("ascii")
    return _KEY.pack(KEY_VERSION, len(g), len(t), tp.partition) + g + t


def decode_key(key: bytes) -> tuple[str, TopicPartition] | None:
    """``(group, TopicPartition)`` of an offset commit key; None for a key of another version.

    Raises CorruptBatch if the bytes do not follow the layout.
    """
    if len(key) < _KEY.size:
        raise CorruptBatch(f"an offsets key needs at least {_KEY.size} bytes, got {len(key)}")
    version, group_len, topic_len, partition = _KEY.unpack_from(key, 0)
    if version != KEY_VERSION:
        return None
    if len(key) != _KEY.size + group_len + topic_len or group_len == 0 or topic_len == 0 or partition < 0:
        raise CorruptBatch("an offsets key does not match its declared lengths or has a negative partition")
    try:
        group = key[_KEY.size : _KEY.size + group_len].decode("ascii")
        topic = key[_KEY.size + group_len :].decode("ascii")
    except UnicodeDecodeError as exc:
        raise CorruptBatch("an offsets key holds a non-ASCII name") from exc
    return group, TopicPartition(topic, partition)


def encode_value(committed: CommittedOffset) -> bytes:
    """The record value of one committed offset (layout in the module docstring)."""
    metadata = committed.metadata.encode("utf-8")
    return _VALUE.pack(VALUE_VERSION, committed.offset, committed.commit_time_ms, len(metadata)) + metadata


def decode_value(value: bytes) -> CommittedOffset:
    """The committed offset in a record value; raises CorruptBatch if it does not follow the layout."""
    if len(value) < _VALUE.size:
        raise CorruptBatch(f"an offsets value needs at least {_VALUE.size} bytes, got {len(value)}")
    version, offset, commit_time_ms, metadata_len = _VALUE.unpack_from(value, 0)
    if version != VALUE_VERSION:
        raise CorruptBatch(f"unknown offsets value version {version}")
    if len(value) != _VALUE.size + metadata_len:
        raise CorruptBatch("an offsets value does not match its declared metadata length")
    try:
        return CommittedOffset(offset, value[_VALUE.size :].decode("utf-8"), commit_time_ms)
    except (UnicodeDecodeError, InvalidArgument) as exc:
        raise CorruptBatch(f"an offsets value is invalid: {exc}") from exc


@dataclass(frozen=True, slots=True)
class CommitIntent:
    """Offsets to commit if, and only if, a batch lands where it is expected."""

    topic: str
    partition: int
    base_offset: int
    record_count: int
    batch_crc: int
    offsets: tuple[tuple[TopicPartition, CommittedOffset], ...]


def encode_intent(group: str, intent: CommitIntent) -> tuple[bytes, bytes]:
    """The (key, value) of an intent record (layout in the module docstring)."""
    g = group.encode("ascii")
    key = _KEY.pack(INTENT_KEY_VERSION, len(g), 0, -1) + g
    t = intent.topic.encode("ascii")
    parts = [
        _INTENT.pack(INTENT_VALUE_VERSION, intent.partition, intent.base_offset, intent.record_count,
                     intent.batch_crc, len(t), len(intent.offsets)),
        t,
    ]
    for tp, committed in intent.offsets:
        k, v = encode_key(group, tp), encode_value(committed)
        parts += [_ENTRY_KEY_LENGTH.pack(len(k)), k, _ENTRY_VALUE_LENGTH.pack(len(v)), v]
    return key, b"".join(parts)


def decode_intent(key: bytes, value: bytes) -> tuple[str, CommitIntent] | None:
    """(group, intent) of an intent record; None for another key version; CorruptBatch if malformed."""
    if len(key) < _KEY.size:
        raise CorruptBatch(f"an offsets key needs at least {_KEY.size} bytes, got {len(key)}")
    version, group_len, _topic_len, _partition = _KEY.unpack_from(key, 0)
    if version != INTENT_KEY_VERSION:
        return None
    try:
        group = key[_KEY.size : _KEY.size + group_len].decode("ascii")
        vv, partition, base, count, crc, topic_len, n = _INTENT.unpack_from(value, 0)
        if vv != INTENT_VALUE_VERSION:
            raise CorruptBatch(f"unknown intent value version {vv}")
        pos = _INTENT.size
        topic = value[pos : pos + topic_len].decode("ascii")
        pos += topic_len
        entries = []
        for _ in range(n):
            (klen,) = _ENTRY_KEY_LENGTH.unpack_from(value, pos)
            k = value[pos + 2 : pos + 2 + klen]
            pos += 2 + klen
            (vlen,) = _ENTRY_VALUE_LENGTH.unpack_from(value, pos)
            v = value[pos + 4 : pos + 4 + vlen]
            pos += 4 + vlen
            decoded = decode_key(k)
            if decoded is None or decoded[0] != group:
                raise CorruptBatch("an intent entry is not an offset commit of its group")
            entries.append((decoded[1], decode_value(v)))
        if pos != len(value):
            raise CorruptBatch("an intent value has trailing bytes")
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptBatch(f"malformed commit intent: {exc}") from None
    return group, CommitIntent(topic, partition, base, count, crc, tuple(entries))


# -- the store --------------------------------------------------------------------------------------


class OffsetStore:
    """Committed offsets of every consumer group.  Build with ``OffsetStore.open``.

    Thread-safe.  Commits of groups that share a partition of the offsets
    topic are serialised (one fdatasync each); other partitions proceed in
    parallel.
    """

    def __init__(self, broker: Broker, partitions: list[Partition]) -> None:
        self._broker = broker
        self._partitions = partitions
        self._append_locks = [threading.Lock() for _ in partitions]
        """One per offsets partition: held across append, fsync and the map update."""
        self._lock = threading.Lock()
        """Guards ``_offsets``."""
        self._offsets: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        self._unconfirmed: dict[str, CommitIntent] = {}
        """Replay only: groups whose last record is an applied intent without its confirmation."""

    @classmethod
    def open(cls, broker: Broker) -> "OffsetStore":
        """Create ``__consumer_offsets`` if missing and replay it into memory."""
        try:
            broker.create_topic(OFFSETS_TOPIC, OFFSETS_PARTITIONS, OFFSETS_TOPIC_CONFIG, internal=True)
        except AlreadyExists:
            pass
        topic = broker.topic(OFFSETS_TOPIC)
        config = topic.metadata.config
        if config.retention_ms != -1 or config.retention_bytes != -1:
            _LOGGER.warning(
                "%s has retention_ms=%d retention_bytes=%d; it is not compacted, so retention can delete "
                "the latest commits of groups: set both to -1",
                OFFSETS_TOPIC,
                config.retention_ms,
                config.retention_bytes,
            )
        if topic.metadata.partition_count != OFFSETS_PARTITIONS:
            _LOGGER.warning(
                "%s has %d partitions, not %d; using them as they are (never change the count)",
                OFFSETS_TOPIC,
                topic.metadata.partition_count,
                OFFSETS_PARTITIONS,
            )
        store = cls(broker, list(topic.partitions))
        store._replay()
        store._confirm_replayed_intents()
        store.forget_missing_topics()
        broker.add_deletion_listener(store.forget_topic)
        return store

    def _replay(self) -> None:
        records = skipped = 0
        for partition in self._partitions:
            for batch in iter_batches(partition.log, partition.log.log_start_offset):
                base, length = HEADER.unpack_from(batch, 0)[:2]
                try:
                    for delta, record in decode_records(batch, HEADER.size, length):
                        records += 1
                        if not self._apply_stored(record):
                            skipped += 1
                            _LOGGER.warning(
                                "%s/%d offset %d: not an offset commit record; skipped",
                                OFFSETS_TOPIC, partition.index, base + delta,
                            )
                except CorruptBatch as exc:
                    skipped += 1
                    _LOGGER.error("%s/%d batch at %d: %s; rest of the batch skipped",
                                  OFFSETS_TOPIC, partition.index, base, exc)
        _LOGGER.info(
            "replayed %d record(s) of %s (%d skipped): %d group(s) with committed offsets",
            records, OFFSETS_TOPIC, skipped, len(self._offsets),
        )

    def _apply_stored(self, record: Record) -> bool:
        """Apply one replayed record to the map; False if it was skipped."""
        if record.key is None:
            return False
        try:
            decoded = decode_key(record.key)
            if decoded is None:
                if record.value is None:
                    return False
                intent = decode_intent(record.key, record.value)
                if intent is None:
                    return False
                group, found = intent
                if self._batch_landed(found):
                    self._offsets.setdefault(group, {}).update(found.offsets)
                    self._unconfirmed[group] = found
                return True
            group, tp = decoded
            self._unconfirmed.pop(group, None)
            if record.value is None:
                self._forget_locked(group, [tp])
            else:
                self._offsets.setdefault(group, {})[tp] = decode_value(record.value)
        except (CorruptBatch, InvalidArgument):
            return False
        return True

    def _batch_landed(self, intent: CommitIntent) -> bool:
        """Whether the intent's batch is in its partition: same start, CRC and record count."""
        try:
            log = self._broker.partition(intent.topic, intent.partition).log
            if not log.log_start_offset <= intent.base_offset < log.log_end_offset:
                return False
            batches = log.read(intent.base_offset, 1)
        except (NotFound, CorruptBatch):
            return False
        if not batches:
            return False
        base, _length, _magic, crc, _attributes, count = HEADER.unpack_from(batches[0], 0)[:6]
        return (base, crc, count) == (intent.base_offset, intent.batch_crc, intent.record_count)

    def _confirm_replayed_intents(self) -> None:
        """Write the confirmation of intents whose batch landed just before a crash."""
        pending, self._unconfirmed = self._unconfirmed, {}
        for group, intent in sorted(pending.items()):
            # A topic deleted since (its forget_topic never ran) is dropped by forget_missing_topics.
            alive = {tp: c for tp, c in intent.offsets if self._partition_exists(tp)}
            _LOGGER.info("confirming the commit of group %s that went with %s/%d@%d (%d of %d offsets)",
                         group, intent.topic, intent.partition, intent.base_offset, len(alive), len(intent.offsets))
            if alive:
                self.commit(group, alive)

    def _partition_exists(self, tp: TopicPartition) -> bool:
        try:
            self._broker.partition(tp.topic, tp.partition)
        except NotFound:
            return False
        return True

    # -- API ----------------------------------------------------------------------------------------

    def commit_with_append(
        self,
        group: str,
        offsets: Mapping[TopicPartition, CommittedOffset],
        if_committed: Mapping[TopicPartition, int],
        target: tuple[str, int],
        batch: bytes,
        append: Callable[[int], int],
    ) -> int:
        """Commit ``offsets`` for ``group`` and append ``batch`` to ``target``, atomically
        across a crash; return the batch's base offset.

        ``append(expected_base)`` must append ``batch`` durably at exactly
        ``expected_base`` (the target's log end read just before) or raise.
        ``if_committed`` maps partitions to the committed offset they must
        have now (-1: none), else FailedPrecondition and nothing happens.
        """
        items = self._validated(group, offsets)
        topic, partition = target
        log = self._broker.partition(topic, partition).log
        _b, _len, _magic, crc, _attributes, count = HEADER.unpack_from(batch, 0)[:6]
        index = self._partition_index(group)
        with self._append_locks[index]:
            with self._lock:
                current = self._offsets.get(group, {})
                for tp, want in sorted(if_committed.items()):
                    have = current[tp].offset if tp in current else -1
                    if have != want:
                        raise FailedPrecondition(
                            f"group {group!r} has committed offset {have} for {tp.topic}/{tp.partition}, not "
                            f"{want}: another instance committed since you read it (fenced); re-read and retry"
                        )
            base = log.log_end_offset
            now = self._broker.clock()
            key, value = encode_intent(group, CommitIntent(topic, partition, base, count, crc, tuple(items)))
            self._broker.append(OFFSETS_TOPIC, index, encode_records([Record(key, value, (), now)]), Acks.DURABLE,
                                append_time_ms=now, internal=True)
            landed = append(base)
            if items:
                confirmation = encode_records(
                    Record(key=encode_key(group, tp), value=encode_value(c), timestamp=now) for tp, c in items
                )
                self._broker.append(OFFSETS_TOPIC, index, confirmation, Acks.DURABLE, append_time_ms=now, internal=True)
                with self._lock:
                    self._offsets.setdefault(group, {}).update(items)
        return landed

    def _validated(
        self, group: str, offsets: Mapping[TopicPartition, CommittedOffset]
    ) -> list[tuple[TopicPartition, CommittedOffset]]:
        validate_group_name(group)
        for tp, committed in offsets.items():
            if not isinstance(tp, TopicPartition):
                raise InvalidArgument(f"offsets are keyed by TopicPartition, got {type(tp).__name__}")
            if not isinstance(committed, CommittedOffset):
                raise InvalidArgument(f"offsets map to CommittedOffset values, got {type(committed).__name__}")
            validate_topic_name(tp.topic, allow_internal=True)
            self._broker.partition(tp.topic, tp.partition)  # NotFound for a missing topic or partition
        return sorted(offsets.items())

    def commit(self, group: str, offsets: Mapping[TopicPartition, CommittedOffset]) -> None:
        """Durably store ``offsets`` for ``group``, all or nothing; return once on disk.

        Every partition must exist.  An empty mapping writes nothing.
        """
        items = self._validated(group, offsets)
        if not items:
            return
        now = self._broker.clock()
        encoded = encode_records(
            Record(key=encode_key(group, tp), value=encode_value(c), timestamp=now) for tp, c in items
        )
        index = self._partition_index(group)
        with self._append_locks[index]:
            self._broker.append(OFFSETS_TOPIC, index, encoded, Acks.DURABLE, append_time_ms=now, internal=True)
            with self._lock:
                self._offsets.setdefault(group, {}).update(items)

    def fetch(self, group: str) -> dict[TopicPartition, CommittedOffset]:
        """The committed offsets of ``group`` (empty if it has none), sorted by partition."""
        validate_group_name(group)
        with self._lock:
            return dict(sorted(self._offsets.get(group, {}).items()))

    def groups(self) -> list[str]:
        """The groups with at least one committed offset, sorted."""
        with self._lock:
            return sorted(self._offsets)

    def forget_topic(self, topic: str) -> int:
        """Durably drop every group's offsets for ``topic`` (it was deleted); return how many.

        One batch of tombstones per group that had any.
        """
        with self._lock:
            doomed = {g: sorted(tp for tp in tps if tp.topic == topic) for g, tps in self._offsets.items()}
        count = 0
        for group, tps in sorted(doomed.items()):
            if not tps:
                continue
            index = self._partition_index(group)
            now = self._broker.clock()
            encoded = encode_records(Record(key=encode_key(group, tp), value=None, timestamp=now) for tp in tps)
            with self._append_locks[index]:
                self._broker.append(OFFSETS_TOPIC, index, encoded, Acks.DURABLE, append_time_ms=now, internal=True)
                with self._lock:
                    self._forget_locked(group, tps)
            count += len(tps)
        if count:
            _LOGGER.info("dropped %d committed offset(s) of deleted topic %s", count, topic)
        return count

    def forget_missing_topics(self) -> int:
        """Drop offsets of topics that no longer exist (a crash between a topic's deletion
        and ``forget_topic``); return how many."""
        with self._lock:
            topics = {tp.topic for tps in self._offsets.values() for tp in tps}
        count = 0
        for topic in sorted(topics):
            try:
                self._broker.topic(topic)
            except NotFound:
                count += self.forget_topic(topic)
        return count

    def delete_group(self, group: str) -> None:
        """Durably forget every committed offset of ``group`` (one batch of tombstones).

        Raises NotFound if the group has no committed offsets.
        """
        validate_group_name(group)
        index = self._partition_index(group)
        with self._append_locks[index]:
            with self._lock:
                doomed = sorted(self._offsets.get(group, {}))
            if not doomed:
                raise NotFound(f"consumer group {group!r} has no committed offsets")
            now = self._broker.clock()
            encoded = encode_records(Record(key=encode_key(group, tp), value=None, timestamp=now) for tp in doomed)
            self._broker.append(OFFSETS_TOPIC, index, encoded, Acks.DURABLE, append_time_ms=now, internal=True)
            with self._lock:
                self._forget_locked(group, doomed)

    # -- helpers ------------------------------------------------------------------------------------

    def _partition_index(self, group: str) -> int:
        """The offsets partition holding every record of ``group``."""
        return partition_for_key(group.encode("ascii"), len(self._partitions))

    def _forget_locked(self, group: str, tps: list[TopicPartition]) -> None:
        """Drop ``tps`` of ``group`` from the map (and the group once empty); caller holds ``_lock``
        (or is the single-threaded replay)."""
        current = self._offsets.get(group)
        if current is None:
            return
        for tp in tps:
            current.pop(tp, None)
        if not current:
            del self._offsets[group]
