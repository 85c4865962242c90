"""When the active segment rolls: size, age, full index."""

from logstore.clock import ManualClock
from logstore.storage.config import LogConfig
from logstore.storage.log import PartitionLog
from logstore.storage.records import Record


def _records(n: int, size: int = 40, ts: int = 1_000) -> list[Record]:
    return [Record(value=bytes([i % 251]) * size, timestamp=ts + i) for i in range(n)]


def test_rolls_on_age_only_when_the_clock_says_so(tmp_path):
    """A segment whose first append is segment_ms old rolls on the next append, not before."""
    clock = ManualClock()
    log = PartitionLog.open(tmp_path, LogConfig(segment_ms=60_000, retention_ms=-1), clock)
    log.append_records(_records(3))
    clock.advance(59_999)
    log.append_records(_records(3))
    assert log.segment_bases == [0]
    clock.advance(1)
    log.append_records(_records(3))
    assert log.segment_bases == [0, 6]
    assert [o for o, _ in log.read_records(0)] == list(range(6))
    log.close()


def test_rolls_on_size_before_the_segment_would_overflow(tmp_path):
    """No sealed segment grows past segment_bytes, and every record stays readable."""
    config = LogConfig(segment_bytes=4096, retention_ms=-1)
    log = PartitionLog.open(tmp_path, config, ManualClock())
    for _ in range(60):
        log.append_records(_records(5))
    assert log.segment_count >= 4
    sizes = [p.stat().st_size for p in sorted(tmp_path.glob("*.log"))]
    assert all(size <= 4096 for size in sizes[:-1]), sizes
    offset, seen = 0, 0
    while offset < log.log_end_offset:
        got = log.read_records(offset)
        seen += len(got)
        offset = got[-1][0] + 1
    assert seen == 300
    log.close()


def test_rolls_when_an_index_is_full(tmp_path):
    """A full offset or time index seals the segment; lookups stay exact across the rolls."""
    # 64-byte indexes: 8 offset entries, 5 time entries (one kept for sealing).
    config = LogConfig(index_max_bytes=64, index_interval_bytes=1, retention_ms=-1)
    log = PartitionLog.open(tmp_path, config, ManualClock())
    for i in range(40):
        log.append_records(_records(2, ts=10_000 + 10 * i))
    assert log.segment_count >= 5, log.segment_bases
    for offset in range(log.log_end_offset):
        assert log.read_records(offset, 1)[0][0] == offset
    # Timestamps grow with offsets here, so the first record at or after T is easy to name.
    assert log.offset_for_timestamp(10_000 + 10 * 17) == 34
    log.close()
    reopened = PartitionLog.open(tmp_path, config, ManualClock())
    assert reopened.last_recovery.clean
    assert reopened.offset_for_timestamp(10_000 + 10 * 17) == 34
    reopened.close()
