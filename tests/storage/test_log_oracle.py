"""PartitionLog against an in-memory oracle: random appends, reads, reopens, rolls and retention.

The oracle is a plain list of the batches appended (``storage_helpers.Oracle``);
every read of the real log must agree with it.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from logstore.clock import ManualClock
from logstore.errors import OffsetOutOfRange, RecordTooLarge
from logstore.storage.batch import build_batch
from logstore.storage.config import Durability, LogConfig
from logstore.storage.log import PartitionLog
from logstore.storage.records import Record

from storage_helpers import (
    Oracle,
    check_matches_oracle,
    check_read,
    check_read_records,
    log_file,
    random_record,
    read_everything,
    remove_clean_marker,
)

RETENTION_MS = 60_000


class LogDriver:
    """One real log plus its oracle; each method does one operation and checks it."""

    def __init__(self, directory: Path, config: LogConfig, seed: int) -> None:
        self.directory = directory
        self.config = config
        self.clock = ManualClock(1_700_000_000_000)
        self.rng = random.Random(seed)
        self.oracle = Oracle()
        self.log = PartitionLog.open(directory, config=config, clock=self.clock)
        self.largest_batch = 0
        self.rolls_seen = 0
        self.retained_segments = 0
        check_matches_oracle(self.log, self.oracle)

    # -- operations ----------------------------------------------------------------

    def append(self, count: int, max_value: int, use_records_api: bool) -> None:
        ts = self.clock()
        records = [random_record(self.rng, ts, max_value) for _ in range(count)]
        batch = build_batch(records)
        end_before = self.log.log_end_offset
        if len(batch) > self.config.max_batch_bytes:
            with pytest.raises(RecordTooLarge):
                if use_records_api:
                    self.log.append_records(records)
                else:
                    self.log.append(batch)
            assert self.log.log_end_offset == end_before
            return
        segments_before = self.log.segment_count
        base = self.log.append_records(records) if use_records_api else self.log.append(batch)
        self.oracle.appended(base, records, len(batch))
        self.largest_batch = max(self.largest_batch, len(batch))
        assert self.log.log_end_offset == base + count
        if self.log.segment_count > segments_before:
            self.rolls_seen += 1

    def read(self, offset: int, max_bytes: int) -> None:
        if offset < self.oracle.start or offset > self.oracle.end:
            with pytest.raises(OffsetOutOfRange):
                self.log.read(offset, max_bytes)
            return
        check_read(self.log, self.oracle, offset, max_bytes)

    def read_records(self, offset: int, max_bytes: int) -> None:
        if offset < self.oracle.start or offset > self.oracle.end:
            with pytest.raises(OffsetOutOfRange):
                self.log.read_records(offset, max_bytes)
            return
        check_read_records(self.log, self.oracle, offset, max_bytes)

    def offset_for_timestamp(self, ts: int) -> None:
        assert self.log.offset_for_timestamp(ts) == self.oracle.first_offset_at_or_after(ts), ts

    def reopen(self, clean: bool) -> None:
        self.log.close()
        if not clean:
            remove_clean_marker(self.directory)
        self.log = PartitionLog.open(self.directory, config=self.config, clock=self.clock)
        # Offsets are never reused: the end survives the reopen exactly.
        check_matches_oracle(self.log, self.oracle)

    def roll(self) -> None:
        bases_before = self.log.segment_bases
        self.log.roll()
        bases = self.log.segment_bases
        assert bases[: len(bases_before)] == bases_before
        if self.oracle.end > bases_before[-1]:
            # The active segment had data: a new, empty segment starts at the log end.
            assert bases[-1] == self.oracle.end, (bases_before, bases, self.oracle.end)

    def retain(self, advance_ms: int) -> None:
        self.clock.advance(advance_ms)
        now = self.clock()
        bases_before = self.log.segment_bases
        seg_max_ts = self._segment_max_timestamps(bases_before)
        deleted = self.log.apply_retention()
        bases = self.log.segment_bases
        assert deleted == len(bases_before) - len(bases)
        assert bases == bases_before[deleted:], "retention must delete the oldest segments first"
        assert bases[-1] == bases_before[-1], "retention deleted the active segment"
        cutoff = now - RETENTION_MS
        for i in range(deleted):
            assert seg_max_ts[i] is None or seg_max_ts[i] <= cutoff, (
                f"segment {bases_before[i]} with max timestamp {seg_max_ts[i]} deleted at cutoff {cutoff}"
            )
        if deleted < len(bases_before) - 1:
            # The oldest remaining sealed segment must not be expired.
            ts = seg_max_ts[deleted]
            assert ts is None or ts >= cutoff, (
                f"segment {bases_before[deleted]} (max ts {ts}) not deleted although older than {cutoff}"
            )
        assert self.log.log_start_offset == bases[0]
        self.oracle.drop_below(bases[0])
        self.retained_segments += deleted

    # -- checks --------------------------------------------------------------------

    def _segment_max_timestamps(self, bases: list[int]) -> list[int | None]:
        out: list[int | None] = []
        for i, base in enumerate(bases):
            upper = bases[i + 1] if i + 1 < len(bases) else self.oracle.end + 1
            ts = [b.max_timestamp for b in self.oracle.batches if base <= b.base < upper]
            out.append(max(ts) if ts else None)
        return out

    def check_bounds(self) -> None:
        assert self.log.log_start_offset == self.oracle.start
        assert self.log.log_end_offset == self.oracle.end
        assert self.log.size_bytes == self.oracle.size_bytes()
        bases = self.log.segment_bases
        assert bases[0] == self.oracle.start
        # A sealed segment never grows past segment_bytes (batches are at most segment_bytes).
        for base in bases[:-1]:
            size = log_file(self.directory, base).stat().st_size
            assert size <= self.config.segment_bytes, (base, size, self.config.segment_bytes)

    def check_all(self) -> None:
        check_matches_oracle(self.log, self.oracle)

    def close(self) -> None:
        self.log.close()


CONFIGS = st.builds(
    dict,
    segment_bytes=st.sampled_from([1024, 4096, 16384]),
    index_interval_bytes=st.sampled_from([1, 64, 700, 4096]),
    index_max_bytes=st.sampled_from([64, 128, 10 << 20]),
)


class LogMachine(RuleBasedStateMachine):
    """Hypothesis state machine driving one PartitionLog against the oracle."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="logstore-oracle-"))
        self.driver: LogDriver | None = None

    @initialize(params=CONFIGS, seed=st.integers(0, 2**32 - 1))
    def start(self, params, seed):
        config = LogConfig(
            retention_ms=RETENTION_MS,
            retention_bytes=-1,
            durability=Durability.OS,
            max_batch_bytes=params["segment_bytes"],
            **params,
        )
        self.driver = LogDriver(self.tmp / "log", config, seed)

    @rule(count=st.integers(1, 50), max_value=st.sampled_from([1, 20, 100, 400]), records_api=st.booleans())
    def append(self, count, max_value, records_api):
        self.driver.append(count, max_value, records_api)

    @rule(where=st.floats(0, 1), delta=st.integers(-3, 3), max_bytes=st.integers(1, 40_000))
    def read(self, where, delta, max_bytes):
        o = self.driver.oracle
        offset = o.start + int(where * (o.end - o.start)) + delta
        self.driver.read(offset, max_bytes)

    @rule(where=st.floats(0, 1), delta=st.integers(-3, 3), max_bytes=st.integers(1, 40_000))
    def read_records(self, where, delta, max_bytes):
        o = self.driver.oracle
        offset = o.start + int(where * (o.end - o.start)) + delta
        self.driver.read_records(offset, max_bytes)

    @rule(back_ms=st.integers(-5, 400_000))
    def offset_for_timestamp(self, back_ms):
        self.driver.offset_for_timestamp(self.driver.clock() - back_ms)

    @rule(clean=st.booleans())
    def reopen(self, clean):
        self.driver.reopen(clean)

    @rule()
    def roll(self):
        self.driver.roll()

    @rule(ms=st.integers(1, 30_000))
    def advance_clock(self, ms):
        self.driver.clock.advance(ms)

    @rule(ms=st.integers(0, 90_000))
    def retain(self, ms):
        self.driver.retain(ms)

    @invariant()
    def bounds_agree(self):
        if self.driver is not None:
            self.driver.check_bounds()

    def teardown(self):
        try:
            if self.driver is not None:
                self.driver.check_all()
                self.driver.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


LogMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_log_machine = LogMachine.TestCase
test_log_machine.__doc__ = "Random operation sequences (hypothesis stateful) keep the log equal to the oracle."


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_seeded_random_operations_match_oracle(tmp_path, seed):
    """A long seeded-random run of appends/reads/reopens/rolls/retention keeps the log equal to the oracle."""
    rng = random.Random(seed)
    segment_bytes = rng.choice([2048, 4096, 8192])
    config = LogConfig(
        segment_bytes=segment_bytes,
        index_interval_bytes=rng.choice([1, 128, 1024]),
        index_max_bytes=rng.choice([64, 4096]),
        retention_ms=RETENTION_MS,
        max_batch_bytes=segment_bytes,
        durability=Durability.OS,
    )
    d = LogDriver(tmp_path / "log", config, seed)
    for step in range(400):
        op = rng.random()
        o = d.oracle
        if op < 0.40:
            d.append(rng.randint(1, 50), rng.choice([1, 30, 120]), rng.random() < 0.5)
        elif op < 0.55:
            d.read(rng.randint(o.start - 2, o.end + 2), rng.randint(1, 20_000))
        elif op < 0.65:
            d.read_records(rng.randint(o.start - 2, o.end + 2), rng.randint(1, 20_000))
        elif op < 0.70:
            d.offset_for_timestamp(d.clock() - rng.randint(-5, 300_000))
        elif op < 0.75:
            d.reopen(clean=rng.random() < 0.5)
        elif op < 0.80:
            d.roll()
        elif op < 0.93:
            d.clock.advance(rng.randint(1, 5_000))
        else:
            d.retain(rng.randint(0, 20_000))
        d.check_bounds()
    d.check_all()
    # The run exercised what it claims to exercise.
    assert d.rolls_seen > 0, "no natural roll happened"
    assert d.retained_segments > 0, "retention never deleted a segment"
    assert d.oracle.end > 1000
    d.close()


def test_offsets_are_contiguous_and_never_reused_across_reopen(tmp_path):
    """Each append gets the previous end as its base, including right after clean and unclean reopens."""
    config = LogConfig(segment_bytes=4096, index_interval_bytes=256, max_batch_bytes=4096, retention_ms=-1)
    clock = ManualClock()
    directory = tmp_path / "log"
    expected = 0
    seen: set[int] = set()
    for round_ in range(6):
        log = PartitionLog.open(directory, config=config, clock=clock)
        assert log.log_end_offset == expected
        for i in range(20):
            n = (round_ + i) % 7 + 1
            base = log.append_records(
                [Record(key=b"k", value=f"{round_}/{i}/{j}".encode(), timestamp=round_) for j in range(n)]
            )
            assert base == expected
            assert not (set(range(base, base + n)) & seen)
            seen.update(range(base, base + n))
            expected += n
        log.close()
        if round_ % 2:
            remove_clean_marker(directory)
    log = PartitionLog.open(directory, config=config, clock=clock)
    try:
        assert log.log_end_offset == expected == len(seen)
        records = log.read_records(0, 1 << 30)
        offsets = []
        o = 0
        while o < expected:
            chunk = log.read_records(o, 1 << 30)
            offsets.extend(off for off, _ in chunk)
            o = chunk[-1][0] + 1
        assert offsets == list(range(expected))
        assert records[0][1].value == b"0/0/0"
    finally:
        log.close()


def test_concurrent_readers_see_a_consistent_log(tmp_path):
    """Readers racing one writer (appends, rolls, size retention) only ever get correct records or OffsetOutOfRange."""
    config = LogConfig(
        segment_bytes=2048, index_interval_bytes=128, max_batch_bytes=2048, retention_ms=-1, retention_bytes=8192
    )
    log = PartitionLog.open(tmp_path / "log", config=config, clock=ManualClock())
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def value(offset: int) -> bytes:
        return b"%d|" % offset + bytes([offset % 251]) * (offset % 97)

    def writer() -> None:
        rng = random.Random(1)
        try:
            for i in range(800):
                end = log.log_end_offset
                n = rng.randint(1, 5)
                base = log.append_records([Record(value=value(end + j), timestamp=end + j) for j in range(n)])
                if base != end:
                    problems.append(f"append returned {base}, expected {end}")
                if i % 20 == 0:
                    log.apply_retention()
                if i % 100 == 0:
                    log.roll()
        except BaseException as exc:
            problems.append(f"writer: {exc!r}")
        finally:
            stop.set()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            start, end = log.log_start_offset, log.log_end_offset
            offset = rng.randint(start, end)
            try:
                got = log.read_records(offset, rng.choice([1, 500, 1 << 20]))
            except OffsetOutOfRange:
                if offset >= log.log_start_offset:
                    problems.append(f"OffsetOutOfRange for {offset} while the log starts at {log.log_start_offset}")
                    return
                continue
            except BaseException as exc:
                problems.append(f"reader: read_records({offset}) raised {exc!r}\n{traceback.format_exc()}")
                return
            if offset < end and not got:
                problems.append(f"read_records({offset}) returned nothing below the end {end}")
                return
            for i, (o, rec) in enumerate(got):
                if o != offset + i or rec.value != value(o):
                    problems.append(f"read_records({offset}) gave offset {o} value {rec.value[:12]!r}")
                    return
            reads[0] += 1
            time.sleep(0.0002)  # let the writer have the GIL now and then

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    try:
        assert not problems, "\n".join(problems[:3])
        assert reads[0] > 100
        assert log.log_start_offset > 0, "retention never ran during the race"
        final = read_everything(log)
        assert [o for o, _ in final] == list(range(log.log_start_offset, log.log_end_offset))
        assert all(rec.value == value(o) for o, rec in final)
        assert time.monotonic() - started < 30
    finally:
        log.close()
