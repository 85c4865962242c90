"""Consuming as a member of a consumer group: ``Consumer``, ``ConsumerMessage``, ``DeliveryBatch``.

A ``Consumer`` is one member of a group on one ``Groups.Consume`` stream
(``proto/logstore/v1/groups.proto``).  The constructor opens the stream,
sends the ``Join`` and waits for the broker's first answer, so a refused join
raises at once (``NotFound`` for an unknown topic, ``InvalidArgument`` for a
bad option, ``FailedPrecondition`` when the group's live members use other
topics, mode or guarantee, ``PermissionDenied`` for an internal topic).

Two daemon threads per consumer:

- the receiver (``logstore-consumer-<group>-receiver``) reads the broker's
  answers: it records the member id, generation, assignment and committed
  offsets, counts and logs stale ids and errors, and queues each
  ``Delivery`` (a Python step per delivery, none per record);
- the sender (``logstore-consumer-<group>-sender``) writes acks, nacks and
  deadline extensions.  They are buffered as runs of delivery ids and
  coalesced into ``DeliveryIds`` (``DeliveryBatch.ack()`` is one run for a
  whole delivery); a buffer is flushed ``ack_flush_ms`` after its first entry,
  at once when the acked records reach half of ``max_in_flight`` (so the
  broker's flow control never waits on the flush timer), and on ``close()``
  together with the ``leave``.  With nothing to send, it sends an empty
  request (a heartbeat) every third of ``session_timeout_ms``.

Messages are handed out in delivery order, a delivery at a time.  A
``ConsumerMessage`` is a ``Message`` (a view over its record in the response
as received, made by C code only, see ``Message``) with ``attempt``,
``delivery_id`` and ``ack()`` / ``nack()`` / ``extend()``.  ``iter(consumer)``,
``poll()``, ``poll_batch()`` and ``batches()`` share one position.  Settling
a record twice (ack after ack, nack after ack, ...) is a no-op on the client;
an extension of a settled record is dropped.

Retries.  ``retry_policies={topic: RetryPolicy(...)}`` stores the group's
retry policies with the join (as ``Admin.set_retry_policy`` would).  With a
policy, a nacked (or expired) record is delivered again after the policy's
wait, and after ``max_attempts`` deliveries, or at once for
``nack(terminal=True)``, it goes to the group's dead-letter topic
(``Admin.list_dead_letters``, ``redrive_dead_letters``,
``purge_dead_letters``).  A record delivered again from a retry tier or from
a redrive has the tier's topic as ``topic`` (``<topic>.<group>.retry.<wait>ms``
or ``<topic>.<group>.redrive``) and its origin in the ``logstore.origin.*``
headers.  Nacks are buffered per reason and kind: a terminal nack is sent as
its own ``Nack`` with ``terminal`` set, never merged with ordinary ones.

Deliveries still queued locally for a partition the broker has taken away
(a rebalance) are dropped before they are handed out: the broker delivers
those records again to the partition's new owner.

``run(callback, workers)`` is the callback style: a pool of daemon worker
threads calls ``callback(message)``, acks on return and nacks with
``repr(exc)`` on an exception.  Messages that must stay ordered never run at
the same time and run in delivery order: with ``"key_ordered"``, the
messages of one key of one partition (null keys are not ordered among
themselves, as on the broker); with ``"partition_ordered"``, the messages of
one partition, so parallelism then comes from the partitions the member owns.

What the consumer does not do or guarantee:

- No reconnection.  When the stream fails (the broker goes away, the topic is
  deleted), iteration raises the ``logstore.errors`` class of the status and
  acks can no longer be sent; make a new ``Consumer`` to rejoin.
- At-least-once: a record whose ack has not reached the broker when its
  deadline passes, when its partition moves, or when the consumer closes or
  dies, is delivered again (``attempt`` counts the deliveries).  An ack,
  nack or extension that the broker refuses because the delivery is no
  longer current is counted in ``stale_count`` and logged, never raised.
  With ``guarantee="at_most_once"`` the broker commits before delivering and
  ignores acks (the consumer still sends them; they cost little).
- Acks, nacks and extensions made after ``close()`` has started are dropped
  (logged at debug level): those records are delivered again.
- One thread at a time may iterate (``iter``, ``poll``, ``poll_batch``,
  ``batches``, ``run``); ``ack``/``nack``/``extend`` and ``close()`` are safe
  from any thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, count, repeat
from operator import itemgetter, length_hint
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

import grpc

from logstore.client._channel import ClientTLS, error_from_status, open_channel, translate_rpc_error
from logstore.client.admin import retry_policy_to_pb, to_epoch_ms
from logstore.client.messages import Message, RetryPolicy
from logstore.errors import FailedPrecondition, InvalidArgument, LogClosed, LogstoreError
from logstore._proto.logstore.v1 import groups_pb2, groups_pb2_grpc

if TYPE_CHECKING:
    from logstore._proto.logstore.v1 import records_pb2

_LOGGER = logging.getLogger(__name__)

__all__ = ["Consumer", "ConsumerMessage", "DeliveryBatch", "DELIVERY_MODES", "GUARANTEES"]

DELIVERY_MODES = {
    "partition_ordered": groups_pb2.DELIVERY_MODE_PARTITION_ORDERED,
    "key_ordered": groups_pb2.DELIVERY_MODE_KEY_ORDERED,
    "unordered": groups_pb2.DELIVERY_MODE_UNORDERED,
}
GUARANTEES = {
    "at_least_once": groups_pb2.DELIVERY_GUARANTEE_AT_LEAST_ONCE,
    "at_most_once": groups_pb2.DELIVERY_GUARANTEE_AT_MOST_ONCE,
}

_DEFAULT_MAX_IN_FLIGHT = 1000  # what the broker uses for max_in_flight_records=0
_DEFAULT_SESSION_TIMEOUT_MS = 30_000  # what the broker uses for session_timeout_ms=0
_MAX_EXTENSION_MS = 600_000  # ExtendDeadline.extension_ms upper bound (groups.proto)
_MAX_REASON_CHARS = 4096  # Nack.reason upper bound (groups.proto)
_INT32_MAX = 2**31 - 1
_CLOSE_TIMEOUT_S = 10.0  # how long close() may take in all, by default

_tuple_new = tuple.__new__
_WAKE = object()  # put in the delivery queue to wake the iterating thread (close, stream end)
_NOTHING_YET = (None,)  # what the message iterator yields when a poll's timeout passes first
_END = object()  # next(units, _END): the deliveries have ended


class ConsumerMessage(Message):
    """One record delivered to a group member: a ``Message`` (``topic``,
    ``partition``, ``offset``, ``timestamp_ms``, ``key``, ``value``,
    ``headers``, read from the record as received) plus ``attempt`` (1 for a
    first delivery), ``delivery_id`` (unique on its stream), and the methods
    that answer the broker: ``ack()``, ``nack(reason, terminal)`` and
    ``extend(ms)``.

    Only messages made by a ``Consumer`` can be answered.  One made from its
    fields (``ConsumerMessage(...)``), a copy, an unpickled one or one made by
    ``dataclasses.replace`` holds only its fields, and its ``ack``/``nack``/
    ``extend`` raise ``FailedPrecondition``.  Equality and hashing include
    ``attempt`` and ``delivery_id``.
    """

    # Layout (private), extending Message's: a message the consumer made is
    # (topic, partition, offset, records, None, index, None, None, delivery_id,
    # attempt, delivery); one made from its fields is (topic, partition,
    # offset, None, timestamp_ms, key, value, headers, delivery_id, attempt, None).
    __slots__ = ()
    __match_args__ = Message.__match_args__ + ("attempt", "delivery_id")

    def __new__(
        cls,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[tuple[str, bytes], ...] = (),
        attempt: int = 1,
        delivery_id: int = 0,
    ) -> "ConsumerMessage":
        return _tuple_new(
            cls, (topic, partition, offset, None, timestamp_ms, key, value, headers, delivery_id, attempt, None)
        )

    if TYPE_CHECKING:
        attempt: int
        delivery_id: int
    else:  # C-level getters, like Message's
        attempt = property(itemgetter(9), doc="How many times the record was delivered to the group, this time included.")
        delivery_id = property(itemgetter(8), doc="The record's delivery id on its Consume stream.")

    def ack(self) -> None:
        """Mark the record processed; its committed offset advances once every
        record before it in its partition is acked too."""
        delivery = self[10]
        if delivery is None:
            raise _detached("ack")
        delivery.consumer._ack_one(delivery, self[5])

    def nack(self, reason: str = "", terminal: bool = False) -> None:
        """Ask for the record to be delivered again (attempt + 1).  ``reason``
        (cut to 4096 characters) is stored as ``logstore.error`` when the
        record moves to a retry tier or the dead-letter topic.  ``terminal``:
        processing can never succeed; with a retry policy the record goes to
        the dead-letter topic at once, without one it is delivered again and
        the broker reports an error (counted in ``error_count``)."""
        delivery = self[10]
        if delivery is None:
            raise _detached("nack")
        delivery.consumer._settle(delivery, self[5], self[5] + 1, _reason(reason), bool(terminal))

    def extend(self, ms: int) -> None:
        """Renew the record's ack deadline: ``ms`` (1 to 600000) from when the
        broker receives the request."""
        delivery = self[10]
        if delivery is None:
            raise _detached("extend")
        delivery.consumer._extend(delivery, self[5], self[5] + 1, _extension(ms))

    def _values(self) -> tuple:
        return (*Message._values(self), self[9], self[8])

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__qualname__}(topic={self[0]!r}, partition={self[1]!r}, offset={self[2]!r}, "
            f"timestamp_ms={self.timestamp_ms!r}, key={self.key!r}, value={self.value!r}, "
            f"headers={self.headers!r}, attempt={self[9]!r}, delivery_id={self[8]!r})"
        )


@dataclass(frozen=True)
class _ConsumerMessageFields:
    """The fields of ``ConsumerMessage`` for ``dataclasses`` (see ``_MessageFields``)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    attempt: int = 1
    delivery_id: int = 0


ConsumerMessage.__dataclass_fields__ = _ConsumerMessageFields.__dataclass_fields__  # type: ignore[attr-defined]
ConsumerMessage.__dataclass_params__ = _ConsumerMessageFields.__dataclass_params__  # type: ignore[attr-defined]


def _detached(what: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"cannot {what} this ConsumerMessage: it was made from fields, copied or unpickled, not delivered "
        "by a Consumer (only the message a Consumer handed out can answer the broker)"
    )


def _reason(reason: object) -> str:
    text = reason if isinstance(reason, str) else str(reason)
    return text[:_MAX_REASON_CHARS]


def _extension(ms: object) -> int:
    if isinstance(ms, bool) or not isinstance(ms, int) or not 1 <= ms <= _MAX_EXTENSION_MS:
        raise InvalidArgument(f"an extension is a whole number of milliseconds from 1 to {_MAX_EXTENSION_MS}, got {ms!r}")
    return ms


class _Delivery:
    """One received ``Delivery`` and which of its records were settled (acked
    or nacked) on this client."""

    __slots__ = (
        "consumer",
        "topic",
        "partition",
        "records",
        "first_id",
        "base_offset",
        "offsets",
        "count",
        "attempt",
        "deadline_ms",
        "append_time",
        "epoch",
        "settled",
    )

    def __init__(self, consumer: "Consumer", delivery: groups_pb2.Delivery, epoch: int) -> None:
        self.consumer = consumer
        self.topic = delivery.topic
        self.partition = delivery.partition
        self.records = delivery.records
        self.first_id = delivery.first_delivery_id
        self.base_offset = delivery.base_offset
        self.offsets: list[int] | None = list(delivery.offsets) if delivery.offsets else None
        self.count = len(self.records)
        self.attempt = delivery.attempt
        self.deadline_ms = delivery.deadline_ms
        self.append_time = delivery.log_append_time_ms or None  # every record's timestamp when set
        self.epoch = epoch  # the partition's revocation count when it arrived
        self.settled: bytearray | None = None  # 1 per settled record, made on the first settle

    def offsets_iter(self, lo: int, hi: int) -> Iterator[int]:
        if self.offsets is None:
            return iter(range(self.base_offset + lo, self.base_offset + hi))
        return iter(self.offsets[lo:hi] if lo or hi < self.count else self.offsets)

    def messages(self, offsets: Iterator[int], lo: int) -> Iterator[ConsumerMessage]:
        """Messages for records ``lo, lo+1, ...`` as long as ``offsets`` yields
        their offsets; everything per message runs in C."""
        return map(
            _tuple_new,
            repeat(ConsumerMessage),
            zip(
                repeat(self.topic),
                repeat(self.partition),
                offsets,  # first non-repeat: when it runs out, nothing else advanced
                repeat(self.records),
                repeat(self.append_time),
                count(lo),
                repeat(None),
                repeat(None),
                count(self.first_id + lo),
                repeat(self.attempt),
                repeat(self),
            ),
        )

    def unsettled_runs(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Delivery id runs ``(first, end)`` of the records of ``[lo, hi)`` not settled yet."""
        settled = self.settled
        first = self.first_id
        if settled is None:
            return [(first + lo, first + hi)] if hi > lo else []
        runs = []
        i = lo
        while i < hi:
            start = settled.find(0, i, hi)
            if start < 0:
                break
            stop = settled.find(1, start, hi)
            if stop < 0:
                stop = hi
            runs.append((first + start, first + stop))
            i = stop
        return runs

    def mark_settled(self, lo: int, hi: int) -> None:
        if self.settled is None:
            self.settled = bytearray(self.count)
        self.settled[lo:hi] = b"\x01" * (hi - lo)


class DeliveryBatch:
    """The records of one ``Delivery`` (or what is left of one that the message
    iterator had started): consecutive delivery ids, one partition, one
    attempt.  ``ack()`` answers the whole batch with one id run.

    ``records`` are the protobuf ``Record`` messages as received and
    ``offsets`` their offsets (consecutive unless the broker skipped some, see
    ``Delivery.offsets``); iterate the batch for ``ConsumerMessage`` objects.
    ``ack``/``nack``/``extend`` skip the records already settled one by one.
    """

    __slots__ = ("_delivery", "_lo", "_hi")

    def __init__(self, delivery: _Delivery, lo: int, hi: int) -> None:
        self._delivery = delivery
        self._lo = lo
        self._hi = hi

    @property
    def topic(self) -> str:
        """The topic of the records."""
        return self._delivery.topic

    @property
    def partition(self) -> int:
        """The partition of the records."""
        return self._delivery.partition

    @property
    def attempt(self) -> int:
        """How many times these records were delivered to the group, this time included."""
        return self._delivery.attempt

    @property
    def first_delivery_id(self) -> int:
        """The delivery id of the first record; record ``i`` has ``first_delivery_id + i``."""
        return self._delivery.first_id + self._lo

    @property
    def deadline_ms(self) -> int:
        """When the ack deadline passes (epoch ms, the broker's clock) unless extended."""
        return self._delivery.deadline_ms

    @property
    def offsets(self) -> Sequence[int]:
        """The offset of each record."""
        d = self._delivery
        if d.offsets is None:
            return range(d.base_offset + self._lo, d.base_offset + self._hi)
        return d.offsets[self._lo : self._hi]

    @property
    def records(self) -> Sequence[records_pb2.Record]:
        """The protobuf records as received (``HasField`` tells null from empty)."""
        d = self._delivery
        if self._lo == 0 and self._hi == d.count:
            return d.records
        return d.records[self._lo : self._hi]

    def __len__(self) -> int:
        return self._hi - self._lo

    def __iter__(self) -> Iterator[ConsumerMessage]:
        """The records as ``ConsumerMessage`` objects, made as the iterator advances."""
        d = self._delivery
        return d.messages(d.offsets_iter(self._lo, self._hi), self._lo)

    def ack(self) -> None:
        """Mark every record of the batch processed."""
        d = self._delivery
        d.consumer._settle(d, self._lo, self._hi, None)

    def nack(self, reason: str = "", terminal: bool = False) -> None:
        """Ask for every record of the batch to be delivered again (attempt + 1);
        ``reason`` and ``terminal`` as for ``ConsumerMessage.nack``."""
        d = self._delivery
        d.consumer._settle(d, self._lo, self._hi, _reason(reason), bool(terminal))

    def extend(self, ms: int) -> None:
        """Renew the ack deadline of the batch's unsettled records: ``ms`` from
        when the broker receives the request."""
        d = self._delivery
        d.consumer._extend(d, self._lo, self._hi, _extension(ms))

    def __repr__(self) -> str:
        return (
            f"DeliveryBatch(topic={self.topic!r}, partition={self.partition}, attempt={self.attempt}, "
            f"first_delivery_id={self.first_delivery_id}, records={len(self)})"
        )


class _RequestQueue:
    """A blocking FIFO of requests feeding gRPC's request iterator; None ends it."""

    def __init__(self) -> None:
        self._items: deque = deque()
        self._cond = threading.Condition(threading.Lock())

    def put(self, item: groups_pb2.ConsumeRequest | None) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def __iter__(self) -> "_RequestQueue":
        return self

    def __next__(self) -> groups_pb2.ConsumeRequest:
        with self._cond:
            while not self._items:
                self._cond.wait()
            item = self._items.popleft()
        if item is None:
            raise StopIteration
        return item


def _delivery_ids(runs: list[tuple[int, int]], singles: list[int] | None = None) -> groups_pb2.DeliveryIds:
    """The ids of ``runs`` (``(first, end)`` pairs) and ``singles`` merged into
    the fewest single ids and ranges."""
    if singles:
        singles.sort()
        start = prev = singles[0]
        for i in singles:
            if i - prev > 1:
                runs.append((start, prev + 1))
                start = i
            prev = i
        runs.append((start, prev + 1))
    runs.sort()
    ids: list[int] = []
    ranges: list[groups_pb2.DeliveryIdRange] = []
    first, end = runs[0]
    for a, b in runs:
        if a <= end:
            if b > end:
                end = b
            continue
        if end - first == 1:
            ids.append(first)
        else:
            ranges.append(groups_pb2.DeliveryIdRange(first_id=first, end_id=end))
        first, end = a, b
    if end - first == 1:
        ids.append(first)
    else:
        ranges.append(groups_pb2.DeliveryIdRange(first_id=first, end_id=end))
    return groups_pb2.DeliveryIds(ids=ids, ranges=ranges)


def _count_ids(ids: groups_pb2.DeliveryIds) -> int:
    return len(ids.ids) + sum(r.end_id - r.first_id for r in ids.ranges)


def _option(name: str, value: object, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _INT32_MAX:
        raise InvalidArgument(f"{name} must be a whole number from {low} to {_INT32_MAX}, got {value!r}")
    return value


def _start_position(start: object) -> groups_pb2.StartPosition:
    if start == "earliest":
        return groups_pb2.StartPosition(offset_position=groups_pb2.OFFSET_POSITION_EARLIEST)
    if start == "latest":
        return groups_pb2.StartPosition(offset_position=groups_pb2.OFFSET_POSITION_LATEST)
    if isinstance(start, datetime):
        start = to_epoch_ms(start)
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        return groups_pb2.StartPosition(timestamp_ms=start)
    raise InvalidArgument(
        f"start {start!r} is not known: use 'earliest', 'latest', a timestamp in epoch ms (>= 0) or a datetime"
    )


def _topic_retry_policies(policies: object) -> list[groups_pb2.TopicRetryPolicy]:
    if policies is None:
        return []
    if not isinstance(policies, Mapping):
        raise InvalidArgument(f"retry_policies maps topic names to RetryPolicy objects, got {policies!r}")
    out = []
    for topic, policy in policies.items():
        if not isinstance(topic, str) or not topic:
            raise InvalidArgument(f"retry_policies maps topic names to RetryPolicy objects, got the key {topic!r}")
        out.append(groups_pb2.TopicRetryPolicy(topic=topic, policy=retry_policy_to_pb(policy)))
    return out


def _choice(name: str, value: object, table: dict[str, int]) -> int:
    found = table.get(value.lower()) if isinstance(value, str) else None
    if found is None:
        raise InvalidArgument(f"{name} {value!r} is not known: use " + " or ".join(repr(k) for k in table))
    return found


class _WorkerPool:
    """The worker threads of ``Consumer.run``: messages of one lane (a key or a
    partition, see the module docstring) run one at a time, in order."""

    _STOP = object()

    def __init__(
        self, consumer: "Consumer", callback: Callable[[ConsumerMessage], object], workers: int, key_ordered: bool
    ) -> None:
        self._consumer = consumer
        self._callback = callback
        self._key_ordered = key_ordered
        self._ready: queue.SimpleQueue = queue.SimpleQueue()
        self._lanes: dict[tuple, deque] = {}  # lane -> messages waiting behind the running one
        self._lock = threading.Lock()
        self._stopping = False
        self.threads = [
            threading.Thread(target=self._work, name=f"logstore-consumer-{consumer.group}-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self.threads:
            thread.start()

    def _lane(self, message: ConsumerMessage) -> tuple | None:
        if self._key_ordered:
            key = message.key
            return None if key is None else (message[0], message[1], key)
        return (message[0], message[1])

    def submit(self, message: ConsumerMessage) -> None:
        lane = self._lane(message)
        if lane is not None:
            with self._lock:
                waiting = self._lanes.get(lane)
                if waiting is not None:
                    waiting.append(message)
                    return
                self._lanes[lane] = deque()
        self._ready.put((message, lane))

    def _work(self) -> None:
        get = self._ready.get
        callback = self._callback
        while True:
            item = get()
            if item is self._STOP:
                return
            if self._stopping:
                continue  # left unacked: the broker delivers it again
            message, lane = item
            try:
                callback(message)
            except Exception as exc:
                _LOGGER.warning(
                    "callback failed on %s/%d offset %d (attempt %d), nacking it: %r",
                    message[0], message[1], message[2], message[9], exc,
                    exc_info=_LOGGER.isEnabledFor(logging.DEBUG),
                )
                message.nack(reason=repr(exc))
            else:
                message.ack()
            if lane is not None:
                with self._lock:
                    waiting = self._lanes[lane]
                    if waiting:
                        self._ready.put((waiting.popleft(), lane))
                    else:
                        del self._lanes[lane]

    def stop(self, deadline: float) -> None:
        """Start no more callbacks; wait for the running ones until ``deadline``."""
        self._stopping = True
        for _ in self.threads:
            self._ready.put(self._STOP)
        current = threading.current_thread()
        for thread in self.threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive() and t is not current]
        if stuck:
            _LOGGER.warning("consumer workers still running a callback after the close timeout: %s", ", ".join(stuck))


class Consumer:
    """A member of a consumer group; see the module docstring.

    Parameters:
        broker: ``HOST:PORT`` of the broker, or an open ``grpc.Channel`` (which
            the consumer uses but does not close).
        group: the group to join; created if it does not exist.
        topics: a topic name or a list of them.
        max_in_flight: the most records delivered and not yet acked or nacked.
        ack_deadline_ms: how long a record may stay unacked before the broker
            delivers it again (the visibility timeout).
        delivery_mode: ``"partition_ordered"`` or ``"key_ordered"``.
        start: where a new group starts on partitions it has no committed
            offset for: ``"earliest"``, ``"latest"``, a timestamp (epoch ms)
            or a ``datetime``.
        guarantee: ``"at_least_once"`` or ``"at_most_once"``.
        session_timeout_ms: how long the member may stay silent before the
            broker removes it; the consumer heartbeats every third of it.
        client_id: a name shown by ``DescribeGroup``.
        retry_policies: ``{topic: RetryPolicy}`` to store for the group
            before joining (see the module docstring); each topic must be
            one of ``topics``.  Topics left out keep the policy they have.
        ack_flush_ms: how long acks may wait to be coalesced into one request.
        timeout: how long to wait for the broker to answer the join, in seconds.
        tls: connect with TLS (``ClientTLS``); plaintext when None.
        token: a bearer token sent on every call, for brokers that check tokens.

    Ranges of the numeric options are checked by the broker, whose
    ``InvalidArgument`` names the field and the accepted range.
    """

    def __init__(
        self,
        broker: str | grpc.Channel | None = "127.0.0.1:50051",
        group: str = "",
        topics: str | Iterable[str] = (),
        *,
        max_in_flight: int = 1000,
        ack_deadline_ms: int = 30_000,
        delivery_mode: str = "partition_ordered",
        start: str | int | datetime = "latest",
        guarantee: str = "at_least_once",
        session_timeout_ms: int = 30_000,
        client_id: str = "",
        retry_policies: Mapping[str, RetryPolicy] | None = None,
        ack_flush_ms: float = 5,
        timeout: float = 30.0,
        tls: ClientTLS | None = None,
        token: str | None = None,
    ) -> None:
        if not isinstance(group, str) or not group:
            raise InvalidArgument("Consumer needs a group name")
        topic_list = [topics] if isinstance(topics, str) else list(topics)
        if not topic_list or not all(isinstance(t, str) and t for t in topic_list):
            raise InvalidArgument(f"Consumer needs one or more topic names, got {topics!r}")
        if isinstance(ack_flush_ms, bool) or not isinstance(ack_flush_ms, (int, float)) or ack_flush_ms < 0:
            raise InvalidArgument(f"ack_flush_ms must be a number of milliseconds >= 0, got {ack_flush_ms!r}")
        if not isinstance(client_id, str):
            raise InvalidArgument(f"client_id must be a str, got {client_id!r}")
        mode = _choice("delivery_mode", delivery_mode, DELIVERY_MODES)
        policies = _topic_retry_policies(retry_policies)
        join = groups_pb2.Join(
            group=group,
            topics=topic_list,
            max_in_flight_records=_option("max_in_flight", max_in_flight),
            ack_deadline_ms=_option("ack_deadline_ms", ack_deadline_ms),
            delivery_mode=mode,
            start_position=_start_position(start),
            session_timeout_ms=_option("session_timeout_ms", session_timeout_ms),
            delivery_guarantee=_choice("guarantee", guarantee, GUARANTEES),
            client_id=client_id,
            retry_policies=policies,
        )
        self.group = group
        self.topics = tuple(topic_list)
        self.delivery_mode = delivery_mode.lower()
        if isinstance(broker, grpc.Channel):
            self._channel, self.target, self._owns_channel = broker, "the given channel", False
        else:
            self._channel, self.target = open_channel(broker, tls=tls, token=token)
            self._owns_channel = True
        self._ack_flush_s = ack_flush_ms / 1000.0
        self._flush_records = max(1, (max_in_flight or _DEFAULT_MAX_IN_FLIGHT) // 2)
        self._heartbeat_s = (session_timeout_ms or _DEFAULT_SESSION_TIMEOUT_MS) / 3000.0

        # State shared with the receiver and sender threads, under _lock.
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)  # the sender waits on it
        self._member_id = ""
        self._generation = 0
        self._assignment: frozenset[tuple[str, int]] = frozenset()
        self._committed: dict[tuple[str, int], int] = {}
        self._stale_count = 0
        self._error_count = 0
        self._revoked: dict[tuple[str, int], int] = {}  # partition -> times it was taken away
        self._acks: list[tuple[int, int]] = []  # id runs to ack
        self._ack_ids: list[int] = []  # single ids to ack (ConsumerMessage.ack)
        self._acked_records = 0  # records in _acks and _ack_ids
        self._nacks: dict[tuple[str, bool], list[tuple[int, int]]] = {}  # (reason, terminal) -> id runs
        self._extends: dict[int, list[tuple[int, int]]] = {}  # extension_ms -> id runs
        self._pending_since: float | None = None  # when the oldest unsent answer was buffered
        self._last_sent = time.monotonic()
        self._accepting = True  # False once the final flush was taken: later answers are dropped
        self._leaving = False  # close() asked the sender for the final flush and the leave
        self._stream_ended = False
        self._closing = False
        self._shutdown_started = False
        self._error: LogstoreError | None = None
        self._run_pool: _WorkerPool | None = None
        self._run_finished = threading.Event()
        self._run_finished.set()
        self._joined = threading.Event()
        self._ended = threading.Event()
        self._closed = threading.Event()

        self._deliveries: queue.SimpleQueue = queue.SimpleQueue()
        self._wait: float | None = None  # how long the next delivery read may block (poll's timeout)
        self._units = self._take_deliveries()
        self._current: tuple[_Delivery, Iterator[int]] | None = None  # the delivery the message iterator is in
        self._messages: Iterator[ConsumerMessage] = chain.from_iterable(self._message_iterators())

        self._requests = _RequestQueue()
        self._requests.put(groups_pb2.ConsumeRequest(join=join))
        self._call = groups_pb2_grpc.GroupsStub(self._channel).Consume(self._requests)
        self._receiver = threading.Thread(
            target=self._receive, name=f"logstore-consumer-{group}-receiver", daemon=True
        )
        self._sender = threading.Thread(target=self._send, name=f"logstore-consumer-{group}-sender", daemon=True)
        self._receiver.start()
        if not self._joined.wait(timeout):
            self._call.cancel()
            self._abandon()
            err = LogstoreError(f"broker {self.target} did not answer the join of group {group!r} within {timeout} s")
            err.grpc_status = "DEADLINE_EXCEEDED"
            raise err
        if self._error is not None:
            self._abandon()
            raise self._error
        self._sender.start()

    def _abandon(self) -> None:
        """Clean up after a failed join (the sender never started)."""
        self._closing = True
        self._requests.put(None)
        self._receiver.join(_CLOSE_TIMEOUT_S)
        if self._owns_channel:
            self._channel.close()
        self._closed.set()

    # -- state --------------------------------------------------------------------

    @property
    def member_id(self) -> str:
        """The member id the broker gave this consumer."""
        return self._member_id

    @property
    def generation(self) -> int:
        """The group's generation in the broker's latest answer."""
        return self._generation

    @property
    def assignment(self) -> frozenset[tuple[str, int]]:
        """The ``(topic, partition)`` pairs this member owns, as of the broker's latest answer."""
        return self._assignment

    @property
    def committed(self) -> dict[tuple[str, int], int]:
        """The latest committed offset the broker reported per ``(topic, partition)``."""
        with self._lock:
            return dict(self._committed)

    @property
    def stale_count(self) -> int:
        """How many acked, nacked or extended ids the broker reported stale."""
        return self._stale_count

    @property
    def error_count(self) -> int:
        """How many problems the broker reported in ``ConsumeResponse.errors``."""
        return self._error_count

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closing

    # -- consuming ----------------------------------------------------------------

    def __iter__(self) -> Iterator[ConsumerMessage]:
        """The messages, blocking for the next one; ends when the consumer is closed."""
        if self._error is not None and not self._closing:
            return _raising(self._error)
        return self._messages

    def __next__(self) -> ConsumerMessage:
        for message in self._messages:
            return message
        self._raise_if_failed()
        raise StopIteration

    def poll(self, timeout: float | None = 1.0) -> ConsumerMessage | None:
        """The next message, or None if none arrived within ``timeout`` seconds
        (or the consumer is closed)."""
        self._wait = timeout
        try:
            message = next(self._messages, None)
        finally:
            self._wait = None
        if message is None:
            self._raise_if_failed()
        return message

    def poll_batch(self, timeout: float | None = 1.0) -> DeliveryBatch | None:
        """The next whole delivery (or the rest of the one the message iterator
        is in), or None if none arrived within ``timeout`` seconds."""
        self._wait = timeout
        try:
            batch = self._next_batch()
        finally:
            self._wait = None
        return None if batch is _END else batch  # type: ignore[return-value]

    def batches(self) -> Iterator[DeliveryBatch]:
        """The deliveries as ``DeliveryBatch`` objects, blocking for the next one;
        ends when the consumer is closed."""
        while True:
            batch = self._next_batch()
            if batch is _END:
                return
            yield batch  # type: ignore[misc]

    def _next_batch(self) -> DeliveryBatch | object | None:
        current = self._current
        if current is not None:
            self._current = None
            delivery, offsets = current
            left = length_hint(offsets)
            if left:
                deque(offsets, maxlen=0)  # the message iterator of this delivery now ends
                return DeliveryBatch(delivery, delivery.count - left, delivery.count)
        delivery = next(self._units, _END)
        if delivery is _END:
            self._raise_if_failed()
            return _END
        if delivery is None:
            return None
        return DeliveryBatch(delivery, 0, delivery.count)  # type: ignore[arg-type]

    def _raise_if_failed(self) -> None:
        if self._error is not None and not self._closing:
            raise self._error

    def _message_iterators(self) -> Iterator[Iterable[ConsumerMessage]]:
        for delivery in self._units:
            if delivery is None:
                yield _NOTHING_YET  # type: ignore[misc]
                continue
            offsets = delivery.offsets_iter(0, delivery.count)
            self._current = (delivery, offsets)
            yield delivery.messages(offsets, 0)
        self._current = None

    def _take_deliveries(self) -> Iterator[_Delivery | None]:
        """Deliveries in arrival order, or None when ``self._wait`` ran out first;
        ends when the consumer is closed, raises the stream's error."""
        get = self._deliveries.get
        revoked = self._revoked
        while not self._closing:
            if self._error is not None:
                raise self._error
            try:
                item = get(timeout=self._wait)
            except queue.Empty:
                yield None
                continue
            if item is _WAKE:
                continue
            if item.epoch != revoked.get((item.topic, item.partition), 0):
                _LOGGER.debug(
                    "dropping a delivery of %d record(s) of %s/%d: the partition was reassigned",
                    item.count, item.topic, item.partition,
                )
                continue
            if self._closing or self._error is not None:
                continue  # the loop condition ends it or raises
            yield item

    def run(self, callback: Callable[[ConsumerMessage], object], workers: int = 8) -> None:
        """Call ``callback(message)`` for every message on a pool of ``workers``
        threads; ack on return, nack on an exception (see the module docstring
        for ordering).  A callback may answer its message itself (ack, nack,
        extend); run's own answer is then a no-op.  Returns when ``close()`` is
        called, from the callback or another thread; raises the stream's error
        if it fails."""
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidArgument(f"workers must be a whole number >= 1, got {workers!r}")
        with self._lock:
            if self._closing:
                raise FailedPrecondition("this consumer is closed; make a new one to consume again")
            if self._run_pool is not None:
                raise FailedPrecondition("run() is already running on this consumer")
            self._run_finished.clear()
            pool = self._run_pool = _WorkerPool(self, callback, workers, self.delivery_mode == "key_ordered")
        try:
            for message in self:
                pool.submit(message)
        finally:
            pool.stop(time.monotonic() + _CLOSE_TIMEOUT_S)
            with self._lock:
                self._run_pool = None
            self._run_finished.set()
            if self._closing:
                self._shutdown(time.monotonic() + _CLOSE_TIMEOUT_S)

    # -- answering ----------------------------------------------------------------

    def _settle(self, delivery: _Delivery, lo: int, hi: int, nack_reason: str | None, terminal: bool = False) -> None:
        """Ack (``nack_reason`` None) or nack the unsettled records ``[lo, hi)`` of a delivery."""
        with self._lock:
            self._settle_locked(delivery, lo, hi, nack_reason, terminal)

    def _settle_locked(
        self, delivery: _Delivery, lo: int, hi: int, nack_reason: str | None, terminal: bool = False
    ) -> None:
        if not self._accepting:
            _LOGGER.debug("dropping an answer for %d record(s): the consumer is closed", hi - lo)
            return
        runs = delivery.unsettled_runs(lo, hi)
        if not runs:
            return
        delivery.mark_settled(lo, hi)
        if nack_reason is None:
            self._acks.extend(runs)
            before = self._acked_records
            self._acked_records = after = before + sum(b - a for a, b in runs)
            if before < self._flush_records <= after:
                self._wakeup.notify()
        else:
            self._nacks.setdefault((nack_reason, terminal), []).extend(runs)
        self._buffered_locked()

    def _ack_one(self, delivery: _Delivery, index: int) -> None:
        """Ack record ``index`` of a delivery: ``_settle`` for one record, cheaper."""
        with self._lock:
            if not self._accepting:
                _LOGGER.debug("dropping an ack: the consumer is closed")
                return
            settled = delivery.settled
            if settled is None:
                settled = delivery.settled = bytearray(delivery.count)
            elif settled[index]:
                return
            settled[index] = 1
            self._ack_ids.append(delivery.first_id + index)
            self._acked_records += 1
            if self._acked_records == self._flush_records:
                self._wakeup.notify()
            if self._pending_since is None:
                self._pending_since = time.monotonic()
                self._wakeup.notify()

    def _extend(self, delivery: _Delivery, lo: int, hi: int, ms: int) -> None:
        with self._lock:
            if not self._accepting:
                return
            runs = delivery.unsettled_runs(lo, hi)
            if runs:
                self._extends.setdefault(ms, []).extend(runs)
                self._buffered_locked()

    def _buffered_locked(self) -> None:
        if self._pending_since is None:
            self._pending_since = time.monotonic()
            self._wakeup.notify()

    def _take_requests_locked(self, leave: bool) -> list[groups_pb2.ConsumeRequest]:
        """The buffered answers as requests (extensions first, so that an ack in
        the same flush does not make them stale), and empties the buffers."""
        requests = [
            groups_pb2.ConsumeRequest(
                extend_deadline=groups_pb2.ExtendDeadline(ids=_delivery_ids(runs), extension_ms=ms)
            )
            for ms, runs in self._extends.items()
        ]
        main = groups_pb2.ConsumeRequest()
        if self._acks or self._ack_ids:
            main.ack.CopyFrom(_delivery_ids(self._acks, self._ack_ids))
        # One Nack per (reason, terminal): a request carries one nack, and its
        # terminal flag covers all its ids.
        nacks = [
            groups_pb2.Nack(ids=_delivery_ids(runs), reason=reason, terminal=terminal)
            for (reason, terminal), runs in self._nacks.items()
        ]
        if nacks:
            main.nack.CopyFrom(nacks.pop(0))
        if main.HasField("ack") or main.HasField("nack"):
            requests.append(main)
        requests.extend(groups_pb2.ConsumeRequest(nack=nack) for nack in nacks)
        if leave:
            if requests:
                requests[-1].leave = True
            else:
                requests.append(groups_pb2.ConsumeRequest(leave=True))
        self._acks = []
        self._ack_ids = []
        self._acked_records = 0
        self._nacks = {}
        self._extends = {}
        self._pending_since = None
        return requests

    # -- threads ------------------------------------------------------------------

    def _send(self) -> None:
        try:
            self._send_loop()
        except Exception:  # pragma: no cover - a bug; make it visible
            _LOGGER.exception("the consumer's sender thread of group %r died", self.group)
            self._call.cancel()

    def _send_loop(self) -> None:
        flush_s = self._ack_flush_s
        while True:
            leave = False
            with self._wakeup:
                while True:
                    if self._stream_ended:
                        return
                    now = time.monotonic()
                    if self._leaving:
                        self._accepting = False
                        requests = self._take_requests_locked(leave=True)
                        leave = True
                        break
                    since = self._pending_since
                    if since is not None:
                        due = since + flush_s
                        if now >= due or self._acked_records >= self._flush_records:
                            requests = self._take_requests_locked(leave=False)
                            break
                        self._wakeup.wait(due - now)
                        continue
                    due = self._last_sent + self._heartbeat_s
                    if now >= due:
                        requests = [groups_pb2.ConsumeRequest()]  # a heartbeat
                        break
                    self._wakeup.wait(due - now)
                self._last_sent = now
            for request in requests:
                self._requests.put(request)
            if leave:
                self._requests.put(None)  # half-close: the broker ends the stream with OK
                return

    def _receive(self) -> None:
        error: LogstoreError | None = None
        try:
            for response in self._call:
                self._on_response(response)
            if not self._joined.is_set():
                error = LogClosed(f"broker {self.target} ended the consume stream without answering the join")
            elif not self._closing:
                error = LogClosed(f"broker {self.target} ended the consume stream of group {self.group!r}")
        except grpc.RpcError as exc:
            if not (self._closing and exc.code() is grpc.StatusCode.CANCELLED):
                error = translate_rpc_error(exc, self.target)
        except Exception as exc:  # pragma: no cover - a bug; report it to the iterating thread
            _LOGGER.exception("the consumer's receiver thread of group %r failed", self.group)
            error = LogstoreError(f"reading the consume stream of group {self.group!r} failed: {exc!r}")
        with self._wakeup:
            self._stream_ended = True
            self._accepting = False
            if error is not None and self._error is None and not self._closing:
                self._error = error
            self._wakeup.notify_all()
        if error is not None and not self._closing and self._joined.is_set():
            _LOGGER.warning("the consume stream of group %r failed: %s", self.group, error.message)
        self._requests.put(None)  # ends gRPC's request iterator if it is still waiting
        self._joined.set()
        self._ended.set()
        self._deliveries.put(_WAKE)

    def _on_response(self, response: groups_pb2.ConsumeResponse) -> None:
        stale = _count_ids(response.stale) if response.HasField("stale") else 0
        errors = response.errors
        with self._lock:
            if response.member_id:
                self._member_id = response.member_id
            self._generation = response.generation
            assignment = frozenset([(tp.topic, tp.partition) for tp in response.assignment])
            if assignment != self._assignment:
                for tp in self._assignment - assignment:
                    self._revoked[tp] = self._revoked.get(tp, 0) + 1
                self._assignment = assignment
            for position in response.committed:
                self._committed[(position.topic, position.partition)] = position.offset
            self._stale_count += stale
            self._error_count += len(errors)
        self._joined.set()
        if stale:
            _LOGGER.info("broker reported %d stale delivery id(s) on group %r", stale, self.group)
        for status in errors:
            _LOGGER.warning(
                "broker refused part of a request on the consume stream of group %r: %s",
                self.group, error_from_status(status.code, status.message).message,
            )
        if response.deliveries:
            revoked = self._revoked
            put = self._deliveries.put
            for delivery in response.deliveries:
                put(_Delivery(self, delivery, revoked.get((delivery.topic, delivery.partition), 0)))

    # -- lifecycle ----------------------------------------------------------------

    def close(self, timeout: float | None = _CLOSE_TIMEOUT_S) -> None:
        """Leave the group: flush buffered acks, send ``leave``, end the stream,
        stop the threads.  Idempotent; returns within about ``timeout`` seconds
        even if the broker does not answer.  Called from a ``run()`` callback,
        it returns at once and ``run()`` finishes the close once the running
        callbacks (this one too) have returned."""
        deadline = time.monotonic() + (_CLOSE_TIMEOUT_S if timeout is None else timeout)
        with self._lock:
            self._closing = True
            pool = self._run_pool
        self._deliveries.put(_WAKE)  # wake a thread blocked in next()/poll()
        current = self._current
        if current is not None:  # the message iterator hands out nothing more of its delivery
            deque(current[1], maxlen=0)
        if pool is not None:
            if threading.current_thread() in pool.threads:
                return
            self._run_finished.wait(max(0.0, deadline - time.monotonic()))
        self._shutdown(deadline)

    def _shutdown(self, deadline: float) -> None:
        with self._wakeup:
            if self._shutdown_started:
                first = False
            else:
                first = self._shutdown_started = True
                self._leaving = True
                self._wakeup.notify_all()
        if not first:
            self._closed.wait(max(0.0, deadline - time.monotonic()))
            return
        try:
            if self._sender.is_alive():
                self._sender.join(max(0.0, deadline - time.monotonic()))
            # After the leave the broker ends the stream with OK; wait for that.
            if not self._ended.wait(max(0.0, deadline - time.monotonic())):
                _LOGGER.warning("broker %s did not end the consume stream in time; cancelling it", self.target)
                self._call.cancel()
            self._receiver.join(max(0.1, deadline - time.monotonic()))
            self._requests.put(None)
            if self._owns_channel:
                self._channel.close()
        finally:
            self._closed.set()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Consumer(broker={self.target!r}, group={self.group!r}, topics={list(self.topics)!r}, member_id={self._member_id!r})"


def _raising(error: LogstoreError) -> Iterator[ConsumerMessage]:
    raise error
    yield  # pragma: no cover - makes this a generator
