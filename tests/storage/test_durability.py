"""Durability policies, observed through ``sync_count`` (fdatasync calls on .log files)."""

from __future__ import annotations

import threading

import pytest

from logstore.clock import ManualClock
from logstore.storage.config import Durability, LogConfig
from logstore.storage.log import PartitionLog
from logstore.storage.records import Record

from storage_helpers import read_everything, remove_clean_marker

THREADS = 8
PER_THREAD = 200


def config_for(durability: Durability, **overrides) -> LogConfig:
    params = dict(
        segment_bytes=1 << 24,
        index_max_bytes=1 << 16,
        max_batch_bytes=1 << 20,
        retention_ms=-1,
        durability=durability,
    )
    params.update(overrides)
    return LogConfig(**params)


def one(value: bytes) -> list[Record]:
    return [Record(value=value, timestamp=1)]


def test_group_commit_concurrent_appends(tmp_path):
    """8 threads x 200 ALWAYS appends: distinct contiguous offsets, each acked after a sync, far fewer syncs than appends."""
    directory = tmp_path / "log"
    log = PartitionLog.open(directory, config=config_for(Durability.ALWAYS), clock=ManualClock())
    syncs_at_start = log.sync_count
    barrier = threading.Barrier(THREADS)
    results: list[list[int]] = [[] for _ in range(THREADS)]
    problems: list[str] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(PER_THREAD):
                before = log.sync_count
                base = log.append_records(one(f"{t}:{i}".encode()))
                after = log.sync_count
                if after <= before:
                    problems.append(f"thread {t} append {i} returned with no fdatasync since it started")
                results[t].append(base)
        except BaseException as exc:  # reported below, in the main thread
            problems.append(f"thread {t}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
        assert not th.is_alive()
    assert problems == []

    total = THREADS * PER_THREAD
    offsets = [o for r in results for o in r]
    assert sorted(offsets) == list(range(total)), "offsets are not distinct and contiguous"
    for r in results:
        assert r == sorted(r), "one thread's sequential appends got decreasing offsets"
    syncs = log.sync_count - syncs_at_start
    print(f"group commit: {total} appends, {syncs} fdatasyncs, ratio {syncs / total:.3f}")
    assert 1 <= syncs < total / 2
    by_offset = {o: f"{t}:{i}".encode() for t, r in enumerate(results) for i, o in enumerate(r)}
    assert {o: rec.value for o, rec in read_everything(log)} == by_offset
    log.close()

    # Reopen (as after a crash: no clean marker): every acknowledged append is there.
    remove_clean_marker(directory)
    log = PartitionLog.open(directory, config=config_for(Durability.ALWAYS), clock=ManualClock())
    try:
        assert log.log_end_offset == total
        assert {o: rec.value for o, rec in read_everything(log)} == by_offset
    finally:
        log.close()


def test_always_syncs_before_each_sequential_append_returns(tmp_path):
    """With ALWAYS and a single writer, every append returns after at least one new fdatasync."""
    log = PartitionLog.open(tmp_path / "log", config=config_for(Durability.ALWAYS), clock=ManualClock())
    try:
        for i in range(50):
            before = log.sync_count
            log.append_records(one(b"%d" % i))
            assert log.sync_count >= before + 1, i
    finally:
        log.close()


def test_interval_policy_message_threshold(tmp_path):
    """INTERVAL: no fdatasync before flush_interval_messages records, exactly one once it is reached."""
    clock = ManualClock()
    config = config_for(Durability.INTERVAL, flush_interval_messages=10, flush_interval_ms=10**12)
    log = PartitionLog.open(tmp_path / "log", config=config, clock=clock)
    try:
        s0 = log.sync_count
        for round_ in range(3):
            for i in range(9):
                log.append_records(one(b"x"))
                log.maybe_flush()
                clock.advance(1)
                assert log.sync_count == s0 + round_, (round_, i)
            log.append_records(one(b"x"))
            log.maybe_flush()
            assert log.sync_count == s0 + round_ + 1, round_
            log.maybe_flush()
            assert log.sync_count == s0 + round_ + 1, "a second maybe_flush with nothing new synced again"
    finally:
        log.close()


def test_interval_policy_time_threshold(tmp_path):
    """INTERVAL: no fdatasync before flush_interval_ms has elapsed on the clock, one when it has."""
    clock = ManualClock()
    config = config_for(Durability.INTERVAL, flush_interval_messages=10**9, flush_interval_ms=1000)
    log = PartitionLog.open(tmp_path / "log", config=config, clock=clock)
    try:
        s0 = log.sync_count
        log.append_records(one(b"a"))
        log.maybe_flush()
        assert log.sync_count == s0
        clock.advance(999)
        log.maybe_flush()
        log.append_records(one(b"b"))
        assert log.sync_count == s0, "synced before flush_interval_ms elapsed"
        clock.advance(1)
        log.maybe_flush()
        assert log.sync_count == s0 + 1, "no sync once flush_interval_ms elapsed"
        # The interval restarts at that flush.
        log.append_records(one(b"c"))
        clock.advance(999)
        log.maybe_flush()
        assert log.sync_count == s0 + 1
        clock.advance(1)
        log.maybe_flush()
        assert log.sync_count == s0 + 2
    finally:
        log.close()


def test_os_policy_syncs_only_on_roll_and_close(tmp_path):
    """OS: appends and maybe_flush never fdatasync; roll (explicit or by size) and close do."""
    clock = ManualClock()
    config = config_for(Durability.OS, segment_bytes=4096, max_batch_bytes=4096)
    log = PartitionLog.open(tmp_path / "log", config=config, clock=clock)
    s0 = log.sync_count
    for i in range(10):
        log.append_records(one(b"y" * 100))
        clock.advance(5_000)
        log.maybe_flush()
    assert log.sync_count == s0
    log.roll()
    s1 = log.sync_count
    assert s1 > s0, "roll did not fdatasync the sealed segment"
    segments = log.segment_count
    for i in range(10):
        log.append_records(one(b"z" * 100))
    assert log.segment_count == segments and log.sync_count == s1
    while log.segment_count == segments:
        log.append_records(one(b"w" * 500))
    s2 = log.sync_count
    assert s2 > s1, "a roll by segment_bytes did not fdatasync the sealed segment"
    log.append_records(one(b"v"))
    assert log.sync_count == s2
    log.close()
    assert log.sync_count > s2, "close did not fdatasync"


def test_explicit_flush_syncs_under_every_policy(tmp_path):
    """flush() forces an fdatasync of appended data whatever the policy."""
    for durability in (Durability.OS, Durability.INTERVAL):
        log = PartitionLog.open(tmp_path / durability.value, config=config_for(durability), clock=ManualClock())
        try:
            log.append_records(one(b"x"))
            before = log.sync_count
            log.flush()
            assert log.sync_count > before, durability
        finally:
            log.close()


def test_expected_offset_appends_only_at_the_log_end(tmp_path) -> None:  # noqa: ANN001
    """PartitionLog.append(expected_offset=end) appends; any other value raises and changes nothing."""
    from logstore.errors import FailedPrecondition
    from logstore.storage.batch import build_batch

    log = PartitionLog.open(tmp_path / "p", LogConfig())
    try:
        assert log.append(build_batch([Record(None, b"a")]), expected_offset=0) == 0
        for wrong in (0, 2, 100):
            with pytest.raises(FailedPrecondition, match="log end 1"):
                log.append(build_batch([Record(None, b"b")]), expected_offset=wrong)
        assert log.log_end_offset == 1
        assert log.append(build_batch([Record(None, b"c")]), expected_offset=1) == 1
    finally:
        log.close()
