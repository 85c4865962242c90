"""The producer's hand-written record encoding is exactly protobuf's (no broker needed)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from logstore._proto.logstore.v1 import log_pb2, records_pb2
from logstore.client.producer import _TopicMeta, _keyed_framing, _keyless_framing, _timestamp_field, encode_record
from logstore.storage.records import decode_records

_bytes = st.one_of(st.none(), st.binary(max_size=300))
_headers = st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=50)), max_size=4)
_timestamps = st.integers(min_value=0, max_value=(1 << 63) - 1)


@settings(max_examples=300, deadline=None)
@given(ts=_timestamps, key=_bytes, value=_bytes, headers=_headers)
def test_encode_record_equals_protobuf_serialization(ts, key, value, headers) -> None:  # noqa: ANN001
    """encode_record(...) is byte for byte ProduceRequest(records=[ProducerRecord(...)]).SerializeToString()."""
    record = records_pb2.ProducerRecord(timestamp_ms=ts, headers=[records_pb2.Header(name=n, value=v) for n, v in headers])
    if key is not None:
        record.key = key
    if value is not None:
        record.value = value
    expected = log_pb2.ProduceRequest(records=[record]).SerializeToString()
    assert encode_record(ts, key, value, headers) == expected


@settings(max_examples=100, deadline=None)
@given(ts=_timestamps, key=_bytes, value=_bytes, headers=_headers)
def test_encode_record_decodes_as_the_stored_format(ts, key, value, headers) -> None:  # noqa: ANN001
    """The storage decoder reads an encoded record back with null/empty key and value kept apart."""
    [(index, record)] = list(decode_records(encode_record(ts, key, value, headers)))
    assert index == 0
    assert (record.timestamp, record.key, record.value, list(record.headers)) == (ts, key, value, headers)


@settings(max_examples=300, deadline=None)
@given(ts=_timestamps, key=st.one_of(st.none(), st.binary(max_size=300)), value=st.binary(max_size=20_000))
def test_cached_framing_plus_value_equals_encode_record(ts, key, value) -> None:  # noqa: ANN001
    """send's cached framing (head, timestamp field, prefix) followed by the value is exactly encode_record's bytes."""
    meta = _TopicMeta("t", 4, 1 << 62, 1 << 20, 0.0, {})
    ts_field = _timestamp_field(ts)
    if key is None:
        _, head, prefix, size = _keyless_framing(meta, len(value), len(ts_field))
    else:
        _, _, _, head, prefix, size = _keyed_framing(meta, key, len(value), len(ts_field), None)
    framed = head + ts_field + prefix + value
    assert framed == encode_record(ts, key, value)
    assert size == len(framed)
