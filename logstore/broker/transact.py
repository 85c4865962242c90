"""ProduceAndCommit: append a batch to one partition and commit a group's offsets as one step.

The building block of exactly-once read-process-write: a service reads its
input, writes its output records together with the input offsets it has
consumed, and after any crash resumes from the committed offsets.

How it is atomic (see ``OffsetStore.commit_with_append`` for the record
format): under the target partition's ``producer_lock`` and the group's
offsets lock,

1. the ``if_committed`` fence is checked against the group's offsets;
2. an *intent* naming the batch (target partition, base offset = the log
   end now, CRC, record count) and the offsets is appended durably to
   ``__consumer_offsets``;
3. the batch is appended at exactly that base offset (a conditional append;
   if another writer got there first the intent is left dangling and the
   whole step is tried again at the new end) and flushed;
4. the offsets are appended again as ordinary commit records (the
   confirmation) and applied in memory.

A crash before 3 leaves an intent whose batch is not in the log: replay
ignores it, so neither part happened.  A crash after 3 leaves an intent
whose batch is there: replay applies it and writes the missing
confirmation, so both happened.  With a producer id the call is also
idempotent: a retry of a call that went through is answered as a duplicate
(the original offsets) and commits nothing new.

What this does not guarantee: the appended records are visible to readers
as soon as step 3 writes them, before the call returns (like any produce).
If the call fails with anything but FAILED_PRECONDITION, OUT_OF_RANGE or
INVALID_ARGUMENT, its outcome is unknown until it is retried with the same
producer id and sequence (or the broker restarts).  One target partition
per call.
"""

from __future__ import annotations

import logging
from typing import Mapping

from logstore.broker.assignment import TopicPartition
from logstore.broker.broker import Broker, ProduceResult
from logstore.broker.idempotence import ProducerStamp, load_states
from logstore.broker.offsets import CommittedOffset, OffsetStore
from logstore.errors import FailedPrecondition, ResourceExhausted
from logstore.storage.batch import build_batch_from_encoded
from logstore.storage.records import EncodedRecords

_LOGGER = logging.getLogger(__name__)

__all__ = ["produce_and_commit", "MAX_RACES"]

MAX_RACES = 100
"""How often the step is retried when other writers keep appending to the target first."""


class _Raced(Exception):
    """Another writer appended to the target between reading its end and appending."""


def produce_and_commit(
    broker: Broker,
    store: OffsetStore,
    group: str,
    offsets: Mapping[TopicPartition, CommittedOffset],
    if_committed: Mapping[TopicPartition, int],
    topic: str,
    partition: int,
    records: EncodedRecords,
    producer: ProducerStamp | None = None,
) -> ProduceResult:
    """Append ``records`` to ``topic``/``partition`` and commit ``offsets``, both or neither."""
    broker.check_append(topic, partition, records)
    if producer is not None:
        broker.producers.check_epoch(producer.producer_id, producer.epoch)
    p = broker.partition(topic, partition)
    now = broker.clock()
    if producer is None:
        batch = build_batch_from_encoded(records)
    else:
        batch = build_batch_from_encoded(
            records, producer_id=producer.producer_id, producer_epoch=producer.epoch,
            base_sequence=producer.base_sequence,
        )

    states = None

    def append(expected: int) -> int:
        try:
            base = p.log.append(batch, expected_offset=expected, wait_durable=False)
        except FailedPrecondition:
            raise _Raced() from None
        if states is not None and producer is not None:
            # At once: if the confirmation fails, a retry must still be seen as a duplicate.
            states.record(producer.producer_id, producer.epoch, producer.base_sequence, records.count, base, now)
        p.log.flush_to(base + records.count)
        return base

    with p.producer_lock:
        if producer is not None:
            states = p.producer_states
            if states is None:
                states = p.producer_states = load_states(p, now)
            original = states.check(producer.producer_id, producer.epoch, producer.base_sequence, records.count)
            if original is not None:
                p.log.flush_to(original.base_offset + original.record_count)
                return ProduceResult(partition, original.base_offset, records.count, original.append_time_ms, True)
        for _ in range(MAX_RACES):
            try:
                base = store.commit_with_append(group, offsets, if_committed, (topic, partition), batch, append)
                break
            except _Raced:
                continue
        else:
            raise ResourceExhausted(
                f"{topic}/{partition} kept moving under {MAX_RACES} attempts of ProduceAndCommit; retry later"
            )
    p.notify_appended()
    return ProduceResult(partition, base, records.count, now)
