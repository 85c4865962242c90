"""``AtomicWriter``: exactly-once read-process-write with ``Groups.ProduceAndCommit``.

A service that reads input (with ``Reader`` or Fetch), computes output and
writes it uses one ``AtomicWriter``: each ``write`` appends the output
records to one partition *and* commits the group's input offsets in one
atomic step, so after any crash the service resumes from the committed
offsets and its output holds every input's results exactly once::

    with AtomicWriter(broker, group="enricher", client_id="enricher-0") as writer:
        position = writer.committed("orders", 0)          # -1: start from the beginning
        for batch in read_from("orders", 0, position):
            out = [transform(r) for r in batch]
            writer.write("orders.enriched", 0, out, commit={("orders", 0): batch.next_offset},
                         if_committed={("orders", 0): position})
            position = batch.next_offset

The writer registers with ``InitProducer`` under ``client_id``: starting a
new writer with the same ``client_id`` fences the old one (its writes fail
with ``ProducerFenced``), and ``if_committed`` fences a zombie that read
stale offsets (``FailedPrecondition``).  Every write carries a sequence
number, so a write that fails with UNAVAILABLE or a timeout is sent again
(up to ``retry_timeout_ms``) and the broker answers a retry of a write it
already did as a duplicate, with the original offsets, committing nothing
new.

After a write fails with its outcome unknown (the retries ran out), the
writer refuses further writes: make a new one with the same ``client_id``
and resume from ``committed()``.

What this does not guarantee: one output partition per write (route keys
yourself with ``logstore.broker.partitioner.partition_for_key``); records
become visible to readers as soon as they are appended, before ``write``
returns; the group must not have members on Consume streams.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import grpc

from logstore._proto.logstore.v1 import groups_pb2, groups_pb2_grpc, log_pb2, log_pb2_grpc, records_pb2
from logstore.client._channel import ClientTLS, open_channel, translate_rpc_error
from logstore.errors import FailedPrecondition, InvalidArgument, LogstoreError

_LOGGER = logging.getLogger(__name__)

__all__ = ["AtomicWriter", "AtomicWrite"]

_RETRIABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_SEQUENCE_MODULUS = 1 << 31

RecordLike = bytes | str | tuple
"""A value, or ``(key, value)``, or ``(key, value, headers)`` with headers a mapping or pairs."""


@dataclass(frozen=True, slots=True)
class AtomicWrite:
    """What one ``write`` did."""

    topic: str
    partition: int
    base_offset: int
    """Offset of the first record written; the others follow."""
    record_count: int
    append_time_ms: int
    duplicate: bool
    """The broker had already done this write (a retry after a lost answer)."""


def _bytes(data: object, what: str) -> bytes | None:
    if data is None:
        return None
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise InvalidArgument(f"a record {what} is bytes or str, got {type(data).__name__}")


def _record(item: RecordLike) -> records_pb2.ProducerRecord:
    if isinstance(item, (bytes, bytearray, memoryview, str)):
        return records_pb2.ProducerRecord(value=_bytes(item, "value"))
    if isinstance(item, tuple) and len(item) in (2, 3):
        key, value = _bytes(item[0], "key"), _bytes(item[1], "value")
        record = records_pb2.ProducerRecord()
        if key is not None:
            record.key = key
        if value is not None:
            record.value = value
        if len(item) == 3 and item[2]:
            pairs = item[2].items() if isinstance(item[2], Mapping) else item[2]
            for name, header_value in pairs:
                record.headers.add(name=str(name), value=_bytes(header_value, "header value") or b"")
        return record
    raise InvalidArgument(f"a record is a value or a (key, value[, headers]) tuple, got {type(item).__name__}")


class AtomicWriter:
    """Writes output records and commits input offsets together; see the module docstring."""

    def __init__(
        self,
        broker: str | None = "127.0.0.1:50051",
        *,
        group: str,
        client_id: str,
        retry_timeout_ms: float = 60_000,
        request_timeout_ms: float = 30_000,
        tls: ClientTLS | None = None,
        token: str | None = None,
    ) -> None:
        if not client_id:
            raise InvalidArgument("an AtomicWriter needs a client_id: it names the writer across restarts")
        self.group = group
        self.client_id = client_id
        self._retry_timeout = retry_timeout_ms / 1000.0
        self._timeout = request_timeout_ms / 1000.0
        self._channel, self.target = open_channel(broker, tls=tls, token=token)
        self._log = log_pb2_grpc.LogStub(self._channel)
        self._groups = groups_pb2_grpc.GroupsStub(self._channel)
        self._sequences: dict[tuple[str, int], int] = {}
        self._unknown: str | None = None  # why the last write's outcome is unknown
        answer = self._call(self._log.InitProducer, log_pb2.InitProducerRequest(client_id=client_id))
        self.producer_id = answer.producer_id
        self.producer_epoch = answer.producer_epoch

    def _call(self, method, request):  # noqa: ANN001, ANN202
        """One call, sent again while it fails transiently (the same request, so the same sequence)."""
        deadline = time.monotonic() + self._retry_timeout
        backoff = 0.05
        while True:
            try:
                return method(request, timeout=self._timeout, wait_for_ready=True)
            except grpc.RpcError as exc:
                if exc.code() not in _RETRIABLE or time.monotonic() + backoff > deadline:
                    raise translate_rpc_error(exc, self.target) from None
                _LOGGER.info("%s to %s failed with %s; sending it again", type(request).__name__, self.target, exc.code())
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def committed(self, topic: str, partition: int) -> int:
        """The group's committed offset for ``topic``/``partition``, -1 if none."""
        answer = self._call(
            self._groups.FetchCommittedOffsets, groups_pb2.FetchCommittedOffsetsRequest(group=self.group, topics=[topic])
        )
        for o in answer.offsets:
            if o.partition == partition:
                return o.offset
        return -1

    def write(
        self,
        topic: str,
        partition: int,
        records: Sequence[RecordLike] | Iterable[RecordLike],
        *,
        commit: Mapping[tuple[str, int], int],
        if_committed: Mapping[tuple[str, int], int] | None = None,
        metadata: str = "",
    ) -> AtomicWrite:
        """Append ``records`` to ``topic``/``partition`` and commit ``commit`` (``(topic,
        partition) -> next offset``) for the group, atomically; ``if_committed`` (``(topic,
        partition) -> offset``, -1 for none) must match the group's offsets now."""
        if self._unknown is not None:
            raise FailedPrecondition(
                f"the outcome of an earlier write is unknown ({self._unknown}); create a new AtomicWriter with the "
                "same client_id (it fences this one) and resume from committed()"
            )
        built = [_record(r) for r in records]
        if not built:
            raise InvalidArgument("write needs at least one record")
        key = (topic, partition)
        sequence = self._sequences.get(key, 0)
        request = groups_pb2.ProduceAndCommitRequest(
            group=self.group,
            offsets=[groups_pb2.OffsetCommit(topic=t, partition=p, offset=o, metadata=metadata)
                     for (t, p), o in sorted(commit.items())],
            if_committed=[groups_pb2.OffsetCommit(topic=t, partition=p, offset=o)
                          for (t, p), o in sorted((if_committed or {}).items())],
            produce=log_pb2.ProduceRequest(
                topic=topic, partition=partition, records=built, acks=log_pb2.ACKS_DURABLE,
                producer_id=self.producer_id, producer_epoch=self.producer_epoch, base_sequence=sequence,
            ),
        )
        try:
            answer = self._call(self._groups.ProduceAndCommit, request)
        except LogstoreError as exc:
            if exc.grpc_status in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "INTERNAL", "UNKNOWN"):
                self._unknown = exc.message
            raise
        self._sequences[key] = (sequence + len(built)) % _SEQUENCE_MODULUS
        result = answer.produce.partitions[0]
        return AtomicWrite(topic, partition, result.base_offset, result.record_count, result.log_append_time_ms,
                           result.duplicate)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "AtomicWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AtomicWriter(broker={self.target!r}, group={self.group!r}, client_id={self.client_id!r})"

