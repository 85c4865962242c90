"""Reading a topic: replay from a position, then optionally follow the log as it grows.

``Reader`` opens one ``Subscribe`` stream per partition, each drained by a
background thread into one bounded queue of parsed responses, and yields
``Message`` objects; ``Reader.batches()`` yields ``MessageBatch`` objects
instead, for consumers that work a batch at a time.  Batches arrive whole,
so the reader drops records below the start offset and at or past the stop
offset itself; record ``i`` of a batch has offset ``base_offset + i``.

Start positions: ``"earliest"``, ``"latest"``, an offset (``int``), a time
(``datetime``, or ``("timestamp", ms)``), or a dict giving one of those per
partition.  Stop positions: ``None`` (never), an offset (exclusive), or a
time (the first record at or after it is not delivered).  With
``follow=False`` the reader also stops at the log end offsets it finds when
it starts, so it finishes once it has read what was there.

Ordering: records of one partition come in offset order with no gap and no
repeat; records of different partitions are interleaved in arrival order
(a response's batches at a time).

Cost: the stream threads only receive and parse responses (a Python step
per response and per batch, none per record).  A message is made when the
iteration reaches it, by C code only, as a view over its parsed record (see
``Message``), and can be freed as soon as the caller drops it, so a caller
that does not keep messages never wakes the cyclic garbage collector.
``benchmarks/broker_bench.py`` measures the replay rate.

What the reader does not do: consumer groups or committed offsets, noticing
partitions added after it started, or recovering from errors.  When a
stream fails (the topic is deleted, retention overtakes a slow reader with
``OffsetOutOfRange``, the broker goes away) iteration raises that error and
the reader closes its other streams.  It is not safe to iterate one reader
from several threads at once (``close()`` may be called from any thread).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from datetime import datetime
from itertools import chain
from operator import length_hint
from typing import Iterable, Iterator, Mapping, Union

import grpc

from logstore.client._channel import ClientTLS, call_unary, open_channel, translate_rpc_error
from logstore.client.admin import Admin, to_epoch_ms
from logstore.client.messages import Message, MessageBatch, record_messages
from logstore.errors import InvalidArgument, LogstoreError
from logstore._proto.logstore.v1 import log_pb2, log_pb2_grpc, records_pb2

_LOGGER = logging.getLogger(__name__)

__all__ = ["Reader", "fetch", "decode_batches", "slice_batches", "StartSpec", "StopSpec"]

StartSpec = Union[str, int, datetime, tuple]
StopSpec = Union[None, int, datetime, tuple]

_QUEUE_CHUNKS = 32  # responses buffered between the stream threads and the iterating thread
_PUT_POLL_S = 0.1  # how often a blocked stream thread checks whether the reader was closed
_LOG_APPEND_TIME = records_pb2.TIMESTAMP_TYPE_LOG_APPEND_TIME


def slice_batches(
    topic: str,
    partition: int,
    batches: Iterable[records_pb2.RecordBatch],
    low: int = 0,
    high: int | None = None,
) -> list[MessageBatch]:
    """The records of ``batches`` with offsets in ``[low, high)``, one ``MessageBatch``
    per batch that has any.  Python work per batch, none per record (a cut batch
    copies the record references it keeps into a list).

    A batch whose ``timestamp_type`` is LOG_APPEND_TIME gives every record the
    batch's ``max_timestamp_ms`` (the broker's append time), as Kafka does.
    """
    out: list[MessageBatch] = []
    for batch in batches:
        base = batch.base_offset
        records = batch.records
        count = len(records)
        first = low - base if low > base else 0
        last = count if high is None else min(count, high - base)
        if first >= last:
            if high is not None and base >= high:
                break
            continue
        if first or last < count:
            records = records[first:last]
        append_time = batch.max_timestamp_ms if batch.timestamp_type == _LOG_APPEND_TIME else None
        out.append(MessageBatch(topic, partition, base + first, records, append_time))
    return out


def decode_batches(
    topic: str,
    partition: int,
    batches: Iterable[records_pb2.RecordBatch],
    low: int = 0,
    high: int | None = None,
) -> list[Message]:
    """The records of ``batches`` with offsets in ``[low, high)`` as ``Message`` objects
    (see ``slice_batches``; the messages are views over the records)."""
    return list(chain.from_iterable(slice_batches(topic, partition, batches, low, high)))


def _timestamp_spec(spec: object) -> int | None:
    """Epoch ms for a time-like spec (datetime or ("timestamp", ms)), else None."""
    if isinstance(spec, datetime):
        return to_epoch_ms(spec)
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "timestamp":
        ms = spec[1]
        if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
            raise InvalidArgument(f"a ('timestamp', ms) position needs ms >= 0 as an int, got {ms!r}")
        return ms
    return None


def _apply_start(request: log_pb2.SubscribeRequest, start: object) -> None:
    ms = _timestamp_spec(start)
    if ms is not None:
        request.start_timestamp_ms = ms
    elif start == "earliest":
        request.start_position = log_pb2.LOG_POSITION_EARLIEST
    elif start == "latest":
        request.start_position = log_pb2.LOG_POSITION_LATEST
    elif isinstance(start, int) and not isinstance(start, bool):
        if start < 0:
            raise InvalidArgument(f"a start offset must be >= 0, got {start}")
        request.start_offset = start
    else:
        raise InvalidArgument(
            f"start {start!r} is not known: use 'earliest', 'latest', an offset, a datetime, "
            "('timestamp', ms) or a dict of those by partition"
        )


def _check_stop(stop: object) -> None:
    if stop is None or _timestamp_spec(stop) is not None:
        return
    if isinstance(stop, int) and not isinstance(stop, bool):
        if stop < 0:
            raise InvalidArgument(f"a stop offset must be >= 0, got {stop}")
        return
    raise InvalidArgument(f"stop {stop!r} is not known: use None, an offset, a datetime or ('timestamp', ms)")


class _Done:
    __slots__ = ("partition",)

    def __init__(self, partition: int) -> None:
        self.partition = partition


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: LogstoreError) -> None:
        self.error = error


_CLOSED = object()  # put in the queue by close() to wake the iterating thread
_NOTHING_YET = (None,)  # what the message iterator yields when a poll's timeout passes first


def _raising(error: LogstoreError) -> Iterator[Message]:
    raise error
    yield  # pragma: no cover - makes this a generator


class Reader:
    """Iterates the records of a topic's partitions; see the module docstring.

    Parameters:
        broker: ``HOST:PORT`` of the broker.
        topic: the topic to read.
        partitions: the partitions to read (an int or an iterable); ``None``
            reads every partition the topic has when the reader starts.
        start: where to start (see the module docstring); ``"earliest"`` by default.
        stop: where to stop, exclusive; ``None`` never stops (unless ``follow`` is False).
        follow: keep waiting for new records at the log end (``True``), or
            finish at the log end found when the reader started.
        max_bytes: a soft limit on the bytes of one stream response (0: the broker's default).

    Streams open on the first ``next()``/``poll()``/``batches()`` step
    (``poll(0)`` opens them without waiting for records), which returns only
    once the broker has resolved every partition's start: with
    ``start="latest"`` every record appended after that call is delivered.
    ``close()`` (or leaving a ``with`` block) cancels them.

    ``iter(reader)``, ``next(reader)``, ``poll()`` and ``batches()`` share one
    position: each record is delivered once, through whichever asks first.
    ``iter(reader)`` returns an iterator over the reader's messages (not the
    reader itself), which runs no Python code per message.

    ``tls`` (a ``ClientTLS``) and ``token`` connect to a broker that serves
    TLS or checks tokens.
    """

    def __init__(
        self,
        broker: str | None = "127.0.0.1:50051",
        topic: str = "",
        *,
        partitions: int | Iterable[int] | None = None,
        start: StartSpec | Mapping[int, StartSpec] = "earliest",
        stop: StopSpec = None,
        follow: bool = True,
        max_bytes: int = 0,
        timeout: float = 30.0,
        tls: ClientTLS | None = None,
        token: str | None = None,
    ) -> None:
        if not topic:
            raise InvalidArgument("Reader needs a topic name")
        self.topic = topic
        self._channel, self.target = open_channel(broker, tls=tls, token=token)
        self._log = log_pb2_grpc.LogStub(self._channel)
        self._admin = Admin(_channel=(self._channel, self.target), timeout=timeout)
        self._timeout = timeout
        if partitions is None:
            self._partitions: list[int] | None = None
        elif isinstance(partitions, int):
            self._partitions = [partitions]
        else:
            self._partitions = sorted(set(partitions))
        if isinstance(start, Mapping) and self._partitions is None:
            self._partitions = sorted(start)  # a start per partition names the partitions
        starts = start.values() if isinstance(start, Mapping) else [start]
        for spec in starts:  # validate now, not in a background thread
            _apply_start(log_pb2.SubscribeRequest(), spec)
        _check_stop(stop)
        self._start = start
        self._stop = stop
        self._follow = follow
        self._max_bytes = max_bytes
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._lock = threading.Lock()
        self._calls: list[grpc.Call] = []
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False
        self._running = 0  # partition streams not finished yet
        self._error: LogstoreError | None = None
        self._wait: float | None = None  # how long the next queue read may block (poll's timeout)
        self._units = self._take_batches()  # every consumer below reads from this one generator
        # The current batch being turned into messages, and the iterator of its
        # offsets not delivered yet (the message iterator stops when it runs out).
        self._current: tuple[MessageBatch, Iterator[int]] | None = None
        self._messages: Iterator[Message] = chain.from_iterable(self._message_iterators())
        self.start_offsets: dict[int, int] = {}
        """The offset each partition's stream started at, as the broker resolved
        the start position; filled in when the streams open (the first ``next()``)."""

    # -- iteration ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Message]:
        if self._error is not None:  # the message iterator ended with it; raise it again
            return _raising(self._error)
        return self._messages

    def __next__(self) -> Message:
        for message in self._messages:
            return message
        if self._error is not None:
            raise self._error
        raise StopIteration

    def poll(self, timeout: float | None = None) -> Message | None:
        """The next message, or None if none arrived within ``timeout`` seconds
        (or the reader has finished; see ``finished``)."""
        self._wait = timeout
        try:
            message = next(self._messages, None)
        finally:
            self._wait = None
        if message is None and self._error is not None:
            raise self._error
        return message

    def batches(self) -> Iterator[MessageBatch]:
        """The records still to be read, a batch at a time: each ``MessageBatch``
        holds consecutive records of one partition as they were appended together
        (see ``MessageBatch``), with no Python object made per record.  Blocks like
        iterating the reader; shares its position with it (a batch the message
        iterator has started yields its rest first)."""
        current = self._current
        if current is not None:
            batch, offsets = current
            left = length_hint(offsets)
            if left:
                deque(offsets, maxlen=0)  # the message iterator of this batch now ends
                done = len(batch.records) - left
                yield MessageBatch(
                    batch.topic, batch.partition, batch.offset + done, batch.records[done:], batch.log_append_time_ms
                )
        self._current = None
        for batch in self._units:
            if batch is not None:
                yield batch
        if self._error is not None:
            raise self._error

    @property
    def finished(self) -> bool:
        """True once every partition reached its stop (or the reader was closed)
        and every message was delivered."""
        if self._closed:
            return True
        return self._started and self._running == 0 and self._queue.empty()

    def _message_iterators(self) -> Iterator[Iterable[Message]]:
        """One iterator of messages per batch, for ``chain``: after the first
        step of each batch, handing out its messages runs only C code."""
        for batch in self._units:
            if batch is None:
                yield _NOTHING_YET
                continue
            offsets = iter(range(batch.offset, batch.offset + len(batch.records)))
            self._current = (batch, offsets)
            yield record_messages(batch.topic, batch.partition, offsets, batch.records, batch.log_append_time_ms)
        self._current = None

    def _take_batches(self) -> Iterator[MessageBatch | None]:
        """The batches in arrival order, or None when ``self._wait`` ran out first;
        ends when every stream finished or the reader was closed, raises a
        stream's error."""
        if self._closed:
            return
        if not self._started:
            try:
                self._begin()
            except LogstoreError as exc:
                self._error = exc
                self.close()
                raise
        get = self._queue.get
        while self._running > 0 or not self._queue.empty():
            try:
                item = get(timeout=self._wait)
            except queue.Empty:
                yield None
                continue
            if type(item) is list:
                for batch in item:
                    if self._closed:
                        return
                    yield batch
                continue
            if type(item) is _Done:
                self._running -= 1
                continue
            if item is _CLOSED:
                return
            assert type(item) is _Failed
            self._error = item.error
            self.close()
            raise item.error

    # -- streams ------------------------------------------------------------------

    def _begin(self) -> None:
        self._started = True
        partitions = self._partitions
        if partitions is None:
            partitions = list(range(self._admin.describe_topic(self.topic).partition_count))
        stops: dict[int, int | None] = {p: None for p in partitions}
        stop_ms = _timestamp_spec(self._stop)
        if isinstance(self._stop, int) and not isinstance(self._stop, bool):
            stops = {p: self._stop for p in partitions}
        if not self._follow:
            if stop_ms is not None:
                found = self._admin.list_offsets(self.topic, partitions, stop_ms)
                stops = {p: found[p].offset for p in partitions}
                stop_ms = None
            ends = self._admin.list_offsets(self.topic, partitions, "latest")
            stops = {p: ends[p].offset if stops[p] is None else min(stops[p], ends[p].offset) for p in partitions}
        requests = []
        for p in partitions:
            request = log_pb2.SubscribeRequest(topic=self.topic, partition=p, max_bytes=self._max_bytes)
            start = self._start.get(p, "earliest") if isinstance(self._start, Mapping) else self._start
            _apply_start(request, start)
            if stops[p] is not None:
                request.stop_offset = stops[p]
            elif stop_ms is not None:
                request.stop_timestamp_ms = stop_ms
            requests.append(request)
        self._running = len(requests)
        ready = []
        for request in requests:
            event = threading.Event()
            ready.append(event)
            thread = threading.Thread(
                target=self._run_stream,
                args=(request, event),
                name=f"logstore-reader-{self.topic}-{request.partition}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        # Wait for every stream's first answer, which fixes its start offset: a
        # record appended after this returns is always delivered, and a bad
        # start fails the first next() rather than some later one.
        deadline = time.monotonic() + self._timeout
        for event in ready:
            event.wait(max(0.0, deadline - time.monotonic()))

    def _run_stream(self, request: log_pb2.SubscribeRequest, ready: threading.Event) -> None:
        partition = request.partition
        topic = self.topic
        low = 0
        high = request.stop_offset if request.HasField("stop_offset") else None
        try:
            call = self._log.Subscribe(request)
            with self._lock:
                self._calls.append(call)
                if self._closed:
                    call.cancel()
            for response in call:
                if response.HasField("start_offset"):
                    low = response.start_offset
                    self.start_offsets[partition] = low
                    ready.set()
                if response.HasField("stop_offset"):
                    high = response.stop_offset if high is None else min(high, response.stop_offset)
                if response.batches:
                    batches = slice_batches(topic, partition, response.batches, low, high)
                    if batches and not self._put(batches):
                        return
            self._put(_Done(partition))
        except grpc.RpcError as exc:
            if not self._closed:
                self._put(_Failed(translate_rpc_error(exc, self.target)))
        except Exception as exc:  # pragma: no cover - a bug; report it to the reader
            _LOGGER.exception("reader stream for %s/%d failed", topic, partition)
            self._put(_Failed(LogstoreError(f"reading {topic}/{partition} failed: {exc!r}")))
        finally:
            ready.set()

    def _put(self, item: object) -> bool:
        """Queue an item, waiting for room; False once the reader is closed."""
        while not self._closed:
            try:
                self._queue.put(item, timeout=_PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    # -- one-shot reads -----------------------------------------------------------

    def fetch(
        self, topic: str, partition: int, offset: int, max_bytes: int = 1 << 20, max_wait_ms: int = 0
    ) -> list[Message]:
        """One ``Fetch``: the records of ``topic``/``partition`` from ``offset`` on
        (whole batches, trimmed to start at ``offset``), waiting up to
        ``max_wait_ms`` if there are none yet.  An empty list means none arrived."""
        request = log_pb2.FetchRequest(
            topic=topic, partition=partition, offset=offset, max_bytes=max_bytes, max_wait_ms=max_wait_ms
        )
        response = call_unary(self._log.Fetch, request, self.target, self._timeout + max_wait_ms / 1000.0)
        return decode_batches(topic, partition, response.batches, offset)

    # -- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """Cancel the streams, stop the threads and close the channel.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            calls = list(self._calls)
        for call in calls:
            call.cancel()
        try:  # wake a thread blocked in next()/poll()
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        try:
            self._queue.put_nowait(_CLOSED)
        except queue.Full:  # pragma: no cover - a stream thread refilled it; next() sees _closed soon
            pass
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        self._channel.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Reader(broker={self.target!r}, topic={self.topic!r})"


def fetch(
    broker: str | None,
    topic: str,
    partition: int,
    offset: int,
    max_bytes: int = 1 << 20,
    max_wait_ms: int = 0,
) -> list[Message]:
    """One ``Fetch`` on a fresh connection (see ``Reader.fetch``)."""
    reader = Reader(broker, topic)
    try:
        return reader.fetch(topic, partition, offset, max_bytes, max_wait_ms)
    finally:
        reader.close()
