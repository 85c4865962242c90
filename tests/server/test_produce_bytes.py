"""A one-partition produce stores the record bytes it received, and nothing else."""

from __future__ import annotations

import grpc

from logstore._proto.logstore.v1 import log_pb2, records_pb2
from logstore.storage.batch import HEADER_SIZE


def _records(n: int) -> list[records_pb2.ProducerRecord]:
    return [
        records_pb2.ProducerRecord(key=b"k%d" % i, value=b"v" * i, timestamp_ms=1_700_000_000_000 + i,
                                   headers=[records_pb2.Header(name="h", value=b"%d" % i)])
        for i in range(n)
    ]


def _stored_records_bytes(server, topic: str) -> bytes:
    """The records section of the only batch in partition 0, read from disk."""
    log = server.broker.partition(topic, 0).log
    (batch,) = log.read(0, 1 << 20)
    return batch[HEADER_SIZE:]


def _produce_raw(channel: grpc.Channel, raw: bytes) -> log_pb2.ProduceResponse:
    call = channel.unary_unary(
        "/logstore.v1.Log/Produce",
        request_serializer=None,
        response_deserializer=log_pb2.ProduceResponse.FromString,
    )
    return call(raw, timeout=10)


def test_records_are_stored_as_received(server, channel, create_topic):
    """The stored records section is byte for byte the records field of the request."""
    create_topic("raw")
    records = _records(50)
    request = log_pb2.ProduceRequest(topic="raw", partition=0, records=records)
    response = _produce_raw(channel, request.SerializeToString())
    assert response.partitions[0].record_count == 50
    expected = log_pb2.ProduceRequest(records=records).SerializeToString()
    assert _stored_records_bytes(server, "raw") == expected


def test_unknown_fields_never_reach_the_log(server, channel, create_topic):
    """Unknown fields, at the top level or inside a record, are dropped before storing."""
    create_topic("unknown")
    records = _records(3)
    clean = log_pb2.ProduceRequest(records=records).SerializeToString()
    request = log_pb2.ProduceRequest(topic="unknown", partition=0, records=records).SerializeToString()
    # Field 2 of RecordBatch is base_offset: smuggling a varint field 15 and a
    # record-level field 9 must not survive into what consumers parse.
    hostile = request + b"\x78\x05"  # top-level field 15, varint 5
    rec = records[0].SerializeToString() + b"\x48\x07"  # record field 9, varint 7
    hostile = b"\x0a" + bytes([len(rec)]) + rec + hostile
    response = _produce_raw(channel, hostile)
    assert response.partitions[0].record_count == 4
    stored = _stored_records_bytes(server, "unknown")
    assert b"\x78\x05" not in stored and b"\x48\x07" not in stored
    assert stored == log_pb2.ProduceRequest(records=[records[0], *records]).SerializeToString()
    assert clean in stored


def test_fields_in_unusual_order_are_stored_correctly(server, channel, create_topic):
    """A request that puts topic and partition before its records still stores exactly the records."""
    create_topic("order")
    records = _records(5)
    head = log_pb2.ProduceRequest(topic="order", partition=0).SerializeToString()
    body = log_pb2.ProduceRequest(records=records).SerializeToString()
    response = _produce_raw(channel, head + body)
    assert response.partitions[0].record_count == 5
    assert _stored_records_bytes(server, "order") == body


def test_a_repeated_topic_field_between_records_is_not_stored(server, channel, create_topic):
    """A second topic field hidden among the records (last one wins) never lands in the log."""
    create_topic("dup")
    records = _records(4)
    first = log_pb2.ProduceRequest(records=records[:2]).SerializeToString()
    second = log_pb2.ProduceRequest(records=records[2:]).SerializeToString()
    decoy = log_pb2.ProduceRequest(topic="elsewhere").SerializeToString()
    tail = log_pb2.ProduceRequest(topic="dup", partition=0).SerializeToString()
    response = _produce_raw(channel, first + decoy + second + tail)
    assert response.partitions[0].record_count == 4
    assert _stored_records_bytes(server, "dup") == first + second


def test_standard_encoding_takes_the_no_reencode_path():
    """A request encoded by a stock protobuf encoder is recognised as records-first and reused."""
    from logstore.server.log_service import _received_records

    records = _records(20)
    raw = log_pb2.ProduceRequest(topic="t", partition=3, acks=log_pb2.ACKS_DURABLE, records=records).SerializeToString()
    request = log_pb2.ProduceRequest.FromString(raw)
    view = _received_records(request, raw)
    assert view is not None
    assert bytes(view) == log_pb2.ProduceRequest(records=records).SerializeToString()
    with_unknown = raw + b"\x78\x05"
    assert _received_records(log_pb2.ProduceRequest.FromString(with_unknown), with_unknown) is None


def test_idempotent_and_conditional_requests_keep_the_no_reencode_path():
    """Producer fields (5-7) and expected_offset (8) after the records still let the broker reuse the records' bytes."""
    from logstore.server.log_service import _received_records

    records = _records(20)
    for extra in (
        dict(producer_id=7, producer_epoch=2, base_sequence=40),
        dict(producer_id=0, producer_epoch=0, base_sequence=0),  # zeros: explicit presence keeps producer_id
        dict(expected_offset=12),
        dict(producer_id=3, producer_epoch=1, base_sequence=9, expected_offset=0),
    ):
        raw = log_pb2.ProduceRequest(topic="t", partition=1, records=records, **extra).SerializeToString()
        view = _received_records(log_pb2.ProduceRequest.FromString(raw), raw)
        assert view is not None, extra
        assert bytes(view) == log_pb2.ProduceRequest(records=records).SerializeToString()
