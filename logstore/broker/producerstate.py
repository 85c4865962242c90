"""Per-partition idempotent-producer state: which batches each producer appended.

An idempotent producer numbers the records it sends to each partition 0, 1,
2, ... (per epoch, wrapping from 2^31-1 to 0) and stamps every batch header
with its producer id, epoch and the sequence of the first record (see
``logstore.storage.batch``).  For every producer that wrote to a partition,
``ProducerStates`` keeps the epoch and the last ``REMEMBERED`` batches
(sequence range, base offset, append time), which decides each new batch:

    =====================================  ==========================================
    the batch                               the answer
    =====================================  ==========================================
    same epoch, same sequence range as a    a duplicate: the original offsets, nothing
    remembered batch                        appended
    same epoch, first sequence = last + 1   append
    newer epoch, first sequence 0           append (the producer restarted)
    no state yet, first sequence 0          append
    any other sequence                      OutOfOrderSequence (OUT_OF_RANGE), naming
                                            the expected sequence
    older epoch than the partition saw      ProducerFenced (FAILED_PRECONDITION)
    =====================================  ==========================================

``check`` and ``record`` are pure (no I/O, no locks): the broker calls them
under a per-partition lock around the append, so check-append-record is
atomic.  Epochs that were superseded elsewhere (InitProducer fenced them
before they wrote here) are refused by the registry, not here.

Durability: the table is rebuilt at startup from a snapshot (``to_text`` /
``from_text``, written with the storage checkpoint routine) plus the batch
headers of the log from the snapshot's offset to the log end
(``observe``).  A snapshot whose offset is past the recovered log end (the
log lost its unflushed tail in a power cut) is ignored, and the whole log is
scanned instead, so the table never remembers a batch the log no longer
has.

What this does not guarantee: a producer that has not written to the
partition for ``EXPIRE_MS`` (7 days) is forgotten at the next snapshot; its
next batch must then start at sequence 0 (OutOfOrderSequence tells it so,
and re-registering with InitProducer gives a new epoch that starts at 0).
Only ``REMEMBERED`` batches per producer are deduplicated: a retry of an
older one gets OutOfOrderSequence, never a second append.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from logstore.errors import OutOfOrderSequence, ProducerFenced

_LOGGER = logging.getLogger(__name__)

__all__ = ["AppendedBatch", "ProducerStates", "REMEMBERED", "EXPIRE_MS", "SEQUENCE_MODULUS", "next_sequence"]

REMEMBERED = 5
"""Batches remembered per producer and partition (Kafka keeps 5 too), so a
producer may keep up to 5 requests per partition in flight and retry them all."""

EXPIRE_MS = 7 * 24 * 3600 * 1000
"""A producer idle this long on a partition is dropped from its state at the next snapshot."""

SEQUENCE_MODULUS = 1 << 31
"""Sequences are int32 and wrap from 2^31-1 to 0."""


def next_sequence(sequence: int, count: int) -> int:
    """The sequence that follows ``count`` records starting at ``sequence``."""
    return (sequence + count) % SEQUENCE_MODULUS


@dataclass(frozen=True, slots=True)
class AppendedBatch:
    """One batch a producer appended: what a duplicate is answered with."""

    first_sequence: int
    record_count: int
    base_offset: int
    append_time_ms: int


@dataclass(slots=True)
class _Producer:
    epoch: int
    batches: list[AppendedBatch] = field(default_factory=list)
    """The last REMEMBERED batches, oldest first."""
    last_write_ms: int = 0


class ProducerStates:
    """The idempotence state of one partition.  Not thread-safe: the caller locks."""

    __slots__ = ("_producers",)

    def __init__(self) -> None:
        self._producers: dict[int, _Producer] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, producer_id: int, epoch: int, first_sequence: int, count: int) -> AppendedBatch | None:
        """The remembered batch this one duplicates, None if it may be appended; raises
        ``ProducerFenced`` or ``OutOfOrderSequence`` if it must be refused."""
        state = self._producers.get(producer_id)
        if state is None:
            if first_sequence != 0:
                raise OutOfOrderSequence(
                    f"producer {producer_id} has no batch on this partition, so its first sequence must be 0, "
                    f"got {first_sequence} (state idle for {EXPIRE_MS // 86_400_000} days is forgotten; "
                    "call InitProducer again to start a new epoch at 0)",
                    0,
                )
            return None
        if epoch < state.epoch:
            raise ProducerFenced(
                f"producer {producer_id} epoch {epoch} is fenced: epoch {state.epoch} has written to this "
                "partition since; a newer instance took over (call InitProducer to get the current epoch)"
            )
        if epoch > state.epoch:
            if first_sequence != 0:
                raise OutOfOrderSequence(
                    f"producer {producer_id} starts epoch {epoch} here, so its first sequence must be 0, "
                    f"got {first_sequence}",
                    0,
                )
            return None
        for batch in state.batches:
            if batch.first_sequence == first_sequence and batch.record_count == count:
                return batch
        last = state.batches[-1]
        expected = next_sequence(last.first_sequence, last.record_count)
        if first_sequence != expected:
            what = "a gap" if _ahead(first_sequence, expected) else "an old or overlapping batch no longer remembered"
            raise OutOfOrderSequence(
                f"producer {producer_id} epoch {epoch}: batch of {count} records at sequence {first_sequence} "
                f"is {what}; the next sequence expected is {expected}",
                expected,
            )
        return None

    def record(
        self, producer_id: int, epoch: int, first_sequence: int, count: int, base_offset: int, append_time_ms: int
    ) -> None:
        """Remember an appended batch (after ``check`` allowed it, or read back from the log)."""
        state = self._producers.get(producer_id)
        if state is None or epoch > state.epoch:
            state = self._producers[producer_id] = _Producer(epoch)
        elif epoch < state.epoch:
            return  # a zombie's batch read back from the log: the newer epoch stays
        state.batches.append(AppendedBatch(first_sequence, count, base_offset, append_time_ms))
        if len(state.batches) > REMEMBERED:
            del state.batches[0]
        state.last_write_ms = max(state.last_write_ms, append_time_ms)

    def observe(
        self, producer_id: int, epoch: int, first_sequence: int, count: int, base_offset: int, max_timestamp: int,
        seen_ms: int,
    ) -> None:
        """Take a batch header read back from the log into account (rebuild at startup).

        The header has no broker append time: ``max_timestamp`` stands in for it in
        duplicate answers, and the producer counts as having written at ``seen_ms``
        (the broker clock at the rebuild), so records with old timestamps never make
        a producer that just wrote look idle."""
        if producer_id < 0:
            return
        self.record(producer_id, epoch, first_sequence, count, base_offset, max_timestamp)
        state = self._producers.get(producer_id)
        if state is not None and state.epoch == epoch:  # not a zombie's batch
            state.last_write_ms = max(state.last_write_ms, seen_ms)

    def expire(self, now_ms: int) -> int:
        """Forget producers idle for ``EXPIRE_MS``; return how many."""
        idle = [pid for pid, s in self._producers.items() if now_ms - s.last_write_ms >= EXPIRE_MS]
        for pid in idle:
            del self._producers[pid]
        return len(idle)

    def epoch_of(self, producer_id: int) -> int | None:
        state = self._producers.get(producer_id)
        return None if state is None else state.epoch

    # -- snapshots ------------------------------------------------------------------

    def to_text(self, offset: int) -> str:
        """One line holding the table as of log offset ``offset`` (see ``from_text``)."""
        return json.dumps(
            {
                "offset": offset,
                "producers": [
                    [pid, s.epoch, s.last_write_ms, [[b.first_sequence, b.record_count, b.base_offset, b.append_time_ms] for b in s.batches]]
                    for pid, s in sorted(self._producers.items())
                ],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_text(cls, text: str) -> tuple["ProducerStates", int]:
        """The table and the log offset it is valid up to; ValueError if malformed."""
        try:
            data = json.loads(text)
            table = cls()
            for pid, epoch, last_write, batches in data["producers"]:
                if not batches:
                    raise ValueError(f"producer {pid} has no batch")
                table._producers[int(pid)] = _Producer(
                    int(epoch), [AppendedBatch(int(a), int(b), int(c), int(d)) for a, b, c, d in batches], int(last_write)
                )
            return table, int(data["offset"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"malformed producer-state snapshot: {exc}") from None


def _ahead(sequence: int, expected: int) -> bool:
    """Whether ``sequence`` lies after ``expected`` on the wrapping sequence circle."""
    return 0 < (sequence - expected) % SEQUENCE_MODULUS < SEQUENCE_MODULUS // 2
