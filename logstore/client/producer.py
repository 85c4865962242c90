"""The producer: batches records per partition and pipelines them over one gRPC stream.

``Producer.send`` encodes the record straight into the wire format of
``ProduceRequest.records`` (the same bytes the broker stores, see
``logstore/storage/records.py``), appends it to the open batch of its
``(topic, partition)`` and returns a ``concurrent.futures.Future`` that
resolves to a ``RecordMetadata``.  A background sender thread closes a batch
when it is full (``batch_bytes``), when it is ``linger_ms`` old, or on
``flush``/``close``, and writes it as one ``ProduceStreamRequest`` naming its
partition on the producer's single ``ProduceStream``, keeping up to
``max_in_flight`` requests unanswered.  A reader thread matches each answer
to its request (answers come in request order, ``request_id`` cross-checks)
and resolves the futures of the whole batch at once.

``send`` is the per-record hot path, so it does as little as it can: a
record without headers goes into its batch as four byte strings (record tag
and length, timestamp field, key/value prefix, the value object itself)
whose framing comes from per-topic caches (by key for keyed records, by
value length for keyless ones); the timestamp field is re-encoded only when
the wall clock's millisecond changes; one lock acquisition covers the
append.  ``send_many`` does the same for a list of records of one topic in
one loop, taking the lock once per partition: prefer it when the records are
at hand together (bulk loads, the CLI reading stdin).

Partitioning happens here, so every request names one partition (the
broker's fast path): a record with an explicit ``partition`` goes there; a
keyed record goes to ``partition_for_key(key, partition_count)``, Kafka's
murmur2 formula; a record with neither goes to the topic's *sticky*
partition, which moves to the next partition each time a batch for it is
closed.  Partition counts come from ``Admin.describe_topic``, cached per
topic, dropped when the broker answers NOT_FOUND and refreshed after
``metadata_max_age_ms``.

Ordering: records sent to one partition from one thread get increasing
offsets in send order, as long as none fails (a failed request fails all its
records and later requests still go through).

Idempotence and retries (on by default): the producer registers with
``InitProducer`` before its first request (with ``client_id``, a new
instance fences the previous one) and numbers the records it sends to each
partition, putting the producer id, epoch and first sequence on every
request.  When the stream breaks (UNAVAILABLE, a reset connection, a request
unanswered within ``request_timeout_ms``), every unanswered request is sent
again, in the original order, on a new stream after ``retry_backoff_ms``;
the broker answers those it had already appended as duplicates, with their
original offsets, so each record is appended exactly once and per-partition
order holds.  A batch is retried until it is ``delivery_timeout_ms`` old,
then fails with the last error.  ``max_in_flight`` is at most 5 then: the
broker remembers the last 5 batches per producer and partition.  A request
the broker refuses for good (e.g. the topic was deleted, the producer was
fenced) fails its records; later requests to that partition that were
already in flight fail too (the broker refuses them as out of order) and
the next ones continue the sequence.  When the broker has no state for the
producer on a partition (the topic was deleted and recreated, or the
producer was idle past the broker's 7-day expiry), the producer numbers
its records there from 0 again and resends.

What the producer does not guarantee:
- With ``idempotent=False`` (or ``acks="none"``, which implies it) there
  are no retries: a request whose stream breaks fails with its outcome
  unknown; the records may or may not have been appended, and sending them
  again may duplicate them.
- Exactly-once holds per producer instance and partition.  Records sent
  again by your code after a failed future (rather than retried by the
  producer) are new records.
- Futures do not support ``cancel()`` (it returns False): a record handed to
  ``send`` is on its way.
- Done callbacks run on the producer's I/O thread; keep them short and do
  not call ``flush``/``close`` from them.
- Argument errors (a negative timestamp, a value that is not bytes or str, a
  record larger than the topic's ``max_record_bytes``, a closed producer)
  raise from ``send`` itself; everything the broker or the network reports
  resolves the future with a ``logstore.errors`` exception instead.
- Values are not copied until their batch is sent: a ``bytes`` value is
  immutable, but the producer keeps a reference to it until then.
"""

from __future__ import annotations

import collections
import copy
import itertools
import logging
import random
import threading
import time
from concurrent.futures import Future
from concurrent.futures._base import FINISHED, PENDING
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping, Sequence

import grpc

from logstore.broker.partitioner import partition_for_key
from logstore.clock import Clock
from logstore.client._channel import ClientTLS, error_from_status, open_channel, translate_rpc_error
from logstore.client.admin import Admin
from logstore.client.messages import RecordMetadata
from logstore.errors import (
    FailedPrecondition,
    InvalidArgument,
    LogClosed,
    LogstoreError,
    NotFound,
    OutOfOrderSequence,
    RecordTooLarge,
    ResourceExhausted,
)
from logstore._proto.logstore.v1 import log_pb2
from logstore.storage.records import encode_varint

_LOGGER = logging.getLogger(__name__)

__all__ = ["Producer", "ACKS"]

ACKS: dict[object, int] = {
    "none": log_pb2.ACKS_NONE,
    "leader": log_pb2.ACKS_LEADER,
    "durable": log_pb2.ACKS_DURABLE,
    # Kafka's spellings, for people porting code.
    0: log_pb2.ACKS_NONE,
    1: log_pb2.ACKS_LEADER,
    "all": log_pb2.ACKS_DURABLE,
    -1: log_pb2.ACKS_DURABLE,
}

_PRODUCE_STREAM_METHOD = "/logstore.v1.Log/ProduceStream"
_INIT_PRODUCER_METHOD = "/logstore.v1.Log/InitProducer"
_SEQUENCE_MODULUS = 1 << 31  # sequences are int32 and wrap to 0
_BATCH_HEADER_BYTES = 53  # logstore.storage.batch.HEADER_SIZE: counted in a topic's max_batch_bytes
_KEY_CACHE_LIMIT = 1 << 16  # keys whose partition (and framing) are remembered per topic
_FRAMED_KEY_LIMIT = 256  # longer keys are not copied into a cached framing, only their partition is cached
_VALUE_CACHE_LIMIT = 1 << 12  # value lengths whose keyless record framing is remembered per topic
_SEND_MANY_SLICE = 8192  # send_many queues at most this many records per lock acquisition
_IDLE_WAKE_S = 0.1  # the sender checks request deadlines and metadata age this often when idle

_NO_STATE = "has no batch on this partition"
"""In an OutOfOrderSequence message: the broker has no state for the producer on the partition."""
_MAX_RESEQUENCES = 3


def _with_message(exc: LogstoreError, message: str) -> LogstoreError:
    """A copy of ``exc`` (same class and attributes) with another message."""
    clone = copy.copy(exc)
    clone.message = message
    clone.args = (message,)
    return clone


_RETRIABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
"""Stream failures an idempotent producer retries (the broker deduplicates what it had appended)."""

_time_ns = time.time_ns
_monotonic = time.monotonic
_new = object.__new__


# --- wire encoding ------------------------------------------------------------------------
# Tags of ProducerRecord (records.proto), identical to those of a stored Record.
_T_RECORD = b"\x0a"  # ProduceRequest.records (field 1, length-delimited)
_T_TIMESTAMP = b"\x10"  # timestamp_ms (field 2, varint)
_T_KEY = b"\x1a"  # key (field 3, length-delimited)
_T_VALUE = b"\x22"  # value (field 4, length-delimited)
_T_HEADER = b"\x2a"  # headers (field 5, length-delimited)
_T_DELIVER_AFTER = b"\x80\x01"  # deliver_after_ms (field 16, varint)
_T_DELIVER_AT = b"\x88\x01"  # deliver_at_ms (field 17, varint)
_T_HEADER_NAME = b"\x0a"  # Header.name (field 1)
_T_HEADER_VALUE = b"\x12"  # Header.value (field 2)
# Tags of ProduceRequest / ProduceStreamRequest (log.proto).
_T_TOPIC = b"\x12"  # ProduceRequest.topic (field 2)
_T_ACKS = b"\x18"  # ProduceRequest.acks (field 3, varint)
_T_PARTITION = b"\x20"  # ProduceRequest.partition (field 4, varint, explicit presence)
_T_PRODUCER_ID = b"\x28"  # ProduceRequest.producer_id (field 5, varint, explicit presence)
_T_PRODUCER_EPOCH = b"\x30"  # ProduceRequest.producer_epoch (field 6, varint)
_T_BASE_SEQUENCE = b"\x38"  # ProduceRequest.base_sequence (field 7, varint)
_T_REQUEST_ID = b"\x08"  # ProduceStreamRequest.request_id (field 1, varint)
_T_PRODUCE = b"\x12"  # ProduceStreamRequest.produce (field 2, length-delimited)


# The record codec's varint encoder (a table for values below 16384).
_varint = _encode_varint = encode_varint


_TS_FIELDS: dict[int, bytes] = {}


def _timestamp_field(timestamp_ms: int) -> bytes:
    """The encoded ``timestamp_ms`` field (empty for 0), cached for recent timestamps."""
    field_bytes = _TS_FIELDS.get(timestamp_ms)
    if field_bytes is None:
        if len(_TS_FIELDS) > 256:
            _TS_FIELDS.clear()
        field_bytes = _TS_FIELDS[timestamp_ms] = _T_TIMESTAMP + _encode_varint(timestamp_ms) if timestamp_ms else b""
    return field_bytes


def _as_bytes(data: object, what: str) -> bytes:
    if type(data) is bytes:
        return data  # type: ignore[return-value]
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise InvalidArgument(f"a record {what} must be bytes or str (or None), got {type(data).__name__}")


def encode_record(
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]] = (),
    deliver_after_ms: int | None = None,
    deliver_at_ms: int | None = None,
) -> bytes:
    """One record as an element of ``ProduceRequest.records``: tag, length, ProducerRecord.

    The general (slower) path of ``Producer.send``; also what tests compare with
    the protobuf library's own encoding.
    """
    body: list[bytes] = []
    if timestamp_ms:
        body.append(_T_TIMESTAMP + _encode_varint(timestamp_ms))
    if key is not None:
        body += (_T_KEY, _varint(len(key)), key)
    if value is not None:
        body += (_T_VALUE, _varint(len(value)), value)
    for name, hvalue in headers:
        name_bytes = name.encode("utf-8")
        # Empty name/value fields are left out, as protobuf itself does (proto3 defaults).
        header = b"".join(
            (
                (_T_HEADER_NAME + _varint(len(name_bytes)) + name_bytes) if name_bytes else b"",
                (_T_HEADER_VALUE + _varint(len(hvalue)) + hvalue) if hvalue else b"",
            )
        )
        body += (_T_HEADER, _varint(len(header)), header)
    if deliver_after_ms is not None:
        body.append(_T_DELIVER_AFTER + _encode_varint(deliver_after_ms))
    elif deliver_at_ms is not None:
        body.append(_T_DELIVER_AT + _encode_varint(deliver_at_ms))
    encoded = b"".join(body)
    return _T_RECORD + _varint(len(encoded)) + encoded


def _delivery_time(deliver_after_ms: object, deliver_at: object) -> tuple[int | None, int | None]:
    """Checked ``(deliver_after_ms, deliver_at_ms)`` of ``send``; exactly one is set."""
    if deliver_after_ms is not None and deliver_at is not None:
        raise InvalidArgument("give deliver_after_ms or deliver_at, not both")
    if deliver_after_ms is not None:
        if type(deliver_after_ms) is not int or deliver_after_ms < 0:
            raise InvalidArgument(f"deliver_after_ms must be a non-negative int, got {deliver_after_ms!r}")
        return deliver_after_ms, None
    at = int(deliver_at.timestamp() * 1000) if isinstance(deliver_at, datetime) else deliver_at
    if type(at) is not int or at < 0:
        raise InvalidArgument(f"deliver_at must be epoch milliseconds (>= 0) or a datetime, got {deliver_at!r}")
    return None, at


def _record_body_size(framed: int) -> int:
    """The size of a record without its ``0x0A`` tag and length prefix, which is
    what the broker compares with ``max_record_bytes``."""
    body = framed - 2
    while body + 1 + len(_varint(body)) > framed:
        body -= 1
    return body


def _clock_reading() -> tuple[float, int, bytes, int]:
    """The wall clock's current millisecond as ``(monotonic time at which the wall clock
    reaches the next ms, ms, encoded timestamp field, its length)``.

    ``send`` reuses it until ``time.monotonic()`` passes the first item: one
    float comparison per record instead of reading and dividing the wall
    clock.  The wall clock is read again at every millisecond boundary, so a
    step of the wall clock shows within a millisecond."""
    mono = _monotonic()
    wall = _time_ns()
    ms = wall // 1_000_000
    field_bytes = _T_TIMESTAMP + _encode_varint(ms) if ms else b""
    return (mono + (1_000_000 - wall % 1_000_000) / 1e9, ms, field_bytes, len(field_bytes))


def _too_large(body: int, meta: "_TopicMeta") -> RecordTooLarge:
    return RecordTooLarge(
        f"a record of {body} bytes exceeds max_record_bytes={meta.record_limit} "
        f"of topic {meta.topic!r}; send a smaller record or raise the topic's limit"
    )


def _keyed_framing(meta: "_TopicMeta", key: bytes, n: int, ts_len: int, old: tuple | None) -> tuple:
    """The ``meta.keys`` entry for ``key`` with a value of ``n`` bytes and a timestamp field of
    ``ts_len`` bytes (cached unless the cache is full or the key long); raises ``RecordTooLarge``.

    A record is then ``head, timestamp field, prefix, value``."""
    prefix = b"".join((_T_KEY, _varint(len(key)), key, _T_VALUE, _varint(n)))
    body = ts_len + len(prefix) + n
    if body > meta.record_limit:
        raise _too_large(body, meta)
    head = _T_RECORD + _varint(body)
    partition = old[0] if old is not None else partition_for_key(key, meta.partition_count)
    entry = (partition, n, ts_len, head, prefix, len(head) + body)
    if len(key) <= _FRAMED_KEY_LIMIT:
        if old is not None or len(meta.keys) < _KEY_CACHE_LIMIT:
            meta.keys[key] = entry
    elif old is None and len(meta.keys) < _KEY_CACHE_LIMIT:
        meta.keys[key] = (partition, -1, -1, b"", b"", 0)  # a long key: only its partition
    return entry


def _keyless_framing(meta: "_TopicMeta", n: int, ts_len: int) -> tuple:
    """The ``meta.values`` entry for a keyless record of ``n`` value bytes; raises ``RecordTooLarge``."""
    prefix = _T_VALUE + _varint(n)
    body = ts_len + len(prefix) + n
    if body > meta.record_limit:
        raise _too_large(body, meta)
    head = _T_RECORD + _varint(body)
    entry = (ts_len, head, prefix, len(head) + body)
    if n in meta.values or len(meta.values) < _VALUE_CACHE_LIMIT:
        meta.values[n] = entry
    return entry


def _partition_for(meta: "_TopicMeta", key: bytes) -> int:
    """The partition of a keyed record, from ``meta.keys`` when known."""
    entry = meta.keys.get(key)
    if entry is not None:
        return entry[0]
    partition = partition_for_key(key, meta.partition_count)
    if len(meta.keys) < _KEY_CACHE_LIMIT:
        meta.keys[key] = (partition, -1, -1, b"", b"", 0)
    return partition


def _per_record(items: object, count: int, what: str) -> list | tuple | itertools.repeat:
    """A ``send_many`` argument as one item per record (``None`` for each when it is None)."""
    if items is None:
        return itertools.repeat(None, count)
    if not isinstance(items, (list, tuple)):
        try:
            items = list(items)  # type: ignore[call-overload]
        except TypeError:
            raise InvalidArgument(f"{what} must be None or a sequence with one item per value") from None
    if len(items) != count:  # type: ignore[arg-type]
        raise InvalidArgument(f"{what} has {len(items)} items for {count} values")  # type: ignore[arg-type]
    return items  # type: ignore[return-value]


def _runs_in_input_order(groups: dict, count: int) -> list:
    """``send_many``'s per-target groups (``target -> (parts, sizes, indexes)``, four parts per
    record) regrouped as runs of consecutive records with one target, in input order."""
    where: list = [None] * count  # record -> (target, its group, its position in the group)
    for target, group in groups.items():
        for position, i in enumerate(group[2]):
            where[i] = (target, group, position)
    runs: list = []
    previous = object()
    for i, (target, (parts, sizes, _), position) in enumerate(where):
        if target != previous:
            runs.append((target, ([], [], [])))
            previous = target
        run = runs[-1][1]
        run[0].extend(parts[4 * position : 4 * position + 4])
        run[1].append(sizes[position])
        run[2].append(i)
    return runs


def _normalize_headers(headers: object) -> list[tuple[str, bytes]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, bytes]] = []
    try:
        pairs = list(items)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgument("headers must be a mapping or an iterable of (name, value) pairs") from None
    for pair in pairs:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise InvalidArgument(f"a header must be a (name, value) pair, got {pair!r}") from None
        if isinstance(name, (bytes, bytearray)):
            try:
                name = bytes(name).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgument(f"header name {name!r} is not valid UTF-8") from None
        elif not isinstance(name, str):
            raise InvalidArgument(f"a header name must be a str, got {type(name).__name__}")
        out.append((name, b"" if value is None else _as_bytes(value, "header value")))
    return out


# --- futures ------------------------------------------------------------------------------


class _Batch:
    """The records of one produce request (one topic, one partition) and their shared state.

    Every record future of the batch reads its state from here, so resolving
    a batch of thousands of records is one assignment plus one notify.
    """

    __slots__ = (
        "topic", "partition", "registry", "parts", "room", "count", "limit", "created", "force",
        "cond", "state", "base_offset", "append_time", "exception", "watched",
        "request_id", "sent_at", "data", "sequence", "doomed", "resequenced",
    )

    def __init__(self, topic: str, partition: int, limit: int, now: float, registry: dict) -> None:
        self.topic = topic
        self.partition = partition
        self.registry = registry  # the topic's open batches by partition, while this one is open
        self.parts: list[bytes] | None = [b""]  # [0] is replaced by the request header when sent
        self.count = 0
        self.limit = limit  # the most record bytes this batch may hold (unless it has one record)
        self.room = limit  # limit - bytes of encoded records; <= 0 means full
        self.created = now
        self.force = False  # flush/close: send without waiting for linger
        self.cond = threading.Condition()
        self.state = PENDING
        self.base_offset = -1
        self.append_time = 0
        self.exception: BaseException | None = None
        self.watched: list[_RecordFuture] = []  # futures with waiters or callbacks
        self.request_id = 0
        self.sent_at = 0.0
        self.data: bytes | None = None  # the encoded records, kept from the first send for retries
        self.sequence = -1  # idempotent: the sequence of the first record, assigned at the first send
        self.doomed: LogstoreError | None = None  # an earlier batch to the partition failed for good
        self.resequenced = 0  # times renumbered because the broker had no state for the producer

    @property
    def size(self) -> int:
        """Bytes of encoded records."""
        return self.limit - self.room

    def resolve(self, base_offset: int, append_time: int, exception: BaseException | None) -> None:
        """Finish every future of the batch (with a result, or with ``exception``)."""
        with self.cond:
            if self.state == FINISHED:
                return
            self.base_offset = base_offset
            self.append_time = append_time
            self.exception = exception
            self.state = FINISHED
            watched, self.watched = self.watched, []
            for future in watched:
                for waiter in future._w:
                    if exception is None:
                        waiter.add_result(future)
                    else:
                        waiter.add_exception(future)
            self.cond.notify_all()
        for future in watched:
            future._invoke_callbacks()

    def wait(self, deadline: float | None) -> bool:
        with self.cond:
            while self.state != FINISHED:
                remaining = None if deadline is None else deadline - _monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.cond.wait(remaining)
            return True


class _RecordFuture(Future):
    """A ``concurrent.futures.Future`` for one record, backed by its batch's state.

    ``Future.__init__`` is not called: the condition, state and exception are
    the batch's, the result is built on demand, and the waiter and callback
    lists exist only for futures somebody waits on.  Everything
    ``concurrent.futures.wait``/``as_completed``/``asyncio.wrap_future`` use
    works as on a plain Future.
    """

    __slots__ = ("_b", "_i", "_t", "_w", "_cb")

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        return self._b.cond

    @property
    def _state(self) -> str:  # type: ignore[override]
        return self._b.state

    @property
    def _exception(self) -> BaseException | None:  # type: ignore[override]
        return self._b.exception

    @property
    def _result(self) -> RecordMetadata | None:  # type: ignore[override]
        batch = self._b
        if batch.state != FINISHED or batch.exception is not None:
            return None
        offset = batch.base_offset + self._i if batch.base_offset >= 0 else -1
        return RecordMetadata(batch.topic, batch.partition, offset, self._t or batch.append_time)

    def _watch(self) -> None:
        """Called with the condition held: make the waiter/callback lists and
        register with the batch so that resolving it reaches them."""
        try:
            self._w
        except AttributeError:
            self._w = []
            self._cb = []
            if self._b.state != FINISHED:
                self._b.watched.append(self)

    @property
    def _waiters(self) -> list:  # type: ignore[override]
        self._watch()
        return self._w

    @property
    def _done_callbacks(self) -> list:  # type: ignore[override]
        try:
            return self._cb
        except AttributeError:
            return []

    def add_done_callback(self, fn) -> None:  # type: ignore[no-untyped-def]
        with self._b.cond:
            if self._b.state != FINISHED:
                self._watch()
                self._cb.append(fn)
                return
        try:
            fn(self)
        except Exception:
            _LOGGER.exception("exception calling callback for %r", self)

    def cancel(self) -> bool:
        """Records cannot be withdrawn once sent; always False."""
        return False

    def set_running_or_notify_cancel(self) -> bool:
        raise RuntimeError("a producer record future is resolved by its producer only")

    def set_result(self, result: object) -> None:
        raise RuntimeError("a producer record future is resolved by its producer only")

    def set_exception(self, exception: BaseException | None) -> None:
        raise RuntimeError("a producer record future is resolved by its producer only")


class _RecordFutures(Sequence):
    """The futures of the records of one ``send_many`` call, in the order given.

    Built from the call's chunks (``(batch, index in the batch of the first
    record, the group's input indexes, first, end)``); the future objects are
    made on the first ``[]``, ``iter`` or ``in``, all at once, and kept (the
    same object each time; two threads making them at the same moment may
    each get their own, equally valid, objects).  Not a ``list``: it is
    read-only and never equal to one.
    """

    __slots__ = ("_count", "_chunks", "_timestamp", "_timestamps", "_futures")

    def __init__(self, count: int, chunks: list, timestamp: int, timestamps: list[int] | None) -> None:
        self._count = count
        self._chunks = chunks
        self._timestamp = timestamp  # every record's, unless there is one per record
        self._timestamps = timestamps
        self._futures: list[_RecordFuture] | None = None

    def _make(self) -> list[_RecordFuture]:
        futures: list = [None] * self._count
        timestamp = self._timestamp
        timestamps = self._timestamps
        for batch, base, indexes, first, end in self._chunks:
            for index, i in zip(range(base, base + end - first), indexes[first:end]):
                future = _new(_RecordFuture)
                future._b = batch
                future._i = index
                future._t = timestamp if timestamps is None else timestamps[i]
                futures[i] = future
        self._futures = futures
        self._chunks = []
        return futures

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        futures = self._futures
        return (futures if futures is not None else self._make())[index]

    def __iter__(self):  # type: ignore[no-untyped-def, override]
        futures = self._futures
        return iter(futures if futures is not None else self._make())

    def __repr__(self) -> str:
        return f"<{self._count} producer record futures>"


def _check_timestamp(timestamp_ms: object) -> int:
    if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int):
        raise InvalidArgument(f"timestamp_ms must be an int (ms since the epoch), got {timestamp_ms!r}")
    if timestamp_ms < 0:
        raise InvalidArgument(f"timestamp_ms must be 0 (the broker's clock) or positive, got {timestamp_ms}")
    return int(timestamp_ms)


def _failed_future(exc: BaseException) -> Future:
    future: Future = Future()
    future.set_exception(exc)
    return future


# --- the producer -------------------------------------------------------------------------


@dataclass(slots=True)
class _TopicMeta:
    """What ``send`` needs about a topic: its limits, its open batches and its encoding caches.

    Metadata older than ``metadata_max_age_ms`` is dropped from
    ``Producer._meta`` and looked up again; the new one starts with empty
    caches (they depend on the partition count and record limit) but shares
    ``open``, one dict per topic for the producer's lifetime.
    """

    topic: str
    partition_count: int
    record_limit: int  # the topic's max_record_bytes, or no limit
    batch_limit: int  # record bytes per request: min(batch_bytes, max_batch_bytes - header)
    fetched_at: float
    open: dict[int, _Batch]  # partition -> its open batch (mirrors Producer._open; lock held to change)
    # key -> (partition, value length, timestamp field length, head, key+value prefix, size): the
    # framing of a keyed record for the value length last seen with that key, or only the
    # partition (value length -1) for keys seen with headers or null values.
    keys: dict[bytes, tuple] = field(default_factory=dict)
    # value length -> (timestamp field length, head, value prefix, size): framing of a keyless record.
    values: dict[int, tuple] = field(default_factory=dict)


class _Stream:
    """One ProduceStream call with its queue of request bytes and unanswered batches."""

    __slots__ = ("call", "queue", "inflight", "dead", "timed_out", "thread")

    def __init__(self) -> None:
        self.queue: _RequestQueue | None = None
        self.call = None
        self.inflight: collections.deque[_Batch] = collections.deque()
        self.dead = False
        self.timed_out = False
        self.thread: threading.Thread | None = None


class _RequestQueue:
    """A blocking FIFO of request bytes feeding gRPC's request iterator; None ends it."""

    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition(threading.Lock())

    def put(self, item: bytes | None) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        with self._cond:
            while not self._items:
                self._cond.wait()
            item = self._items.popleft()
        if item is None:
            raise StopIteration
        return item


class Producer:
    """Sends records to a logstore broker; see the module docstring.

    Parameters:
        broker: ``HOST:PORT`` of the broker.
        acks: ``"none"``, ``"leader"`` (appended and visible) or ``"durable"``
            (fsynced) -- Kafka's ``0``, ``1`` and ``"all"`` are accepted too.
        linger_ms: how long a batch may wait for more records before it is sent.
        batch_bytes: the most record bytes one request carries (also capped by
            the topic's ``max_batch_bytes``).
        max_in_flight: unanswered requests allowed on the stream.
        buffer_bytes: the most bytes of closed batches waiting to be sent or
            answered; beyond it, a ``send`` that needs a new batch blocks up to
            ``max_block_ms``, then raises ``ResourceExhausted``.  The first
            ``send`` to a topic also waits up to ``max_block_ms`` for the
            topic's metadata while the broker is unavailable, then raises
            ``LogClosed``.
        request_timeout_ms: an unanswered request older than this cancels the
            stream; its batches (and any others in flight) are sent again when
            idempotent, else fail.
        metadata_max_age_ms: partition counts older than this are looked up again.
        clock: where default record timestamps come from (epoch ms); the wall
            clock by default.
        idempotent: register as an idempotent producer and retry safely (see
            the module docstring); on by default unless ``acks="none"``.
        client_id: with idempotence, names this producer across restarts: a
            new Producer with the same ``client_id`` fences this one (its
            requests fail with ``ProducerFenced``).  Empty: anonymous.
        delivery_timeout_ms: with idempotence, how long a batch may be retried
            (from when it was created) before it fails.
        retry_backoff_ms: with idempotence, the pause before a broken stream is
            reopened and its requests sent again.
        tls: connect with TLS (``ClientTLS``: the CA to trust, and a client
            certificate for mutual TLS); plaintext when None.
        token: a bearer token sent on every call, for brokers that check tokens.
    """

    def __init__(
        self,
        broker: str | None = "127.0.0.1:50051",
        *,
        acks: str | int = "leader",
        linger_ms: float = 5,
        batch_bytes: int = 1 << 20,
        max_in_flight: int = 4,
        buffer_bytes: int = 32 << 20,
        max_block_ms: float = 60_000,
        request_timeout_ms: float = 30_000,
        metadata_max_age_ms: float = 300_000,
        clock: Clock | None = None,
        idempotent: bool | None = None,
        client_id: str = "",
        delivery_timeout_ms: float = 120_000,
        retry_backoff_ms: float = 100,
        tls: ClientTLS | None = None,
        token: str | None = None,
    ) -> None:
        try:
            self._acks = ACKS[acks.lower() if isinstance(acks, str) else acks]
        except (KeyError, TypeError):
            raise InvalidArgument(f"acks {acks!r} is not known: use 'none', 'leader' or 'durable'") from None
        if idempotent is None:
            idempotent = self._acks != log_pb2.ACKS_NONE
        if idempotent and self._acks == log_pb2.ACKS_NONE:
            raise InvalidArgument("an idempotent producer needs the broker's answer: use acks 'leader' or 'durable'")
        if idempotent and max_in_flight > 5:
            raise InvalidArgument(
                f"an idempotent producer keeps at most 5 requests in flight (the broker remembers 5 batches per "
                f"partition), got max_in_flight={max_in_flight}; lower it or pass idempotent=False"
            )
        if delivery_timeout_ms <= 0 or retry_backoff_ms < 0:
            raise InvalidArgument(
                f"delivery_timeout_ms must be > 0 and retry_backoff_ms >= 0, got {delivery_timeout_ms} and {retry_backoff_ms}"
            )
        if linger_ms < 0 or batch_bytes < 1 or max_in_flight < 1 or buffer_bytes < 1:
            raise InvalidArgument(
                "linger_ms must be >= 0 and batch_bytes, max_in_flight and buffer_bytes >= 1; got "
                f"linger_ms={linger_ms}, batch_bytes={batch_bytes}, max_in_flight={max_in_flight}, "
                f"buffer_bytes={buffer_bytes}"
            )
        self._channel, self.target = open_channel(broker, tls=tls, token=token)
        self._admin = Admin(_channel=(self._channel, self.target))
        self._produce_stream = self._channel.stream_stream(
            _PRODUCE_STREAM_METHOD,
            request_serializer=None,  # requests are encoded here, as bytes
            response_deserializer=log_pb2.ProduceStreamResponse.FromString,
        )
        self._acks_field = _T_ACKS + _varint(self._acks)
        self._linger = linger_ms / 1000.0
        self._batch_bytes = batch_bytes
        self._max_in_flight = max_in_flight
        self._buffer_limit = buffer_bytes
        self._max_block = max_block_ms / 1000.0
        self._request_timeout = request_timeout_ms / 1000.0
        self._metadata_max_age = metadata_max_age_ms / 1000.0
        self._clock = clock  # None: time.time_ns inline, the fastest wall clock read
        self._idempotent = idempotent
        self._client_id = client_id
        self._delivery_timeout = delivery_timeout_ms / 1000.0
        self._retry_backoff = retry_backoff_ms / 1000.0
        self._init_producer = self._channel.unary_unary(
            _INIT_PRODUCER_METHOD,
            request_serializer=log_pb2.InitProducerRequest.SerializeToString,
            response_deserializer=log_pb2.InitProducerResponse.FromString,
        )
        self._producer_fields = b""  # idempotent: the encoded producer_id and epoch, once registered
        self._sequences: dict[tuple[str, int], int] = {}  # idempotent: the next sequence per partition
        self._not_before = 0.0  # no new stream before this (backoff after a failure)
        self._abandoned = False  # close() gave up waiting: nothing is retried any more
        self.producer_id = -1
        """The id InitProducer gave this producer (-1 until its first request, or when not idempotent)."""
        self.producer_epoch = -1

        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)  # the sender waits on it
        self._space = threading.Condition(self._lock)  # send() waits on it when the buffer is full
        self._open: dict[tuple[str, int], _Batch] = {}  # creation order
        self._open_by_topic: dict[str, dict[int, _Batch]] = {}  # the same batches, for send's lookups
        self._full: collections.deque[_Batch] = collections.deque()
        self._incomplete: set[_Batch] = set()
        self._buffered = 0
        self._inflight = 0
        self._sticky: dict[str, int] = {}  # topic -> the partition keyless records go to
        self._sticky_batches: dict[str, _Batch] = {}  # topic -> the open batch of that partition
        self._meta: dict[str, _TopicMeta] = {}
        self._meta_lock = threading.Lock()
        self._stream: _Stream | None = None
        self._streams: list[_Stream] = []
        self._next_request_id = 1
        self._closing = False
        self._closed = False
        self._now = (-1.0, 0, b"", 0)  # the wall clock's current ms, see _clock_reading

        self._sender = threading.Thread(target=self._run_sender, name="logstore-producer-sender", daemon=True)
        self._sender.start()

    # -- public API ---------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: bytes | str | None = None,
        key: bytes | str | None = None,
        headers: Mapping[str, bytes | str] | Iterable[tuple[str, bytes | str]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        *,
        deliver_after_ms: int | None = None,
        deliver_at: int | datetime | None = None,
    ) -> Future:
        """Queue one record; the future resolves to its ``RecordMetadata``.

        ``value`` and ``key`` are bytes (or str, sent as UTF-8); ``None`` is a
        null value or key.  ``headers`` is a mapping or an iterable of
        ``(name, value)`` pairs.  ``timestamp_ms`` defaults to now; 0 asks the
        broker to stamp the record with its clock.  Raises
        ``InvalidArgument``/``RecordTooLarge`` for a bad record and
        ``FailedPrecondition`` once the producer is closed.

        Delayed delivery: consumer groups get the record no earlier than
        ``deliver_after_ms`` after its timestamp, or than ``deliver_at`` (epoch
        ms or a ``datetime``); give at most one.  Readers of the raw log see it
        at once.
        """
        plain = deliver_after_ms is None and deliver_at is None
        if timestamp_ms is None and self._clock is None:
            until, timestamp_ms, ts_field, ts_len = self._now
            if _monotonic() >= until:
                until, timestamp_ms, ts_field, ts_len = self._now = _clock_reading()
        else:
            timestamp_ms, ts_field, ts_len = self._timestamp(timestamp_ms)
        try:
            meta = self._meta[topic]
        except KeyError:
            try:
                meta = self._load_meta(topic)
            except LogstoreError as exc:
                return _failed_future(exc)
        # The common records are framed from per-topic caches and sent as the parts
        # (head, timestamp field, key/value prefix, value); see _keyed_framing.
        if plain and headers is None and type(value) is bytes and type(key) is bytes:
            framing = meta.keys.get(key)
            if framing is None or framing[1] != len(value) or framing[2] != ts_len:
                framing = _keyed_framing(meta, key, len(value), ts_len, framing)
            if partition is None:
                partition = framing[0]
            elif type(partition) is not int or partition < 0:
                raise InvalidArgument(f"partition must be a non-negative int, got {partition!r}")
            _, _, _, head, prefix, size = framing
        elif plain and headers is None and key is None and type(value) is bytes:
            framing = meta.values.get(len(value))
            if framing is None or framing[0] != ts_len:
                framing = _keyless_framing(meta, len(value), ts_len)
            if partition is not None and (type(partition) is not int or partition < 0):
                raise InvalidArgument(f"partition must be a non-negative int, got {partition!r}")
            _, head, prefix, size = framing
        else:
            delivery = None if plain else _delivery_time(deliver_after_ms, deliver_at)
            (head, ts_field, prefix, value), size, partition = self._encode(
                meta, value, key, headers, partition, timestamp_ms, ts_field, ts_len, delivery
            )

        lock = self._lock
        lock.acquire()  # (not `with`: this is the hot path, and acquire/release is cheaper)
        try:
            if partition is None:
                batch = self._sticky_batches.get(topic)
                if batch is None or batch.room < size:
                    batch = self._sticky_batch_locked(topic, meta, size, batch)
            else:
                batch = meta.open.get(partition)
                if batch is None or batch.room < size:
                    batch = self._new_batch_locked(topic, partition, meta, size, batch)
            parts = batch.parts
            parts.append(head)  # type: ignore[union-attr]
            parts.append(ts_field)  # type: ignore[union-attr]
            parts.append(prefix)  # type: ignore[union-attr]
            parts.append(value)  # type: ignore[union-attr]
            index = batch.count
            batch.count = index + 1
            room = batch.room - size
            batch.room = room
            if room <= 0:
                self._close_batch_locked(batch)
        finally:
            lock.release()
        future = _new(_RecordFuture)
        future._b = batch
        future._i = index
        future._t = timestamp_ms
        return future

    def send_many(
        self,
        topic: str,
        values: Iterable[bytes | str | None],
        keys: Iterable[bytes | str | None] | None = None,
        headers: Iterable[Mapping[str, bytes | str] | Iterable[tuple[str, bytes | str]] | None] | None = None,
        partition: int | None = None,
        timestamps_ms: Iterable[int | None] | None = None,
    ) -> Sequence[Future]:
        """Queue many records of one topic; returns their futures, in the order given.

        The records are those of ``send(topic, values[i], keys[i], headers[i],
        partition, timestamps_ms[i])`` for each ``i``, queued in that order
        (same partitions, same bytes, same offset order), but encoded in one
        loop and queued with one lock acquisition per partition (and per
        8,192 records) instead of one per record.  ``keys``, ``headers`` and
        ``timestamps_ms`` are None (null keys, no headers, default
        timestamps) or have one item per value; a None item means the same
        for its record.  Default timestamps are one reading of the clock for
        the whole call.

        The result is a read-only sequence of ``concurrent.futures.Future``
        (one per record, resolving to its ``RecordMetadata``) that makes
        the future objects only when it is first indexed or iterated: a
        caller that only needs ``flush()`` pays for no per-record future.

        Every record is checked before any is queued: ``InvalidArgument``
        and ``RecordTooLarge`` raise with nothing sent, and an unknown
        topic fails every future.  ``FailedPrecondition`` (the producer was
        closed meanwhile) and ``ResourceExhausted`` (the buffer stayed full
        for ``max_block_ms``) can raise after part of the records were
        queued; those records are sent, but their futures are lost.
        """
        if isinstance(values, (bytes, bytearray, memoryview, str)):
            raise InvalidArgument("values must be an iterable of record values, not one value")
        values = values if isinstance(values, (list, tuple)) else list(values)
        count = len(values)
        key_items = _per_record(keys, count, "keys")
        header_items = _per_record(headers, count, "headers")
        ts_items = _per_record(timestamps_ms, count, "timestamps_ms")
        if partition is not None and (type(partition) is not int or partition < 0):
            raise InvalidArgument(f"partition must be a non-negative int, got {partition!r}")
        if not count:
            return []
        if self._clock is None:
            _, timestamp_ms, ts_field, ts_len = self._now = _clock_reading()
        else:
            timestamp_ms, ts_field, ts_len = self._timestamp(None)
        stamps = None  # (timestamp, field, field length) per record, when not all are the default
        if timestamps_ms is not None:
            default = (timestamp_ms, ts_field, ts_len)
            stamps = [default if ts is None else self._timestamp(ts) for ts in ts_items]  # type: ignore[union-attr]
        try:
            meta = self._meta[topic]
        except KeyError:
            try:
                meta = self._load_meta(topic)
            except LogstoreError as exc:
                return [_failed_future(exc) for _ in range(count)]

        # Encode every record (nothing is queued yet) into per-target groups of flat parts,
        # four per record; the target is a partition, or None for the sticky one.
        groups: dict[int | None, tuple[list[bytes], list[int], list[int]]] = {}
        key_framings = meta.keys
        value_framings = meta.values
        for i, value, key, record_headers in zip(range(count), values, key_items, header_items):
            if stamps is not None:
                timestamp_ms, ts_field, ts_len = stamps[i]
            if record_headers is None and type(value) is bytes and (key is None or type(key) is bytes):
                if key is None:
                    framing = value_framings.get(len(value))
                    if framing is None or framing[0] != ts_len:
                        framing = _keyless_framing(meta, len(value), ts_len)
                    target = partition
                    _, head, prefix, size = framing
                else:
                    framing = key_framings.get(key)
                    if framing is None or framing[1] != len(value) or framing[2] != ts_len:
                        framing = _keyed_framing(meta, key, len(value), ts_len, framing)
                    target = framing[0] if partition is None else partition
                    _, _, _, head, prefix, size = framing
                group = groups.get(target)
                if group is None:
                    group = groups[target] = ([], [], [])
                group[0].extend((head, ts_field, prefix, value))
                group[1].append(size)
            else:
                record, size, target = self._encode(
                    meta, value, key, record_headers, partition, timestamp_ms, ts_field, ts_len
                )
                group = groups.get(target)
                if group is None:
                    group = groups[target] = ([], [], [])
                group[0].extend(record)
                group[1].append(size)
            group[2].append(i)
        runs = groups.items()
        if None in groups and len(groups) > 1:
            # Sticky records may land on a partition that other records name: keep the input
            # order by queueing runs of consecutive records with one target instead.
            runs = _runs_in_input_order(groups, count)  # type: ignore[assignment]

        chunks: list[tuple[_Batch, int, list[int], int, int]] = []
        lock = self._lock
        for target, (parts, sizes, indexes) in runs:
            j = 0
            total = len(sizes)
            while j < total:
                stop = min(total, j + _SEND_MANY_SLICE)
                with lock:
                    while j < stop:
                        size = sizes[j]
                        if target is None:
                            batch = self._sticky_batches.get(topic)
                            if batch is None or batch.room < size:
                                batch = self._sticky_batch_locked(topic, meta, size, batch)
                        else:
                            batch = meta.open.get(target)
                            if batch is None or batch.room < size:
                                batch = self._new_batch_locked(topic, target, meta, size, batch)
                        first = j
                        room = batch.room - size  # the first record goes in: it fits, or the batch is new
                        j += 1
                        while room > 0 and j < stop and sizes[j] <= room:
                            room -= sizes[j]
                            j += 1
                        batch.parts.extend(parts[4 * first : 4 * j])  # type: ignore[union-attr]
                        chunks.append((batch, batch.count, indexes, first, j))
                        batch.count += j - first
                        batch.room = room
                        if room <= 0:
                            self._close_batch_locked(batch)
        return _RecordFutures(count, chunks, timestamp_ms, None if stamps is None else [s[0] for s in stamps])

    def _timestamp(self, timestamp_ms: int | None) -> tuple[int, bytes, int]:
        """``(timestamp, its encoded field, the field's length)`` of a record sent with
        ``timestamp_ms`` (validated) or, for None, the injected clock's reading."""
        if timestamp_ms is None:
            timestamp_ms = self._clock()  # type: ignore[misc]
        elif type(timestamp_ms) is not int or timestamp_ms < 0:
            timestamp_ms = _check_timestamp(timestamp_ms)
        ts_field = _timestamp_field(timestamp_ms)  # type: ignore[arg-type]
        return timestamp_ms, ts_field, len(ts_field)  # type: ignore[return-value]

    def _encode(
        self,
        meta: _TopicMeta,
        value: object,
        key: object,
        headers: object,
        partition: object,
        timestamp_ms: int,
        ts_field: bytes,
        ts_len: int,
        delivery: tuple[int | None, int | None] | None = None,
    ) -> tuple[tuple[bytes, ...], int, int | None]:
        """``send`` for every record but a keyed one with bytes key and value and no headers:
        ``(record as four parts, size, partition)``, the partition None for the sticky one.
        Raises ``InvalidArgument`` and ``RecordTooLarge``."""
        if partition is not None and (type(partition) is not int or partition < 0):
            raise InvalidArgument(f"partition must be a non-negative int, got {partition!r}")
        if value is not None and type(value) is not bytes:
            value = _as_bytes(value, "value")
        if key is not None and type(key) is not bytes:
            key = _as_bytes(key, "key")
        if headers is None and value is not None and delivery is None:
            n = len(value)  # type: ignore[arg-type]
            if key is None:
                framing = meta.values.get(n)
                if framing is None or framing[0] != ts_len:
                    framing = _keyless_framing(meta, n, ts_len)
                _, head, prefix, size = framing
            else:
                framing = meta.keys.get(key)  # type: ignore[arg-type]
                if framing is None or framing[1] != n or framing[2] != ts_len:
                    framing = _keyed_framing(meta, key, n, ts_len, framing)  # type: ignore[arg-type]
                if partition is None:
                    partition = framing[0]
                _, _, _, head, prefix, size = framing
            return (head, ts_field, prefix, value), size, partition  # type: ignore[return-value]
        encoded = encode_record(
            timestamp_ms,
            key,  # type: ignore[arg-type]
            value,  # type: ignore[arg-type]
            _normalize_headers(headers) if headers is not None else (),
            *(delivery or (None, None)),
        )
        body = _record_body_size(len(encoded))
        if body > meta.record_limit:
            raise _too_large(body, meta)
        if key is not None and partition is None:
            partition = _partition_for(meta, key)  # type: ignore[arg-type]
        return (encoded, b"", b"", b""), len(encoded), partition  # type: ignore[return-value]

    def flush(self, timeout: float | None = None) -> int:
        """Send every record queued so far at once and wait until all are answered.

        Returns how many of those records are still unanswered: 0 unless the
        ``timeout`` (seconds) ran out.  Failed records count as answered;
        their futures hold the errors.
        """
        deadline = None if timeout is None else _monotonic() + timeout
        with self._lock:
            pending = list(self._incomplete)
            for batch in self._open.values():
                batch.force = True
            self._wakeup.notify()
        for batch in pending:
            batch.wait(deadline)
        return sum(b.count for b in pending if b.state != FINISHED)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, wait for the answers (up to ``timeout`` seconds),
        then close the stream and the channel.  Records still unanswered after
        the timeout fail with ``LogClosed``.  Calling ``close`` again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = self._closing = True
            for batch in self._open.values():
                batch.force = True
            self._wakeup.notify_all()
            self._space.notify_all()
        deadline = None if timeout is None else _monotonic() + timeout
        self._sender.join(None if deadline is None else max(0.0, deadline - _monotonic()))
        for stream in list(self._streams):
            if stream.thread is not None:
                stream.thread.join(None if deadline is None else max(0.0, deadline - _monotonic()))
        with self._lock:
            leftovers = list(self._incomplete)
            streams = list(self._streams)
            self._open.clear()
            for registry in self._open_by_topic.values():
                registry.clear()
            self._sticky_batches.clear()
            self._full.clear()
            self._abandoned = True
            self._wakeup.notify_all()
        for stream in streams:
            if stream.call is not None:
                stream.call.cancel()
        error = LogClosed("the producer was closed before the broker answered; the record may or may not have been appended")
        for batch in leftovers:
            self._finish(batch, -1, 0, error, counted=batch.request_id != 0)
        self._sender.join(1.0)
        self._channel.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Producer(broker={self.target!r})"

    # -- metadata -----------------------------------------------------------------

    def _load_meta(self, topic: str) -> _TopicMeta:
        with self._meta_lock:
            meta = self._meta.get(topic)
            if meta is not None:
                return meta
            deadline = _monotonic() + self._max_block
            while True:
                try:
                    description = self._admin.describe_topic(topic)
                    break
                except LogClosed:  # UNAVAILABLE: a broken connection or a restarting broker
                    if _monotonic() + self._retry_backoff >= deadline:
                        raise
                    time.sleep(max(self._retry_backoff, 0.01))
            config = description.config
            limit = self._batch_bytes
            if config.max_batch_bytes is not None:
                limit = max(1, min(limit, config.max_batch_bytes - _BATCH_HEADER_BYTES))
            record_limit = config.max_record_bytes if config.max_record_bytes is not None else 1 << 62
            registry = self._open_by_topic.setdefault(topic, {})
            meta = _TopicMeta(topic, description.partition_count, record_limit, limit, _monotonic(), registry)
            self._meta[topic] = meta
            return meta

    # -- batching (lock held) -----------------------------------------------------

    def _sticky_batch_locked(self, topic: str, meta: _TopicMeta, size: int, full: _Batch | None) -> _Batch:
        """The batch a keyless record of ``topic`` goes to when the current sticky
        batch is missing or ``full`` (which is closed, moving the sticky partition on)."""
        if full is not None:
            self._close_batch_locked(full)
        partition = self._sticky.get(topic)
        if partition is None:
            partition = self._sticky[topic] = random.randrange(meta.partition_count)
        elif partition >= meta.partition_count:  # rotated without metadata, or the topic was recreated smaller
            partition = self._sticky[topic] = partition % meta.partition_count
        batch = meta.open.get(partition)
        if batch is None or batch.room < size:
            batch = self._new_batch_locked(topic, partition, meta, size, batch)
        self._sticky_batches[topic] = batch
        return batch

    def _new_batch_locked(
        self, topic: str, partition: int, meta: _TopicMeta, size: int, full: _Batch | None
    ) -> _Batch:
        """Close ``full`` (if any) and open a new batch, after the checks that
        only need doing once per batch: closed producer, record size, buffer space."""
        if self._closing:
            raise FailedPrecondition("the producer is closed; create a new Producer to send more records")
        if full is not None:
            self._close_batch_locked(full, rotate=False)
        if self._buffered > self._buffer_limit:
            self._wait_for_space_locked()
            existing = meta.open.get(partition)
            if existing is not None and existing.room >= size:
                return existing
            if existing is not None:
                self._close_batch_locked(existing, rotate=False)
        batch = _Batch(topic, partition, meta.batch_limit, _monotonic(), meta.open)
        self._open[(topic, partition)] = batch
        meta.open[partition] = batch
        self._incomplete.add(batch)
        self._wakeup.notify()
        return batch

    def _close_batch_locked(self, batch: _Batch, *, rotate: bool = True) -> None:
        """Take a batch out of the open set; it is sent next (FIFO with other full ones)."""
        key = (batch.topic, batch.partition)
        if self._open.get(key) is batch:
            del self._open[key]
            del batch.registry[batch.partition]
            if self._sticky_batches.get(batch.topic) is batch:
                del self._sticky_batches[batch.topic]
            self._full.append(batch)
            self._buffered += batch.size
            if rotate:
                self._rotate_sticky_locked(batch)
            self._wakeup.notify()

    def _rotate_sticky_locked(self, batch: _Batch) -> None:
        if self._sticky.get(batch.topic) == batch.partition:
            # (Without metadata, which expired, _sticky_batch_locked wraps the partition around.)
            meta = self._meta.get(batch.topic)
            following = batch.partition + 1
            self._sticky[batch.topic] = following % meta.partition_count if meta is not None else following

    def _wait_for_space_locked(self) -> None:
        deadline = _monotonic() + self._max_block
        self._wakeup.notify()
        while self._buffered > self._buffer_limit:
            if self._closing:
                raise FailedPrecondition("the producer is closed; create a new Producer to send more records")
            remaining = deadline - _monotonic()
            if remaining <= 0:
                raise ResourceExhausted(
                    f"the producer's buffer ({self._buffer_limit} bytes) stayed full for "
                    f"{self._max_block * 1000:.0f} ms; the broker is not keeping up or unreachable"
                )
            self._space.wait(remaining)

    def _pick_locked(self, now: float) -> _Batch | None:
        if self._full:
            return self._full.popleft()
        for key, batch in self._open.items():  # the oldest open batch expires first
            if batch.force or self._closing or now - batch.created >= self._linger:
                del self._open[key]
                del batch.registry[batch.partition]
                if self._sticky_batches.get(batch.topic) is batch:
                    del self._sticky_batches[batch.topic]
                self._buffered += batch.size
                self._rotate_sticky_locked(batch)
                return batch
            return None
        return None

    def _next_wait_locked(self, now: float) -> float:
        timeout = _IDLE_WAKE_S
        if self._inflight < self._max_in_flight and self._open:
            oldest = next(iter(self._open.values()))
            timeout = min(timeout, max(0.0, oldest.created + self._linger - now))
        return timeout

    # -- the sender thread --------------------------------------------------------

    def _run_sender(self) -> None:
        try:
            self._sender_loop()
        except BaseException:  # pragma: no cover - a bug; make it visible
            _LOGGER.exception("the producer's sender thread died")
            raise

    def _sender_loop(self) -> None:
        next_meta_check = _monotonic() + 1.0
        while True:
            register = False
            with self._lock:
                while True:
                    now = _monotonic()
                    self._expire_requests_locked(now)
                    if now >= next_meta_check:
                        next_meta_check = now + 1.0
                        for topic, meta in list(self._meta.items()):
                            if now - meta.fetched_at > self._metadata_max_age and self._meta.get(topic) is meta:
                                del self._meta[topic]  # the next send looks the topic up again
                    batch = None
                    backing_off = now < self._not_before and (self._stream is None or self._stream.dead)
                    if self._inflight < self._max_in_flight and not backing_off:
                        if self._idempotent and not self._producer_fields and (self._full or self._open):
                            register = True
                            break
                        batch = self._pick_locked(now)
                        if batch is not None:
                            break
                    if self._closing and not self._open and not self._full and not (self._idempotent and self._inflight):
                        stream = self._stream
                        self._stream = None
                        if stream is not None and stream.queue is not None:
                            stream.queue.put(None)  # half-close: the broker answers what it has, then OK
                        return
                    wait = self._next_wait_locked(now)
                    if backing_off:
                        wait = min(wait, self._not_before - now)
                    self._wakeup.wait(wait)
                if not register:
                    self._inflight += 1
                    stream = self._stream
                    if stream is None or stream.dead:
                        stream = self._open_stream_locked()
                    request_id = self._next_request_id
                    self._next_request_id = request_id + 1
                    batch.request_id = request_id
                    batch.sent_at = now
                    if self._idempotent and batch.sequence < 0:
                        key = (batch.topic, batch.partition)
                        batch.sequence = self._sequences.get(key, 0)
                        self._sequences[key] = (batch.sequence + batch.count) % _SEQUENCE_MODULUS
                    stream.inflight.append(batch)
            if register:
                self._register()
                continue
            stream.queue.put(self._encode_request(batch, request_id))  # type: ignore[union-attr]

    def _register(self) -> None:
        """InitProducer, outside the lock.  A transient failure backs off; any other
        fails the records waiting to be sent (the next ones try again)."""
        try:
            answer = self._init_producer(
                log_pb2.InitProducerRequest(client_id=self._client_id), timeout=self._request_timeout
            )
        except grpc.RpcError as exc:
            error = translate_rpc_error(exc, self.target)
            with self._lock:
                now = _monotonic()
                self._not_before = now + self._retry_backoff
                transient = exc.code() in _RETRIABLE
                doomed = [
                    b for b in (*self._full, *self._open.values())
                    if not transient or now - b.created >= self._delivery_timeout
                ]
            for batch in doomed:
                self._drop_unsent(batch)
                self._finish(batch, -1, 0, error, counted=False)
            if not transient:
                _LOGGER.warning("InitProducer failed: %s", error)
            return
        with self._lock:
            self.producer_id = answer.producer_id
            self.producer_epoch = answer.producer_epoch
            epoch = (_T_PRODUCER_EPOCH, _varint(answer.producer_epoch)) if answer.producer_epoch else ()
            self._producer_fields = b"".join((_T_PRODUCER_ID, _varint(answer.producer_id), *epoch))
            self._wakeup.notify()

    def _drop_unsent(self, batch: _Batch) -> None:
        """Take a batch that was never sent out of the queues (it is about to fail)."""
        with self._lock:
            try:
                self._full.remove(batch)
                return
            except ValueError:
                pass
            key = (batch.topic, batch.partition)
            if self._open.get(key) is batch:
                del self._open[key]
                batch.registry.pop(batch.partition, None)
                if self._sticky_batches.get(batch.topic) is batch:
                    del self._sticky_batches[batch.topic]
                self._buffered += batch.size  # _finish takes it off again

    def _encode_request(self, batch: _Batch, request_id: int) -> bytes:
        topic = batch.topic.encode("utf-8")
        tail = b"".join(
            (_T_TOPIC, _varint(len(topic)), topic, self._acks_field, _T_PARTITION, _varint(batch.partition))
        )
        parts = batch.parts
        assert parts is not None
        if self._idempotent:
            # Fields 5-7 after partition (4): the broker's fast path expects number order.
            # proto3 omits zero scalars (epoch 0, sequence 0): write them the same way, or the
            # broker sees a non-canonical encoding and re-encodes the records.
            sequence = (_T_BASE_SEQUENCE, _varint(batch.sequence)) if batch.sequence else ()
            tail = b"".join((tail, self._producer_fields, *sequence))
            parts[0] = b"".join((_T_REQUEST_ID, _encode_varint(request_id), _T_PRODUCE, _varint(batch.size + len(tail))))
            parts.append(tail)
            request = b"".join(parts)
            parts.pop()  # kept for a retry, which gets a new request id
            return request
        batch.parts = None
        parts[0] = b"".join((_T_REQUEST_ID, _encode_varint(request_id), _T_PRODUCE, _varint(batch.size + len(tail))))
        parts.append(tail)
        return b"".join(parts)

    def _open_stream_locked(self) -> _Stream:
        stream = _Stream()
        stream.queue = _RequestQueue()  # type: ignore[assignment]
        stream.call = self._produce_stream(iter(stream.queue))  # type: ignore[arg-type]
        stream.thread = threading.Thread(
            target=self._read_answers, args=(stream,), name="logstore-producer-answers", daemon=True
        )
        self._stream = stream
        self._streams = [s for s in self._streams if not s.dead] + [stream]
        stream.thread.start()
        return stream

    def _expire_requests_locked(self, now: float) -> None:
        for stream in self._streams:
            if stream.inflight and not stream.dead and now - stream.inflight[0].sent_at > self._request_timeout:
                stream.timed_out = True
                stream.call.cancel()

    # -- the answer thread --------------------------------------------------------

    def _read_answers(self, stream: _Stream) -> None:
        error: LogstoreError | None = None
        retriable = True  # the stream ended without an answer: the outcome is unknown
        try:
            for response in stream.call:  # type: ignore[union-attr]
                with self._lock:
                    batch = stream.inflight.popleft() if stream.inflight else None
                if batch is None or response.request_id != batch.request_id:
                    error = LogstoreError(
                        f"broker {self.target} answered request {response.request_id} but "
                        f"{batch.request_id if batch else 'none'} was expected; the stream was reset"
                    )
                    retriable = False
                    if batch is not None:
                        self._finish(batch, -1, 0, error)
                    stream.call.cancel()  # type: ignore[union-attr]
                    break
                error = self._answer(stream, batch, response)
                if error is not None:  # transient: this request and those after it go again
                    with self._lock:
                        stream.inflight.appendleft(batch)
                    stream.call.cancel()  # type: ignore[union-attr]
                    break
        except grpc.RpcError as exc:
            retriable = exc.code() in _RETRIABLE
            if stream.timed_out:
                error = LogstoreError(
                    f"broker {self.target} did not answer a produce request within "
                    f"{self._request_timeout * 1000:.0f} ms; the outcome is unknown"
                )
                error.grpc_status = "DEADLINE_EXCEEDED"
                retriable = True
            else:
                error = translate_rpc_error(exc, self.target)
        except Exception as exc:  # pragma: no cover - a bug
            _LOGGER.exception("the producer's answer thread failed")
            error = LogstoreError(f"the producer failed reading answers: {exc!r}")
            retriable = False
        with self._lock:
            stream.dead = True
            failed = list(stream.inflight)
            stream.inflight.clear()
            if self._stream is stream:
                self._stream = None
            if failed and self._idempotent and retriable:
                failed = self._requeue_locked(failed)
        stream.queue.put(None)  # type: ignore[union-attr]  # ends gRPC's request iterator
        if failed:
            if error is None:
                error = LogClosed(
                    f"the produce stream to {self.target} ended before the broker answered; "
                    "the outcome is unknown"
                )
            for batch in failed:
                self._finish(batch, -1, 0, error)

    def _requeue_locked(self, batches: list[_Batch]) -> list[_Batch]:
        """Put unanswered batches back at the head of the send queue, in their order, to
        be sent again after the backoff; return those past ``delivery_timeout_ms`` instead."""
        now = _monotonic()
        expired = [b for b in batches if self._abandoned or now - b.created >= self._delivery_timeout]
        kept = [b for b in batches if not (self._abandoned or now - b.created >= self._delivery_timeout)]
        self._inflight -= len(kept)
        self._full.extendleft(reversed(kept))
        self._not_before = now + self._retry_backoff
        if kept:
            _LOGGER.info("produce stream to %s broke; sending %d request(s) again", self.target, len(kept))
        self._wakeup.notify()
        return expired

    def _answer(self, stream: _Stream, batch: _Batch, response: log_pb2.ProduceStreamResponse) -> LogstoreError | None:
        """Resolve ``batch`` from its answer, or return the error if it should be sent again."""
        kind = response.WhichOneof("result")
        status = None
        if kind == "error":
            status = response.error
        elif kind != "response" or not response.response.partitions:
            self._finish(batch, -1, 0, LogstoreError(f"broker {self.target} sent an empty produce answer"))
            return None
        else:
            result = response.response.partitions[0]
            if result.HasField("error") and result.error.code:
                status = result.error
        if status is None:
            self._finish(batch, result.base_offset, result.log_append_time_ms, None)
            return None
        error = error_from_status(status.code, status.message)
        if self._idempotent:
            if status.code == grpc.StatusCode.UNAVAILABLE.value[0] and not self._abandoned:
                return error
            if batch.doomed is not None:
                error = _with_message(
                    batch.doomed,
                    f"not appended: an earlier request to {batch.topic}/{batch.partition} failed: {batch.doomed}",
                )
            elif (
                isinstance(error, OutOfOrderSequence) and _NO_STATE in error.message
                and not self._abandoned and batch.resequenced < _MAX_RESEQUENCES
            ):
                self._restart_sequences(stream, batch)
                return error
            else:
                self._give_up_sequence(stream, batch, error)
        self._finish(batch, -1, 0, error)
        return None

    def _restart_sequences(self, stream: _Stream, batch: _Batch) -> None:
        """The broker has no state for this producer on ``batch``'s partition (the topic was
        recreated, or the producer idled past the broker's expiry), so nothing numbered from
        ``batch`` on was appended: renumber it and the partition's later batches from 0.
        The caller then ends the stream, so they are all sent again in order."""
        key = (batch.topic, batch.partition)
        with self._lock:
            following = 0
            for later in (batch, *stream.inflight, *self._full):
                if (later.topic, later.partition) == key and later.sequence >= 0:
                    later.sequence = following
                    later.resequenced += 1
                    following = (following + later.count) % _SEQUENCE_MODULUS
            self._sequences[key] = following
        _LOGGER.info("broker %s forgot this producer on %s/%d; numbering its records there from 0 again",
                     self.target, batch.topic, batch.partition)

    def _give_up_sequence(self, stream: _Stream, batch: _Batch, error: LogstoreError) -> None:
        """``batch`` failed for good, so its sequences were never used: the next batch to
        its partition reuses them, and those already numbered after it will be refused."""
        key = (batch.topic, batch.partition)
        with self._lock:
            self._sequences[key] = batch.sequence
            for later in (*stream.inflight, *self._full):
                if (later.topic, later.partition) == key and later.sequence >= 0:
                    later.doomed = error

    def _finish(self, batch: _Batch, base_offset: int, append_time: int, exc: LogstoreError | None, *, counted: bool = True) -> None:
        with self._lock:
            if batch not in self._incomplete:
                return
            self._incomplete.discard(batch)
            if counted:
                self._inflight -= 1
            self._buffered -= batch.size
            if isinstance(exc, NotFound):
                self._meta.pop(batch.topic, None)  # the topic or partition count changed
            self._wakeup.notify()
            self._space.notify_all()
        batch.resolve(base_offset, append_time, exc)
