"""The idempotent producer: producer ids and epochs, and exactly-once appends.

Two parts, both used by ``Broker``:

**The registry** (``ProducerRegistry``) hands out producer ids and epochs
(``init_producer``) and remembers them in the internal topic
``__producers`` (1 partition, ``always`` durability, kept forever).  One
record per registration::

    key    the client id as UTF-8 (empty for an anonymous producer)
    value  offset  size  field
           ------  ----  -----------------------------------------------
                0     8  producer_id     int64, >= 0
                8     2  producer_epoch  int16, >= 0

Replaying the topic gives each client id its producer id and latest epoch,
and the next free id (one past the largest recorded).  A named
registration is appended durably before it is answered, so a fenced epoch
stays fenced after a crash.  Anonymous producers (no client id) can never
be fenced, so they are not recorded one by one: the registry reserves ids
``ID_BLOCK`` at a time with one record (key null, the block's last id,
epoch 0) and hands them out from memory.  After a restart, ids resume after
the last reserved block, so no id is ever handed out twice, and any id
below the next free one that no client id owns is a valid anonymous
producer at epoch 0.

**Exactly-once appends** (``append_idempotent``): under the partition's
``producer_lock``, the batch is checked against the partition's
``ProducerStates`` (see ``producerstate``), appended with the producer's id,
epoch and base sequence in its header, and recorded.  A duplicate appends
nothing and is answered with the original batch's offsets.  The table is
loaded lazily, on the first idempotent append to the partition, from the
snapshot file ``producers.snapshot`` in the partition's directory plus the
batch headers after it; ``snapshot`` writes that file (the broker calls it
at each checkpoint and at close), after flushing the log so a snapshot never
covers offsets that are not on disk.

What this does not guarantee: the registry keeps every producer id it ever
issued in memory and on disk (a few dozen bytes each; anonymous producers
register once per ``Producer`` instance).  If retention deletes segments
written after the last snapshot before the table is next loaded, the
batches in them are not remembered: a producer whose last batches were
there gets OutOfOrderSequence and must re-register.  A duplicate's
``append_time_ms`` is the original batch's largest timestamp as stored,
which for create-time topics is the producer's clock, not the broker's.
"""

from __future__ import annotations

import logging
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from logstore.broker.config import TopicConfig
from logstore.broker.producerstate import AppendedBatch, ProducerStates
from logstore.broker.stored import iter_batches
from logstore.broker.topic import Partition
from logstore.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ProducerFenced,
    ResourceExhausted,
    UnknownProducer,
)
from logstore.storage.batch import HEADER, iter_batch_records
from logstore.storage.checkpoint import read_checkpoint, write_checkpoint
from logstore.storage.config import Durability
from logstore.storage.records import EncodedRecords, Record

if TYPE_CHECKING:
    from logstore.broker.broker import Broker

_LOGGER = logging.getLogger(__name__)

__all__ = [
    "PRODUCERS_TOPIC",
    "SNAPSHOT_FILE",
    "MAX_CLIENT_ID_BYTES",
    "MAX_EPOCH",
    "ProducerId",
    "ProducerStamp",
    "ProducerRegistry",
    "load_states",
    "snapshot",
    "discard_stale_snapshot",
    "append_idempotent",
]

PRODUCERS_TOPIC = "__producers"
PRODUCERS_TOPIC_CONFIG = TopicConfig(retention_ms=-1, retention_bytes=-1, durability=Durability.ALWAYS)
SNAPSHOT_FILE = "producers.snapshot"
MAX_CLIENT_ID_BYTES = 255
MAX_EPOCH = (1 << 15) - 1
"""Epochs are int16 in the batch header."""

_REGISTRATION = struct.Struct(
    "<"
    "q"  # producer_id     int64
    "h"  # producer_epoch  int16
)
assert _REGISTRATION.size == 10, _REGISTRATION.size

ID_BLOCK = 1000
"""Anonymous producer ids reserved per record in ``__producers``."""


@dataclass(frozen=True, slots=True)
class ProducerId:
    """What InitProducer answers."""

    producer_id: int
    epoch: int


@dataclass(frozen=True, slots=True)
class ProducerStamp:
    """The idempotence fields of one produce request for one partition."""

    producer_id: int
    epoch: int
    base_sequence: int

    def __post_init__(self) -> None:
        if self.producer_id < 0:
            raise InvalidArgument(f"producer_id must be 0 or more (from InitProducer), got {self.producer_id}")
        if not 0 <= self.epoch <= MAX_EPOCH:
            raise InvalidArgument(f"producer_epoch must be in [0, {MAX_EPOCH}], got {self.epoch}")
        if not 0 <= self.base_sequence < (1 << 31):
            raise InvalidArgument(f"base_sequence must be in [0, 2^31), got {self.base_sequence}")


def _check_client_id(client_id: str) -> bytes:
    raw = client_id.encode("utf-8")
    if len(raw) > MAX_CLIENT_ID_BYTES:
        raise InvalidArgument(f"client_id is {len(raw)} bytes of UTF-8; keep it to at most {MAX_CLIENT_ID_BYTES}")
    if any(ord(c) < 32 or ord(c) == 127 for c in client_id):
        raise InvalidArgument("client_id must not contain control characters")
    return raw


class ProducerRegistry:
    """Producer ids and epochs, stored in ``__producers``.  Thread-safe; opened lazily."""

    def __init__(self, broker: "Broker") -> None:
        self._broker = broker
        self._lock = threading.Lock()
        self._loaded = False
        self._by_client: dict[bytes, ProducerId] = {}
        self._epochs: dict[int, int] = {}
        """Latest epoch of each named producer id (anonymous ids are always at epoch 0)."""
        self._next_id = 0
        """The next id to hand out."""
        self._reserved = 0
        """Ids below this are durably taken (named, or in a reserved block)."""

    def _partition_locked(self, create: bool) -> Partition | None:
        try:
            topic = self._broker.topic(PRODUCERS_TOPIC)
        except NotFound:
            if not create:
                return None
            try:
                self._broker.create_topic(PRODUCERS_TOPIC, 1, PRODUCERS_TOPIC_CONFIG, internal=True)
            except AlreadyExists:
                pass
            topic = self._broker.topic(PRODUCERS_TOPIC)
        return topic.partitions[0]

    def _load_locked(self) -> None:
        if self._loaded:
            return
        p = self._partition_locked(create=False)
        if p is not None:
            for raw in iter_batches(p.log, p.log.log_start_offset):
                for _offset, record in iter_batch_records(raw):
                    self._apply(record)
        self._loaded = True
        _LOGGER.info("producer registry: %d named producer(s), next id %d", len(self._epochs), self._next_id)

    def _apply(self, record: Record) -> None:
        """Replay one record: a named registration, or an anonymous block (or single id)."""
        if record.value is None or len(record.value) != _REGISTRATION.size:
            _LOGGER.warning("%s: skipping a malformed registration", PRODUCERS_TOPIC)
            return
        pid, epoch = _REGISTRATION.unpack(record.value)
        if record.key:
            self._by_client[bytes(record.key)] = ProducerId(pid, epoch)
            self._epochs[pid] = max(epoch, self._epochs.get(pid, -1))
        self._reserved = max(self._reserved, pid + 1)
        self._next_id = max(self._next_id, pid + 1)

    def _append_locked(self, key: bytes | None, producer_id: int, epoch: int) -> None:
        p = self._partition_locked(create=True)
        assert p is not None
        p.log.append_records([Record(key, _REGISTRATION.pack(producer_id, epoch), (), self._broker.clock())])
        p.log.flush()

    def init_producer(self, client_id: str = "") -> ProducerId:
        """A new producer id at epoch 0, or, for a known ``client_id``, its id at the next
        epoch (fencing the previous one).  Durable before it returns."""
        key = _check_client_id(client_id)
        with self._lock:
            self._load_locked()
            if not key:
                if self._next_id >= self._reserved:
                    self._append_locked(None, self._next_id + ID_BLOCK - 1, 0)
                    self._reserved = self._next_id + ID_BLOCK
                issued = ProducerId(self._next_id, 0)
                self._next_id += 1
                return issued
            known = self._by_client.get(key)
            if known is None:
                issued = ProducerId(self._next_id, 0)
            elif known.epoch >= MAX_EPOCH:
                raise ResourceExhausted(
                    f"client_id {client_id!r} used all {MAX_EPOCH + 1} epochs; register under a new client_id"
                )
            else:
                issued = ProducerId(known.producer_id, known.epoch + 1)
            self._append_locked(key, issued.producer_id, issued.epoch)
            self._apply(Record(key, _REGISTRATION.pack(issued.producer_id, issued.epoch), (), 0))
        _LOGGER.info("registered producer id %d epoch %d%s", issued.producer_id, issued.epoch,
                     f" for client id {client_id!r}" if key else "")
        return issued

    def check_epoch(self, producer_id: int, epoch: int) -> None:
        """Raise unless ``epoch`` is the latest issued for ``producer_id``."""
        with self._lock:
            self._load_locked()
            latest = self._epochs.get(producer_id)
            if latest is None and 0 <= producer_id < self._next_id:
                latest = 0  # anonymous: handed out from a reserved block, never fenced
        if latest is None:
            raise UnknownProducer(
                f"producer id {producer_id} was never issued by this broker; call InitProducer first"
            )
        if epoch < latest:
            raise ProducerFenced(
                f"producer {producer_id} epoch {epoch} is fenced: epoch {latest} was registered since "
                "(another instance with the same client_id took over)"
            )
        if epoch > latest:
            raise UnknownProducer(f"producer {producer_id} epoch {epoch} was never issued (latest is {latest})")


# -- per-partition state: lazy load, snapshot, exactly-once append -------------------------------


def load_states(p: Partition, now_ms: int) -> ProducerStates:
    """The partition's table: the snapshot if it is still valid, then the batch headers after it
    (producers seen there count as having written at ``now_ms``).

    Call with ``p.producer_lock`` held."""
    log = p.log
    end = log.log_end_offset
    states = ProducerStates()
    start = log.log_start_offset
    text = read_checkpoint(log.directory / SNAPSHOT_FILE)
    if text is not None:
        try:
            snap, snap_offset = ProducerStates.from_text(text)
        except ValueError as exc:
            _LOGGER.warning("%s/%d: %s; scanning the log instead", p.topic, p.index, exc)
        else:
            if snap_offset <= end:
                states, start = snap, max(start, snap_offset)
            else:
                _LOGGER.warning(
                    "%s/%d: producer snapshot at offset %d is past the log end %d (the log lost its tail); "
                    "scanning the log instead",
                    p.topic, p.index, snap_offset, end,
                )
    scanned = 0
    for raw in iter_batches(log, start, end):
        (base, _len, _m, _crc, _attrs, count, _first, max_ts, pid, epoch, seq) = HEADER.unpack_from(raw, 0)
        if base >= start:  # a batch straddling the snapshot offset was taken into account before it
            states.observe(pid, epoch, seq, count, base, max_ts, now_ms)
            scanned += 1
    _LOGGER.debug("%s/%d: producer state of %d producer(s), %d batch header(s) scanned", p.topic, p.index, len(states), scanned)
    return states


def discard_stale_snapshot(p: Partition) -> bool:
    """At partition open: delete a snapshot that covers offsets past the recovered log end
    (the log lost its tail), before any append can reach those offsets; report whether.

    The table is loaded lazily, so without this an append made after the restart could
    fill the lost offsets and make the stale snapshot look valid."""
    path = p.log.directory / SNAPSHOT_FILE
    text = read_checkpoint(path)
    if text is None:
        return False
    try:
        _states, offset = ProducerStates.from_text(text)
    except ValueError:
        offset = -1
    if 0 <= offset <= p.log.log_end_offset:
        return False
    _LOGGER.warning("%s/%d: producer snapshot at offset %d does not fit the log (end %d); dropped, the log is "
                    "scanned instead", p.topic, p.index, offset, p.log.log_end_offset)
    path.unlink(missing_ok=True)
    return True


def snapshot(p: Partition, now_ms: int) -> bool:
    """Write the partition's producer-state snapshot if its table is loaded; report whether."""
    with p.producer_lock:
        states = p.producer_states
        if states is None or p.log.closed:
            return False
        states.expire(now_ms)
        end = p.log.log_end_offset
        p.log.flush_to(end)  # never let a snapshot cover offsets that are not on disk
        write_checkpoint(p.log.directory / SNAPSHOT_FILE, states.to_text(end))
    return True


def append_idempotent(
    p: Partition, batch: bytearray | bytes, records: EncodedRecords, stamp: ProducerStamp, now: int,
    expected_offset: int | None,
) -> tuple[int, int, bool]:
    """Append ``batch`` (already stamped) once: (base offset, append time, duplicate)."""
    with p.producer_lock:
        states = p.producer_states
        if states is None:
            states = p.producer_states = load_states(p, now)
        original: AppendedBatch | None = states.check(stamp.producer_id, stamp.epoch, stamp.base_sequence, records.count)
        if original is not None:
            return original.base_offset, original.append_time_ms, True
        base = p.log.append(batch, expected_offset=expected_offset, wait_durable=False)
        states.record(stamp.producer_id, stamp.epoch, stamp.base_sequence, records.count, base, now)
    return base, now, False

