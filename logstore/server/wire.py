"""Hand-built encodings of the hot responses (Fetch, Subscribe, Consume).

A stored batch's records section is already the protobuf encoding of
``RecordBatch.records`` (see logstore/storage/records.py), so a response is
a handful of varint fields per batch followed by the stored bytes, joined
once.  No record is decoded or re-encoded.  ``tests/server`` checks that the
stock generated classes parse these bytes.
"""

from __future__ import annotations

import grpc

from logstore._proto.logstore.v1 import groups_pb2, log_pb2
from logstore.broker.broker import FetchResult
from logstore.broker.coordinator import Delivery, Outbound
from logstore.storage.batch import ATTR_TIMESTAMP_LOG_APPEND, HEADER, HEADER_SIZE
from logstore.errors import CorruptBatch
from logstore.storage.records import encode_varint, read_varint

__all__ = ["encode_fetch_response", "encode_subscribe_response", "encode_consume_response"]

_U64 = (1 << 64) - 1
_CREATE_TIME = 1  # logstore.v1.TimestampType values
_LOG_APPEND_TIME = 2


def _varint_field(tag: int, value: int) -> bytes:
    return bytes((tag,)) + encode_varint(value & _U64)


def _batch_parts(out: list, batch: bytes, partition_field: bytes) -> None:
    """Append the parts of one ``RecordBatch`` (as field 1 of the outer message)."""
    base, length, _magic, _crc, attrs, count, _first, max_ts, *_ = HEADER.unpack_from(batch, 0)
    head = b"".join(
        (
            _varint_field(0x10, base),  # base_offset = 2
            partition_field,  # partition = 3
            _varint_field(0x20, max_ts),  # max_timestamp_ms = 4
            _varint_field(0x28, count),  # record_count = 5
            b"\x30\x02" if attrs & ATTR_TIMESTAMP_LOG_APPEND else b"\x30\x01",  # timestamp_type = 6
        )
    )
    body_len = len(head) + length - HEADER_SIZE
    out.append(b"\x0a" + encode_varint(body_len) + head)
    out.append(memoryview(batch)[HEADER_SIZE:length])


def _batches(result: FetchResult, partition: int) -> list:
    partition_field = _varint_field(0x18, partition) if partition else b""
    out: list = []
    for batch in result.batches:
        _batch_parts(out, batch, partition_field)
    return out


def encode_fetch_response(item: tuple[FetchResult, int]) -> bytes:
    """``FetchResponse``: batches = 1, log_start_offset = 2, log_end_offset = 3."""
    result, partition = item
    out = _batches(result, partition)
    out.append(_varint_field(0x10, result.log_start_offset))
    out.append(_varint_field(0x18, result.log_end_offset))
    return b"".join(out)


def encode_subscribe_response(item: tuple[FetchResult, int, int | None]) -> bytes:
    """``SubscribeResponse``: batches = 1, log start = 2, log end = 3,
    start_offset = 4 (first response only), stop_offset = 5 (last only)."""
    result, partition, start_offset = item
    out = _batches(result, partition)
    out.append(_varint_field(0x10, result.log_start_offset))
    out.append(_varint_field(0x18, result.log_end_offset))
    if start_offset is not None:
        out.append(_varint_field(0x20, start_offset))
    if result.stop_offset is not None:
        out.append(_varint_field(0x28, result.stop_offset))
    return b"".join(out)


def length_delimited_field(raw: bytes, field_number: int) -> bytes | None:
    """The payload of the one length-delimited ``field_number`` in a message's
    top-level fields; None if it is absent, repeated, or the framing is odd.

    Walks only the top-level framing (a handful of fields for the requests
    this is used on), never into the payload.
    """
    wanted = (field_number << 3) | 2
    found: tuple[int, int] | None = None
    pos, end = 0, len(raw)
    try:
        while pos < end:
            tag, pos = read_varint(raw, pos, end)
            wire_type = tag & 7
            if wire_type == 0:
                _, pos = read_varint(raw, pos, end)
            elif wire_type == 2:
                n, pos = read_varint(raw, pos, end)
                if tag == wanted:
                    if found is not None:
                        return None
                    found = (pos, pos + n)
                pos += n
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            else:
                return None
    except CorruptBatch:
        return None
    if pos != end or found is None:
        return None
    return raw[found[0] : found[1]]


# -- Groups.Consume ---------------------------------------------------------------------------------


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def _delivery_parts(out: list, d: Delivery) -> None:
    """Append one ``Delivery`` as field 4 of ``ConsumeResponse``; the records are spliced."""
    head = [
        _len_field(0x12, d.tp.topic.encode("ascii")),  # topic = 2
        _varint_field(0x20, d.first_id),  # first_delivery_id = 4
        _varint_field(0x28, d.base_offset),  # base_offset = 5
        _varint_field(0x38, d.attempt),  # attempt = 7
        _varint_field(0x40, d.deadline_ms),  # deadline_ms = 8
    ]
    if d.tp.partition:
        head.append(_varint_field(0x18, d.tp.partition))  # partition = 3
    if d.append_time_ms:
        head.append(_varint_field(0x48, d.append_time_ms))  # log_append_time_ms = 9
    if d.offsets is not None:
        head.append(_len_field(0x32, b"".join(encode_varint(o) for o in d.offsets)))  # offsets = 6, packed
    head_bytes = b"".join(head)
    body_len = len(head_bytes) + sum(len(c) for c in d.records)
    out.append(b"\x22" + encode_varint(body_len) + head_bytes)
    out.extend(d.records)  # records = 1: framed stored records, copied as they are


def encode_consume_response(out: Outbound) -> bytes:
    """``ConsumeResponse``: the small fields through the generated class, deliveries by hand."""
    g = groups_pb2
    head = g.ConsumeResponse(
        member_id=out.member_id,
        generation=out.generation,
        assignment=[g.TopicPartition(topic=tp.topic, partition=tp.partition) for tp in out.assignment],
        committed=[g.CommittedPosition(topic=tp.topic, partition=tp.partition, offset=o) for tp, o in out.committed],
        errors=[log_pb2.Status(code=grpc.StatusCode[e.grpc_status].value[0], message=e.message) for e in out.errors],
    )
    if out.stale:
        head.stale.ranges.extend(g.DeliveryIdRange(first_id=a, end_id=b) for a, b in out.stale)
    parts: list = [head.SerializeToString()]
    for d in out.deliveries:
        _delivery_parts(parts, d)
    return b"".join(parts)
