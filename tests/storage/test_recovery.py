"""Crash recovery: torn tails, flipped bytes, zero tails, lost or garbage indexes, SIGKILL."""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logstore.clock import ManualClock
from logstore.errors import CorruptBatch, OffsetOutOfRange
from logstore.storage.batch import validate_batch
from logstore.storage.config import Durability, LogConfig
from logstore.storage.log import PartitionLog
from logstore.storage.records import Record

from sigkill_child import CONFIG as CHILD_CONFIG
from sigkill_child import value_for
from storage_helpers import (
    CLEAN_MARKER,
    Oracle,
    batch_positions,
    check_matches_oracle,
    check_read,
    files_with_suffix,
    flip_byte,
    log_file,
    read_everything,
    remove_clean_marker,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD_SCRIPT = Path(__file__).resolve().parent / "sigkill_child.py"
RECOVERY_TIME = 1_800_000_000_000
"""The ManualClock time at every reopen here, so side-file names are known."""


def small_config(**overrides) -> LogConfig:
    params = dict(
        segment_bytes=4096,
        index_interval_bytes=64,
        index_max_bytes=1 << 16,
        retention_ms=-1,
        max_batch_bytes=4096,
        durability=Durability.OS,
    )
    params.update(overrides)
    return LogConfig(**params)


def make_records(rng: random.Random, seq: int, n: int, ts: int) -> list[Record]:
    return [
        Record(
            key=f"k{seq + j}".encode(),
            value=f"v{seq + j}:".encode() + rng.randbytes(rng.randint(0, 60)),
            headers=(("seq", str(seq + j).encode()),),
            timestamp=ts + j,
        )
        for j in range(n)
    ]


def fill_log(log: PartitionLog, oracle: Oracle, rng: random.Random, batches: int, ts0: int = 1_000) -> None:
    for _ in range(batches):
        n = rng.randint(1, 6)
        records = make_records(rng, oracle.end, n, ts0 + oracle.end * 10)
        base = log.append_records(records)
        stored = log.read(base, 1)[0]
        oracle.appended(base, records, len(stored))


def reopen(directory: Path, config: LogConfig) -> PartitionLog:
    return PartitionLog.open(directory, config=config, clock=ManualClock(RECOVERY_TIME))


def side_file_name(segment_base: int) -> str:
    return f"{segment_base:020d}.log.corrupt-{RECOVERY_TIME}"


def side_paths(log: PartitionLog) -> list[Path]:
    """The side files the recovery report lists, as paths (names or paths are accepted)."""
    out = []
    for entry in log.last_recovery.side_files:
        p = Path(entry)
        out.append(p if p.is_absolute() else log.directory / p.name)
    return out


# ---------------------------------------------------------------------------------------
# Torn last batch, cut at every byte
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torn_tail_template(tmp_path_factory):
    """A closed log of several segments whose active segment ends with a 12-record batch."""
    directory = tmp_path_factory.mktemp("torn") / "log"
    config = small_config()
    rng = random.Random(7)
    log = PartitionLog.open(directory, config=config, clock=ManualClock(1_000))
    oracle = Oracle()
    fill_log(log, oracle, rng, 40)
    log.roll()
    fill_log(log, oracle, rng, 3)
    assert log.segment_count >= 3
    last_records = [
        Record(key=b"last" if i % 2 else None, value=bytes([i]) * (i + 3), timestamp=9_000_000 + i) for i in range(12)
    ]
    last_base = log.append_records(last_records)
    last_batch = log.read(last_base, 1)[0]
    active_base = log.segment_bases[-1]
    assert active_base < last_base, "the last batch must share its segment with earlier batches"
    log.close()
    active_log = log_file(directory, active_base)
    full_size = active_log.stat().st_size
    assert Path(active_log).read_bytes()[-len(last_batch):] == last_batch
    return dict(
        directory=directory,
        config=config,
        oracle=oracle,
        last_base=last_base,
        last_batch=last_batch,
        active_base=active_base,
        prefix_size=full_size - len(last_batch),
    )


@pytest.mark.parametrize("marker", ["clean-marker-kept", "marker-deleted"])
def test_last_batch_cut_at_every_byte(torn_tail_template, tmp_path, marker):
    """Cutting the last batch anywhere recovers to the end of the previous batch, reports and saves the cut bytes."""
    t = torn_tail_template
    oracle: Oracle = t["oracle"]
    last_batch: bytes = t["last_batch"]
    expected_records = oracle.records()
    for keep in range(len(last_batch)):
        case = tmp_path / f"cut-{keep}"
        shutil.copytree(t["directory"], case)
        with open(log_file(case, t["active_base"]), "r+b") as f:
            f.truncate(t["prefix_size"] + keep)
        if marker == "marker-deleted":
            remove_clean_marker(case)
        else:
            assert (case / CLEAN_MARKER).exists()
        log = reopen(case, t["config"])
        try:
            context = f"{keep} of {len(last_batch)} bytes of the last batch left, {marker}"
            assert log.log_end_offset == t["last_base"], context
            report = log.last_recovery
            assert report.truncated_bytes == keep, context
            # The file no longer matches what the marker recorded: the marker must not be trusted.
            assert report.clean is False, context
            if keep:
                sides = side_paths(log)
                assert [p.name for p in sides] == [side_file_name(t["active_base"])], context
                assert sides[0].read_bytes() == last_batch[:keep], context
                assert sides[0].exists()
            else:
                assert report.side_files == (), context
            assert log_file(case, t["active_base"]).stat().st_size == t["prefix_size"], context
            assert read_everything(log) == expected_records, context
            assert log.offset_for_timestamp(9_000_000) is None, context
            # Appends continue at the recovered end.
            new = [Record(value=b"after-recovery", timestamp=9_500_000)]
            assert log.append_records(new) == t["last_base"], context
            assert log.read_records(t["last_base"]) == [(t["last_base"], new[0])], context
            assert log.offset_for_timestamp(9_000_000) == t["last_base"], context
        finally:
            log.close()
        if keep % 50 == 7:
            # The recovered state itself is durable: a plain reopen sees the same log.
            log = reopen(case, t["config"])
            try:
                assert log.log_end_offset == t["last_base"] + 1
                assert log.last_recovery.truncated_bytes == 0
                assert read_everything(log)[:-1] == expected_records
            finally:
                log.close()
        shutil.rmtree(case)


def test_torn_newest_batch_without_marker_leaves_no_hole(tmp_path):
    """With no clean marker, a half-written last batch is cut; later appends leave no hole and reuse no offset."""
    config = small_config()
    rng = random.Random(3)
    directory = tmp_path / "log"
    log = PartitionLog.open(directory, config=config, clock=ManualClock(1_000))
    oracle = Oracle()
    fill_log(log, oracle, rng, 60)
    log.close()
    remove_clean_marker(directory)
    active_base = max(int(p.name[:20]) for p in files_with_suffix(directory, ".log"))
    path = log_file(directory, active_base)
    positions = batch_positions(path)
    pos, base, length = positions[-1]
    with open(path, "r+b") as f:
        f.truncate(pos + length // 2)
    log = reopen(directory, config)
    try:
        oracle.truncate_to(base)
        check_matches_oracle(log, oracle)
        assert log.last_recovery.truncated_bytes == length // 2
        fill_log(log, oracle, rng, 30)
        check_matches_oracle(log, oracle)
    finally:
        log.close()
    log = reopen(directory, config)
    try:
        check_matches_oracle(log, oracle)
    finally:
        log.close()


# ---------------------------------------------------------------------------------------
# A flipped byte anywhere
# ---------------------------------------------------------------------------------------


def build_flip_log(directory: Path, seed: int) -> tuple[Oracle, dict[int, bytes], LogConfig]:
    config = small_config(segment_bytes=2048, max_batch_bytes=2048)
    rng = random.Random(seed)
    log = PartitionLog.open(directory, config=config, clock=ManualClock(1_000))
    oracle = Oracle()
    fill_log(log, oracle, rng, 50)
    while sum(b.base >= log.segment_bases[-1] for b in oracle.batches) < 3:
        fill_log(log, oracle, rng, 1)
    originals = {b.base: log.read(b.base, 1)[0] for b in oracle.batches}
    assert log.segment_count >= 4
    log.close()
    return oracle, originals, config


def check_damaged_log(log: PartitionLog, oracle: Oracle, originals: dict[int, bytes], bad_base: int, context: str) -> None:
    """The batch at ``bad_base`` is damaged: it is never served, every batch before it is."""
    bad_end = oracle.batches[oracle.batch_containing(bad_base)].next_offset
    end = log.log_end_offset
    assert log.log_start_offset == oracle.start, context

    def served_ok(batches: list[bytes], offset: int) -> None:
        assert batches, f"read({offset}) returned nothing below the end {end} ({context})"
        first = validate_batch(batches[0])
        assert first.base_offset <= offset < first.next_offset, (
            f"read({offset}) returned a first batch holding {first.base_offset}..{first.next_offset - 1} ({context})"
        )
        for b in batches:
            base = validate_batch(b).base_offset
            assert base in originals and b == originals[base], (
                f"read({offset}) served a batch claiming base {base} that is not the batch appended there ({context})"
            )

    # Every batch before the damaged one is served, byte for byte, one at a time...
    for b in oracle.batches:
        if b.base >= bad_base:
            break
        served_ok(log.read(b.base, 1), b.base)
        assert log.read_records(b.base, 1)[0] == (b.base, b.records[0]), context
    # ...and larger reads from there either stop before the damage or refuse it.
    for b in oracle.batches:
        if b.base >= bad_base:
            break
        try:
            served_ok(log.read(b.base, 1 << 20), b.base)
        except CorruptBatch:
            pass
    # The damaged batch: truncated away by recovery, or refused (again and again) when read.
    if end <= bad_base:
        assert end == bad_base, f"recovery truncated to {end}, below the damaged batch ({context})"
        assert log.last_recovery.truncated_bytes > 0, context
    else:
        for offset in (bad_base, bad_end - 1):
            for _ in range(2):
                with pytest.raises(CorruptBatch):
                    log.read(offset, 1 << 20)
                with pytest.raises(CorruptBatch):
                    log.read_records(offset, 1 << 20)
    # Batches after it: served intact or refused, never anything else.
    for b in oracle.batches:
        if b.base < bad_end:
            continue
        try:
            served_ok(log.read(b.base, 1 << 20), b.base)
        except (CorruptBatch, OffsetOutOfRange):
            pass


@pytest.mark.parametrize("marker", ["clean-marker-kept", "marker-deleted"])
@pytest.mark.parametrize("where", ["active-tail", "sealed-segment"])
@pytest.mark.parametrize("region", ["any-byte", "header-byte"])
@pytest.mark.parametrize("seed", range(8))
def test_flipped_byte_is_never_served(tmp_path, seed, region, where, marker):
    """A batch with one flipped byte is never returned; every batch before it is still served intact."""
    directory = tmp_path / "log"
    oracle, originals, config = build_flip_log(directory, seed)
    rng = random.Random(f"{seed}-{region}-{where}-{marker}")
    segment_files = files_with_suffix(directory, ".log")
    if where == "active-tail":
        target = segment_files[-1]
        choices = batch_positions(target)[-2:]
    else:
        target = rng.choice(segment_files[:-1])
        choices = batch_positions(target)
    pos, bad_base, length = rng.choice(choices)
    # header-byte: the fields outside the CRC (base offset, length, magic) and the CRC itself.
    flip_at = rng.randrange(length) if region == "any-byte" else rng.randrange(17)
    flip_byte(target, pos + flip_at, rng.randint(1, 255))
    if marker == "marker-deleted":
        remove_clean_marker(directory)
    context = f"byte {flip_at} of the batch at {bad_base} in {target.name} flipped, {marker}"
    log = reopen(directory, config)
    try:
        check_damaged_log(log, oracle, originals, bad_base, context)
    finally:
        log.close()


@pytest.mark.parametrize("indexed", [False, True], ids=["unindexed-batch", "indexed-batch"])
def test_damaged_base_offset_in_sealed_segment_is_never_served(tmp_path, indexed):
    """A batch whose base offset field (outside the CRC) was damaged is refused, not served or skipped."""
    directory = tmp_path / "log"
    config = small_config(segment_bytes=1 << 20, max_batch_bytes=1 << 20, index_interval_bytes=150)
    log = PartitionLog.open(directory, config=config, clock=ManualClock(1_000))
    oracle = Oracle()
    for i in range(13):
        if i == 10:
            log.roll()
        records = [Record(value=b"v%d" % i, timestamp=i)]
        base = log.append_records(records)
        oracle.appended(base, records, len(log.read(base, 1)[0]))
    originals = {b.base: log.read(b.base, 1)[0] for b in oracle.batches}
    log.close()
    path = log_file(directory, 0)
    positions = batch_positions(path)
    index_entries = Path(directory / "00000000000000000000.index").read_bytes()
    indexed_positions = {int.from_bytes(index_entries[i + 4 : i + 8], "little") for i in range(0, len(index_entries), 8)}
    assert indexed_positions, "the test needs an offset index with entries"
    last_indexed = max(indexed_positions)
    candidates = [
        (pos, base) for pos, base, _ in positions if 0 < pos < last_indexed and (pos in indexed_positions) == indexed
    ]
    assert candidates
    pos, bad_base = candidates[0]
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write((bad_base + 1000).to_bytes(8, "little"))
    log = reopen(directory, config)  # the clean marker still matches the active segment
    try:
        check_damaged_log(log, oracle, originals, bad_base, f"base offset of batch {bad_base} damaged")
    finally:
        log.close()


# ---------------------------------------------------------------------------------------
# Zero-filled tail
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["marker-deleted", "clean-marker-kept"])
@pytest.mark.parametrize("zeros", [1, 8, 52, 53, 54, 4000])
def test_zero_filled_tail_is_cut(tmp_path, zeros, marker):
    """Zeros after the last batch (a preallocated or half-written tail) are removed; the end offset is unchanged."""
    directory = tmp_path / "log"
    config = small_config()
    rng = random.Random(zeros)
    log = PartitionLog.open(directory, config=config, clock=ManualClock(1_000))
    oracle = Oracle()
    fill_log(log, oracle, rng, 30)
    active_base = log.segment_bases[-1]
    log.close()
    path = log_file(directory, active_base)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x00" * zeros)
    if marker == "marker-deleted":
        remove_clean_marker(directory)
    log = reopen(directory, config)
    try:
        check_matches_oracle(log, oracle)
        assert log.last_recovery.truncated_bytes == zeros
        assert log.last_recovery.clean is False
        assert path.stat().st_size == size
        sides = side_paths(log)
        assert [p.name for p in sides] == [side_file_name(active_base)]
        assert sides[0].read_bytes() == b"\x00" * zeros
        fill_log(log, oracle, rng, 5)
        check_matches_oracle(log, oracle)
    finally:
        log.close()


# ---------------------------------------------------------------------------------------
# Lost or garbage index files
# ---------------------------------------------------------------------------------------


def build_index_log(directory: Path) -> tuple[Oracle, LogConfig]:
    config = small_config(segment_bytes=3000, max_batch_bytes=3000, index_interval_bytes=100)
    rng = random.Random(11)
    log = PartitionLog.open(directory, config=config, clock=ManualClock(1_000))
    oracle = Oracle()
    for _ in range(80):
        n = rng.randint(1, 5)
        records = [
            Record(value=rng.randbytes(rng.randint(1, 80)), timestamp=rng.choice([rng.randint(0, 10_000), -5, 10**15]))
            for _ in range(n)
        ]
        base = log.append_records(records)
        oracle.appended(base, records, len(log.read(base, 1)[0]))
    assert log.segment_count >= 4
    log.close()
    return oracle, config


def check_index_answers(log: PartitionLog, oracle: Oracle) -> None:
    check_matches_oracle(log, oracle)
    for offset in range(oracle.start, oracle.end + 1):
        check_read(log, oracle, offset, 1)
    timestamps = sorted({r.timestamp for _, r in oracle.records()})
    queries = {-(10**16), -6, 10**15 + 1, 10**16} | set(timestamps)
    queries |= {t + 1 for t in timestamps[::3]} | {t - 1 for t in timestamps[::3]}
    for ts in sorted(queries):
        assert log.offset_for_timestamp(ts) == oracle.first_offset_at_or_after(ts), ts


@pytest.mark.parametrize("marker", ["clean-marker-kept", "marker-deleted"])
@pytest.mark.parametrize(
    "damage",
    [
        "delete-index",
        "delete-timeindex",
        "delete-both",
        "garbage-index-same-size",
        "garbage-timeindex-same-size",
        "garbage-both-other-size",
        "empty-both",
        "truncate-timeindex-to-first-entry",
    ],
)
def test_index_files_lost_or_garbage_are_rebuilt(tmp_path, damage, marker):
    """Deleted, emptied or garbage index/timeindex files are rebuilt: reads and timestamp lookups stay exact."""
    directory = tmp_path / "log"
    oracle, config = build_index_log(directory)
    rng = random.Random(damage)
    targets = []
    if "index" in damage and "timeindex" not in damage or "both" in damage:
        targets += files_with_suffix(directory, ".index")
    if "timeindex" in damage or "both" in damage:
        targets += files_with_suffix(directory, ".timeindex")
    assert targets
    for path in targets:
        if damage.startswith("delete"):
            path.unlink()
        elif damage.startswith("empty"):
            path.write_bytes(b"")
        elif damage.startswith("truncate"):
            path.write_bytes(path.read_bytes()[:12])
        else:
            size = path.stat().st_size if "same-size" in damage else rng.randint(1, 500)
            path.write_bytes(rng.randbytes(max(size, 24)))
    if marker == "marker-deleted":
        remove_clean_marker(directory)
    log = reopen(directory, config)
    try:
        check_index_answers(log, oracle)
    finally:
        log.close()
    # The rebuilt indexes are usable after another reopen too.
    log = reopen(directory, config)
    try:
        check_index_answers(log, oracle)
    finally:
        log.close()


def test_appends_after_recovery_continue_at_recovered_end(tmp_path):
    """After an unclean recovery that cut a torn batch, new appends take the recovered end and survive reopen."""
    directory = tmp_path / "log"
    config = small_config()
    rng = random.Random(5)
    log = PartitionLog.open(directory, config=config, clock=ManualClock(1_000))
    oracle = Oracle()
    fill_log(log, oracle, rng, 25)
    active_base = log.segment_bases[-1]
    log.close()
    remove_clean_marker(directory)
    path = log_file(directory, active_base)
    pos, base, length = batch_positions(path)[-1]
    with open(path, "r+b") as f:
        f.truncate(pos + 10)
    oracle.truncate_to(base)
    log = reopen(directory, config)
    try:
        assert log.log_end_offset == base
        for _ in range(40):
            n = rng.randint(1, 4)
            records = make_records(rng, oracle.end, n, 5_000)
            got = log.append_records(records)
            assert got == oracle.end
            oracle.appended(got, records, len(log.read(got, 1)[0]))
        check_matches_oracle(log, oracle)
    finally:
        log.close()
    log = reopen(directory, config)
    try:
        check_matches_oracle(log, oracle)
    finally:
        log.close()


# ---------------------------------------------------------------------------------------
# SIGKILL of a real writer process
# ---------------------------------------------------------------------------------------


def test_sigkill_never_loses_acknowledged_appends(tmp_path):
    """A writer killed with SIGKILL at random moments (20+ times) never loses an append it acknowledged."""
    directory = tmp_path / "log"
    rng = random.Random(20240601)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    acked: dict[int, bytes] = {}
    kills_while_appending = 0
    early_kills = 0
    stderr_path = tmp_path / "child-stderr.txt"
    started = time.monotonic()
    for child in range(32):
        early = child % 6 == 5  # some kills land during start-up or recovery
        with open(stderr_path, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, str(CHILD_SCRIPT), str(directory), str(child)],
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=str(REPO_ROOT),
            )
        try:
            if early:
                time.sleep(rng.uniform(0.005, 0.150))
            else:
                readable, _, _ = select.select([proc.stdout], [], [], 30)
                assert readable, f"child {child} did not open the log within 30 s: {stderr_path.read_text()}"
                ready = proc.stdout.readline().decode()
                assert ready.startswith("ready "), (ready, stderr_path.read_text())
                _, start, end = ready.split()
                # Every offset acknowledged by an earlier (killed) writer survived its recovery.
                assert int(start) == 0
                assert all(o < int(end) for o in acked), (max(acked), end)
                time.sleep(rng.uniform(0.005, 0.150))
        finally:
            proc.send_signal(signal.SIGKILL)
            rc = proc.wait(timeout=20)
            out = proc.stdout.read().decode()
            proc.stdout.close()
        assert rc == -signal.SIGKILL, (rc, stderr_path.read_text())
        acks = 0
        for line in out.splitlines(keepends=True):
            if not line.endswith("\n") or not line.startswith("ack "):
                continue  # a line cut by the kill is not an acknowledgement
            _, base, n, cid, seq = line.split()
            assert int(cid) == child
            for j in range(int(n)):
                offset = int(base) + j
                assert offset not in acked, f"offset {offset} acknowledged twice"
                acked[offset] = value_for(child, int(seq) + j)
            acks += 1
        if not early:
            kills_while_appending += 1 if acks else 0
        else:
            early_kills += 1
    assert kills_while_appending >= 20, kills_while_appending
    assert len(acked) > 100

    log = PartitionLog.open(directory, config=CHILD_CONFIG, clock=ManualClock(RECOVERY_TIME))
    try:
        assert log.log_start_offset == 0
        assert log.log_end_offset > max(acked)
        records = dict(read_everything(log))
        assert sorted(records) == list(range(log.log_end_offset))
        for offset, value in acked.items():
            assert records[offset].value == value, f"acknowledged offset {offset} lost or changed"
        # Unacknowledged survivors are still whole records from some writer.
        for offset, rec in records.items():
            child, seq, _ = rec.value.split(b":", 2)
            assert rec.value == value_for(int(child), int(seq))
    finally:
        log.close()
    elapsed = time.monotonic() - started
    print(f"sigkill: {kills_while_appending} kills while appending, {early_kills} early, "
          f"{len(acked)} acknowledged records, {elapsed:.1f}s")


# ---------------------------------------------------------------------------------------
# Marker and checkpoint files
# ---------------------------------------------------------------------------------------


def test_clean_shutdown_marker_lifecycle(tmp_path):
    """close() writes the marker and both checkpoints; open() removes the marker and reports a clean start."""
    directory = tmp_path / "log"
    log = PartitionLog.open(directory, config=small_config(), clock=ManualClock(1_000))
    assert not (directory / CLEAN_MARKER).exists()
    fill_log(log, Oracle(), random.Random(1), 10)
    log.close()
    assert (directory / CLEAN_MARKER).exists()
    assert (directory / "recovery-point").exists()
    assert (directory / "log-start-offset").exists()
    log = reopen(directory, small_config())
    try:
        assert not (directory / CLEAN_MARKER).exists(), "the marker must not outlive open()"
        report = log.last_recovery
        assert (report.clean, report.truncated_bytes, report.segments_deleted, report.side_files) == (True, 0, 0, ())
    finally:
        log.close()
    remove_clean_marker(directory)
    log = reopen(directory, small_config())
    try:
        assert log.last_recovery.clean is False
        assert log.last_recovery.segments_scanned >= 1
    finally:
        log.close()


@pytest.mark.parametrize("marker", ["clean-marker-kept", "marker-deleted"])
def test_damaged_checkpoint_files_are_not_trusted(tmp_path, marker):
    """Garbage in recovery-point and log-start-offset does not move the log's bounds or lose data."""
    directory = tmp_path / "log"
    oracle = Oracle()
    log = PartitionLog.open(directory, config=small_config(), clock=ManualClock(1_000))
    fill_log(log, oracle, random.Random(2), 60)
    log.close()
    (directory / "recovery-point").write_bytes(b"999999999 garbage\n")
    (directory / "log-start-offset").write_bytes(b"\x00\xff" * 7)
    if marker == "marker-deleted":
        remove_clean_marker(directory)
    log = reopen(directory, small_config())
    try:
        check_matches_oracle(log, oracle)
        fill_log(log, oracle, random.Random(3), 5)
        check_matches_oracle(log, oracle)
    finally:
        log.close()
