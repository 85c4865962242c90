"""Retention: whole sealed segments deleted by age or total size, oldest first, never the active one."""

from __future__ import annotations

import random
import shutil

import pytest

from logstore.clock import ManualClock
from logstore.errors import OffsetOutOfRange
from logstore.storage.config import LogConfig
from logstore.storage.log import PartitionLog
from logstore.storage.records import Record

from storage_helpers import (
    Oracle,
    check_matches_oracle,
    files_with_suffix,
    log_file,
    remove_clean_marker,
    seg_name,
)

T0 = 1_800_000_000_000
RETENTION_MS = 10_000


def config(**overrides) -> LogConfig:
    params = dict(
        segment_bytes=1024, index_interval_bytes=128, max_batch_bytes=1024, retention_ms=-1, retention_bytes=-1
    )
    params.update(overrides)
    return LogConfig(**params)


def append(log: PartitionLog, oracle: Oracle, ts: int, n: int = 2, size: int = 60) -> int:
    records = [Record(key=b"k", value=bytes([len(oracle.batches) % 256]) * size, timestamp=ts) for _ in range(n)]
    base = log.append_records(records)
    oracle.appended(base, records, len(log.read(base, 1)[0]))
    return base


def fill_segments(log: PartitionLog, oracle: Oracle, ts: int, segments: int) -> list[int]:
    """Append at timestamp ``ts`` until ``segments`` new segments were sealed; return their bases."""
    first = len(log.segment_bases)
    while len(log.segment_bases) < first + segments:
        append(log, oracle, ts)
    return log.segment_bases[first - 1 : -1]


def check_out_of_range(log: PartitionLog, offset: int) -> None:
    start, end = log.log_start_offset, log.log_end_offset
    for call in (log.read, log.read_records):
        with pytest.raises(OffsetOutOfRange) as info:
            call(offset)
        err = info.value
        assert (err.offset, err.start, err.end) == (offset, start, end)
        message = str(err)
        assert str(start) in message and str(end) in message, message
        assert err.grpc_status == "OUT_OF_RANGE"


def test_time_retention_deletes_expired_segments_oldest_first(tmp_path):
    """Segments whose newest record is older than retention_ms go; the log start moves to the first kept base."""
    clock = ManualClock(T0)
    log = PartitionLog.open(tmp_path / "log", config=config(retention_ms=RETENTION_MS), clock=clock)
    oracle = Oracle()
    try:
        old = fill_segments(log, oracle, T0, 3)  # segments holding only T0 records
        log.roll()
        recent = fill_segments(log, oracle, T0 + 20_000, 2)  # newer records
        append(log, oracle, T0 + 20_000)
        assert len(old) >= 3 and len(recent) >= 2
        old_bases = [b for b in log.segment_bases if b < recent[0]]

        clock.advance(RETENTION_MS - 1)  # T0 records are not yet older than retention
        assert log.apply_retention() == 0
        assert log.log_start_offset == 0

        clock.advance(20_000)  # now T0 + 29_999: T0 expired, T0 + 20_000 not
        deleted = log.apply_retention()
        assert deleted == len(old_bases)
        assert log.log_start_offset == recent[0] == log.segment_bases[0]
        for base in old_bases:
            assert not log_file(log.directory, base).exists()
            assert not (log.directory / seg_name(base, "index")).exists()
            assert not (log.directory / seg_name(base, "timeindex")).exists()
        assert not files_with_suffix(log.directory, ".deleted")
        oracle.drop_below(log.log_start_offset)
        check_matches_oracle(log, oracle)
        check_out_of_range(log, 0)
        check_out_of_range(log, recent[0] - 1)
        assert log.apply_retention() == 0, "a second run deleted more"
    finally:
        log.close()


def test_time_retention_uses_record_timestamps_not_append_time(tmp_path):
    """Records stamped long ago are expired as soon as their segment is sealed, even if appended just now."""
    clock = ManualClock(T0)
    log = PartitionLog.open(tmp_path / "log", config=config(retention_ms=RETENTION_MS), clock=clock)
    oracle = Oracle()
    try:
        old = fill_segments(log, oracle, T0 - 10 * RETENTION_MS, 2)
        append(log, oracle, T0)
        assert log.apply_retention() == len(old)
        assert log.log_start_offset == log.segment_bases[0]
        oracle.drop_below(log.log_start_offset)
        check_matches_oracle(log, oracle)
    finally:
        log.close()


def test_time_retention_keeps_a_segment_with_one_recent_record(tmp_path):
    """A segment is expired by its newest record: one recent record anywhere in it keeps the whole segment."""
    clock = ManualClock(T0)
    log = PartitionLog.open(tmp_path / "log", config=config(retention_ms=RETENTION_MS), clock=clock)
    oracle = Oracle()
    try:
        append(log, oracle, T0)  # recent, first in the segment
        while log.segment_count == 1:
            append(log, oracle, T0 - 10 * RETENTION_MS)
        assert log.apply_retention() == 0
        assert log.log_start_offset == 0
        check_matches_oracle(log, oracle)
    finally:
        log.close()


@pytest.mark.parametrize("damage", ["deleted", "truncated-to-first-entry"])
def test_time_retention_survives_lost_timeindex(tmp_path, damage):
    """A segment's age comes from its records, not from a lost or cut-short .timeindex."""
    clock = ManualClock(T0)
    directory = tmp_path / "log"
    cfg = config(retention_ms=RETENTION_MS, index_interval_bytes=1)
    log = PartitionLog.open(directory, config=cfg, clock=clock)
    oracle = Oracle()
    old = T0 - 10 * RETENTION_MS
    append(log, oracle, old)
    append(log, oracle, old + 1)
    append(log, oracle, T0)  # one recent record in the middle of the segment, old ones around it
    while log.segment_count == 1:
        append(log, oracle, old)
    log.close()
    timeindex = directory / seg_name(0, "timeindex")
    if damage == "deleted":
        timeindex.unlink()
    else:
        assert len(timeindex.read_bytes()) >= 24
        timeindex.write_bytes(timeindex.read_bytes()[:12])
    log = PartitionLog.open(directory, config=cfg, clock=clock)
    try:
        assert log.apply_retention() == 0, "a segment holding a record 0 ms old was deleted"
        check_matches_oracle(log, oracle)
    finally:
        log.close()


def test_never_deletes_the_active_segment(tmp_path):
    """Even when every record is expired, the active segment (and its data) stays; the start moves to it."""
    clock = ManualClock(T0)
    log = PartitionLog.open(tmp_path / "log", config=config(retention_ms=RETENTION_MS), clock=clock)
    oracle = Oracle()
    try:
        fill_segments(log, oracle, T0, 3)
        append(log, oracle, T0)
        active = log.segment_bases[-1]
        segments = log.segment_count
        clock.advance(100 * RETENTION_MS)
        assert log.apply_retention() == segments - 1
        assert log.segment_bases == [active]
        assert log.log_start_offset == active < log.log_end_offset
        oracle.drop_below(active)
        check_matches_oracle(log, oracle)
        assert log.apply_retention() == 0
        # An empty active segment after a roll is not deleted either.
        log.roll()
        clock.advance(100 * RETENTION_MS)
        assert log.apply_retention() == 1
        assert log.segment_count == 1
        assert log.log_start_offset == log.log_end_offset
        assert log.read(log.log_end_offset) == []
        check_out_of_range(log, log.log_end_offset - 1)
        end = log.log_end_offset
        assert log.append_records([Record(value=b"after", timestamp=T0)]) == end
        assert log.read_records(end) == [(end, Record(value=b"after", timestamp=T0))]
    finally:
        log.close()


def segment_sizes(log: PartitionLog) -> list[int]:
    return [log_file(log.directory, b).stat().st_size for b in log.segment_bases]


@pytest.mark.parametrize("keep", [1, 2, 4])
def test_size_retention_keeps_newest_segments_within_limit(tmp_path, keep):
    """With retention_bytes equal to the newest ``keep`` segments' size, exactly those remain."""
    clock = ManualClock(T0)
    directory = tmp_path / "log"
    log = PartitionLog.open(directory, config=config(), clock=clock)
    oracle = Oracle()
    fill_segments(log, oracle, T0, 6)
    append(log, oracle, T0)
    log.close()
    log = PartitionLog.open(directory, config=config(), clock=clock)
    sizes_before = segment_sizes(log)
    bases_before = log.segment_bases
    assert sum(sizes_before) == log.size_bytes == oracle.size_bytes()
    log.close()

    limit = sum(sizes_before[-keep:])
    log = PartitionLog.open(directory, config=config(retention_bytes=limit), clock=clock)
    try:
        deleted = log.apply_retention()
        assert deleted == len(bases_before) - keep
        assert log.segment_bases == bases_before[-keep:]
        assert log.size_bytes == limit
        assert log.log_start_offset == bases_before[-keep]
        oracle.drop_below(log.log_start_offset)
        check_matches_oracle(log, oracle)
        check_out_of_range(log, log.log_start_offset - 1)
        assert log.apply_retention() == 0
    finally:
        log.close()


def test_size_retention_does_nothing_under_the_limit(tmp_path):
    """A log no larger than retention_bytes loses nothing."""
    clock = ManualClock(T0)
    log = PartitionLog.open(tmp_path / "log", config=config(retention_bytes=1 << 30), clock=clock)
    oracle = Oracle()
    try:
        fill_segments(log, oracle, T0, 4)
        assert log.apply_retention() == 0
        log.close()
        log = PartitionLog.open(tmp_path / "log", config=config(retention_bytes=oracle.size_bytes()), clock=clock)
        assert log.apply_retention() == 0
        check_matches_oracle(log, oracle)
    finally:
        log.close()


def test_size_retention_random_limits(tmp_path):
    """For random limits, retention deletes a prefix of sealed segments, neither too few nor too many."""
    clock = ManualClock(T0)
    directory = tmp_path / "log"
    log = PartitionLog.open(directory, config=config(), clock=clock)
    oracle = Oracle()
    rng = random.Random(4)
    for _ in range(120):
        append(log, oracle, T0, n=rng.randint(1, 4), size=rng.randint(1, 200))
    log.close()
    template = directory
    for i in range(12):
        case = tmp_path / f"case{i}"
        shutil.copytree(template, case)
        log = PartitionLog.open(case, config=config(), clock=clock)
        sizes = segment_sizes(log)
        bases = log.segment_bases
        log.close()
        limit = rng.randint(1, sum(sizes) + 100)
        log = PartitionLog.open(case, config=config(retention_bytes=limit), clock=clock)
        try:
            deleted = log.apply_retention()
            kept = sizes[deleted:]
            assert log.segment_bases == bases[deleted:]
            assert deleted <= len(bases) - 1, "the active segment was deleted"
            if deleted:
                # Not too many: before the last deletion the log was over the limit.
                assert sum(kept) + sizes[deleted - 1] > limit, (limit, sizes, deleted)
            if deleted < len(bases) - 1:
                # Not too few: deleting the next oldest would go below the limit.
                assert sum(kept) - kept[0] < limit, (limit, sizes, deleted)
            assert log.log_start_offset == bases[deleted]
        finally:
            log.close()


def test_deleted_leftovers_are_removed_on_open(tmp_path):
    """``*.deleted`` files (a deletion interrupted between rename and unlink) are removed by open."""
    clock = ManualClock(T0)
    directory = tmp_path / "log"
    log = PartitionLog.open(directory, config=config(retention_ms=RETENTION_MS), clock=clock)
    oracle = Oracle()
    fill_segments(log, oracle, T0, 2)
    log.roll()
    fill_segments(log, oracle, T0 + 50_000, 1)
    clock.advance(30_000)
    assert log.apply_retention() >= 2
    start = log.log_start_offset
    oracle.drop_below(start)
    log.close()
    leftovers = [directory / (seg_name(b, ext) + ".deleted") for b in (0, 3) for ext in ("log", "index", "timeindex")]
    for p in leftovers:
        p.write_bytes(b"stale bytes of a deleted segment")
    log = PartitionLog.open(directory, config=config(retention_ms=RETENTION_MS), clock=clock)
    try:
        assert [p for p in leftovers if p.exists()] == []
        assert not files_with_suffix(directory, ".deleted")
        assert log.log_start_offset == start
        check_matches_oracle(log, oracle)
    finally:
        log.close()


def test_deletion_interrupted_after_rename_finishes_on_open(tmp_path):
    """If a crash left a segment renamed to ``*.deleted``, open removes it and starts the log after it."""
    clock = ManualClock(T0)
    directory = tmp_path / "log"
    log = PartitionLog.open(directory, config=config(), clock=clock)
    oracle = Oracle()
    fill_segments(log, oracle, T0, 3)
    bases = log.segment_bases
    log.close()
    remove_clean_marker(directory)
    for ext in ("log", "index", "timeindex"):
        p = directory / seg_name(bases[0], ext)
        if p.exists():
            p.rename(p.with_name(p.name + ".deleted"))
    log = PartitionLog.open(directory, config=config(), clock=clock)
    try:
        assert not files_with_suffix(directory, ".deleted")
        assert log.log_start_offset == bases[1]
        oracle.drop_below(bases[1])
        check_matches_oracle(log, oracle)
        check_out_of_range(log, 0)
    finally:
        log.close()


@pytest.mark.parametrize("clean", [True, False])
def test_log_start_offset_survives_reopen(tmp_path, clean):
    """After retention, the log start offset is the same after a clean or unclean reopen."""
    clock = ManualClock(T0)
    directory = tmp_path / "log"
    cfg = config(retention_ms=RETENTION_MS)
    log = PartitionLog.open(directory, config=cfg, clock=clock)
    oracle = Oracle()
    fill_segments(log, oracle, T0, 3)
    log.roll()
    append(log, oracle, T0 + 100_000)
    clock.advance(50_000)
    assert log.apply_retention() >= 3
    start = log.log_start_offset
    assert start > 0
    oracle.drop_below(start)
    log.close()
    if not clean:
        remove_clean_marker(directory)
    log = PartitionLog.open(directory, config=cfg, clock=clock)
    try:
        assert log.log_start_offset == start
        check_matches_oracle(log, oracle)
        check_out_of_range(log, start - 1)
        end = log.log_end_offset
        assert append(log, oracle, T0 + 100_000) == end
        check_matches_oracle(log, oracle)
    finally:
        log.close()
