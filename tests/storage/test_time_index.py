"""offset_for_timestamp: the first offset (in offset order) whose record timestamp is >= ts."""

from __future__ import annotations

import random

import pytest

from logstore.clock import ManualClock
from logstore.storage.config import LogConfig
from logstore.storage.log import PartitionLog
from logstore.storage.records import Record

from storage_helpers import Oracle, files_with_suffix, remove_clean_marker


def config() -> LogConfig:
    return LogConfig(
        segment_bytes=2048, index_interval_bytes=96, index_max_bytes=4096, max_batch_bytes=2048, retention_ms=-1,
        retention_bytes=-1,
    )


def fill(log: PartitionLog, oracle: Oracle, rng: random.Random, batches: int) -> None:
    """Non-monotonic timestamps: a drifting base plus jitter, with rare outliers far back and forward."""
    for _ in range(batches):
        records = []
        for _ in range(rng.randint(1, 8)):
            drift = 1_000_000 + oracle.end * 20 + len(records) * 20
            roll = rng.random()
            if roll < 0.03:
                ts = rng.choice([-(10**12), 0, -1])
            elif roll < 0.06:
                ts = 10**14 + rng.randint(0, 10)
            else:
                ts = drift + rng.randint(-3000, 3000)
            records.append(Record(value=rng.randbytes(rng.randint(0, 90)), timestamp=ts))
        base = log.append_records(records)
        oracle.appended(base, records, len(log.read(base, 1)[0]))


def queries(oracle: Oracle, rng: random.Random) -> list[int]:
    ts = sorted({r.timestamp for _, r in oracle.records()})
    qs = set(ts) | {t - 1 for t in ts} | {t + 1 for t in ts}
    qs |= {-(10**18), 10**18, min(ts) - 10**6, max(ts) + 10**6}
    qs |= {rng.randint(min(ts), max(ts)) for _ in range(200)}
    return sorted(qs)


def check_all(log: PartitionLog, oracle: Oracle, rng: random.Random) -> None:
    qs = queries(oracle, rng)
    for q in qs:
        assert log.offset_for_timestamp(q) == oracle.first_offset_at_or_after(q), q
    assert any(oracle.first_offset_at_or_after(q) is None for q in qs)
    assert any((oracle.first_offset_at_or_after(q) or 0) > oracle.start for q in qs)


@pytest.fixture()
def built(tmp_path):
    directory = tmp_path / "log"
    log = PartitionLog.open(directory, config=config(), clock=ManualClock())
    oracle = Oracle()
    rng = random.Random(99)
    fill(log, oracle, rng, 120)
    assert log.segment_count >= 5
    return directory, log, oracle, rng


def test_matches_brute_force_across_segments(built):
    """With random non-monotonic timestamps over many segments, lookups equal a brute-force scan."""
    _, log, oracle, rng = built
    try:
        check_all(log, oracle, rng)
    finally:
        log.close()


@pytest.mark.parametrize("clean", [True, False])
def test_matches_brute_force_after_reopen(built, clean):
    """After a clean or unclean reopen, lookups still equal a brute-force scan, also for new appends."""
    directory, log, oracle, rng = built
    log.close()
    if not clean:
        remove_clean_marker(directory)
    log = PartitionLog.open(directory, config=config(), clock=ManualClock())
    try:
        check_all(log, oracle, rng)
        fill(log, oracle, rng, 20)
        check_all(log, oracle, rng)
    finally:
        log.close()


@pytest.mark.parametrize("damage", ["deleted", "truncated-to-first-entry"])
@pytest.mark.parametrize("clean", [True, False])
def test_matches_brute_force_after_timeindex_lost(built, clean, damage):
    """With every .timeindex file deleted or cut short, reopening copes and lookups stay exact."""
    directory, log, oracle, rng = built
    log.close()
    damaged = files_with_suffix(directory, ".timeindex")
    assert len(damaged) >= 5
    for p in damaged:
        if damage == "deleted":
            p.unlink()
        else:
            p.write_bytes(p.read_bytes()[:12])
    if not clean:
        remove_clean_marker(directory)
    log = PartitionLog.open(directory, config=config(), clock=ManualClock())
    try:
        check_all(log, oracle, rng)
    finally:
        log.close()


def test_lookup_ignores_records_below_log_start(tmp_path):
    """After retention moved the log start, lookups never return an offset below it."""
    clock = ManualClock(3_000_000)
    cfg = LogConfig(
        segment_bytes=2048, index_interval_bytes=96, max_batch_bytes=2048, retention_ms=500_000, retention_bytes=-1
    )
    log = PartitionLog.open(tmp_path / "log", config=cfg, clock=clock)
    oracle = Oracle()
    rng = random.Random(5)

    def append(records):
        base = log.append_records(records)
        oracle.appended(base, records, len(log.read(base, 1)[0]))

    try:
        for i in range(60):  # old: timestamps around 1_000_000, several segments
            append([Record(value=rng.randbytes(80), timestamp=1_000_000 + i * 10 + j) for j in range(3)])
        log.roll()
        for i in range(60):  # recent, non-monotonic: around 2_900_000, several segments
            append([Record(value=rng.randbytes(80), timestamp=2_900_000 + rng.randint(-500, 500)) for _ in range(3)])
        old_segments = sum(1 for b in log.segment_bases if b < 180)
        assert old_segments >= 3 and log.segment_count - old_segments >= 3
        deleted = log.apply_retention()
        assert deleted == old_segments
        assert log.log_start_offset == 180
        oracle.drop_below(log.log_start_offset)
        for q in (-(10**18), 0, 1_000_000, 1_000_500, 2_899_400, 2_899_999, 2_900_000, 2_900_300, 2_900_500, 2_900_501):
            got = log.offset_for_timestamp(q)
            assert got == oracle.first_offset_at_or_after(q), q
            assert got is None or got >= 180
        assert log.offset_for_timestamp(1_000_000) == 180
    finally:
        log.close()


def test_empty_log_has_no_offset_for_any_timestamp(tmp_path):
    """An empty log answers None for every timestamp."""
    log = PartitionLog.open(tmp_path / "log", config=config(), clock=ManualClock())
    try:
        for q in (-(10**18), 0, 10**18):
            assert log.offset_for_timestamp(q) is None
    finally:
        log.close()
