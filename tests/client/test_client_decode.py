"""Turning RecordBatch messages into Message objects: range trimming and timestamps (no broker)."""

from __future__ import annotations

from logstore._proto.logstore.v1 import records_pb2
from logstore.client import Message
from logstore.client.reader import decode_batches


def _batch(base: int, n: int, **kw: object) -> records_pb2.RecordBatch:
    records = [records_pb2.Record(timestamp_ms=1000 + base + i, value=b"%d" % (base + i)) for i in range(n)]
    return records_pb2.RecordBatch(base_offset=base, record_count=n, records=records, **kw)


def test_records_outside_the_range_are_dropped_inside_whole_batches() -> None:
    """With batches [0,5) [5,10) [10,15) and range [3, 12) exactly offsets 3..11 come out, in order."""
    batches = [_batch(0, 5), _batch(5, 5), _batch(10, 5)]
    got = decode_batches("t", 4, batches, 3, 12)
    assert [m.offset for m in got] == list(range(3, 12))
    assert [m.value for m in got] == [b"%d" % i for i in range(3, 12)]
    assert got[0] == Message("t", 4, 3, 1003, None, b"3", ())


def test_empty_and_open_ranges() -> None:
    """A range below, above or between batches yields nothing; no high bound reads to the end."""
    batches = [_batch(10, 5)]
    assert decode_batches("t", 0, batches, 15) == []
    assert decode_batches("t", 0, batches, 0, 10) == []
    assert [m.offset for m in decode_batches("t", 0, batches, 12)] == [12, 13, 14]


def test_log_append_time_batches_use_the_batch_timestamp() -> None:
    """Records of a LOG_APPEND_TIME batch all carry its max_timestamp_ms; null and empty stay apart."""
    batch = _batch(0, 2, max_timestamp_ms=99_999, timestamp_type=records_pb2.TIMESTAMP_TYPE_LOG_APPEND_TIME)
    batch.records.add(key=b"", value=b"", headers=[records_pb2.Header(name="h", value=b"v")])
    batch.record_count = 3
    got = decode_batches("t", 0, [batch])
    assert [m.timestamp_ms for m in got] == [99_999] * 3
    assert (got[0].key, got[2].key, got[2].value, got[2].headers) == (None, b"", b"", (("h", b"v"),))
