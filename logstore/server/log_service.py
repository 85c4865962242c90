"""The ``logstore.v1.Log`` service: produce and consume.

Thin: each handler checks the request's shape, calls the broker, and
translates the answer.  Produce stores the bytes of the request's records as
they arrived when the request names one partition (the fast path); Fetch and
Subscribe answers are encoded by ``wire`` around the stored bytes.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator

import grpc

from logstore._proto.logstore.v1 import log_pb2
from logstore.broker.broker import Acks, Broker, FetchResult
from logstore.broker.idempotence import ProducerStamp
from logstore.errors import InvalidArgument, LogClosed, LogstoreError, NotFound
from logstore.server import wire
from logstore.server.status import (
    BadRequest,
    Refused,
    safe_deserializer,
    status_code,
    translate_errors,
    translate_stream_errors,
)
from logstore.storage.batch import ATTR_DELIVERY_TIME
from logstore.storage.records import DELIVERY_TIME_TAGS, RECORDS_FIELD_TAG, EncodedRecords

_LOGGER = logging.getLogger(__name__)

__all__ = ["LogService", "stamp_of", "records_of"]

SERVICE_NAME = "logstore.v1.Log"

_ACKS = {
    log_pb2.ACKS_UNSPECIFIED: Acks.LEADER,
    log_pb2.ACKS_NONE: Acks.NONE,
    log_pb2.ACKS_LEADER: Acks.LEADER,
    log_pb2.ACKS_DURABLE: Acks.DURABLE,
}


class LogService:
    """Handlers of the Log service, bound to one broker."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._shutting_down = threading.Event()
        self._streams_lock = threading.Lock()
        self._streams: set[threading.Event] = set()

    def shutdown(self) -> None:
        """End every subscription now (with UNAVAILABLE); called when the server stops."""
        self._shutting_down.set()
        with self._streams_lock:
            streams = list(self._streams)
        for event in streams:
            event.set()
        for partition in self._broker.all_partitions():
            partition.wake()

    def _cancel_event(self, context: grpc.ServicerContext, partition=None) -> threading.Event:  # noqa: ANN001
        """An event set when the client cancels, the RPC ends or the server stops."""
        event = threading.Event()

        def on_done() -> None:
            event.set()
            with self._streams_lock:
                self._streams.discard(event)
            if partition is not None:
                partition.wake()

        with self._streams_lock:
            self._streams.add(event)
        if not context.add_callback(on_done) or self._shutting_down.is_set():
            event.set()
        return event

    # -- produce -------------------------------------------------------------------

    def _produce(self, request: log_pb2.ProduceRequest, raw: bytes | None = None) -> log_pb2.ProduceResponse:
        """``raw`` is the request's encoding as received, when the caller kept it."""
        broker = self._broker
        topic = request.topic
        acks = _ACKS.get(request.acks)
        if acks is None:
            raise InvalidArgument(f"acks={request.acks} is not a known Acks value (use NONE, LEADER or DURABLE)")
        t = broker.topic(topic)
        records = request.records
        if not records:
            raise InvalidArgument("a produce request needs at least one record")
        now = broker.clock()
        expected = request.expected_offset if request.HasField("expected_offset") else None
        if expected is not None and not request.HasField("partition"):
            raise InvalidArgument("expected_offset needs the request's partition: a conditional append goes to one partition")
        stamp = stamp_of(request)
        if request.HasField("partition"):
            partition = request.partition
            t.partition(partition)
            received = _received_records(request, raw)
            request.ClearField("topic")
            request.ClearField("acks")
            request.ClearField("partition")
            request.ClearField("expected_offset")
            request.ClearField("producer_id")
            request.ClearField("producer_epoch")
            request.ClearField("base_sequence")
            shares = [(partition, request, received)]
            record_partitions: list[int] = []
        else:
            keys = [r.key if r.HasField("key") else None for r in records]
            explicit = [r.partition if r.HasField("partition") else None for r in records]
            record_partitions = broker.route_keys(topic, keys, explicit)
            groups: dict[int, list[int]] = {}
            for i, p in enumerate(record_partitions):
                groups.setdefault(p, []).append(i)
            shares = []
            for p in sorted(groups):
                t.partition(p)
                sub = log_pb2.ProduceRequest()
                sub.records.extend([records[i] for i in groups[p]])
                shares.append((p, sub, None))
            if len(groups) == 1:
                record_partitions = []
        encoded = [(p, _encode_share(share, now, received)) for p, share, received in shares]
        results = []
        answers = broker.produce(topic, encoded, acks, append_time_ms=now, expected_offset=expected, producer=stamp)
        for (p, enc), r in zip(encoded, answers):
            if isinstance(r, LogstoreError):
                results.append(
                    log_pb2.PartitionProduceResult(
                        partition=p,
                        base_offset=-1,
                        record_count=enc.count,
                        error=log_pb2.Status(code=status_code(r).value[0], message=r.message),
                    )
                )
            else:
                results.append(
                    log_pb2.PartitionProduceResult(
                        partition=p,
                        base_offset=r.base_offset,
                        record_count=r.record_count,
                        log_append_time_ms=r.append_time_ms,
                        duplicate=r.duplicate,
                    )
                )
        return log_pb2.ProduceResponse(partitions=results, record_partitions=record_partitions)

    @translate_errors
    def InitProducer(self, request: log_pb2.InitProducerRequest, context: grpc.ServicerContext) -> log_pb2.InitProducerResponse:
        issued = self._broker.init_producer(request.client_id)
        return log_pb2.InitProducerResponse(producer_id=issued.producer_id, producer_epoch=issued.epoch)

    @translate_errors
    def Produce(self, request: "_WithRaw", context: grpc.ServicerContext) -> log_pb2.ProduceResponse:
        return self._produce(request.message, request.raw)

    def ProduceStream(
        self, request_iterator: Iterator[log_pb2.ProduceStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[log_pb2.ProduceStreamResponse]:
        """Answer each request in order; a failed request is reported, the stream goes on."""
        for received in request_iterator:
            if isinstance(received, BadRequest):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, received.error)
            if isinstance(received, Refused):  # by the security interceptor: answered in its place
                yield log_pb2.ProduceStreamResponse(
                    request_id=received.request_id,
                    error=log_pb2.Status(code=status_code(received.error).value[0], message=received.error.message),
                )
                continue
            item = received.message
            try:
                if not item.HasField("produce"):
                    raise InvalidArgument("each ProduceStreamRequest needs a `produce` request")
                response = self._produce(item.produce, wire.length_delimited_field(received.raw, 2))
                yield log_pb2.ProduceStreamResponse(request_id=item.request_id, response=response)
            except LogstoreError as exc:
                yield log_pb2.ProduceStreamResponse(
                    request_id=item.request_id,
                    error=log_pb2.Status(code=status_code(exc).value[0], message=exc.message),
                )
            except Exception:  # noqa: BLE001 - one bad request must not kill the server
                _LOGGER.exception("ProduceStream request %d failed", item.request_id)
                yield log_pb2.ProduceStreamResponse(
                    request_id=item.request_id,
                    error=log_pb2.Status(
                        code=grpc.StatusCode.INTERNAL.value[0], message="internal error; see the broker log"
                    ),
                )

    # -- consume ---------------------------------------------------------------------

    @translate_errors
    def Fetch(self, request: log_pb2.FetchRequest, context: grpc.ServicerContext) -> tuple[FetchResult, int]:
        cancelled = self._cancel_event(context, self._broker.partition(request.topic, request.partition))
        max_wait_ms = request.max_wait_ms
        remaining = context.time_remaining()
        if max_wait_ms > 0 and remaining is not None:
            # Answer (empty) before the caller's deadline rather than let it expire.
            max_wait_ms = max(0, min(max_wait_ms, int(remaining * 1000) - 50))
        result = self._broker.fetch(
            request.topic, request.partition, request.offset, request.max_bytes, max_wait_ms, cancelled
        )
        return result, request.partition

    @translate_stream_errors
    def Subscribe(
        self, request: log_pb2.SubscribeRequest, context: grpc.ServicerContext
    ) -> Iterator[tuple[FetchResult, int, int | None]]:
        broker = self._broker
        topic, partition = request.topic, request.partition
        p = broker.partition(topic, partition)
        log = p.log
        which = request.WhichOneof("start")
        if which is None:
            raise InvalidArgument("Subscribe needs a start: start_position, start_offset or start_timestamp_ms")
        if which == "start_position":
            if request.start_position == log_pb2.LOG_POSITION_EARLIEST:
                start = log.log_start_offset
            elif request.start_position == log_pb2.LOG_POSITION_LATEST:
                start = log.log_end_offset
            else:
                raise InvalidArgument("start_position must be LOG_POSITION_EARLIEST or LOG_POSITION_LATEST")
        elif which == "start_offset":
            start = request.start_offset
        else:
            if request.start_timestamp_ms < 0:
                raise InvalidArgument(f"start_timestamp_ms must not be negative, got {request.start_timestamp_ms}")
            found = log.offset_for_timestamp(request.start_timestamp_ms)
            start = log.log_end_offset if found is None else found
        stop_offset = request.stop_offset if request.HasField("stop_offset") else None
        stop_timestamp = request.stop_timestamp_ms if request.HasField("stop_timestamp_ms") else None
        if (stop_offset is not None and stop_offset < 0) or (stop_timestamp is not None and stop_timestamp < 0):
            raise InvalidArgument("stop_offset and stop_timestamp_ms must not be negative")
        if request.max_bytes < 0:
            raise InvalidArgument(f"max_bytes must not be negative, got {request.max_bytes}")
        broker.check_offset(log, start)  # fail before the first response announces the start
        cancelled = self._cancel_event(context, p)
        results = broker.subscribe(
            topic,
            partition,
            start,
            stop_offset=stop_offset,
            stop_timestamp=stop_timestamp,
            max_bytes=request.max_bytes,
            cancelled=cancelled,
        )
        yield FetchResult([], log.log_start_offset, log.log_end_offset), partition, start
        try:
            for result in results:
                yield result, partition, None
        except LogClosed:
            if broker.closed or self._shutting_down.is_set():
                raise
            raise NotFound(f"topic {topic!r} was deleted") from None
        if self._shutting_down.is_set():
            raise LogClosed("the broker is shutting down; subscribe again to resume")

    @translate_errors
    def ListOffsets(self, request: log_pb2.ListOffsetsRequest, context: grpc.ServicerContext) -> log_pb2.ListOffsetsResponse:
        t = self._broker.topic(request.topic)
        partitions = list(request.partitions) or list(range(len(t.partitions)))
        if len(set(partitions)) != len(partitions):
            raise InvalidArgument("a partition is listed twice")
        which = request.WhichOneof("spec")
        if which is None:
            raise InvalidArgument("ListOffsets needs a spec: position or timestamp_ms")
        if which == "position" and request.position not in (log_pb2.LOG_POSITION_EARLIEST, log_pb2.LOG_POSITION_LATEST):
            raise InvalidArgument("position must be LOG_POSITION_EARLIEST or LOG_POSITION_LATEST")
        if which == "timestamp_ms" and request.timestamp_ms < 0:
            raise InvalidArgument(f"timestamp_ms must not be negative, got {request.timestamp_ms}")
        out = []
        for index in sorted(partitions):
            log = t.partition(index).log
            entry = log_pb2.PartitionOffset(
                partition=index, log_start_offset=log.log_start_offset, log_end_offset=log.log_end_offset
            )
            if which == "position":
                entry.offset = (
                    log.log_start_offset if request.position == log_pb2.LOG_POSITION_EARLIEST else log.log_end_offset
                )
            else:
                found = log.offset_for_timestamp(request.timestamp_ms)
                if found is None:
                    entry.offset = log.log_end_offset
                else:
                    entry.offset = found
                    entry.timestamp_ms = log.read_records(found, 1)[0][1].timestamp
            out.append(entry)
        return log_pb2.ListOffsetsResponse(partitions=out)

    # -- registration ----------------------------------------------------------------------

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """Method handlers with the hand-built serializers for Fetch and Subscribe."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "InitProducer": grpc.unary_unary_rpc_method_handler(
                    self.InitProducer,
                    request_deserializer=safe_deserializer(log_pb2.InitProducerRequest),
                    response_serializer=log_pb2.InitProducerResponse.SerializeToString,
                ),
                "Produce": grpc.unary_unary_rpc_method_handler(
                    self.Produce,
                    request_deserializer=_keeping_raw(log_pb2.ProduceRequest),
                    response_serializer=log_pb2.ProduceResponse.SerializeToString,
                ),
                "ProduceStream": grpc.stream_stream_rpc_method_handler(
                    self.ProduceStream,
                    request_deserializer=_keeping_raw(log_pb2.ProduceStreamRequest),
                    response_serializer=log_pb2.ProduceStreamResponse.SerializeToString,
                ),
                "Fetch": grpc.unary_unary_rpc_method_handler(
                    self.Fetch,
                    request_deserializer=safe_deserializer(log_pb2.FetchRequest),
                    response_serializer=wire.encode_fetch_response,
                ),
                "Subscribe": grpc.unary_stream_rpc_method_handler(
                    self.Subscribe,
                    request_deserializer=safe_deserializer(log_pb2.SubscribeRequest),
                    response_serializer=wire.encode_subscribe_response,
                ),
                "ListOffsets": grpc.unary_unary_rpc_method_handler(
                    self.ListOffsets,
                    request_deserializer=safe_deserializer(log_pb2.ListOffsetsRequest),
                    response_serializer=log_pb2.ListOffsetsResponse.SerializeToString,
                ),
            },
        )


class _WithRaw:
    """A parsed request together with the bytes it was parsed from."""

    __slots__ = ("message", "raw")

    def __init__(self, message, raw: bytes) -> None:  # noqa: ANN001
        self.message = message
        self.raw = raw


def _keeping_raw(message_cls):  # noqa: ANN001, ANN202
    parse = safe_deserializer(message_cls)

    def deserialize(data: bytes):  # noqa: ANN202
        message = parse(data)
        return message if isinstance(message, BadRequest) else _WithRaw(message, data)

    return deserialize


def _received_records(request: log_pb2.ProduceRequest, raw: bytes | None) -> memoryview | None:
    """The records section of ``raw``, if it is exactly the request's records.

    Standard protobuf encoders write fields in number order, so ``records``
    (field 1) comes first and the other fields follow.  The slice is used
    only if (a) the request has no unknown field, anywhere, and re-encodes to
    exactly ``len(raw)`` bytes, and (b) ``raw`` ends with the canonical
    encoding of the request's other fields: then everything before that
    suffix is the records and nothing else.  Otherwise None (re-encode).
    """
    if raw is None or not raw or raw[0] != RECORDS_FIELD_TAG:
        return None
    request.DiscardUnknownFields()
    if request.ByteSize() != len(raw):
        return None
    others = log_pb2.ProduceRequest(topic=request.topic, acks=request.acks)
    if request.HasField("partition"):
        others.partition = request.partition
    if request.HasField("producer_id"):
        others.producer_id = request.producer_id
        others.producer_epoch = request.producer_epoch
        others.base_sequence = request.base_sequence
    if request.HasField("expected_offset"):
        others.expected_offset = request.expected_offset
    suffix = others.SerializeToString()
    cut = len(raw) - len(suffix)
    if raw[cut:] != suffix:
        return None
    return memoryview(raw)[:cut]


def stamp_of(request: log_pb2.ProduceRequest) -> ProducerStamp | None:
    """The idempotence fields of a produce request naming its partition, None without a producer id."""
    if not request.HasField("producer_id") or request.producer_id == -1:
        return None
    if not request.HasField("partition"):
        raise InvalidArgument(
            "an idempotent produce (producer_id set) needs the request's partition: sequences are per "
            "partition, so route records to partitions yourself (murmur2 of the key, see ProducerRecord.key)"
        )
    return ProducerStamp(request.producer_id, request.producer_epoch, request.base_sequence)


def records_of(request: log_pb2.ProduceRequest, now_ms: int) -> EncodedRecords:
    """The stored encoding of a produce request's records (re-encoded: not the fast path)."""
    if not request.records:
        raise InvalidArgument("a produce request needs at least one record")
    share = log_pb2.ProduceRequest()
    share.records.extend(request.records)
    return _encode_share(share, now_ms)


def _encode_share(share: log_pb2.ProduceRequest, now_ms: int, received: memoryview | None = None) -> EncodedRecords:
    """The stored encoding of one partition's share: the request's own bytes.

    ``share`` holds only ``records`` (field 1), whose encoding is the stored
    format; unknown fields are dropped so nothing else can reach the log.
    ``received`` is that encoding as it arrived (see ``_received_records``),
    stored as is unless a record had timestamp 0: those get the broker's
    clock, and the share is re-encoded.
    """
    records = share.records
    timestamps = [r.timestamp_ms for r in records]
    lowest = min(timestamps)
    if lowest < 0:
        raise InvalidArgument(f"record timestamps must not be negative, got {lowest}")
    if lowest == 0:
        for r in records:
            if r.timestamp_ms == 0:
                r.timestamp_ms = now_ms
        timestamps = [t or now_ms for t in timestamps]
        received = None
    if received is None:
        share.DiscardUnknownFields()
        data = share.SerializeToString()
    else:
        data = bytes(received)
    attributes = 0
    if DELIVERY_TIME_TAGS[0] in data or DELIVERY_TIME_TAGS[1] in data:
        # The two-byte tags can also occur inside values; only then look at each record.
        for r in records:
            which = r.WhichOneof("delivery_time")
            if which is not None:
                if getattr(r, which) < 0:
                    raise InvalidArgument(f"{which} must not be negative, got {getattr(r, which)}")
                attributes = ATTR_DELIVERY_TIME
    return EncodedRecords(data, len(timestamps), timestamps[0], max(timestamps), attributes)
