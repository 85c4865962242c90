"""Reading a topic: replay from a position, then optionally follow the log as it grows.

``Reader`` opens one ``Subscribe`` stream per partition, each drained by a
background thread into one bounded queue, and yields ``Message`` objects.
Batches arrive whole, so the reader drops records below the start offset
and at or past the stop offset itself; record ``i`` of a batch has offset
``base_offset + i``.

Start positions: ``"earliest"``, ``"latest"``, an offset (``int``), a time
(``datetime``, or ``("timestamp", ms)``), or a dict giving one of those per
partition.  Stop positions: ``None`` (never), an offset (exclusive), or a
time (the first record at or after it is not delivered).  With
``follow=False`` the reader also stops at the log end offsets it finds when
it starts, so it finishes once it has read what was there.

Ordering: records of one partition come in offset order with no gap and no
repeat; records of different partitions are interleaved in arrival order.

What the reader does not do: consumer groups or committed offsets, noticing
partitions added after it started, or recovering from errors.  When a
stream fails (the topic is deleted, retention overtakes a slow reader with
``OffsetOutOfRange``, the broker goes away) iteration raises that error and
the reader closes its other streams.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime
from typing import Iterable, Iterator, Mapping, Union

import grpc

from logstore.client._channel import call_unary, open_channel, translate_rpc_error
from logstore.client.admin import Admin, to_epoch_ms
from logstore.client.messages import Message, message_setters
from logstore.errors import InvalidArgument, LogstoreError
from logstore._proto.logstore.v1 import log_pb2, log_pb2_grpc, records_pb2

_LOGGER = logging.getLogger(__name__)

__all__ = ["Reader", "fetch", "decode_batches", "StartSpec", "StopSpec"]

StartSpec = Union[str, int, datetime, tuple]
StopSpec = Union[None, int, datetime, tuple]

_QUEUE_CHUNKS = 32  # responses buffered between the stream threads and the iterating thread
_PUT_POLL_S = 0.1  # how often a blocked stream thread checks whether the reader was closed

_new = object.__new__


_SET_TOPIC, _SET_PARTITION, _SET_OFFSET, _SET_TIMESTAMP, _SET_KEY, _SET_VALUE, _SET_HEADERS = message_setters()


def decode_batches(
    topic: str,
    partition: int,
    batches: Iterable[records_pb2.RecordBatch],
    low: int = 0,
    high: int | None = None,
) -> list[Message]:
    """The records of ``batches`` with offsets in ``[low, high)`` as ``Message`` objects.

    A batch whose ``timestamp_type`` is LOG_APPEND_TIME gives every record the
    batch's ``max_timestamp_ms`` (the broker's append time), as Kafka does.
    """
    out: list[Message] = []
    append = out.append
    set_topic, set_partition, set_offset = _SET_TOPIC, _SET_PARTITION, _SET_OFFSET
    set_timestamp, set_key, set_value, set_headers = _SET_TIMESTAMP, _SET_KEY, _SET_VALUE, _SET_HEADERS
    for batch in batches:
        base = batch.base_offset
        records = batch.records
        count = len(records)
        first = max(0, low - base)
        last = count if high is None else min(count, high - base)
        if first >= last:
            if high is not None and base >= high:
                break
            continue
        if first or last < count:
            records = records[first:last]
        append_time = (
            batch.max_timestamp_ms if batch.timestamp_type == records_pb2.TIMESTAMP_TYPE_LOG_APPEND_TIME else None
        )
        offset = base + first
        for record in records:
            message = _new(Message)
            set_topic(message, topic)
            set_partition(message, partition)
            set_offset(message, offset)
            set_timestamp(message, record.timestamp_ms if append_time is None else append_time)
            set_key(message, record.key if record.HasField("key") else None)
            set_value(message, record.value if record.HasField("value") else None)
            headers = record.headers
            set_headers(message, tuple([(h.name, h.value) for h in headers]) if headers else ())
            append(message)
            offset += 1
    return out


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

    Streams open on the first ``next()``/``poll()`` (``poll(0)`` opens them
    without waiting for records), which returns only once the broker has
    resolved every partition's start: with ``start="latest"`` every record
    appended after that call is delivered.  ``close()`` (or leaving a
    ``with`` block) cancels them.
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
    ) -> None:
        if not topic:
            raise InvalidArgument("Reader needs a topic name")
        self.topic = topic
        self._channel, self.target = open_channel(broker)
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
        self._chunk: list[Message] = []
        self._pos = 0
        self._error: LogstoreError | None = None
        self.start_offsets: dict[int, int] = {}
        """The offset each partition's stream started at, as the broker resolved
        the start position; filled in when the streams open (the first ``next()``)."""

    # -- iteration ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        message = self._next(None)
        if message is None:
            raise StopIteration
        return message

    def poll(self, timeout: float | None = None) -> Message | None:
        """The next message, or None if none arrived within ``timeout`` seconds
        (or the reader has finished; see ``finished``)."""
        return self._next(timeout)

    @property
    def finished(self) -> bool:
        """True once every partition reached its stop (or the reader was closed)
        and every message was delivered."""
        if self._closed:
            return True
        return self._started and self._running == 0 and self._pos >= len(self._chunk) and self._queue.empty()

    def _next(self, timeout: float | None) -> Message | None:
        chunk = self._chunk
        pos = self._pos
        if pos < len(chunk):
            self._pos = pos + 1
            return chunk[pos]
        if self._error is not None:
            raise self._error
        if self._closed:
            return None
        if not self._started:
            try:
                self._begin()
            except LogstoreError as exc:
                self._error = exc
                self.close()
                raise
        while self._running > 0 or not self._queue.empty():
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
            if type(item) is list:
                self._chunk = item
                self._pos = 1
                return item[0]
            if type(item) is _Done:
                self._running -= 1
                continue
            if item is _CLOSED:
                return None
            assert type(item) is _Failed
            self._error = item.error
            self.close()
            raise item.error
        return None

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
                    messages = decode_batches(topic, partition, response.batches, low, high)
                    if messages and not self._put(messages):
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
