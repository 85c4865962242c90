"""A group's dead letters: listing, redriving and purging ``<topic>.<group>.dlq``.

The dead-letter topic is an ordinary append-only log, so records are never
removed from it.  What is still a dead letter is decided by two things:

- the **cursor** of each DLQ partition: the group's committed offset for it
  in ``__consumer_offsets`` (the group never consumes its DLQ, so that slot
  is free).  Records below the cursor were redriven or purged.
- **resolution markers** above the cursor: records appended to the DLQ
  partition itself, with no key and value and a header
  ``logstore.resolves = <offset>``, written when a filtered redrive takes
  some dead letters and not the ones before them.  Markers and the records
  they name are not dead letters.  After each chunk the cursor moves over
  the contiguous run of resolved records, so markers only matter above it.

A redrive copies each chunk of dead letters, with their attempts reset
(``logstore.attempt`` 0, due at once), durably into
``<topic>.<group>.redrive`` (which the group reads like a retry tier), and
only then writes the markers or moves the cursor.  A redrive cut short by a
crash or a cancel is resumed by running it again; it repeats at most the
chunk in flight (at-least-once).  The rate limit paces chunks of at most
500 records.

What this does not guarantee: listing and redriving scan the DLQ from the
cursor, so their cost grows with the dead letters kept (a DLQ is expected to
stay small).  Purge drops everything up to the log end at the time of the
call, whatever the filters of earlier redrives.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from logstore.broker.assignment import TopicPartition
from logstore.broker.broker import Acks, Broker
from logstore.broker.names import validate_group_name, validate_topic_name
from logstore.broker.offsets import CommittedOffset, OffsetStore
from logstore.broker.provenance import Provenance, read_provenance, resolved_offset, with_provenance
from logstore.broker.retry import dlq_topic, redrive_topic
from logstore.broker.stored import encoded, iter_framed
from logstore.broker.topic import Partition
from logstore.clock import Clock
from logstore.errors import FailedPrecondition, InvalidArgument, NotFound
from logstore.storage.records import Record, decode_records, encode_records

_LOGGER = logging.getLogger(__name__)

__all__ = ["DeadLetter", "DeadLetterFilter", "DeadLetters", "CHUNK"]

CHUNK = 500
"""The most dead letters one redrive step copies (one durable append)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record in a group's dead-letter topic."""

    partition: int
    offset: int
    record: Record
    provenance: Provenance | None


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters a listing or a redrive takes: all fields None means all."""

    key: bytes | None = None
    since_ms: int | None = None
    """Dead-lettered at or after this time."""
    until_ms: int | None = None
    """Dead-lettered before this time."""

    def __post_init__(self) -> None:
        for name in ("since_ms", "until_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidArgument(f"{name} must not be negative, got {value}")

    @property
    def everything(self) -> bool:
        return self.key is None and self.since_ms is None and self.until_ms is None

    def matches(self, record: Record, provenance: Provenance | None) -> bool:
        if self.key is not None and record.key != self.key:
            return False
        when = provenance.dead_lettered_ms if provenance is not None else 0
        if self.since_ms is not None and when < self.since_ms:
            return False
        return self.until_ms is None or when < self.until_ms


class DeadLetters:
    """Dead letters of every group.  Thread-safe as far as the broker and offset store are."""

    def __init__(self, broker: Broker, offsets: OffsetStore, clock: Clock, ensure_topic: Callable[[str, int], None]) -> None:
        self._broker = broker
        self._offsets = offsets
        self._clock = clock
        self._ensure_topic = ensure_topic
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], tuple[object, Callable[[], bool]]] = {}
        """(group, topic) of the redrives under way -> (a token of the call, its ``cancelled``)."""
        self._steps: dict[tuple[str, str], threading.Lock] = {}
        """(group, topic) -> held while a redrive counts its total or copies a chunk, so a
        cancelled redrive that has not noticed yet finishes its chunk before the next one
        starts, and never copies another (it checks that it still owns the slot)."""

    def _partitions(self, group: str, topic: str) -> list[Partition]:
        validate_group_name(group)
        validate_topic_name(topic)
        name = dlq_topic(topic, group)
        try:
            return list(self._broker.topic(name).partitions)
        except NotFound:
            raise NotFound(
                f"group {group!r} has no dead-letter topic for {topic!r} ({name!r}); set a retry policy first"
            ) from None

    def _cursor(self, group: str, topic: str, p: Partition) -> int:
        committed = self._offsets.fetch(group).get(TopicPartition(dlq_topic(topic, group), p.index))
        return max(p.log.log_start_offset, committed.offset if committed else 0)

    def _letters(self, group: str, topic: str, p: Partition, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(offset, framed record) of the dead letters of ``p`` from ``start`` up to the log
        end at the call: markers and the records they resolve left out.  Two passes (the
        first keeps only the resolved offsets), so memory stays small."""
        cursor = max(self._cursor(group, topic, p), 0)
        end = p.log.log_end_offset
        resolved: set[int] = set()
        for offset, raw in iter_framed(p, cursor, end):
            target = resolved_offset(raw)
            if target is not None:
                resolved.add(target)
                resolved.add(offset)
        for offset, raw in iter_framed(p, max(cursor, start), end):
            if offset not in resolved:
                yield offset, raw

    def list(
        self, group: str, topic: str, flt: DeadLetterFilter, after: tuple[int, int] = (-1, -1), limit: int = 100
    ) -> tuple[list[DeadLetter], tuple[int, int] | None]:
        """Dead letters in (partition, offset) order after ``after`` that pass ``flt``, and
        where to continue (None at the end)."""
        found: list[DeadLetter] = []
        for p in self._partitions(group, topic):
            if p.index < after[0]:
                continue
            start = after[1] + 1 if p.index == after[0] else 0
            for offset, raw in self._letters(group, topic, p, start):
                record = next(decode_records(raw))[1]
                prov = read_provenance(raw)
                if not flt.matches(record, prov):
                    continue
                if len(found) == limit:
                    return found, (found[-1].partition, found[-1].offset)
                found.append(DeadLetter(p.index, offset, record, prov))
        return found, None

    def _matching(self, group: str, topic: str, p: Partition, flt: DeadLetterFilter, end: int) -> Iterator[tuple[int, bytes]]:
        for offset, raw in self._letters(group, topic, p):
            if offset >= end:
                return
            if flt.everything or flt.matches(next(decode_records(raw))[1], read_provenance(raw)):
                yield offset, raw

    def redrive(
        self,
        group: str,
        topic: str,
        flt: DeadLetterFilter,
        records_per_second: int,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[tuple[int, int]]:
        """Put the dead letters that pass ``flt`` (those there at the call) back into the
        group's delivery path; yields (redriven so far, total) after each durable chunk,
        and stops before the next chunk once ``cancelled()``.  One redrive per group and
        topic at a time.  See the module docstring."""
        if not 1 <= records_per_second <= 1_000_000:
            raise InvalidArgument(f"records_per_second must be in [1, 1000000], got {records_per_second}")
        partitions = self._partitions(group, topic)
        with self._lock:
            running = self._running.get((group, topic))
            if running is not None and not running[1]():
                raise FailedPrecondition(
                    f"a redrive of group {group!r}'s dead letters for {topic!r} is already running; wait for it"
                )
            # A cancelled redrive may not have noticed yet; it checks, under the step
            # lock, before each chunk that it still owns the slot, and stops.
            token = (object(), cancelled)
            self._running[(group, topic)] = token
            step = self._steps.setdefault((group, topic), threading.Lock())

        def stopped() -> bool:
            return cancelled() or self._running.get((group, topic)) is not token

        try:
            with step:
                ends = {p.index: p.log.log_end_offset for p in partitions}
                total = sum(sum(1 for _ in self._matching(group, topic, p, flt, ends[p.index])) for p in partitions)
            target = redrive_topic(topic, group)
            self._ensure_topic(target, len(partitions))
            chunk = max(1, min(CHUNK, records_per_second // 10))
            done = 0
            started = time.monotonic()
            yield done, total
            for p in partitions:
                pending: list[tuple[int, bytes]] = []
                for item in self._matching(group, topic, p, flt, ends[p.index]):
                    pending.append(item)
                    if len(pending) == chunk:
                        if not self._redrive_chunk(group, topic, p, target, pending, flt, step, stopped, started, done, records_per_second):
                            return
                        done += len(pending)
                        pending = []
                        yield done, total
                if pending:
                    if not self._redrive_chunk(group, topic, p, target, pending, flt, step, stopped, started, done, records_per_second):
                        return
                    done += len(pending)
                    yield done, total
        finally:
            with self._lock:
                if self._running.get((group, topic)) is token:
                    del self._running[(group, topic)]

    def _redrive_chunk(
        self,
        group: str,
        topic: str,
        p: Partition,
        target: str,
        items: list[tuple[int, bytes]],
        flt: DeadLetterFilter,
        step: threading.Lock,
        stopped: Callable[[], bool],
        started: float,
        done: int,
        rate: int,
    ) -> bool:
        """Pace, then copy one chunk durably and resolve it; False if stopped first."""
        while (pause := started + done / rate - time.monotonic()) > 0:
            if stopped():
                return False
            time.sleep(min(pause, 0.05))
        with step:
            if stopped():
                return False
            copies = [with_provenance(raw, self._reset(raw, topic, p.index, off)) for off, raw in items]
            self._broker.append(target, p.index, encoded(copies), Acks.DURABLE)
            self._resolve(group, topic, p, [off for off, _raw in items], flt.everything)
            return True

    def _reset(self, raw: bytes, topic: str, partition: int, offset: int) -> Provenance:
        old = read_provenance(raw)
        now = self._clock()
        if old is None:
            return Provenance(topic, partition, offset, 0, now, "", 0, 0)
        return Provenance(old.origin_topic, old.origin_partition, old.origin_offset, 0, old.first_failure_ms, old.error)

    def _resolve(self, group: str, topic: str, p: Partition, offsets: list[int], everything: bool) -> None:
        """Mark ``offsets`` (ascending) of DLQ partition ``p`` done and move the cursor.

        Redriving everything takes the dead letters in order, so the cursor just
        moves past the chunk.  A filtered redrive leaves others behind: it writes a
        marker per record, then moves the cursor to the first dead letter left."""
        now = self._clock()
        name = dlq_topic(topic, group)
        if everything:
            new_cursor = offsets[-1] + 1
        else:
            markers = encode_records(
                Record(None, None, (("logstore.resolves", str(o).encode()), ("logstore.resolution", b"redriven")), now)
                for o in offsets
            )
            self._broker.append(name, p.index, markers, Acks.DURABLE, append_time_ms=now)
            remaining = next(iter(self._letters(group, topic, p)), None)
            new_cursor = remaining[0] if remaining is not None else p.log.log_end_offset
        if new_cursor > self._cursor(group, topic, p):
            self._offsets.commit(group, {TopicPartition(name, p.index): CommittedOffset(new_cursor, "dead letters", now)})

    def purge(self, group: str, topic: str) -> int:
        """Drop every dead letter of ``group`` for ``topic``; return how many there were."""
        partitions = self._partitions(group, topic)
        purged = sum(sum(1 for _ in self._letters(group, topic, p)) for p in partitions)
        name = dlq_topic(topic, group)
        now = self._clock()
        self._offsets.commit(
            group, {TopicPartition(name, p.index): CommittedOffset(p.log.log_end_offset, "purge", now) for p in partitions}
        )
        return purged
