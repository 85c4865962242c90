"""Limits and misuse: oversized batches, offsets out of range, a closed log."""

from __future__ import annotations

import pytest

from logstore.clock import ManualClock
from logstore.errors import LogClosed, OffsetOutOfRange, RecordTooLarge
from logstore.storage.batch import build_batch
from logstore.storage.config import LogConfig
from logstore.storage.log import PartitionLog
from logstore.storage.records import Record

MAX_BATCH = 2000


def config() -> LogConfig:
    return LogConfig(segment_bytes=8192, index_interval_bytes=256, max_batch_bytes=MAX_BATCH, retention_ms=-1)


def records_of_batch_size(size: int) -> list[Record]:
    """One record whose batch is exactly ``size`` bytes long."""
    for value_len in range(size, 0, -1):
        records = [Record(value=b"x" * value_len)]
        if len(build_batch(records)) == size:
            return records
    raise AssertionError(f"no single-record batch of exactly {size} bytes")


@pytest.fixture()
def log(tmp_path):
    log = PartitionLog.open(tmp_path / "log", config=config(), clock=ManualClock())
    yield log
    log.close()


def test_batch_over_max_batch_bytes_is_rejected(log):
    """A batch one byte over max_batch_bytes raises RecordTooLarge and leaves the log unchanged."""
    log.append_records([Record(value=b"before")])
    too_big = records_of_batch_size(MAX_BATCH + 1)
    end, size = log.log_end_offset, log.size_bytes
    with pytest.raises(RecordTooLarge) as info:
        log.append(build_batch(too_big))
    assert info.value.grpc_status == "INVALID_ARGUMENT"
    with pytest.raises(RecordTooLarge):
        log.append_records(too_big)
    with pytest.raises(RecordTooLarge):
        log.append_records([Record(value=b"y" * (10 * MAX_BATCH))])
    assert (log.log_end_offset, log.size_bytes) == (end, size)
    assert log.read_records(0) == [(0, Record(value=b"before"))]
    # The log still takes appends, and exactly max_batch_bytes is allowed.
    exact = records_of_batch_size(MAX_BATCH)
    assert log.append_records(exact) == end
    assert log.read_records(end) == [(end, exact[0])]
    assert len(log.read(end)[0]) == MAX_BATCH


@pytest.mark.parametrize("call", ["read", "read_records"])
def test_offsets_outside_the_log_are_out_of_range(log, call):
    """Negative offsets and offsets past the end raise OffsetOutOfRange; the end itself gives []."""
    fn = getattr(log, call)
    assert fn(0) == []  # empty log: 0 is the end
    for offset in (-1, 1, 10**12):
        with pytest.raises(OffsetOutOfRange):
            fn(offset)
    log.append_records([Record(value=b"a"), Record(value=b"b")])
    assert fn(2) == []
    for offset in (-1, -(2**63), 3, 4, 2**63):
        with pytest.raises(OffsetOutOfRange) as info:
            fn(offset)
        assert (info.value.start, info.value.end) == (0, 2)
        assert "0" in str(info.value) and "2" in str(info.value)
    assert len(fn(1)) == 1


OPERATIONS = {
    "append": lambda log: log.append(build_batch([Record(value=b"x")])),
    "append_records": lambda log: log.append_records([Record(value=b"x")]),
    "read": lambda log: log.read(0),
    "read_records": lambda log: log.read_records(0),
    "offset_for_timestamp": lambda log: log.offset_for_timestamp(0),
    "flush": lambda log: log.flush(),
    "roll": lambda log: log.roll(),
    "apply_retention": lambda log: log.apply_retention(),
}


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_operations_after_close_raise_log_closed(tmp_path, op):
    """Every operation on a closed log raises LogClosed (gRPC UNAVAILABLE)."""
    log = PartitionLog.open(tmp_path / "log", config=config(), clock=ManualClock())
    log.append_records([Record(value=b"x")])
    log.close()
    with pytest.raises(LogClosed) as info:
        OPERATIONS[op](log)
    assert info.value.grpc_status == "UNAVAILABLE"


def test_close_then_reopen_keeps_data(tmp_path):
    """A closed log's files reopen with everything appended before close."""
    log = PartitionLog.open(tmp_path / "log", config=config(), clock=ManualClock())
    log.append_records([Record(value=b"x", timestamp=7)])
    log.close()
    log = PartitionLog.open(tmp_path / "log", config=config(), clock=ManualClock())
    try:
        assert log.read_records(0) == [(0, Record(value=b"x", timestamp=7))]
        assert log.last_recovery.clean is True
        assert log.last_recovery.truncated_bytes == 0
    finally:
        log.close()
