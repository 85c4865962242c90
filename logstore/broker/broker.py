"""The broker: topics of partition logs, produce, fetch, subscribe, admin.

Domain logic only; ``logstore.server`` translates gRPC to these calls.

Data directory::

    <data-dir>/.lock                 held (flock) by the running broker
    <data-dir>/topics/<name>/        one topic (see topic.py)
    <data-dir>/topics/.creating-*    a topic being created (removed at start)
    <data-dir>/topics/.deleted-*     a topic being deleted (removed at start)

Threads: gRPC handler threads call in concurrently.  Each partition log
serialises its own appends; the broker lock only guards the topic map.  A
scheduler thread runs retention and interval flushes for every partition.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from logstore.broker import idempotence
from logstore.broker.config import MAX_PARTITIONS, BrokerConfig, TopicConfig
from logstore.broker.idempotence import ProducerId, ProducerRegistry, ProducerStamp
from logstore.broker.names import validate_topic_name
from logstore.broker.partitioner import partition_for_key
from logstore.broker.topic import Partition, Topic, TopicMetadata
from logstore.clock import Clock, wall_clock_ms
from logstore.errors import (
    AlreadyExists,
    LogstoreError,
    FailedPrecondition,
    InvalidArgument,
    LogClosed,
    NotFound,
    OffsetOutOfRange,
    PermissionDenied,
    RecordTooLarge,
)
from logstore.storage.batch import HEADER, HEADER_SIZE, build_batch_from_encoded, iter_batch_records
from logstore.storage.checkpoint import fsync_dir
from logstore.storage.config import Durability
from logstore.storage.records import EncodedRecords, record_sizes

_LOGGER = logging.getLogger(__name__)

__all__ = ["Acks", "Broker", "ProduceResult", "PartitionInfo", "FetchResult"]

TOPICS_DIR = "topics"
_CREATING = ".creating-"
_DELETED = ".deleted-"


class Acks(enum.Enum):
    """How much of an append completes before the producer is answered."""

    NONE = "none"
    """Appended, nothing reported back (offsets are -1)."""
    LEADER = "leader"
    """Written to the partition log (page cache)."""
    DURABLE = "durable"
    """Covered by an fdatasync (group commit)."""


@dataclass(frozen=True, slots=True)
class ProduceResult:
    partition: int
    base_offset: int
    record_count: int
    append_time_ms: int
    duplicate: bool = False
    """An idempotent retry of a batch already appended: nothing was appended now."""


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    log_start_offset: int
    log_end_offset: int
    size_bytes: int
    segment_count: int


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Whole stored batches plus the partition's current bounds."""

    batches: list[bytes]
    log_start_offset: int
    log_end_offset: int
    stop_offset: int | None = None
    """Set on the last result of a subscription that reached its stop position."""


class Broker:
    """All topics of one data directory.  Build with ``Broker.open``."""

    def __init__(self, data_dir: Path, config: BrokerConfig, clock: Clock) -> None:
        self.data_dir = data_dir
        self.config = config
        self.clock = clock
        self._topics: dict[str, Topic] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._lock_fd = -1
        self._scheduler: threading.Thread | None = None
        self._deletion_listeners: list[Callable[[str], None]] = []
        self.producers = ProducerRegistry(self)
        """Idempotent producer ids and epochs (``__producers``, loaded at first use)."""

    # -- lifecycle ----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        config: BrokerConfig | None = None,
        clock: Clock | None = None,
        *,
        start_scheduler: bool = True,
    ) -> "Broker":
        """Lock the data directory, open every topic (recovering logs), start the scheduler."""
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        broker = cls(path, config or BrokerConfig(), clock or wall_clock_ms)
        broker._acquire_dir_lock()
        try:
            broker._load_topics()
        except BaseException:
            broker._release_dir_lock()
            raise
        if start_scheduler:
            broker._scheduler = threading.Thread(target=broker._run_scheduler, name="logstore-scheduler", daemon=True)
            broker._scheduler.start()
        return broker

    def _acquire_dir_lock(self) -> None:
        lock_path = self.data_dir / ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FailedPrecondition(
                f"data directory {self.data_dir} is in use by another logstore broker (pid {holder}); "
                "stop it or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_dir_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = -1

    def _load_topics(self) -> None:
        root = self.data_dir / TOPICS_DIR
        root.mkdir(exist_ok=True)
        for entry in sorted(root.iterdir()):
            if entry.name.startswith((_CREATING, _DELETED)):
                shutil.rmtree(entry, ignore_errors=True)
                continue
            if not entry.is_dir():
                continue
            metadata = TopicMetadata.load(entry)
            if metadata is None or metadata.name != entry.name:
                _LOGGER.error("%s: no valid topic.json; ignoring this directory", entry)
                continue
            topic = Topic(entry, metadata, self.clock)
            topic.open_partitions()
            for partition in topic.partitions:
                idempotence.discard_stale_snapshot(partition)
            self._topics[metadata.name] = topic
        _LOGGER.info("opened %d topic(s) in %s", len(self._topics), self.data_dir)

    def close(self) -> None:
        """Flush and close every partition (writing clean-shutdown markers)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._scheduler is not None:
            self._scheduler.join()
        with self._lock:
            topics = list(self._topics.values())
        self._snapshot_producers(topics)
        for topic in topics:
            topic.close()
        self._release_dir_lock()
        _LOGGER.info("broker closed: %s", self.data_dir)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _run_scheduler(self) -> None:
        interval = self.config.scheduler_interval_ms / 1000
        last_checkpoint = time.monotonic()
        while not self._closed.wait(interval):
            checkpoint = time.monotonic() - last_checkpoint >= self.config.checkpoint_interval_ms / 1000
            if checkpoint:
                last_checkpoint = time.monotonic()
            for partition in self.all_partitions():
                try:
                    partition.log.maybe_flush()
                    partition.log.apply_retention()
                    if checkpoint:
                        partition.log.checkpoint()
                        idempotence.snapshot(partition, self.clock())
                except LogClosed:
                    pass
                except Exception:  # noqa: BLE001 - the scheduler must survive one bad partition
                    _LOGGER.exception("scheduler: %s/%d failed", partition.topic, partition.index)

    def _snapshot_producers(self, topics: list[Topic]) -> None:
        for topic in topics:
            for partition in topic.partitions:
                try:
                    idempotence.snapshot(partition, self.clock())
                except Exception:  # noqa: BLE001 - the log tail rebuilds it at the next start
                    _LOGGER.exception("%s/%d: producer-state snapshot failed", partition.topic, partition.index)

    def init_producer(self, client_id: str = "") -> ProducerId:
        """Register an idempotent producer (see ``idempotence.ProducerRegistry``)."""
        self._check_open()
        return self.producers.init_producer(client_id)

    def all_partitions(self) -> list[Partition]:
        with self._lock:
            topics = list(self._topics.values())
        return [p for t in topics for p in t.partitions]

    # -- topics --------------------------------------------------------------------

    def topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            validate_topic_name(name, allow_internal=True)
            raise NotFound(f"topic {name!r} does not exist; create it first (logstore topics create {name})")
        return topic

    def partition(self, topic: str, partition: int) -> Partition:
        return self.topic(topic).partition(partition)

    def create_topic(
        self,
        name: str,
        partition_count: int,
        config: TopicConfig | None = None,
        *,
        internal: bool = False,
    ) -> TopicMetadata:
        """Create a topic with ``partition_count`` empty partitions."""
        self._check_open()
        validate_topic_name(name, allow_internal=internal)
        _check_partition_count(partition_count)
        config = config or self.config.topic_defaults
        root = self.data_dir / TOPICS_DIR
        with self._lock:
            if name in self._topics:
                raise AlreadyExists(f"topic {name!r} already exists")
            metadata = TopicMetadata(name, partition_count, config, self.clock())
            staging = root / f"{_CREATING}{name}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            metadata.save(staging)
            final = root / name
            os.rename(staging, final)
            fsync_dir(root)
            topic = Topic(final, metadata, self.clock)
            topic.open_partitions()
            self._topics[name] = topic
        _LOGGER.info("created topic %s with %d partition(s)", name, partition_count)
        return metadata

    def delete_topic(self, name: str, *, internal: bool = False) -> None:
        """Delete a topic and all its data."""
        self._check_open()
        validate_topic_name(name, allow_internal=internal)
        root = self.data_dir / TOPICS_DIR
        with self._lock:
            topic = self.topic(name)
            del self._topics[name]
        topic.close()
        doomed = root / f"{_DELETED}{name}-{self.clock()}"
        os.rename(topic.directory, doomed)
        fsync_dir(root)
        shutil.rmtree(doomed, ignore_errors=True)
        _LOGGER.info("deleted topic %s", name)
        for listener in list(self._deletion_listeners):
            try:
                listener(name)
            except Exception:  # noqa: BLE001 - the topic is gone either way
                _LOGGER.exception("a listener for the deletion of topic %s failed", name)

    def add_deletion_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(topic_name)`` after each topic deletion (e.g. to drop group offsets)."""
        self._deletion_listeners.append(listener)

    def list_topics(self, *, include_internal: bool = False) -> list[TopicMetadata]:
        with self._lock:
            topics = sorted(self._topics.values(), key=lambda t: t.name)
        return [t.metadata for t in topics if include_internal or not t.name.startswith("__")]

    def describe_topic(self, name: str) -> tuple[TopicMetadata, list[PartitionInfo]]:
        topic = self.topic(name)
        infos = [
            PartitionInfo(p.index, p.log.log_start_offset, p.log.log_end_offset, p.log.size_bytes, p.log.segment_count)
            for p in topic.partitions
        ]
        return topic.metadata, infos

    def create_partitions(self, name: str, partition_count: int, *, internal: bool = False) -> TopicMetadata:
        """Grow a topic to ``partition_count`` partitions (never shrinks)."""
        self._check_open()
        validate_topic_name(name, allow_internal=internal)
        _check_partition_count(partition_count)
        topic = self.topic(name)
        with topic.lock:
            current = topic.metadata.partition_count
            if partition_count < current:
                raise InvalidArgument(
                    f"topic {name!r} has {current} partitions; partitions can be added but never removed"
                )
            if partition_count == current:
                return topic.metadata
            metadata = TopicMetadata(name, partition_count, topic.metadata.config, topic.metadata.created_ms)
            metadata.save(topic.directory)
            topic.metadata = metadata
            topic.open_partitions()
        _LOGGER.info("topic %s now has %d partitions", name, partition_count)
        return metadata

    # -- produce ---------------------------------------------------------------------

    def route_keys(self, topic: str, keys: list[bytes | None], explicit: list[int | None]) -> list[int]:
        """The partition of each record: explicit, else murmur2(key), else this request's sticky one."""
        t = self.topic(topic)
        n = len(t.partitions)
        sticky = -1
        out = []
        for key, forced in zip(keys, explicit):
            if forced is not None:
                out.append(forced)
            elif key is not None:
                out.append(partition_for_key(key, n))
            else:
                if sticky < 0:
                    sticky = t.next_sticky_partition()
                out.append(sticky)
        return out

    def produce(
        self,
        topic: str,
        shares: list[tuple[int, EncodedRecords]],
        acks: Acks = Acks.LEADER,
        *,
        append_time_ms: int | None = None,
        internal: bool = False,
        expected_offset: int | None = None,
        producer: ProducerStamp | None = None,
    ) -> list[ProduceResult | LogstoreError]:
        """Append each partition's share of one request as one batch.

        Every share is validated before any is appended, so a bad request
        appends nothing.  A share whose append then fails (the log closed,
        the disk is full) gets its error in the result list; the others are
        appended.  Raises that error instead if every share failed.
        ``expected_offset`` (one share only) makes the append conditional on
        the partition's log end (see ``PartitionLog.append``).  ``producer``
        (one share only) makes it idempotent (see ``idempotence``).
        """
        if expected_offset is not None:
            if len(shares) != 1:
                raise InvalidArgument("expected_offset needs a produce to exactly one partition")
            if expected_offset < 0:
                raise InvalidArgument(f"expected_offset must not be negative, got {expected_offset}")
        if producer is not None:
            if len(shares) != 1:
                raise InvalidArgument(
                    "an idempotent produce (producer_id set) goes to exactly one partition: name it in the request"
                )
            self.producers.check_epoch(producer.producer_id, producer.epoch)
        for partition, records in shares:
            self.check_append(topic, partition, records, internal=internal)
        now = self.clock() if append_time_ms is None else append_time_ms
        results: list[ProduceResult | LogstoreError] = []
        for partition, records in shares:
            try:
                results.append(self._append_checked(topic, partition, records, acks, now, expected_offset, producer))
            except LogstoreError as exc:
                results.append(exc)
        if all(isinstance(r, LogstoreError) for r in results):
            raise results[0]  # type: ignore[misc]
        return results

    def check_append(self, topic: str, partition: int, records: EncodedRecords, *, internal: bool = False) -> None:
        """Raise the error ``append`` would raise for these records, without appending.

        Internal topics (``__*``) are written only by the broker itself
        (``internal=True``); clients may read them but never append.
        """
        self._check_open()
        if topic.startswith("__") and not internal:
            raise PermissionDenied(
                f"topic {topic!r} is internal to the broker: clients cannot write to it"
            )
        self.partition(topic, partition)
        config = self._topics[topic].metadata.config
        if records.count < 1:
            raise InvalidArgument("a produce request needs at least one record")
        if records.first_timestamp < 0:
            raise InvalidArgument("record timestamps must not be negative")
        if len(records.data) > config.max_record_bytes:
            largest = max(record_sizes(records.data))
            if largest > config.max_record_bytes:
                raise RecordTooLarge(
                    f"a record of {largest} bytes exceeds max_record_bytes={config.max_record_bytes} "
                    f"of topic {topic!r}; send smaller records or raise the topic's limit"
                )
        stored = len(records.data) + HEADER_SIZE
        if stored > config.max_batch_bytes:
            raise RecordTooLarge(
                f"{records.count} records take {stored} bytes stored (with the {HEADER_SIZE}-byte batch "
                f"header) for one partition, over max_batch_bytes={config.max_batch_bytes} of topic "
                f"{topic!r}; send fewer records per request"
            )

    def append(
        self,
        topic: str,
        partition: int,
        records: EncodedRecords,
        acks: Acks = Acks.LEADER,
        *,
        append_time_ms: int | None = None,
        internal: bool = False,
    ) -> ProduceResult:
        """Append already-encoded records to one partition as one batch.

        ``append_time_ms`` is the clock reading reported back (pass the one
        used to stamp records sent without a timestamp)."""
        self.check_append(topic, partition, records, internal=internal)
        now = self.clock() if append_time_ms is None else append_time_ms
        return self._append_checked(topic, partition, records, acks, now)

    def _append_checked(
        self,
        topic: str,
        partition: int,
        records: EncodedRecords,
        acks: Acks,
        now: int,
        expected_offset: int | None = None,
        producer: ProducerStamp | None = None,
    ) -> ProduceResult:
        p = self.partition(topic, partition)
        duplicate = False
        try:
            if producer is None:
                base = p.log.append(build_batch_from_encoded(records), expected_offset=expected_offset)
            else:
                batch = build_batch_from_encoded(
                    records,
                    producer_id=producer.producer_id,
                    producer_epoch=producer.epoch,
                    base_sequence=producer.base_sequence,
                )
                base, now, duplicate = idempotence.append_idempotent(p, batch, records, producer, now, expected_offset)
        except FailedPrecondition as exc:
            raise type(exc)(f"{topic}/{partition}: {exc.message}") from None
        if not duplicate:
            p.notify_appended()
        if acks is Acks.DURABLE or (producer is not None and p.log.config.durability is Durability.ALWAYS):
            p.log.flush_to(base + records.count)  # a duplicate too: the original may not be on disk yet
        if acks is Acks.NONE:
            return ProduceResult(partition, -1, records.count, 0, duplicate)
        return ProduceResult(partition, base, records.count, now, duplicate)

    # -- consume ---------------------------------------------------------------------

    def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int,
        max_wait_ms: int = 0,
        cancelled: threading.Event | None = None,
    ) -> FetchResult:
        """Whole batches from ``offset``, long-polling up to ``max_wait_ms`` at the log end."""
        p = self.partition(topic, partition)
        max_bytes = self._check_max_bytes(max_bytes)
        if max_wait_ms < 0:
            raise InvalidArgument(f"max_wait_ms must not be negative, got {max_wait_ms}")
        log = p.log
        self.check_offset(log, offset)
        if max_wait_ms and offset >= log.log_end_offset:
            deadline = time.monotonic() + min(max_wait_ms, self.config.max_wait_ms) / 1000
            while not p.wait_for_data(offset, max(0.0, min(1.0, deadline - time.monotonic()))):
                self._check_partition_alive(topic, p)
                if time.monotonic() >= deadline or (cancelled is not None and cancelled.is_set()):
                    break
        self._check_partition_alive(topic, p)
        return FetchResult(log.read(offset, max_bytes), log.log_start_offset, log.log_end_offset)

    def _check_partition_alive(self, topic: str, partition: Partition) -> None:
        """Raise the right error for a partition whose log was closed under a caller."""
        if partition.log.closed:
            if self.closed:
                raise LogClosed("the broker is shutting down; retry against the restarted broker")
            raise NotFound(f"topic {topic!r} was deleted")

    def subscribe(
        self,
        topic: str,
        partition: int,
        start_offset: int,
        *,
        stop_offset: int | None = None,
        stop_timestamp: int | None = None,
        max_bytes: int = 1 << 20,
        cancelled: threading.Event,
        poll_s: float = 1.0,
    ) -> Iterator[FetchResult]:
        """Batches from ``start_offset``, then live ones as they arrive, until a stop
        position is reached, the subscriber cancels, or the broker closes.

        A stop at ``stop_offset`` (exclusive) or at the first record whose
        timestamp is >= ``stop_timestamp``: the last result carries
        ``stop_offset`` so the subscriber can drop records at or past it.
        """
        p = self.partition(topic, partition)
        max_bytes = self._check_max_bytes(max_bytes)
        log = p.log
        self.check_offset(log, start_offset)
        offset = start_offset
        while not cancelled.is_set() and not self.closed:
            self._check_partition_alive(topic, p)
            if stop_offset is not None and offset >= stop_offset:
                yield FetchResult([], log.log_start_offset, log.log_end_offset, stop_offset)
                return
            if offset < log.log_start_offset:
                raise OffsetOutOfRange(offset, log.log_start_offset, log.log_end_offset, "log (retention removed it)")
            batches = log.read(offset, max_bytes)
            if not batches:
                p.wait_for_data(offset, poll_s)
                continue
            stop = None
            if stop_timestamp is not None:
                stop, batches = _cut_at_timestamp(batches, stop_timestamp)
            if stop_offset is not None:
                last = batches[-1]
                last_end = HEADER.unpack_from(last, 0)[0] + HEADER.unpack_from(last, 0)[5]
                if last_end >= stop_offset:
                    stop = stop_offset if stop is None else min(stop, stop_offset)
            if batches:
                last = HEADER.unpack_from(batches[-1], 0)
                offset = last[0] + last[5]
            yield FetchResult(batches, log.log_start_offset, log.log_end_offset, stop)
            if stop is not None:
                return

    def offset_for_timestamp(self, topic: str, partition: int, timestamp: int) -> int | None:
        return self.partition(topic, partition).log.offset_for_timestamp(timestamp)

    # -- helpers -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise LogClosed("the broker is shutting down")

    def _check_max_bytes(self, max_bytes: int) -> int:
        if max_bytes < 0:
            raise InvalidArgument(f"max_bytes must not be negative, got {max_bytes}")
        return min(max_bytes or (1 << 20), self.config.max_fetch_bytes)

    @staticmethod
    def check_offset(log, offset: int) -> None:  # noqa: ANN001 - PartitionLog
        """Raise OffsetOutOfRange unless ``offset`` is in [log start, log end]."""
        start, end = log.log_start_offset, log.log_end_offset
        if not start <= offset <= end:
            raise OffsetOutOfRange(offset, start, end)


def _check_partition_count(count: int) -> None:
    if not 1 <= count <= MAX_PARTITIONS:
        raise InvalidArgument(f"partition count must be between 1 and {MAX_PARTITIONS}, got {count}")


def _cut_at_timestamp(batches: list[bytes], stop_timestamp: int) -> tuple[int | None, list[bytes]]:
    """Keep batches up to the one holding the first record at/after ``stop_timestamp``;
    return that record's offset (None if no record reaches it) and the kept batches."""
    for i, batch in enumerate(batches):
        if HEADER.unpack_from(batch, 0)[7] >= stop_timestamp:  # max_timestamp
            for offset, record in iter_batch_records(batch):
                if record.timestamp >= stop_timestamp:
                    return offset, batches[: i + 1]
    return None, batches
